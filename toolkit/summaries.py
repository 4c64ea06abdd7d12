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
from .dims import EPISODE, POSITION, PREDICTOR, SCENARIO
from .kinds import DataKind, get_kind, kind_of


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


def metrics_dataset(
    ds: xr.Dataset,
    *,
    kind: str | DataKind | None = None,
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
    kind : {"tokens", "regression"} or DataKind, optional
        The data kind; default the kind of the prior recorded in ``ds.attrs``.
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
    kind = kind_of(ds) if kind is None else get_kind(kind)
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
    variable = kind.distribution[0]  # absent from a regression run without a y-grid
    if reference in predictors:
        out["excess_loss"] = metrics.xr_excess_loss(score, score.sel({PREDICTOR: reference}, drop=True), EPISODE)
        if variable in ds:
            dist = ds[variable]
            kl = kind.divergence(dist.sel({PREDICTOR: reference}, drop=True), dist).rename("kl").where(valid)
            out["kl_from_reference"] = metrics.xr_cross_entropy(-kl, EPISODE)
            out["kl_from_reference"].attrs = {"long_name": f"KL({reference} || predictor), mean over episodes", "units": "nats"}
    out = out.merge(kind.metrics(ds, valid=valid, reference=reference if reference in predictors else None,
                                 mixture=mixture))
    for name in ("cross_entropy", "kl_from_reference", "excess_loss", *kind.averaged_metrics):
        if name in out:
            out[f"{name}_mean"] = metrics.xr_cross_entropy(-out[name], POSITION)
    out.attrs = {"reference": reference, "mixture": mixture, "bootstrap_resamples": bootstrap_resamples, "seed": seed}
    if "r_hat" in ds:
        out = _with_mcmc_flags(out, ds, valid)
    return out.transpose(PREDICTOR, SCENARIO, ...)


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
