"""Plain baselines that know nothing of the prior beyond its outcome set."""

from __future__ import annotations

import numpy as np
import xarray as xr

from .episodes import Episodes
from .predictive import token_predictions


class FrequencyPredictor:
    """Laplace-smoothed running frequency: P(y_t = v) = (count of v in y_<t + α) / (t − 1 + α V).

    Parameters
    ----------
    outcomes : sequence of str
        Outcome labels (V of them).
    alpha : float
        Pseudo-count per outcome (1 = Laplace's rule of succession).
    """

    def __init__(self, outcomes, *, alpha: float = 1.0, name: str = "frequency"):
        if alpha <= 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        self.outcomes, self.alpha, self.name = tuple(outcomes), float(alpha), name

    def predict(self, episodes: Episodes, *, y_grid=None) -> xr.Dataset:
        num_outcomes = len(self.outcomes)
        episodes.check_tokens(num_outcomes, labels=self.outcomes)
        mask = np.ones(episodes.y.shape, bool) if episodes.mask is None else episodes.mask
        one_hot = (episodes.y[..., None] == np.arange(num_outcomes)) & mask[..., None]  # (E, T, V)
        before = np.cumsum(one_hot, axis=1) - one_hot
        seen = before.sum(-1, keepdims=True)
        log_prob = np.log(before + self.alpha) - np.log(seen + self.alpha * num_outcomes)
        return token_predictions(log_prob, episodes, self.outcomes)

    def describe(self):
        return {"alpha": self.alpha}


__all__ = ["FrequencyPredictor"]
