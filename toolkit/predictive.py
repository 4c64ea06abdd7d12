"""Predictions as labelled xarray Datasets, and the `Predictor` base class.

Every predictor returns the comparison variables without the predictor and
scenario dims (DESIGN.md, "Evaluation"): tokens give ``log_prob (episode,
position, outcome)`` and ``log_score (episode, position)``; regression gives
``log_score``, ``mean``, ``variance``, ``quantile_value (..., quantile)``,
``grid_log_density (..., y_grid)`` and, from predictors with a CDF, ``pit``
(the predictive CDF at the realised y_t).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import xarray as xr

from .dims import EPISODE, OUTCOME, POSITION, QUANTILE, QUANTILES, Y_GRID
from .episodes import Episodes

if TYPE_CHECKING:
    from .prior import Prior
    from .scenario import Scenario


class Predictor(ABC):
    """Maps `Episodes` to per-position predictive distributions of y_t given y_<t (and x_<=t).

    Position t uses nothing at or after t. Subclasses implement `predict`;
    every other hook has a default here (NumPyro's ``MCMCKernel`` pattern), so
    callers never ask an object what it has:

    - ``name``: the predictor's name in the comparison Dataset.
    - ``kind``: the data kind it predicts (``"tokens"``, ``"regression"``), or
      None for a predictor of any kind (Bayes, the oracle).
    - ``context``: the longest episode it reads (a learner's context), or None.
    - `bind`: the predictor for one scenario; predictors that depend on it
      (the oracle, the best mixture) return a bound copy, or None when they
      have no answer there (their cells stay NaN).
    - `run`: the predictions plus what the engine keeps beside them (the MCMC
      engine's ArviZ InferenceData).
    - `token_log_prob`: next-token log-probabilities of raw token arrays
      (sampling completions); learners answer it without building a Dataset.
    - `describe`: JSON-safe provenance.
    """

    name: str = "predictor"
    kind: str | None = None
    context: int | None = None

    @abstractmethod
    def predict(self, episodes: Episodes, *, y_grid: np.ndarray | None = None) -> xr.Dataset:
        """The prediction Dataset: the comparison variables without the predictor and scenario dims."""

    def run(self, episodes: Episodes, *, y_grid: np.ndarray | None = None) -> Prediction:
        """`predict`, plus what the engine keeps beside the predictions (here nothing)."""
        return Prediction(self.predict(episodes, y_grid=y_grid))

    def bind(self, prior: Prior, scenario: Scenario, episodes: Episodes) -> Predictor | None:
        """The predictor to use on ``scenario``'s ``episodes``: itself, unless it depends on the scenario."""
        return self

    def token_log_prob(self, y: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """log p(y_t = v | y_<t) for token arrays ``y`` (episode, position): shape (episode, position, outcome)."""
        return self.predict(Episodes(y=y, mask=mask))["log_prob"].values

    def describe(self) -> dict[str, Any]:
        """JSON-safe provenance (settings, fitted values); empty by default."""
        return {}


class Prediction(NamedTuple):
    """What `Predictor.run` returns: the prediction Dataset and, from MCMC, its ArviZ InferenceData.

    A named tuple: ``ds, idata = predictor.run(episodes)``.
    """

    dataset: xr.Dataset
    inference_data: Any = None  # arviz.InferenceData of the run's draws, or None


def position_coord(length: int) -> np.ndarray:
    """1-based positions: position t predicts y_t from the t - 1 earlier items."""
    return np.arange(1, length + 1)


def token_predictions(log_prob: np.ndarray, episodes: Episodes, outcomes) -> xr.Dataset:
    """Wrap token log-probabilities as a prediction Dataset.

    Parameters
    ----------
    log_prob : np.ndarray, shape (episode, position, outcome)
        log p(y_t = v | y_<t) for every outcome v; NaN where undefined.
    episodes : Episodes
        The episodes predicted; ``y`` picks ``log_score``. Masked (padding)
        positions get a NaN ``log_score``.
    outcomes : sequence of str
        Outcome labels, one per last-axis entry of ``log_prob``.
    """
    log_prob = np.asarray(log_prob, dtype=np.float64)
    num_episodes, length, num_outcomes = log_prob.shape
    if (num_episodes, length) != episodes.y.shape or num_outcomes != len(outcomes):
        raise ValueError(
            f"log_prob shape {log_prob.shape} does not match episodes {episodes.y.shape} x {len(outcomes)} outcomes"
        )
    y = np.clip(episodes.y.astype(np.int64), 0, num_outcomes - 1)
    log_score = np.take_along_axis(log_prob, y[..., None], axis=-1)[..., 0]
    if episodes.mask is not None:
        # padding has no realised outcome; the distribution itself stays (a prompt's next token sits there)
        log_score = np.where(episodes.mask, log_score, np.nan)
    return xr.Dataset(
        {
            "log_prob": ((EPISODE, POSITION, OUTCOME), log_prob),
            "log_score": ((EPISODE, POSITION), log_score),
        },
        coords={EPISODE: np.arange(num_episodes), POSITION: position_coord(length), OUTCOME: list(outcomes)},
    )


def regression_predictions(
    *,
    log_score: np.ndarray,
    mean: np.ndarray,
    variance: np.ndarray,
    quantile_value: np.ndarray | None = None,
    grid_log_density: np.ndarray | None = None,
    y_grid: np.ndarray | None = None,
    quantiles=QUANTILES,
    pit: np.ndarray | None = None,
) -> xr.Dataset:
    """Wrap regression predictions as a prediction Dataset.

    Parameters
    ----------
    log_score, mean, variance : np.ndarray, shape (episode, position)
        Log density of the realised y_t, predictive mean and variance.
    quantile_value : np.ndarray, shape (episode, position, quantile), optional
        Predictive quantiles at levels ``quantiles``.
    grid_log_density : np.ndarray, shape (episode, position, y_grid), optional
        Log predictive density at the points ``y_grid``.
    pit : np.ndarray, shape (episode, position), optional
        The predictive CDF at the realised y_t, F(y_t | context): Uniform(0, 1) over episodes when the
        predictive is calibrated (the probability integral transform).
    """
    num_episodes, length = np.shape(log_score)
    data = {
        "log_score": ((EPISODE, POSITION), np.asarray(log_score, np.float64)),
        "mean": ((EPISODE, POSITION), np.asarray(mean, np.float64)),
        "variance": ((EPISODE, POSITION), np.asarray(variance, np.float64)),
    }
    coords = {EPISODE: np.arange(num_episodes), POSITION: position_coord(length)}
    if quantile_value is not None:
        data["quantile_value"] = ((EPISODE, POSITION, QUANTILE), np.asarray(quantile_value, np.float64))
        coords[QUANTILE] = np.asarray(quantiles, np.float64)
    if pit is not None:
        data["pit"] = ((EPISODE, POSITION), np.asarray(pit, np.float64))
    if grid_log_density is not None:
        data["grid_log_density"] = ((EPISODE, POSITION, Y_GRID), np.asarray(grid_log_density, np.float64))
        coords[Y_GRID] = np.asarray(y_grid, np.float64)
    return xr.Dataset(data, coords=coords)


__all__ = ["Predictor", "Prediction", "token_predictions", "regression_predictions", "position_coord"]
