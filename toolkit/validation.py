"""Checking a NumPyro model against the prior convention before anything runs.

The convention (DESIGN.md, "Priors"): the predicted site is ``y`` and the
regression inputs are ``x``, both indexed by position, either inside
``numpyro.plate("position", length)`` or emitted step by step by
``numpyro.contrib.control_flow.scan`` over the positions (an HMM, whose
observations depend on each other). Every other site is a latent: global when
it sits outside the position axis, local when it sits on it.

Each check fails with a `ModelError` that names the site and quotes the
convention, so a user's own model can be fixed from the message alone.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import jax
import numpy as np
from numpyro import handlers

from .dims import POSITION_PLATE, X_SITE, Y_SITE
from .errors import ModelError

if TYPE_CHECKING:
    from .prior import Prior

CONVENTION = (
    "a prior model is `def model(length, y=None)` (regression: `def model(length, x=None, y=None)`) "
    "with `numpyro.sample('y', ..., obs=y)` (and site 'x') inside `numpyro.plate('position', length)` "
    "(or, for observations that depend on each other, emitted by `numpyro.contrib.control_flow.scan` "
    "over the positions)"
)

# numpyro's scan tags every site of its body with the step index.
SCAN_TAG = "_scan_current_index"


@dataclass(frozen=True)
class SiteInfo:
    """What one trace of the model says about a sample site.

    ``in_position_plate`` is True for sites indexed by position: inside the
    ``position`` plate, or inside a ``scan`` over the positions (then ``in_scan``).
    """

    name: str
    shape: tuple[int, ...]
    in_position_plate: bool
    has_enumerate_support: bool
    support_size: int | None
    is_discrete: bool
    in_scan: bool = False


def model_trace(prior: Prior, length: int) -> dict:
    """One unconditioned trace of the prior's model at ``length`` (key 0), cached: do not modify it.

    Engines ask about a model's structure many times; an eager trace of a
    ``scan`` model recompiles the scan every time (about a second).
    """
    return _cached_trace(prior.model, prior.kind, int(length))


@lru_cache(maxsize=128)
def _cached_trace(model, kind: str, length: int) -> dict:
    from .kinds import get_kind  # kinds quotes this module's convention: imported when first needed

    data_kind = get_kind(kind)
    kwargs = data_kind.model_kwargs()
    try:
        return handlers.trace(handlers.seed(model, jax.random.key(0))).get_trace(length, **kwargs)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's model failed: say so, with the convention
        hint = " (a regression model takes `x=None`)" if "x" in kwargs and "'x'" in str(exc) else ""
        raise ModelError(f"calling the model failed ({type(exc).__name__}: {exc}){where(model, exc)}{hint}; "
                         f"{CONVENTION}") from None


def where(model, exc: BaseException) -> str:
    """`` at FILE:LINE (`source`)``: the line of ``model``'s own file where ``exc`` was raised, or ``""``.

    A distribution that refuses its parameters (NumPyro's ``validate_args``) raises inside NumPyro; the
    model's own line names the site and the parameter that was computed wrong.
    """
    code = getattr(model, "__code__", None)
    if code is None:
        return ""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == code.co_filename]
    if not frames:
        return ""
    frame = frames[-1]
    return f" at {Path(frame.filename).name}:{frame.lineno} (`{(frame.line or '').strip()}`)"


def site_table(tr: dict, length: int) -> dict[str, SiteInfo]:
    """Sample sites of a trace at ``length``, without judging them."""
    table = {}
    for name, site in tr.items():
        if site["type"] != "sample":
            continue
        fn = site["fn"]
        in_plate = any(f.name == POSITION_PLATE for f in site["cond_indep_stack"])
        in_scan = SCAN_TAG in site.get("infer", {}) and np.shape(site["value"])[:1] == (length,)
        enumerable = bool(getattr(fn, "has_enumerate_support", False))
        size = None
        if enumerable:
            try:
                size = int(fn.enumerate_support(expand=False).shape[0])
            except Exception:  # noqa: BLE001 - some supports are data-dependent
                size = None
        is_discrete = bool(getattr(fn.support, "is_discrete", False))
        table[name] = SiteInfo(
            name, tuple(np.shape(site["value"])), in_plate or in_scan, enumerable, size, is_discrete, in_scan
        )
    return table


def check_sites(table: dict[str, SiteInfo], length: int) -> dict[str, SiteInfo]:
    """The structural checks: a ``y`` site, on the position axis, leading with the position dim."""
    if Y_SITE not in table:
        latents = ", ".join(sorted(table)) or "none"
        raise ModelError(f"the model has no sample site 'y' (its sample sites: {latents}); {CONVENTION}")
    y = table[Y_SITE]
    if not y.in_position_plate:
        raise ModelError(f"site 'y' is not inside numpyro.plate('position', length); {CONVENTION}")
    if y.shape[:1] != (length,):
        raise ModelError(
            f"site 'y' has shape {y.shape} at length {length}; it must lead with the position dim "
            f"({length},); {CONVENTION}"
        )
    if X_SITE in table and not table[X_SITE].in_position_plate:
        raise ModelError(f"site 'x' is not inside numpyro.plate('position', length); {CONVENTION}")
    return table


def distribution_name(fn) -> str:
    """``Normal`` rather than the ``ExpandedDistribution`` a plate wraps it in."""
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return type(fn).__name__


def check_kind(prior: Prior, tr: dict, length: int) -> None:
    """``y`` (and ``x``) of the shape and dtype the declared kind needs (`toolkit.kinds`)."""
    prior.data_kind.check_trace(prior, tr, length)


def check_log_density(prior: Prior, *, length: int = 3, num_draws: int = 3) -> None:
    """Every site's log-density is finite on the model's own samples.

    Draws ``num_draws`` sequences of ``length`` from the model and evaluates
    each sample site's log-probability at its own value. The traces run
    eagerly at the length `Prior.sites` uses, so they reuse its compiled ops
    (a jitted check would recompile samplers such as Beta's, seconds per prior).
    """
    for draw in range(num_draws):
        try:
            tr = model_trace(prior, length) if draw == 0 else prior.trace(jax.random.key(draw), length)
        except ModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - report the model's own failure with the convention
            raise ModelError(
                f"sampling the model failed (draw {draw}: {type(exc).__name__}: {exc}){where(prior.model, exc)}; "
                f"every distribution's parameters must be valid where the model samples; {CONVENTION}"
            ) from None
        log_probs = {}
        for name, site in tr.items():
            if site["type"] != "sample":
                continue
            try:
                log_probs[name] = site["fn"].log_prob(site["value"])
            except Exception as exc:  # noqa: BLE001 - the site's distribution refused its own sample
                raise ModelError(
                    f"site {name!r}: evaluating its log-density failed ({type(exc).__name__}: {exc}); "
                    f"{CONVENTION}"
                ) from None
        for name, values in log_probs.items():
            values = np.asarray(values)
            bad = ~np.isfinite(values)
            if bad.any():
                raise ModelError(
                    f"site {name!r} has log-density {values[bad].flat[0]} on the model's own sample (draw {draw} "
                    f"at length {length}); every site's log_prob must be finite where the model samples "
                    f"(check its parameters and support); {CONVENTION}"
                )


def validate_prior(prior: Prior, *, length: int = 3, num_draws: int = 3) -> dict[str, SiteInfo]:
    """All checks: structure, kind (shape and dtype of ``y`` and ``x``), finite log-densities.

    Raises
    ------
    ModelError
        Naming the offending site and quoting the convention.
    """
    tr = model_trace(prior, length)
    table = check_sites(site_table(tr, length), length)
    check_kind(prior, tr, length)
    check_log_density(prior, length=length, num_draws=num_draws)
    return table


__all__ = ["CONVENTION", "SCAN_TAG", "SiteInfo", "model_trace", "site_table", "check_sites", "check_kind", "distribution_name", "check_log_density", "validate_prior"]
