"""Quantiles of a regression predictive from its CDF on a y-grid."""

from __future__ import annotations

import numpy as np

from .dims import QUANTILES


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


__all__ = ["quantiles_from_cdf"]
