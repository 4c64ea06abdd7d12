"""Calibration: ranks and PIT values, a uniformity test with simultaneous ECDF bands, expected calibration error.

Two layers, as in `toolkit.metrics`: numpy functions over ``axis=``, thin
``xr_*`` wrappers over ``dim=``.

- `fractional_rank`: the rank of a true value among posterior draws, ties
  broken at random and spread over the rank's cell, so that a calibrated
  engine's ranks are exactly Uniform(0, 1), for discrete latents too
  (simulation-based calibration, Talts et al. 2018).
- `randomized_pit`: the probability integral transform of a discrete
  outcome, P(Y < y) + V·P(Y = y) with V ~ Uniform(0, 1), Uniform(0, 1) when
  the predictive is right (Czado, Gneiting & Held 2009).
- `uniformity_test`: the ECDF test of Säilynoja, Bürkner & Vehtari (2022):
  the ECDF at K points z_i = i/K against Uniform(0, 1), γ = 2 min_i
  min(F_i(c_i), 1 − F_i(c_i − 1)) with F_i the Binomial(n, z_i) CDF of the
  count c_i below z_i; its p-value P(γ' ≤ γ) is computed exactly by the
  interior-probability recursion of the same paper, so p < α exactly when the
  ECDF leaves the simultaneous 1 − α band that `uniform_ecdf_band` draws
  (ArviZ's `ecdf_confidence_band`, "optimized").
- `expected_calibration_error`: Σ_b n_b |mean predicted_b − observed_b| / n
  over the bins of a reliability diagram (`toolkit.metrics.reliability`).

References
----------
Talts, S., Betancourt, M., Simpson, D., Vehtari, A. & Gelman, A. (2018).
Validating Bayesian inference algorithms with simulation-based calibration.
arXiv:1804.06788.
Modrák, M., Moon, A. H., Kim, S., Bürkner, P., Huurre, N., Faltejsková, K.,
Gelman, A. & Vehtari, A. (2023). Simulation-based calibration checking for
Bayesian computation: the choice of test quantities shapes sensitivity.
*Bayesian Analysis*.
Säilynoja, T., Bürkner, P.-C. & Vehtari, A. (2022). Graphical test for
discrete uniformity and its applications in goodness-of-fit evaluation and
multiple sample comparison. *Statistics and Computing* 32(32).
Czado, C., Gneiting, T. & Held, L. (2009). Predictive model assessment for
count data. *Biometrics* 65(4).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import xarray as xr
from scipy import special, stats

from .dims import CALIBRATION_BIN, ECDF_POINT
from .metrics import Reliability, reliability

# Probability mass below which a count state of the exact recursion is dropped (its total error stays < 1e-15).
_NEGLIGIBLE = 1e-22
# Below this the p-value is reported as its union bound (K − 1)·γ: the recursion's 1 − P(inside) has no digits left.
_UNION_BOUND_BELOW = 1e-12


class UniformityTest(NamedTuple):
    """The ECDF uniformity test: ``(statistic, pvalue, num)``, each of the batch shape."""

    statistic: np.ndarray  # γ: twice the smallest binomial tail probability of the ECDF at the points
    pvalue: np.ndarray  # P(γ' ≤ γ) for n Uniform(0, 1) values
    num: np.ndarray  # the values tested (NaN left out)


# --------------------------------------------------------------------------- ranks and PIT


def fractional_rank(draws, truth, *, axis: int = -1, rng: np.random.Generator) -> np.ndarray:
    """Rank of ``truth`` among ``draws``, randomised over ties and within its cell: Uniform(0, 1) if calibrated.

    With L draws, r = #(draws < truth) + U, U uniform on {0, ..., #(draws = truth)}, is uniform on
    {0, ..., L} when truth and draws are exchangeable (ties — a discrete latent — are broken at random,
    Talts et al. 2018); (r + V) / (L + 1) with V ~ Uniform(0, 1) is then exactly Uniform(0, 1), so
    discrete and continuous quantities share one test.

    Parameters
    ----------
    draws : array_like, shape (..., draw, ...)
        Posterior draws; ``axis`` is the draw axis.
    truth : array_like, shape of ``draws`` without ``axis`` (broadcastable)
        The values the data were simulated from.
    axis : int
        The draw axis.
    rng : np.random.Generator
        Source of the tie breaks and of V.

    Returns
    -------
    np.ndarray, the broadcast shape without ``axis``
        Values in (0, 1); NaN where ``truth`` or any draw is NaN.
    """
    draws = np.moveaxis(np.asarray(draws, dtype=np.float64), axis, -1)
    truth = np.asarray(truth, dtype=np.float64)[..., None]
    num_draws = draws.shape[-1]
    below = np.sum(draws < truth, axis=-1)
    ties = np.sum(draws == truth, axis=-1)
    rank = below + np.floor(rng.random(below.shape) * (ties + 1))
    u = (rank + rng.random(below.shape)) / (num_draws + 1)
    undefined = np.isnan(truth[..., 0]) | np.any(np.isnan(draws), axis=-1)
    return np.where(undefined, np.nan, u)


def randomized_pit(log_prob, y, *, axis: int = -1, rng: np.random.Generator) -> np.ndarray:
    """PIT of discrete outcomes: P(Y < y) + V·P(Y = y), V ~ Uniform(0, 1); Uniform(0, 1) if the predictive is right.

    Parameters
    ----------
    log_prob : array_like, shape (..., outcome, ...)
        log P(Y = v) over the ordered outcomes v = 0..V−1 along ``axis``.
    y : array_like of int, shape of ``log_prob`` without ``axis`` (broadcastable)
        The realised outcome; NaN (as float) where there is none.
    axis : int
        The outcome axis.
    rng : np.random.Generator

    Returns
    -------
    np.ndarray
        Values in [0, 1]; NaN where ``y`` or the predictive is NaN.
    """
    prob = np.exp(np.moveaxis(np.asarray(log_prob, dtype=np.float64), axis, -1))
    y = np.asarray(y, dtype=np.float64)
    y, prob = np.broadcast_arrays(y[..., None], prob)
    y = y[..., 0]
    num_outcomes = prob.shape[-1]
    index = np.clip(np.nan_to_num(y, nan=0.0), 0, num_outcomes - 1).astype(np.int64)[..., None]
    below = np.take_along_axis(np.cumsum(prob, axis=-1) - prob, index, axis=-1)[..., 0]
    at = np.take_along_axis(prob, index, axis=-1)[..., 0]
    u = below + rng.random(at.shape) * at
    return np.where(np.isnan(y) | np.any(np.isnan(prob), axis=-1), np.nan, np.clip(u, 0.0, 1.0))


# --------------------------------------------------------------------------- the ECDF test


def ecdf_points(num: int, num_points: int | None = None) -> np.ndarray:
    """The interior points z_i = i/K, i = 1..K−1, of the ECDF test; K = min(num, 100) unless given."""
    k = int(num_points) if num_points is not None else max(2, min(int(num), 100))
    if k < 2:
        raise ValueError(f"the ECDF test needs at least 2 cells, got num_points={num_points}")
    return np.arange(1, k) / k


def _tail(count, num: int, points) -> np.ndarray:
    """2 min(F(c), 1 − F(c − 1)) of Binomial(n, z) counts c at points z (broadcast)."""
    return 2.0 * np.minimum(stats.binom.cdf(count, num, points), stats.binom.sf(count - 1, num, points))


def _allowed_counts(num: int, points: np.ndarray, gamma: float) -> list[np.ndarray]:
    """For each point, the counts c with 2 min(F(c), 1 − F(c − 1)) > γ: an interval (the tail is unimodal in c),
    searched in a window from the binomial quantiles at γ/2, so the work grows with its width, not with n."""
    low = np.maximum(np.nan_to_num(stats.binom.ppf(gamma / 2, num, points), nan=0.0) - 2, 0).astype(np.int64)
    high = np.minimum(np.nan_to_num(stats.binom.isf(gamma / 2, num, points), nan=num) + 2, num).astype(np.int64)
    counts = low[:, None] + np.arange(int((high - low).max()) + 1)[None, :]  # (point, window)
    ok = (counts <= high[:, None]) & (_tail(counts, num, points[:, None]) > gamma)
    return [row[keep] for row, keep in zip(counts, ok)]


def _inside_probability(num: int, points: np.ndarray, allowed: list[np.ndarray]) -> float:
    """P(the count below z_i lies in ``allowed[i]`` at every i) for n Uniform(0, 1) values (the recursion).

    Between z_{i−1} and z_i each of the n − c values not yet counted falls in with probability
    (z_i − z_{i−1}) / (1 − z_{i−1}), so the counts form a Markov chain of binomial steps; the step
    probabilities come from a table of log-factorials.
    """
    log_factorial = special.gammaln(np.arange(num + 1) + 1.0)  # log c!
    states, prob = np.zeros(1, np.int64), np.ones(1)  # no value below z_0 = 0
    previous = 0.0
    for z, target in zip(points, allowed):
        step = (z - previous) / (1.0 - previous)
        keep = prob > _NEGLIGIBLE
        source, weight = states[keep][:, None], prob[keep]
        if not source.size or not target.size:
            return 0.0
        k, m = target[None, :] - source, num - source  # k of the m values left fall in: Binomial(m, step)
        valid = (k >= 0) & (k <= m)
        k = np.where(valid, k, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_pmf = (log_factorial[m] - log_factorial[k] - log_factorial[m - k]
                       + special.xlogy(k, step) + special.xlog1py(m - k, -step))
        states, prob = target, weight @ np.where(valid, np.exp(log_pmf), 0.0)
        previous = z
    return float(prob.sum())


def _uniformity_1d(u: np.ndarray, num_points: int | None) -> tuple[float, float, int]:
    u = u[~np.isnan(u)]
    num = u.size
    if num == 0:
        return np.nan, np.nan, 0
    points = ecdf_points(num, num_points)
    counts = np.searchsorted(np.sort(u), points, side="right")
    gamma = float(np.min(_tail(counts, num, points)))
    union_bound = gamma * points.size  # p <= Σ_i P(tail_i <= γ) <= (K − 1) γ
    if union_bound < _UNION_BOUND_BELOW:
        return gamma, union_bound, num
    inside = _inside_probability(num, points, _allowed_counts(num, points, gamma))
    return gamma, float(np.clip(1.0 - inside, gamma, 1.0)), num


def uniformity_test(u, axis: int = -1, *, num_points: int | None = None) -> UniformityTest:
    """ECDF test of u ~ Uniform(0, 1) (Säilynoja et al. 2022), with its exact p-value.

    Parameters
    ----------
    u : array_like, shape (..., n, ...)
        Values in [0, 1] (fractional ranks, PIT values); NaN left out.
    axis : int
        The axis of the n values tested together.
    num_points : int, optional
        K: the ECDF is compared at z_i = i/K, i = 1..K−1 (default min(n, 100)).

    Returns
    -------
    UniformityTest
        ``statistic`` γ (small: the ECDF strays from the diagonal), ``pvalue``
        P(γ' ≤ γ) under uniformity, computed exactly (below 1e-12: its upper
        bound (K − 1)·γ), and ``num``; each of the shape of ``u`` without
        ``axis``.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> float(uniformity_test(rng.random(500)).pvalue) > 0.01
    True
    >>> float(uniformity_test(rng.random(500) ** 1.5).pvalue) < 0.01
    True
    """
    u = np.moveaxis(np.asarray(u, dtype=np.float64), axis, -1)
    batch = u.shape[:-1]
    flat = u.reshape(-1, u.shape[-1])
    out = np.array([_uniformity_1d(row, num_points) for row in flat]).reshape(batch + (3,))
    return UniformityTest(out[..., 0][()], out[..., 1][()], out[..., 2].astype(np.int64)[()])


def ecdf_difference(u, points, axis: int = -1) -> np.ndarray:
    """ECDF(z) − z of the values along ``axis`` at each point z (the ECDF-difference plot); NaN left out.

    Returns an array of the shape of ``u`` without ``axis``, plus a last axis over ``points``.
    """
    u = np.moveaxis(np.asarray(u, dtype=np.float64), axis, -1)
    points = np.asarray(points, dtype=np.float64)
    num = np.sum(~np.isnan(u), axis=-1, keepdims=True)
    below = np.sum(u[..., None, :] <= points[:, None], axis=-1)  # NaN compares False
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(num > 0, below / num, np.nan) - points


@lru_cache(maxsize=64)
def _band(num: int, points: tuple[float, ...], level: float) -> tuple[np.ndarray, np.ndarray]:
    from arviz.stats.ecdf_utils import ecdf_confidence_band

    z = np.asarray(points)
    low, high = ecdf_confidence_band(num, z, z, prob=level, method="optimized")
    return low - z, high - z


def uniform_ecdf_band(num: int, points, *, level: float = 0.99) -> tuple[np.ndarray, np.ndarray]:
    """Simultaneous ``level`` band of ECDF(z) − z for ``num`` Uniform(0, 1) values, from ArviZ.

    ``arviz.stats.ecdf_utils.ecdf_confidence_band(method="optimized")`` (Säilynoja et al. 2022): the ECDF
    of uniform values stays inside at every point with probability ``level``. Returns ``(low, high)``
    over ``points``.
    """
    low, high = _band(int(num), tuple(float(z) for z in np.asarray(points)), float(level))
    return low.copy(), high.copy()


# --------------------------------------------------------------------------- reliability


def expected_calibration_error(prob, outcome_is_event, bins: int | Sequence[float] = 10) -> float:
    """Σ_b n_b |mean predicted_b − observed frequency_b| / Σ_b n_b over the bins of `reliability`.

    Pooled over every cell of ``prob`` (NaN cells ignored); NaN when no cell is defined.
    """
    return _ece(reliability(prob, outcome_is_event, bins))


def _ece(table: Reliability) -> float:
    count = table.count
    if count.sum() == 0:
        return np.nan
    gap = np.abs(np.nan_to_num(table.mean_predicted) - np.nan_to_num(table.observed_frequency))
    return float(np.sum(count * gap) / count.sum())


# --------------------------------------------------------------------------- xarray wrappers


def _dims(dim) -> list[Hashable]:
    return [dim] if isinstance(dim, str) or not isinstance(dim, Sequence) else list(dim)


def _stacked(values: xr.DataArray, dims: list[Hashable], name: str) -> xr.DataArray:
    return values.stack({name: dims}) if len(dims) > 1 else values.rename({dims[0]: name})


def xr_uniformity_test(u: xr.DataArray, dim=..., *, num_points: int | None = None) -> xr.Dataset:
    """`uniformity_test` over the named dim(s), pooled: Dataset of ``statistic``, ``pvalue``, ``num``.

    Parameters
    ----------
    u : xr.DataArray
        E.g. PIT values (predictor, scenario, episode, position).
    dim : str or sequence of str
        The dims whose cells are tested together, e.g. ``("episode", "position")``.
    """
    dims = _dims(dim)
    pooled = _stacked(u, dims, "_cells")
    out = xr.apply_ufunc(
        lambda a: tuple(uniformity_test(a, -1, num_points=num_points)), pooled,
        input_core_dims=[["_cells"]], output_core_dims=[[], [], []],
    )
    return xr.Dataset(dict(zip(UniformityTest._fields, out)))


def xr_ecdf_difference(u: xr.DataArray, dim, points) -> xr.DataArray:
    """`ecdf_difference` over the named dim(s), pooled; the result has an ``ecdf_point`` dim (coordinate z)."""
    dims = _dims(dim)
    pooled = _stacked(u, dims, "_cells")
    points = np.asarray(points, dtype=np.float64)
    out = xr.apply_ufunc(
        ecdf_difference, pooled, input_core_dims=[["_cells"]], output_core_dims=[[ECDF_POINT]],
        kwargs={"points": points}, dask="forbidden",
    )
    return out.assign_coords({ECDF_POINT: points}).rename("ecdf_difference")


def xr_reliability(prob: xr.DataArray, outcome_is_event: xr.DataArray, dim, bins: int = 10) -> xr.Dataset:
    """`reliability` pooled over the named dim(s), per every other index.

    Returns
    -------
    xr.Dataset
        ``mean_predicted``, ``observed_frequency``, ``count`` over a ``calibration_bin`` dim (coordinate: the
        bin's centre) and ``ece`` (`expected_calibration_error`) without it.
    """
    dims = _dims(dim)
    edges = np.linspace(0.0, 1.0, bins + 1)
    prob, event = xr.broadcast(prob, outcome_is_event)
    p = _stacked(prob, dims, "_cells")
    e = _stacked(event.astype(np.float64), dims, "_cells")

    def table(a, b):
        r = reliability(a, b, edges)
        return r.mean_predicted, r.observed_frequency, r.count.astype(np.float64), _ece(r)

    out = xr.apply_ufunc(table, p, e, input_core_dims=[["_cells"]] * 2,
                         output_core_dims=[[CALIBRATION_BIN]] * 3 + [[]], vectorize=True)
    ds = xr.Dataset(dict(zip(("mean_predicted", "observed_frequency", "count", "ece"), out)))
    return ds.assign_coords({CALIBRATION_BIN: 0.5 * (edges[1:] + edges[:-1])})


__all__ = [
    "UniformityTest",
    "fractional_rank",
    "randomized_pit",
    "ecdf_points",
    "uniformity_test",
    "ecdf_difference",
    "uniform_ecdf_band",
    "expected_calibration_error",
    "xr_uniformity_test",
    "xr_ecdf_difference",
    "xr_reliability",
]
