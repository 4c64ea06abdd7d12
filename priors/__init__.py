"""Registered priors: one file each, found by importing every module in this folder.

>>> import priors
>>> priors.available()                                 # doctest: +SKIP
['beta_bernoulli', 'coin_mixture', ...]
>>> prior = priors.get("coin_mixture", thetas=(0.3, 0.6))
"""

import importlib
import pkgutil

from toolkit.registry import available_priors as available
from toolkit.registry import get_prior as get

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["get", "available"]
