"""`compare`: every predictor on every scenario, position by position, in one Dataset."""

from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

import jax
import numpy as np
import xarray as xr

from .dims import EPISODE, FEATURE, POSITION, PREDICTOR, SCENARIO
from .errors import ConfigError, DataError
from .io import provenance
from .predictive import Prediction, Predictor, position_coord
from .prior import Prior
from .scenario import Scenario

# Variables that describe the scenario's data rather than one predictor's answer.
SCENARIO_LEVEL = ("prior_log_prob", "bayes_defined", "r_hat", "ess_bulk", "ess_tail", "divergences", "mcse")


def _as_scenarios(prior: Prior, scenarios) -> list[Scenario]:
    if isinstance(scenarios, Mapping):
        items = []
        for name, sc in scenarios.items():
            if isinstance(sc, Prior):
                sc = Scenario.misspecified(sc, name)
            elif isinstance(sc, Scenario):
                sc.name = name
            else:
                raise ConfigError(f"scenario {name!r} must be a Scenario or a Prior, got {type(sc).__name__}")
            items.append(sc)
        return items
    return list(scenarios)


def check_predictors(prior: Prior, predictors: Mapping[str, Any]) -> None:
    """`ConfigError` for an object that is not a `Predictor`, or one of another data kind than ``prior``'s."""
    for name, predictor in predictors.items():
        if not isinstance(predictor, Predictor):
            raise ConfigError(
                f"predictor {name!r} is a {type(predictor).__name__}; a predictor subclasses toolkit.Predictor "
                "and implements predict(episodes, *, y_grid=None)"
            )
        if predictor.kind is not None and predictor.kind != prior.kind:
            raise ConfigError(
                f"predictor {name!r} predicts {predictor.kind} data, but prior {prior.name!r} is a {prior.kind} prior"
            )


def _predictions(name: str, bound: Predictor, prior: Prior, episodes, y_grid) -> Prediction:
    prediction = bound.run(episodes, y_grid=y_grid)
    missing = [v for v in prior.data_kind.prediction_variables if v not in prediction.dataset]
    if missing:
        raise DataError(
            f"predictor {name!r} returned no {', '.join(missing)}; a {prior.kind} predictor's Dataset holds "
            f"{', '.join(prior.data_kind.prediction_variables)} (toolkit.token_predictions / regression_predictions)"
        )
    return prediction


def _scenario_dataset(prior, scenario, predictors, episodes, y_grid, inference_data):
    per_predictor, scenario_vars = {}, {}
    ordered = sorted(predictors.items(), key=lambda kv: kv[0] != "bayes")  # "bayes" supplies shared vars first
    for name, predictor in ordered:
        bound = predictor.bind(prior, scenario, episodes)
        if bound is None:
            continue
        prediction = _predictions(name, bound, prior, episodes, y_grid)
        ds = prediction.dataset
        for var in SCENARIO_LEVEL:
            if var in ds:
                scenario_vars.setdefault(var, ds[var])
        per_predictor[name] = ds.drop_vars([v for v in SCENARIO_LEVEL if v in ds])
        if prediction.inference_data is not None and inference_data is not None:
            inference_data[scenario.name] = prediction.inference_data
    names = list(predictors)
    present = [n for n in names if n in per_predictor]
    if present:
        stacked = xr.concat([per_predictor[n] for n in present], dim=PREDICTOR, join="outer")
        stacked = stacked.assign_coords({PREDICTOR: present}).reindex({PREDICTOR: names})
    else:
        stacked = xr.Dataset(coords={PREDICTOR: names})
    coords = {EPISODE: np.arange(episodes.num_episodes), POSITION: position_coord(episodes.length)}
    data = xr.Dataset({"y": ((EPISODE, POSITION), episodes.y)}, coords=coords)
    if episodes.x is not None:
        data["x"] = ((EPISODE, POSITION, FEATURE), episodes.x)
    if episodes.mask is not None:
        data["mask"] = ((EPISODE, POSITION), episodes.mask)
    for var, value in scenario_vars.items():
        data[var] = value
    return xr.merge([stacked, data], join="outer", compat="override")


