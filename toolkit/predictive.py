"""Predictions as labelled xarray Datasets, and the `Predictor` protocol.

Every predictor returns the comparison variables without the predictor and
scenario dims (DESIGN.md, "Evaluation"): tokens give ``log_prob (episode,
position, outcome)`` and ``log_score (episode, position)``; regression gives
``log_score``, ``mean``, ``variance``, ``quantile_value (..., quantile)`` and
``grid_log_density (..., y_grid)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import xarray as xr

from .dims import EPISODE, OUTCOME, POSITION, QUANTILE, QUANTILES, Y_GRID
from .episodes import Episodes

if TYPE_CHECKING:
    from .prior import Prior
    from .scenario import Scenario


@runtime_checkable
class Predictor(Protocol):
    """Maps `Episodes` to per-position predictive distributions of y_t given y_<t (and x_<=t).

    Position t uses nothing at or after t. A predictor that depends on the
    scenario (the oracle, the best mixture) also has
    ``bind(prior, scenario, episodes) -> Predictor | None``; ``None`` means it
    has no answer for that scenario and its cells are left NaN.
    """

    name: str

    def predict(self, episodes: Episodes, *, y_grid: np.ndarray | None = None) -> xr.Dataset: ...


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
    if grid_log_density is not None:
        data["grid_log_density"] = ((EPISODE, POSITION, Y_GRID), np.asarray(grid_log_density, np.float64))
        coords[Y_GRID] = np.asarray(y_grid, np.float64)
    return xr.Dataset(data, coords=coords)


__all__ = ["Predictor", "token_predictions", "regression_predictions", "position_coord"]
