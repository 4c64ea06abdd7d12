"""metabayes toolkit: priors, episodes, scenarios, predictors, Bayes engines, metrics and result IO."""

import os

# JAX samples priors beside a torch learner: never let it grab the accelerator's memory.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from . import dims
from .episodes import Episodes
from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    MetabayesError,
    ModelError,
    UnknownNameError,
)
from .predictive import Predictor, regression_predictions, token_predictions
from .prior import Prior
from .registry import available_priors, get_prior, load_prior, register_prior

__version__ = "0.1.0"

__all__ = [
    "dims",
    "Episodes",
    "Prior",
    "Predictor",
    "token_predictions",
    "regression_predictions",
    "register_prior",
    "get_prior",
    "available_priors",
    "load_prior",
    "MetabayesError",
    "ConfigError",
    "UnknownNameError",
    "ModelError",
    "DataError",
    "CheckpointError",
]