def compare(
    prior: Prior,
    scenarios: Mapping[str, Scenario | Prior] | Sequence[Scenario],
    predictors: Mapping[str, Any],
    *,
    num_episodes: int,
    length: int,
    key,
    y_grid: np.ndarray | None = None,
    inference_data: dict | None = None,
    attrs: dict | None = None,
) -> xr.Dataset:
    """Evaluate every predictor on every scenario's episodes: the comparison Dataset.

    Parameters
    ----------
    prior : Prior
        The training prior π.
    scenarios : mapping of name to Scenario or Prior, or a sequence of Scenario
        A bare Prior is a misspecified source q.
    predictors : mapping of name to Predictor
        Predictors with ``bind(prior, scenario, episodes)`` (oracle,
        best_mixture) are bound per scenario; ``None`` from bind leaves NaN.
    num_episodes, length : int
        Episodes sampled per scenario (prompt scenarios bring their own).
    key : jax.random key
        Scenario i samples with ``fold_in(key, i)``.
    y_grid : np.ndarray, optional
        Regression only: the grid for ``grid_log_density``.
    inference_data : dict, optional
        Filled with ``{scenario: az.InferenceData}`` from predictors that ran MCMC.

    Returns
    -------
    xr.Dataset
        Dims ``predictor, scenario, episode, position`` (+ ``outcome`` or
        ``quantile, y_grid, feature``), variables per DESIGN.md.
    """
    if num_episodes < 1 or length < 1:
        raise ConfigError(f"num_episodes and length must be positive, got {num_episodes} and {length}")
    check_predictors(prior, predictors)
    items = _as_scenarios(prior, scenarios)
    names = [s.name for s in items]
    if len(set(names)) != len(names):
        raise ConfigError(f"scenario names must be unique, got {names}")
    parts = []
    for i, scenario in enumerate(items):
        episodes = scenario.episodes(jax.random.fold_in(key, i), num_episodes, length)
        parts.append(_scenario_dataset(prior, scenario, predictors, episodes, y_grid, inference_data))
    if any("mask" in part for part in parts):
        # A scenario without a mask holds data everywhere; left out, the concat would fill its mask with
        # NaN -> False and every metric would drop it. Only the outer join's own fill is padding.
        parts = [part if "mask" in part else part.assign(mask=xr.ones_like(part["y"], dtype=bool)) for part in parts]
    ds = xr.concat(parts, dim=SCENARIO, join="outer", coords="minimal", compat="override")
    ds = ds.assign_coords({SCENARIO: names})
    ds = ds.transpose(PREDICTOR, SCENARIO, EPISODE, POSITION, ...)
    for var in ("bayes_defined", "mask"):
        if var in ds:
            ds[var] = ds[var].fillna(False).astype(bool)
    ds = ds.assign_coords(
        scenario_kind=(SCENARIO, [s.kind for s in items]),
        scenario_description=(SCENARIO, [s.description for s in items]),
    )
    for param in sorted({k for s in items for k in s.params}):
        values = [s.params.get(param) for s in items]
        if all(v is None or isinstance(v, (int, float)) for v in values):
            ds = ds.assign_coords({f"scenario_{param}": (SCENARIO, [np.nan if v is None else float(v) for v in values])})
        else:
            ds = ds.assign_coords({f"scenario_{param}": (SCENARIO, [json.dumps(v) for v in values])})
    ds.attrs = provenance(
        prior=prior.describe(),
        predictors={n: p.describe() for n, p in predictors.items()},
        num_episodes=num_episodes,
        length=length,
        key=np.asarray(jax.random.key_data(key)).tolist(),
        **(attrs or {}),
    )
    return ds


__all__ = ["compare", "check_predictors", "SCENARIO_LEVEL"]
