"""The two kinds of data a prior produces, token sequences and regression episodes, as one object each.

What differs between them is asked of these objects rather than tested on
the ``kind`` string elsewhere: the model's call arguments (``model(length,
y=None)`` against ``model(length, x=None, y=None)``), what the prior's data
look like (outcome labels or the number of input features), the prediction
Dataset's layout, the metrics that only one of them has, the learner
architectures and baselines that fit it, and its default analysis.

>>> from toolkit.kinds import get_kind
>>> get_kind("tokens").model_kwargs(y=None)
{'y': None}
>>> get_kind("regression").model_kwargs(x=None, y=None)
{'x': None, 'y': None}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import jax.numpy as jnp
import numpy as np
import xarray as xr

from . import metrics
from .dims import EPISODE, FEATURE, OUTCOME, PREDICTOR, QUANTILE, QUANTILES, X_SITE, Y_GRID, Y_SITE
from .errors import DataError, ModelError, UnknownNameError
from .predictive import regression_predictions, token_predictions
from .regression import quantiles_from_cdf
from .validation import CONVENTION, distribution_name

if TYPE_CHECKING:
    from .episodes import Episodes
    from .prior import Prior

# Below this Jensen-Shannon distance the two references count as equal (relative distance NaN).
RELATIVE_DISTANCE_MIN_SEPARATION = 1e-6


class DataKind:
    """What one kind of data needs: its model arguments, prediction layout, metrics, learners and baselines.

    Subclasses set the class attributes and implement the methods; `get_kind`
    returns the one instance of each.
    """

    name: ClassVar[str]
    finite_outcomes: ClassVar[bool]  # y takes one of V labelled values: predictives are tables over outcomes
    y_dtype: ClassVar[type]  # dtype of y in episodes
    prediction_variables: ClassVar[tuple[str, ...]]  # every predictor's prediction Dataset holds these
    distribution: ClassVar[tuple[str, str]]  # (variable, dim) holding the whole predictive: KL runs over it
    default_predictors: ClassVar[tuple[str, ...]]  # evaluation.predictors when the config names none
    baselines: ClassVar[tuple[str, ...]]  # the plain baselines that predict this kind
    default_architecture: ClassVar[str]  # the learner architecture (its config name) a run trains by default
    default_analysis: ClassVar[str]  # the analysis every run of this kind gets
    averaged_metrics: ClassVar[tuple[str, ...]] = ()  # kind-specific metrics that also get a position mean

    def __repr__(self) -> str:
        return f"DataKind({self.name!r})"

    # ------------------------------------------------------------------ the model
    def model_kwargs(self, *, y=None, x=None) -> dict[str, Any]:
        """The keyword arguments of ``model(length, **kwargs)``: observations (``None`` samples them)."""
        raise NotImplementedError

    def data_shape(self, sites: dict, *, outcomes=None, x_dim=None) -> tuple[tuple[str, ...] | None, int | None]:
        """``(outcomes, x_dim)`` of a prior from its sample sites and what its author declared."""
        raise NotImplementedError

    def check_trace(self, prior: Prior, tr: dict, length: int) -> None:
        """`ModelError` unless the trace's ``y`` (and ``x``) have the shape and dtype this kind needs."""
        raise NotImplementedError

    def cast_y(self, y: np.ndarray) -> np.ndarray:
        """``y`` in this kind's dtype."""
        return np.asarray(y).astype(self.y_dtype, copy=False)

    # ------------------------------------------------------------------ predictions
    def check_episodes(self, episodes: Episodes, *, outcomes=None) -> None:
        """`DataError` unless ``episodes`` hold data of this kind (tokens: of the labels ``outcomes``)."""

    def predictions(self, out: dict[str, np.ndarray], episodes: Episodes, *, outcomes=None, y_grid=None) -> xr.Dataset:
        """An engine's arrays (``log_prob``; or ``log_score``, ``mean``, ...) as the prediction Dataset."""
        raise NotImplementedError

    def from_distribution(self, d, episodes: Episodes, prior: Prior, *, y_grid=None) -> xr.Dataset:
        """The prediction Dataset of a NumPyro distribution with batch shape (episode, position)."""
        raise NotImplementedError

    def evaluation_grid(self, prior: Prior, *, grid=None, num: int = 0, key=None, length: int = 1) -> np.ndarray | None:
        """The y-grid of an evaluation (regression): as given, else from the prior's samples; None for tokens."""
        return None

    # ------------------------------------------------------------------ metrics
    def divergence(self, a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
        """KL(a ‖ b) cell by cell over this kind's distribution dim."""
        raise NotImplementedError

    def metrics(self, ds: xr.Dataset, *, valid: xr.DataArray, reference: str | None, mixture: str) -> xr.Dataset:
        """The metrics only this kind has, reduced over episodes (predictor, scenario, position)."""
        return xr.Dataset()

    def source_entropy(self, ds: xr.Dataset, oracle: str = "oracle") -> xr.DataArray | None:
        """H(q) per (scenario, position), where the oracle's whole predictive is stored; else None."""
        return None


class Tokens(DataKind):
    """Integer outcomes in ``[0, V)``, each labelled: next-token tables."""

    name = "tokens"
    finite_outcomes = True
    y_dtype = np.int64
    prediction_variables = ("log_prob", "log_score")
    distribution = ("log_prob", OUTCOME)
    default_predictors = ("bayes", "oracle", "best_mixture", "frequency", "learner")
    baselines = ("frequency",)
    default_architecture = "transformer"
    default_analysis = "tokens"

    def model_kwargs(self, *, y=None, x=None) -> dict[str, Any]:
        return {"y": y}

    def data_shape(self, sites, *, outcomes=None, x_dim=None):
        y_site = sites[Y_SITE]
        if outcomes is None:
            if not y_site.has_enumerate_support or not y_site.support_size:
                raise ModelError(
                    "a tokens prior needs `outcomes=` labels or a 'y' distribution with finite support "
                    "(Categorical, Bernoulli)"
                )
            outcomes = tuple(str(v) for v in range(y_site.support_size))
        outcomes = tuple(str(o) for o in outcomes)
        if len(set(outcomes)) != len(outcomes):
            raise ModelError(f"outcome labels must be distinct, got {list(outcomes)}; `.sel(outcome=...)` needs one each")
        return outcomes, None

    def check_trace(self, prior, tr, length):
        value, fn = tr[Y_SITE]["value"], tr[Y_SITE]["fn"]
        discrete = bool(getattr(fn.support, "is_discrete", False))
        if np.shape(value) != (length,):
            raise ModelError(
                f"site 'y' has shape {np.shape(value)} at length {length}; a tokens prior emits one integer "
                f"token per position, shape ({length},); {CONVENTION}"
            )
        if not discrete or not jnp.issubdtype(jnp.result_type(value), jnp.integer) and jnp.result_type(value) != bool:
            raise ModelError(
                f"site 'y' draws {distribution_name(fn)} values of dtype {jnp.result_type(value)}, but kind='tokens' "
                "needs integer tokens in [0, V) (Categorical, Bernoulli); declare kind='regression' for real y"
            )
        if prior.outcomes is not None and getattr(fn, "has_enumerate_support", False):
            try:
                size = int(fn.enumerate_support(expand=False).shape[0])
            except Exception:  # noqa: BLE001 - some supports are data-dependent
                size = None
            if size is not None and size != len(prior.outcomes):
                raise ModelError(
                    f"site 'y' has {size} outcomes ({distribution_name(fn)}) but the prior declares "
                    f"{len(prior.outcomes)} outcome labels {list(prior.outcomes)}"
                )

    def check_episodes(self, episodes, *, outcomes=None):
        if episodes.x is not None:
            raise DataError("the episodes carry regression inputs x; token episodes hold y alone")
        episodes.check_tokens(len(outcomes), labels=outcomes)

    def predictions(self, out, episodes, *, outcomes=None, y_grid=None):
        return token_predictions(out["log_prob"], episodes, outcomes)

    def from_distribution(self, d, episodes, prior, *, y_grid=None):
        values = jnp.arange(prior.num_outcomes).reshape((-1, 1, 1))
        log_prob = np.moveaxis(np.asarray(d.log_prob(values)), 0, -1)
        return token_predictions(log_prob, episodes, prior.outcomes)

    def divergence(self, a, b):
        return metrics.xr_kl_divergence(a, b, dim=OUTCOME)

    def metrics(self, ds, *, valid, reference, mixture):
        """Mean Jensen–Shannon distances to the reference and the best mixture, and the relative distance."""
        out = xr.Dataset()
        predictors = list(ds[PREDICTOR].values)
        if reference not in predictors or mixture not in predictors:
            return out
        dist = ds["log_prob"]
        ref = dist.sel({PREDICTOR: reference}, drop=True)
        mix = dist.sel({PREDICTOR: mixture}, drop=True)
        # sqrt(JS) is a metric, so by the triangle inequality the relative distance stays in [-1, 1]
        js_a = np.sqrt(metrics.xr_js_divergence(dist, ref)).where(valid)
        js_b = np.sqrt(metrics.xr_js_divergence(dist, mix)).where(valid)
        js_ab = np.sqrt(metrics.xr_js_divergence(ref, mix)).where(valid)
        mean = lambda v: metrics.xr_cross_entropy(-v, EPISODE)  # noqa: E731 - nan-aware episode mean
        out["js_distance_to_reference"], out["js_distance_to_mixture"] = mean(js_a), mean(js_b)
        # where the references agree to rounding, there is nothing to place the predictor between
        d_ab = mean(js_ab)
        d_ab = d_ab.where(d_ab > RELATIVE_DISTANCE_MIN_SEPARATION, 0.0)
        out["relative_distance"] = metrics.xr_relative_distance(mean(js_a), mean(js_b), d_ab)
        out["relative_distance"].attrs = {
            "long_name": f"(d(h,{reference}) - d(h,{mixture})) / d({reference},{mixture}), "
            "d = mean over episodes of the Jensen-Shannon distance sqrt(JS)",
            "meaning": f"-1: predicts like {reference}; +1: predicts like {mixture}",
        }
        return out

    def source_entropy(self, ds, oracle="oracle"):
        if oracle not in ds[PREDICTOR].values:
            return None
        lp = ds["log_prob"].sel({PREDICTOR: oracle})
        return (-(np.exp(lp) * lp).sum(OUTCOME, skipna=False)).mean(EPISODE)


class Regression(DataKind):
    """Real y from real inputs x of ``x_dim`` features: densities, moments and quantiles."""

    name = "regression"
    finite_outcomes = False
    y_dtype = np.float64
    prediction_variables = ("log_score", "mean", "variance")
    distribution = ("grid_log_density", Y_GRID)
    default_predictors = ("bayes", "oracle", "ridge", "least_squares", "knn", "averaging", "learner")
    baselines = ("ridge", "least_squares", "knn", "averaging")
    default_architecture = "pfn"
    default_analysis = "regression"
    averaged_metrics = ("squared_error", "squared_error_to_reference", "coverage_50", "coverage_90")

    def model_kwargs(self, *, y=None, x=None) -> dict[str, Any]:
        return {"x": x, "y": y}

    def data_shape(self, sites, *, outcomes=None, x_dim=None):
        if X_SITE not in sites:
            raise ModelError(f"a regression prior needs an 'x' sample site; {CONVENTION}")
        shape = sites[X_SITE].shape
        return None, int(x_dim if x_dim is not None else (shape[-1] if len(shape) > 1 else 1))

    def check_trace(self, prior, tr, length):
        value, fn = tr[Y_SITE]["value"], tr[Y_SITE]["fn"]
        discrete = bool(getattr(fn.support, "is_discrete", False))
        if discrete or not jnp.issubdtype(jnp.result_type(value), jnp.floating):
            raise ModelError(
                f"site 'y' draws {distribution_name(fn)} values of dtype {jnp.result_type(value)}, but "
                "kind='regression' needs real y (e.g. Normal); declare kind='tokens' for integer outcomes"
            )
        if np.shape(value) != (length,):
            raise ModelError(
                f"site 'y' has shape {np.shape(value)} at length {length}; a regression prior emits one real y "
                f"per position, shape ({length},); {CONVENTION}"
            )
        if X_SITE not in tr:
            raise ModelError(f"a regression prior needs an 'x' sample site; {CONVENTION}")
        x = tr[X_SITE]["value"]
        if np.shape(x)[:1] != (length,) or np.ndim(x) > 2:
            raise ModelError(
                f"site 'x' has shape {np.shape(x)} at length {length}; it must be ({length},) or ({length}, features)"
            )
        if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
            raise ModelError(f"site 'x' has dtype {jnp.result_type(x)}; regression inputs must be real")

    def check_episodes(self, episodes, *, outcomes=None):
        if episodes.x is None:
            raise DataError("the episodes carry no x: regression episodes hold inputs x (episode, position, feature)")

    def predictions(self, out, episodes, *, outcomes=None, y_grid=None):
        quantile_value = out.get("quantile_value")
        if quantile_value is None and y_grid is not None and "grid_cdf" in out:
            quantile_value = quantiles_from_cdf(np.asarray(y_grid), out["grid_cdf"])
        return regression_predictions(
            log_score=out["log_score"], mean=out["mean"], variance=out["variance"], quantile_value=quantile_value,
            grid_log_density=out.get("grid_log_density") if y_grid is not None else None, y_grid=y_grid,
            pit=out.get("pit"),
        )

    def from_distribution(self, d, episodes, prior, *, y_grid=None):
        y = jnp.asarray(episodes.y, dtype=jnp.float64)
        quantile_value = grid_log_density = None
        if y_grid is not None:
            grid = jnp.asarray(y_grid, dtype=jnp.float64).reshape((-1, 1, 1))
            grid_log_density = np.moveaxis(np.asarray(d.log_prob(grid)), 0, -1)
        levels = jnp.asarray(QUANTILES).reshape((-1, 1, 1))
        try:
            quantile_value = np.moveaxis(np.asarray(d.icdf(levels)), 0, -1)
        except NotImplementedError:
            if y_grid is not None:
                quantile_value = quantiles_from_cdf(np.asarray(y_grid), np.moveaxis(np.asarray(d.cdf(grid)), 0, -1))
        try:
            pit = np.asarray(d.cdf(y))
        except NotImplementedError:
            pit = None
        return regression_predictions(
            log_score=np.asarray(d.log_prob(y)),
            mean=np.broadcast_to(np.asarray(d.mean), y.shape),
            variance=np.broadcast_to(np.asarray(d.variance), y.shape),
            quantile_value=quantile_value,
            grid_log_density=grid_log_density,
            y_grid=y_grid,
            pit=pit,
        )

    def evaluation_grid(self, prior, *, grid=None, num=0, key=None, length=1):
        """``grid = (low, high, num)`` as given; else ``num`` points over the prior's 0.1 %–99.9 % range of y,
        widened by half its width; ``num = 0`` means none."""
        if grid is not None:
            low, high, points = grid
            return np.linspace(low, high, points)
        if num == 0:
            return None
        y = prior.sample(key, 4096, length, jit=False).y
        low, high = np.quantile(y, [0.001, 0.999])
        pad = 0.5 * (high - low) if high > low else 1.0
        return np.linspace(low - pad, high + pad, num)

    def divergence(self, a, b):
        return metrics.xr_grid_kl_divergence(a, b, dim=Y_GRID)

    def metrics(self, ds, *, valid, reference, mixture):
        """Squared errors of the predictive mean (divided by d) and coverage of the central intervals.

        Only cells with a realised y count (padding never does); a point
        predictor's NaN quantiles leave its coverage NaN.
        """
        d = ds.sizes.get(FEATURE, 1)
        y = ds["y"].where(ds["mask"]) if "mask" in ds else ds["y"]
        mean = ds["mean"]
        out = xr.Dataset()
        out["squared_error"] = metrics.xr_squared_error(mean, y, EPISODE, scale=d)
        out["squared_error"].attrs = {
            "long_name": "mean over episodes of (predictive mean - y_t)^2 / d, d = number of features",
        }
        if reference is not None:
            ref = mean.sel({PREDICTOR: reference}, drop=True)
            out["squared_error_to_reference"] = metrics.xr_squared_error(mean, ref.where(y.notnull()), EPISODE, scale=d)
            out["squared_error_to_reference"].attrs = {
                "long_name": f"mean over episodes of (predictive mean - {reference}'s mean)^2 / d",
            }
        if "quantile_value" in ds:
            q = ds["quantile_value"]
            levels = [float(v) for v in q[QUANTILE].values]
            for name, (lo, hi) in {"coverage_50": (0.25, 0.75), "coverage_90": (0.05, 0.95)}.items():
                if lo in levels and hi in levels:
                    out[name] = metrics.xr_coverage(y, q.sel({QUANTILE: lo}, drop=True), q.sel({QUANTILE: hi}, drop=True))
                    out[name].attrs = {"long_name": f"fraction of y_t inside the central {round((hi - lo) * 100)} % "
                                                     f"interval (quantiles {lo}-{hi})"}
        return out


TOKENS = Tokens()
REGRESSION = Regression()
_KINDS: dict[str, DataKind] = {k.name: k for k in (TOKENS, REGRESSION)}
KIND_NAMES = tuple(_KINDS)


def get_kind(name: str) -> DataKind:
    """The data kind called ``name`` (``"tokens"`` or ``"regression"``)."""
    if isinstance(name, DataKind):
        return name
    if name not in _KINDS:
        raise UnknownNameError("data kind", str(name), _KINDS)
    return _KINDS[name]


def kind_of(ds: xr.Dataset) -> DataKind:
    """The data kind of a comparison Dataset, read from the prior recorded in its attrs."""
    import json

    prior = ds.attrs.get("prior", {})
    prior = json.loads(prior) if isinstance(prior, str) else prior
    if not isinstance(prior, dict) or "kind" not in prior:
        raise DataError("the Dataset records no prior kind in attrs['prior']; pass kind='tokens' or 'regression'")
    return get_kind(prior["kind"])


__all__ = ["DataKind", "kind_of", "Tokens", "Regression", "TOKENS", "REGRESSION", "KIND_NAMES", "get_kind",
           "RELATIVE_DISTANCE_MIN_SEPARATION"]
