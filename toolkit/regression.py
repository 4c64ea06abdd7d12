"""Turning predictive distributions into the regression (and token) prediction variables."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import xarray as xr

from .dims import QUANTILES
from .episodes import Episodes
from .predictive import regression_predictions, token_predictions


def quantiles_from_cdf(y_grid: np.ndarray, cdf: np.ndarray, levels=QUANTILES) -> np.ndarray:
    """Invert a CDF tabulated on ``y_grid`` by linear interpolation.

    Parameters
    ----------
    y_grid : np.ndarray, shape (y_grid,)
    cdf : np.ndarray, shape (..., y_grid)
        Non-decreasing along the last axis.

    Returns
    -------
    np.ndarray, shape (..., quantile)
    """
    flat = cdf.reshape(-1, cdf.shape[-1])
    out = np.full((flat.shape[0], len(levels)), np.nan)
    for i, row in enumerate(flat):
        if np.all(np.isfinite(row)):
            out[i] = np.interp(levels, np.maximum.accumulate(row), y_grid)
    return out.reshape(cdf.shape[:-1] + (len(levels),))


def distribution_predictions(d, episodes: Episodes, prior, *, y_grid=None) -> xr.Dataset:
    """Prediction Dataset from a NumPyro distribution with batch shape (episode, position)."""
    if prior.kind == "tokens":
        values = jnp.arange(prior.num_outcomes).reshape((-1, 1, 1))
        log_prob = np.moveaxis(np.asarray(d.log_prob(values)), 0, -1)
        return token_predictions(log_prob, episodes, prior.outcomes)
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
    return regression_predictions(
        log_score=np.asarray(d.log_prob(y)),
        mean=np.broadcast_to(np.asarray(d.mean), y.shape),
        variance=np.broadcast_to(np.asarray(d.variance), y.shape),
        quantile_value=quantile_value,
        grid_log_density=grid_log_density,
        y_grid=y_grid,
    )


__all__ = ["quantiles_from_cdf", "distribution_predictions"]
