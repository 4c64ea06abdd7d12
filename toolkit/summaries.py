"""The metrics Dataset (``metrics.nc``): the comparison reduced over episodes, position by position.

Built from the two-layer functions of `toolkit.metrics`; every variable keeps
the ``predictor``, ``scenario`` and ``position`` dims so a figure or a table
is one ``.sel`` away.
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from . import metrics
from .dims import EPISODE, FEATURE, OUTCOME, POSITION, PREDICTOR, QUANTILE, SCENARIO, Y_GRID


# Below this Jensen-Shannon distance the two references count as equal (relative distance NaN).
RELATIVE_DISTANCE_MIN_SEPARATION = 1e-6


def evaluation_mask(ds: xr.Dataset) -> xr.DataArray:
    """Cells whose prediction is evaluated: real outcomes, plus each prompt's next-token position.

    Padding after EOS is dropped; in a ``prompts`` scenario the position right
    after the prompt (which has no realised outcome) is kept, since the
    prediction there is what a prompt asks for.
    """
    if "mask" not in ds:
        return xr.ones_like(ds["y"], dtype=bool)
    mask = ds["mask"]
    before = mask.shift({POSITION: 1}, fill_value=True)
    is_prompt = ds["scenario_kind"] == "prompts" if "scenario_kind" in ds.coords else False
    # y is NaN only on the cells the scenario concat padded in (e.g. fewer prompts than episodes elsewhere)
    exists = ds["y"].notnull()
    return mask | (is_prompt & before & ~mask & exists)


def _distribution_divergence(ds: xr.Dataset, func, name: str, a: xr.DataArray, b: xr.DataArray) -> xr.DataArray:
    if OUTCOME in a.dims:
        return func(a, b, dim=OUTCOME).rename(name)
    return metrics.xr_grid_kl_divergence(a, b, dim=Y_GRID).rename(name)


def _distributions(ds: xr.Dataset) -> xr.DataArray | None:
    if "log_prob" in ds:
        return ds["log_prob"]
    if "grid_log_density" in ds:
        return ds["grid_log_density"]
    return None


def metrics_dataset(
    ds: xr.Dataset,
    *,
    reference: str = "bayes",
    mixture: str = "best_mixture",
    bootstrap_resamples: int = 1000,
    seed: int = 0,
) -> xr.Dataset:
    """Reduce the comparison Dataset over episodes.

    Parameters
    ----------
    ds : xr.Dataset
        The comparison Dataset (dims predictor, scenario, episode, position, ...).
    reference : str
        Predictor that KL, excess loss and relative distance are measured against (A).
    mixture : str
        Second reference (B) of the relative distance: −1 means "predicts like
        `reference`", +1 "predicts like `mixture`".
    bootstrap_resamples, seed : int
        Percentile bootstrap over episodes for the cross-entropy interval.

    Returns
    -------
    xr.Dataset
        ``cross_entropy``, ``cross_entropy_low``, ``cross_entropy_high``,
        ``num_defined`` (predictor, scenario, position); with the reference
        present: ``kl_from_reference`` (KL(reference‖predictor); exact over
        outcomes, on the y-grid for regression), ``excess_loss``; with both
        references: ``js_distance_to_reference``,
        ``js_distance_to_mixture`` (mean Jensen–Shannon distance, sqrt(JS)) and
        ``relative_distance`` (in [−1, 1] by the triangle inequality); for
        regression ``squared_error`` (of the predictive mean against y_t,
        divided by the number of features d), ``squared_error_to_reference``
        (against the reference's mean, / d), ``coverage_50`` and
        ``coverage_90`` (of the central quantile intervals); and position
        means ``*_mean`` (predictor, scenario).
    """
    valid = evaluation_mask(ds)
    score = ds["log_score"].where(ds["mask"]) if "mask" in ds else ds["log_score"]
    interval = metrics.xr_cross_entropy_interval(
        score, EPISODE, num_resamples=bootstrap_resamples, rng=np.random.default_rng(seed)
    )
    out = xr.Dataset(
        {
            "cross_entropy": interval["estimate"],
            "cross_entropy_low": interval["low"],
            "cross_entropy_high": interval["high"],
            "num_defined": interval["num_defined"],
        }
    )
    out["cross_entropy"].attrs = {"long_name": "mean -log p(y_t | y_<t) over episodes", "units": "nats"}
    predictors = list(ds[PREDICTOR].values)
    dist = _distributions(ds)
    if reference in predictors:
        out["excess_loss"] = metrics.xr_excess_loss(score, score.sel({PREDICTOR: reference}, drop=True), EPISODE)
        if dist is not None:
            ref = dist.sel({PREDICTOR: reference}, drop=True)
            kl = _distribution_divergence(ds, metrics.xr_kl_divergence, "kl", ref, dist).where(valid)
            out["kl_from_reference"] = metrics.xr_cross_entropy(-kl, EPISODE)
            out["kl_from_reference"].attrs = {"long_name": f"KL({reference} || predictor), mean over episodes", "units": "nats"}
            if mixture in predictors and OUTCOME in dist.dims:
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
    if "mean" in ds:
        out = out.merge(_regression_metrics(ds, reference if reference in predictors else None))
    for name in ("cross_entropy", "kl_from_reference", "excess_loss", *REGRESSION_AVERAGED):
        if name in out:
            out[f"{name}_mean"] = metrics.xr_cross_entropy(-out[name], POSITION)
    out.attrs = {"reference": reference, "mixture": mixture, "bootstrap_resamples": bootstrap_resamples, "seed": seed}
    if "r_hat" in ds:
        out = _with_mcmc_flags(out, ds, valid)
    return out.transpose(PREDICTOR, SCENARIO, ...)


# Regression metrics that also get a position mean ``*_mean``.
REGRESSION_AVERAGED = ("squared_error", "squared_error_to_reference", "coverage_50", "coverage_90")


def _regression_metrics(ds: xr.Dataset, reference: str | None) -> xr.Dataset:
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


def _with_mcmc_flags(out: xr.Dataset, ds: xr.Dataset, valid: xr.DataArray) -> xr.Dataset:
    """Count, per (scenario, position), the MCMC cells and those whose diagnostics fail.

    The MCMC predictor's metrics at a (scenario, position) with ``mcmc_flagged > 0``
    average over unconverged cells; the report marks them rather than mixing them in silently.
    """
    from .mcmc import ESS_BULK_MIN, R_HAT_MAX, unconverged

    ran = ds["divergences"].notnull() & valid
    out["mcmc_cells"] = ran.sum(EPISODE)
    out["mcmc_flagged"] = (unconverged(ds) & ran).sum(EPISODE)
    out["mcmc_flagged"].attrs = {
        "long_name": f"MCMC cells with r_hat > {R_HAT_MAX}, ess_bulk < {ESS_BULK_MIN} or a divergence",
    }
    described = ds.attrs.get("predictors", {})
    if isinstance(described, str):
        described = json.loads(described)
    out.attrs["mcmc_predictors"] = [n for n, d in described.items() if isinstance(d, dict) and d.get("engine") == "mcmc"]
    return out


__all__ = ["metrics_dataset", "evaluation_mask"]
