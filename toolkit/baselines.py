"""Plain baselines that know nothing of the prior beyond its outcome set (tokens) or its form (regression).

Regression baselines follow Garg et al., "What can transformers learn in-context? A case study of simple
function classes" (arXiv:2208.01066): ridge (the Gaussian-prior posterior predictive, i.e. Bayes for
``linear_regression`` and the "ridge" reference of Raventós et al., arXiv:2306.15063), minimum-norm least
squares, k nearest neighbours and the averaging estimator. Position t uses only ``(x_<t, y_<t)`` and
``x_t``; every computation is vectorised over episodes (a loop runs over positions at most). Padding
(``mask = False``) is never context.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from scipy import special

from .dims import QUANTILES
from .episodes import Episodes
from .errors import ConfigError, DataError
from .predictive import Predictor, regression_predictions, token_predictions

# Elements of the largest intermediate of the Gaussian predictive (episode x position x feature x feature)
# per chunk of episodes: 2**22 float64 = 32 MiB.
GAUSSIAN_CHUNK_ELEMENTS = 2**22


class FrequencyPredictor(Predictor):
    """Laplace-smoothed running frequency: P(y_t = v) = (count of v in y_<t + α) / (t − 1 + α V).

    Parameters
    ----------
    outcomes : sequence of str
        Outcome labels (V of them).
    alpha : float
        Pseudo-count per outcome (1 = Laplace's rule of succession).
    """

    kind = "tokens"

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


# ---------------------------------------------------------------------- regression: shared pieces


def _regression_data(episodes: Episodes, who: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x (E, T, d)``, ``y (E, T)`` as float64 and ``observed (E, T)``; padding zeroed out of x and y."""
    if episodes.x is None:
        raise DataError(f"{who} predicts regression episodes: it needs inputs x (episode, position, feature)")
    observed = np.ones(episodes.y.shape, bool) if episodes.mask is None else episodes.mask
    x = np.where(observed[..., None], np.asarray(episodes.x, np.float64), 0.0)
    y = np.where(observed, np.asarray(episodes.y, np.float64), 0.0)
    return x, y, observed


def _exclusive_cumsum(a: np.ndarray) -> np.ndarray:
    """Σ_{s<t} a[:, s] along the position axis (axis 1; zero at the first position)."""
    total = np.cumsum(a, axis=1)
    return np.concatenate([np.zeros_like(total[:, :1]), total[:, :-1]], axis=1)


def _point_predictions(mean: np.ndarray, y_grid) -> xr.Dataset:
    """A point prediction: ``mean`` only; log_score, variance, quantiles (and the grid density) are NaN."""
    nan = np.full(mean.shape, np.nan)
    return regression_predictions(
        log_score=nan,
        mean=mean,
        variance=nan,
        quantile_value=np.full(mean.shape + (len(QUANTILES),), np.nan),
        grid_log_density=None if y_grid is None else np.full(mean.shape + (len(y_grid),), np.nan),
        y_grid=y_grid,
    )


@jax.jit
def _gaussian_chunk(x, y, lam, prior_means):
    """Predictive moments for one chunk of episodes; see `gaussian_linear_predictive`.

    Works with A_t = λ I + Σ_{s<t} x_s x_sᵀ (λ = σ²/τ²), so that the posterior of w is
    N(A_t⁻¹(λ m + Σ_{s<t} x_s y_s), σ² A_t⁻¹). With A_t = L Lᵀ, xᵀA⁻¹r = (L⁻¹x)·(L⁻¹r): the quadratic
    form is a sum of squares, never negative, whatever the conditioning.
    """
    d = x.shape[-1]
    outer = x[..., :, None] * x[..., None, :]  # (E, T, d, d)
    total = jnp.cumsum(outer, axis=1)
    gram = jnp.concatenate([jnp.zeros_like(total[:, :1]), total[:, :-1]], axis=1)  # Σ_{s<t} x_s x_sᵀ
    xy = jnp.cumsum(x * y[..., None], axis=1)
    xy = jnp.concatenate([jnp.zeros_like(xy[:, :1]), xy[:, :-1]], axis=1)  # Σ_{s<t} x_s y_s: (E, T, d)
    chol = jnp.linalg.cholesky(gram + lam * jnp.eye(d))  # (E, T, d, d)
    rhs = xy[..., None] + lam * prior_means.T  # (E, T, d, J)
    u = jax.scipy.linalg.solve_triangular(chol, rhs, lower=True)  # L⁻¹ r: (E, T, d, J)
    v = jax.scipy.linalg.solve_triangular(chol, x[..., None], lower=True)  # L⁻¹ x_t: (E, T, d, 1)
    mean = jnp.sum(u * v, axis=-2)  # (E, T, J)
    quad = jnp.sum(v[..., 0] ** 2, axis=-1)  # x_tᵀ A_t⁻¹ x_t: (E, T)
    return jnp.moveaxis(mean, -1, 0), quad


def gaussian_linear_predictive(
    x: np.ndarray,
    y: np.ndarray,
    *,
    tau: float,
    sigma: float,
    prior_means: np.ndarray | None = None,
    observed: np.ndarray | None = None,
    chunk_elements: int = GAUSSIAN_CHUNK_ELEMENTS,
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior predictive of y_t given ``(x_<t, y_<t)`` and ``x_t`` for w ~ N(m, τ² I), y = w·x + N(0, σ²).

    The conjugate closed form, for every episode and position at once (float64): posterior
    covariance Σ_t = (I/τ² + X_<tᵀX_<t/σ²)⁻¹, mean Σ_t(m/τ² + X_<tᵀy_<t/σ²); predictive
    N(x_tᵀμ_t, x_tᵀΣ_tx_t + σ²). Position 1 is the prior predictive N(x_1ᵀm, τ²|x_1|² + σ²).

    Parameters
    ----------
    x : np.ndarray, shape (episode, position, feature)
    y : np.ndarray, shape (episode, position)
    tau, sigma : float
        Prior standard deviation of each weight; noise standard deviation.
    prior_means : np.ndarray, shape (component, feature), optional
        Prior means m of w, one per component (the covariance τ² I is shared); default one zero mean.
    observed : np.ndarray of bool, shape (episode, position), optional
        False on padding, which is left out of every context.

    Returns
    -------
    mean : np.ndarray, shape (component, episode, position)
        Predictive mean of y_t under each prior mean.
    variance : np.ndarray, shape (episode, position)
        Predictive variance (the same for every component).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.ndim == 2:
        x = x[..., None]
    num_episodes, length, d = x.shape
    if prior_means is None:
        prior_means = np.zeros((1, d))
    prior_means = np.asarray(prior_means, np.float64).reshape(-1, d)
    if observed is not None:
        x = np.where(observed[..., None], x, 0.0)
        y = np.where(observed, y, 0.0)
    lam = float(sigma) ** 2 / float(tau) ** 2
    step = max(1, chunk_elements // max(length * d * d, 1))
    means, quads = [], []
    for start in range(0, num_episodes, step):
        part = slice(start, start + step)
        m, q = _gaussian_chunk(jnp.asarray(x[part]), jnp.asarray(y[part]), lam, jnp.asarray(prior_means))
        means.append(np.asarray(m))
        quads.append(np.asarray(q))
    mean = np.concatenate(means, axis=1)
    variance = float(sigma) ** 2 * (1.0 + np.concatenate(quads, axis=0))
    return mean, variance


def gaussian_predictions(mean: np.ndarray, variance: np.ndarray, y: np.ndarray, *, y_grid=None) -> xr.Dataset:
    """Prediction Dataset of Normal(mean, variance) predictives (episode, position), realised ``y``."""
    sd = np.sqrt(variance)
    log_norm = -0.5 * np.log(2 * np.pi * variance)
    quantile_value = mean[..., None] + sd[..., None] * special.ndtri(np.asarray(QUANTILES))
    grid_log_density = None
    if y_grid is not None:
        grid = np.asarray(y_grid, np.float64)
        grid_log_density = log_norm[..., None] - 0.5 * ((grid - mean[..., None]) / sd[..., None]) ** 2
    return regression_predictions(
        log_score=log_norm - 0.5 * ((y - mean) / sd) ** 2,
        mean=mean,
        variance=variance,
        quantile_value=quantile_value,
        grid_log_density=grid_log_density,
        y_grid=y_grid,
        pit=special.ndtr((y - mean) / sd),
    )


# ---------------------------------------------------------------------- regression baselines


class RidgePredictor(Predictor):
    """Ridge regression as a full Gaussian predictive: Bayes under w ~ N(0, τ² I), y = w·x + N(0, σ²).

    The predictive mean is ridge regression with penalty λ = σ²/τ² on the context; the variance is
    x_tᵀΣ_tx_t + σ² with Σ_t the posterior covariance of w. With the same τ and σ it is exactly the
    closed form of the ``linear_regression`` prior (their shared code is `gaussian_linear_predictive`).

    Parameters
    ----------
    tau : float
        Prior standard deviation of each weight.
    sigma : float
        Noise standard deviation.
    """

    kind = "regression"

    def __init__(self, *, tau: float = 1.0, sigma: float = 0.1, name: str = "ridge"):
        if not (tau > 0 and sigma > 0):
            raise ConfigError(f"ridge needs tau > 0 and sigma > 0, got tau={tau}, sigma={sigma}")
        self.tau, self.sigma, self.name = float(tau), float(sigma), name

    @property
    def lam(self) -> float:
        """The ridge penalty σ²/τ²."""
        return self.sigma**2 / self.tau**2

    def predict(self, episodes: Episodes, *, y_grid=None) -> xr.Dataset:
        x, y, observed = _regression_data(episodes, "ridge")
        mean, variance = gaussian_linear_predictive(x, y, tau=self.tau, sigma=self.sigma, observed=observed)
        return gaussian_predictions(mean[0], variance, np.asarray(episodes.y, np.float64), y_grid=y_grid)

    def describe(self):
        return {"tau": self.tau, "sigma": self.sigma, "lam": self.lam}


class LeastSquaresPredictor(Predictor):
    """Minimum-norm least squares: ŵ = pinv(X_<t) y_<t, prediction ŵ·x_t (0 at position 1).

    A point prediction: ``log_score``, ``variance``, quantiles and the grid density are NaN (no
    predictive distribution; the metrics skip NaN cells). With fewer context items than features the
    pseudo-inverse picks the interpolant of least norm, Garg et al.'s least-squares baseline.
    """

    kind = "regression"

    def __init__(self, *, name: str = "least_squares"):
        self.name = name

    def predict(self, episodes: Episodes, *, y_grid=None) -> xr.Dataset:
        x, y, _ = _regression_data(episodes, "least squares")  # padding rows are zero: they change nothing
        mean = np.zeros(y.shape)
        for t in range(1, y.shape[1]):
            w = np.linalg.pinv(x[:, :t]) @ y[:, :t, None]  # (E, d, 1)
            mean[:, t] = np.einsum("ed,ed->e", x[:, t], w[..., 0])
        return _point_predictions(mean, y_grid)

    def describe(self):
        return {"estimator": "minimum-norm least squares (pinv)"}


class KNNPredictor(Predictor):
    """Mean of the y of the k nearest earlier x (Euclidean; fewer when fewer exist; 0 at position 1).

    Ties in distance go to the earlier position. A point prediction: ``log_score``, ``variance``,
    quantiles and the grid density are NaN.

    Parameters
    ----------
    k : int
        Number of neighbours.
    """

    kind = "regression"

    def __init__(self, k: int = 3, *, name: str = "knn"):
        if int(k) != k or k < 1:
            raise ConfigError(f"knn needs a positive integer k, got {k!r}")
        self.k, self.name = int(k), name

    def predict(self, episodes: Episodes, *, y_grid=None) -> xr.Dataset:
        x, y, observed = _regression_data(episodes, "knn")
        mean = np.zeros(y.shape)
        for t in range(1, y.shape[1]):
            dist2 = np.sum((x[:, :t] - x[:, t : t + 1]) ** 2, axis=-1)  # (E, t)
            dist2 = np.where(observed[:, :t], dist2, np.inf)
            nearest = np.argsort(dist2, axis=1, kind="stable")[:, : self.k]  # (E, min(k, t))
            valid = np.isfinite(np.take_along_axis(dist2, nearest, axis=1))
            count = valid.sum(1)
            total = np.where(valid, np.take_along_axis(y[:, :t], nearest, axis=1), 0.0).sum(1)
            mean[:, t] = np.where(count > 0, total / np.maximum(count, 1), 0.0)
        return _point_predictions(mean, y_grid)

    def describe(self):
        return {"k": self.k}


class AveragingPredictor(Predictor):
    """Garg et al.'s averaging estimator: ŵ = mean over s < t of y_s x_s, prediction ŵ·x_t (0 at position 1).

    Unbiased for w when x ~ N(0, I). A point prediction: ``log_score``, ``variance``, quantiles and the
    grid density are NaN.
    """

    kind = "regression"

    def __init__(self, *, name: str = "averaging"):
        self.name = name

    def predict(self, episodes: Episodes, *, y_grid=None) -> xr.Dataset:
        x, y, observed = _regression_data(episodes, "averaging")
        total = _exclusive_cumsum(x * y[..., None])  # Σ_{s<t} y_s x_s: (E, T, d)
        count = _exclusive_cumsum(observed.astype(np.float64))  # (E, T)
        w = total / np.maximum(count, 1.0)[..., None]
        return _point_predictions(np.einsum("etd,etd->et", w, x), y_grid)

    def describe(self):
        return {"estimator": "mean of y_s x_s over the context"}


__all__ = [
    "FrequencyPredictor",
    "RidgePredictor",
    "LeastSquaresPredictor",
    "KNNPredictor",
    "AveragingPredictor",
    "gaussian_linear_predictive",
    "gaussian_predictions",
]
