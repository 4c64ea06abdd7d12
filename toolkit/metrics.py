"""Metrics of the comparison: cross-entropy, divergences, relative distance, calibration.

Two layers, as in arviz-stats: numpy functions over ``axis=`` do the arithmetic;
``xr_*`` wrappers (thin ``xr.apply_ufunc`` calls) run them over named dims of
the comparison Dataset and keep every other dim and coordinate (DESIGN.md,
"Metrics").

NaN marks an undefined cell (the Bayes predictive on a zero-probability
context, padding after EOS). Averages ignore NaN cells like ``np.nanmean``
and give NaN when no cell is defined; `num_defined` counts the cells used.
Divergences of a distribution holding a NaN are NaN.

References
----------
Efron, B. & Tibshirani, R. (1993). *An Introduction to the Bootstrap*, ch. 13
(percentile intervals).
Lin, J. (1991). Divergence measures based on the Shannon entropy. *IEEE Trans.
Inf. Theory* 37(1) (Jensen–Shannon divergence).
Wilson, E. B. (1927). Probable inference, the law of succession, and
statistical inference. *JASA* 22(158) (score interval).
DeGroot, M. & Fienberg, S. (1983). The comparison and evaluation of
forecasters. *The Statistician* 32 (reliability diagrams).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import NamedTuple

import numpy as np
import xarray as xr
from scipy import special, stats

from .dims import EPISODE, OUTCOME, Y_GRID

# Bytes one resample chunk of `bootstrap_interval` may use for its temporaries.
_BOOTSTRAP_CHUNK_BYTES = 64 * 2**20

Axis = int | tuple[int, ...]
Dim = Hashable | Sequence[Hashable]


class Interval(NamedTuple):
    """A point estimate with the bounds of an interval around it; unpacks as ``(estimate, low, high)``."""

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray


class Reliability(NamedTuple):
    """Per-bin summary of a reliability diagram, each of shape ``(bins,)``."""

    mean_predicted: np.ndarray
    observed_frequency: np.ndarray
    count: np.ndarray


# --------------------------------------------------------------------------- averages


def num_defined(values, axis: Axis) -> np.ndarray:
    """Number of non-NaN cells along `axis`.

    Parameters
    ----------
    values : array_like, shape (..., n, ...)
        Any array; NaN marks an undefined cell.
    axis : int or tuple of int
        Axis (or axes) counted over.

    Returns
    -------
    np.ndarray of int, shape `values` without `axis`
    """
    return np.sum(~np.isnan(np.asarray(values, dtype=np.float64)), axis=axis)


def _nanmean(values: np.ndarray, axis: Axis) -> np.ndarray:
    # np.nanmean warns on all-NaN slices; an empty slice is a documented NaN here.
    defined = ~np.isnan(values)
    total = np.sum(np.where(defined, values, 0.0), axis=axis)
    count = np.sum(defined, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)[()]


def cross_entropy(log_score, axis: Axis) -> np.ndarray:
    """Cross-entropy: the mean of ``-log_score`` over `axis`, ignoring NaN cells.

    Parameters
    ----------
    log_score : array_like, shape (..., episode, ...)
        Log predictive probability (or density) of the realised y_t; NaN where
        undefined. ``-inf`` (a realised outcome given probability 0) makes the
        mean ``inf``.
    axis : int or tuple of int
        Axis (or axes) averaged over, usually the episode axis.

    Returns
    -------
    np.ndarray, shape `log_score` without `axis`
        In nats; NaN where no cell is defined.

    Examples
    --------
    >>> cross_entropy(np.log([[0.5, 0.25], [0.5, np.nan]]), axis=0)
    array([0.69314718, 1.38629436])
    """
    return _nanmean(-np.asarray(log_score, dtype=np.float64), axis)


def squared_error(prediction, target, axis: Axis, *, scale: float = 1.0) -> np.ndarray:
    """Mean of ``(prediction − target)² / scale`` over `axis`, ignoring NaN cells.

    With ``scale = d`` (the number of features) and the predictive mean against
    the realised y, this is the normalised squared error of Garg et al. (2022)
    ("What can transformers learn in-context?", arXiv:2208.01066); against
    another predictor's mean, how far two point predictions are apart.

    Parameters
    ----------
    prediction, target : array_like, broadcastable
    axis : int or tuple of int
        Axis (or axes) averaged over, usually the episode axis.
    scale : float
        Divides every squared difference.

    Examples
    --------
    >>> squared_error([[1.0, 2.0], [3.0, np.nan]], [[0.0, 0.0], [0.0, 0.0]], axis=0, scale=2.0)
    array([2.5, 2. ])
    """
    prediction, target = np.broadcast_arrays(np.asarray(prediction, np.float64), np.asarray(target, np.float64))
    return _nanmean((prediction - target) ** 2 / scale, axis)


def excess_loss(log_score, ref_log_score, axis: Axis) -> np.ndarray:
    """Cross-entropy of a predictor minus that of a reference, on the same cells.

    ``mean(-log_score) - mean(-ref_log_score)`` over the cells where both are
    defined: a cell NaN in either is dropped from both means, so the two
    averages run over the same episodes. Positive means worse than the
    reference. A paired interval is ``bootstrap_interval(ref_log_score - log_score, axis, ...)``.

    Parameters
    ----------
    log_score, ref_log_score : array_like, broadcastable, shape (..., episode, ...)
        Log scores of the predictor and of the reference (e.g. Bayes).
    axis : int or tuple of int
        Axis (or axes) averaged over.

    Returns
    -------
    np.ndarray, shape the broadcast shape without `axis`
        In nats; NaN where no cell is defined in both.
    """
    log_score = np.asarray(log_score, dtype=np.float64)
    ref_log_score = np.asarray(ref_log_score, dtype=np.float64)
    undefined = np.isnan(log_score) | np.isnan(ref_log_score)
    return cross_entropy(np.where(undefined, np.nan, log_score), axis) - cross_entropy(
        np.where(undefined, np.nan, ref_log_score), axis
    )


# --------------------------------------------------------------------------- bootstrap


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")


def _nanquantile_last(values: np.ndarray, q: float) -> np.ndarray:
    """Linearly interpolated quantile over the last axis, ignoring NaN, exact with infinities.

    ``np.nanquantile`` interpolates ``inf`` to NaN; here any positive weight
    on an infinite neighbour gives that infinity.
    """
    ordered = np.sort(values, axis=-1)  # NaN sorts last
    num = np.sum(~np.isnan(values), axis=-1, keepdims=True)
    position = np.maximum(num - 1, 0) * q
    below = np.floor(position).astype(np.int64)
    above = np.minimum(below + 1, np.maximum(num - 1, 0))
    frac = position - below
    a = np.take_along_axis(ordered, below, axis=-1)
    b = np.take_along_axis(ordered, above, axis=-1)
    with np.errstate(invalid="ignore"):
        mixed = np.where((frac == 0) | (a == b), a, a + frac * (b - a))
    return np.where(num > 0, mixed, np.nan)[..., 0]


def bootstrap_interval(
    values,
    axis: int,
    *,
    num_resamples: int = 1000,
    level: float = 0.95,
    rng: np.random.Generator,
) -> Interval:
    """Percentile bootstrap interval of the NaN-ignoring mean over one axis.

    The cells along `axis` (episodes) are resampled with replacement, jointly
    for every other index, so cells of the same episode stay paired across
    positions and predictors. Each resample's mean ignores NaN cells; the
    interval is the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles
    (linear interpolation) of the resampled means.

    Resample ``r`` draws the indices ``rng.integers(0, n, size=(num_resamples, n))[r]``
    (drawn in chunks of rows, which leaves the stream unchanged), and the
    means are weighted sums (one matrix product per chunk), so no Python loop
    runs over resamples. Memory: the resampled means, ``8 * num_resamples``
    bytes per output cell, plus chunks bounded by 64 MiB.

    Parameters
    ----------
    values : array_like, shape (..., n, ...)
        Per-episode values, e.g. ``-log_score``; NaN where undefined.
    axis : int
        The axis resampled (the episode axis).
    num_resamples : int, default 1000
        Number of bootstrap resamples.
    level : float, default 0.95
        Coverage of the interval, in (0, 1).
    rng : np.random.Generator
        Source of the resampling; a fixed generator state gives a fixed result.

    Returns
    -------
    Interval
        ``(estimate, low, high)``, each of shape `values` without `axis`:
        the NaN-ignoring mean and the interval bounds; NaN where no cell is
        defined.

    Examples
    --------
    >>> values = np.arange(10.0)
    >>> mean, low, high = bootstrap_interval(values, 0, rng=np.random.default_rng(0))
    >>> bool(low < mean < high)
    True
    """
    _check_level(level)
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be at least 1, got {num_resamples}")
    values = np.moveaxis(np.asarray(values, dtype=np.float64), axis, -1)
    batch_shape, n = values.shape[:-1], values.shape[-1]
    flat = values.reshape(-1, n)  # (B, n)
    estimate = _nanmean(flat, -1)
    if n == 0:
        return Interval(*(np.full(batch_shape, np.nan)[()] for _ in range(3)))

    defined = (~np.isnan(flat)).astype(np.float64)  # (B, n)
    finite = np.where(np.isfinite(flat), flat, 0.0)  # (B, n)
    posinf = np.isposinf(flat).astype(np.float64)
    neginf = np.isneginf(flat).astype(np.float64)
    has_inf = bool(posinf.any() or neginf.any())

    num_batch = flat.shape[0]
    chunk = max(1, _BOOTSTRAP_CHUNK_BYTES // (8 * (3 * n + 4 * num_batch)))
    means = np.empty((num_batch, num_resamples))  # (B, R)
    for start in range(0, num_resamples, chunk):
        size = min(chunk, num_resamples - start)
        index = rng.integers(0, n, size=(size, n))  # (r, n)
        rows = np.arange(size)[:, None] * n
        weights = np.bincount((index + rows).ravel(), minlength=size * n).reshape(size, n).astype(np.float64)
        total = finite @ weights.T  # (B, r)
        count = defined @ weights.T  # (B, r)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, total / np.maximum(count, 1.0), np.nan)
        if has_inf:
            pos, neg = (posinf @ weights.T) > 0, (neginf @ weights.T) > 0
            mean = np.where(pos, np.inf, mean)
            mean = np.where(neg, -np.inf, mean)
            mean = np.where(pos & neg, np.nan, mean)
        means[:, start : start + size] = mean

    low, high = (_nanquantile_last(means, q) for q in ((1 - level) / 2, (1 + level) / 2))
    return Interval(*(a.reshape(batch_shape)[()] for a in (estimate, low, high)))


def cross_entropy_interval(
    log_score,
    axis: int,
    *,
    num_resamples: int = 1000,
    level: float = 0.95,
    rng: np.random.Generator,
) -> Interval:
    """Cross-entropy with a percentile bootstrap interval over episodes.

    ``bootstrap_interval(-log_score, axis, ...)``; see there.

    Parameters
    ----------
    log_score : array_like, shape (..., episode, ...)
        Log score of the realised y_t; NaN where undefined.
    axis : int
        The episode axis.
    num_resamples, level, rng
        As in `bootstrap_interval`.

    Returns
    -------
    Interval
        ``(estimate, low, high)`` in nats, each of shape `log_score` without `axis`.
    """
    return bootstrap_interval(
        -np.asarray(log_score, dtype=np.float64), axis, num_resamples=num_resamples, level=level, rng=rng
    )


# --------------------------------------------------------------------------- divergences


def kl_divergence(log_p, log_q, axis: int = -1) -> np.ndarray:
    """Exact KL(p ‖ q) = Σ_v p_v (log p_v − log q_v) over the outcome axis.

    Cells with p_v = 0 contribute 0 (0 · log 0 = 0), whatever q_v; a cell
    with p_v > 0 and q_v = 0 makes the divergence ``inf``. The inputs are
    taken as normalised and are not renormalised. A distribution holding a
    NaN gives NaN.

    Parameters
    ----------
    log_p, log_q : array_like, broadcastable, shape (..., outcome)
        Log-probabilities; ``-inf`` for probability 0.
    axis : int, default -1
        The outcome axis.

    Returns
    -------
    np.ndarray, shape the broadcast shape without `axis`
        In nats, ``>= 0`` up to rounding.

    Examples
    --------
    >>> kl_divergence(np.log([0.5, 0.5]), np.log([0.25, 0.75]))
    np.float64(0.14384103622589045)
    """
    log_p = np.asarray(log_p, dtype=np.float64)
    log_q = np.asarray(log_q, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        term = np.where(np.isneginf(log_p), 0.0, np.exp(log_p) * (log_p - log_q))
    undefined = np.any(np.isnan(log_p) | np.isnan(log_q), axis=axis)
    return np.where(undefined, np.nan, np.sum(term, axis=axis))[()]


def _trapezoid_log_weights(y_grid: np.ndarray) -> np.ndarray:
    y_grid = np.asarray(y_grid, dtype=np.float64)
    if y_grid.ndim != 1 or y_grid.size < 2 or not np.all(np.diff(y_grid) > 0):
        raise ValueError("y_grid must be 1-D, strictly increasing, with at least two points")
    step = np.diff(y_grid)
    weights = np.concatenate([step[:1], step[1:] + step[:-1], step[-1:]]) / 2
    return np.log(weights)


def grid_kl_divergence(log_p, log_q, y_grid, axis: int = -1) -> np.ndarray:
    """KL(p ‖ q) of two densities given on a y-grid, by the trapezoid rule.

    Each density is first renormalised so that its trapezoid integral over the
    grid is 1 (the grid truncates the tails and a predictor's density need not
    integrate to exactly 1 on it); then
    KL = ∫ p̃ log(p̃ / q̃) dy ≈ Σ_i w_i p̃_i log(p̃_i / q̃_i) with trapezoid
    weights w_i. This equals the exact KL between the discrete distributions
    ``w_i p̃_i`` and ``w_i q̃_i``, so it is ``>= 0`` and 0 only when p̃ = q̃.
    Zero-density cells are handled as in `kl_divergence`.

    Parameters
    ----------
    log_p, log_q : array_like, broadcastable, shape (..., y_grid)
        Log densities at the grid points.
    y_grid : array_like, shape (y_grid,)
        Strictly increasing grid, at least two points.
    axis : int, default -1
        The grid axis of `log_p` and `log_q`.

    Returns
    -------
    np.ndarray, shape the broadcast shape without `axis`
        In nats; NaN where a density holds a NaN or is zero on the whole grid.
    """
    log_w = _trapezoid_log_weights(y_grid)
    log_p = np.moveaxis(np.asarray(log_p, dtype=np.float64), axis, -1)
    log_q = np.moveaxis(np.asarray(log_q, dtype=np.float64), axis, -1)
    if log_p.shape[-1] != log_w.size or log_q.shape[-1] != log_w.size:
        raise ValueError(f"grid axis has {log_p.shape[-1]} and {log_q.shape[-1]} points, y_grid {log_w.size}")

    def discrete(log_density):  # log of w_i p_i / Σ_j w_j p_j
        log_mass = log_density + log_w
        with np.errstate(invalid="ignore", divide="ignore"):
            return log_mass - special.logsumexp(log_mass, axis=-1, keepdims=True)

    return kl_divergence(discrete(log_p), discrete(log_q), axis=-1)


def js_divergence(log_p, log_q, axis: int = -1) -> np.ndarray:
    """Exact Jensen–Shannon divergence ½ KL(p ‖ m) + ½ KL(q ‖ m), m = (p + q) / 2.

    Natural log: symmetric, finite, between 0 and log 2. A distribution
    holding a NaN gives NaN.

    Parameters
    ----------
    log_p, log_q : array_like, broadcastable, shape (..., outcome)
        Log-probabilities; ``-inf`` for probability 0.
    axis : int, default -1
        The outcome axis.

    Returns
    -------
    np.ndarray, shape the broadcast shape without `axis`
        In nats.

    Examples
    --------
    >>> js_divergence([0.0, -np.inf], [-np.inf, 0.0])  # disjoint supports: log 2
    np.float64(0.6931471805599453)
    """
    log_p = np.asarray(log_p, dtype=np.float64)
    log_q = np.asarray(log_q, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # NaN cells: the result is NaN anyway
        log_m = np.logaddexp(log_p, log_q) - np.log(2.0)
    js = 0.5 * kl_divergence(log_p, log_m, axis) + 0.5 * kl_divergence(log_q, log_m, axis)
    # rounding leaves equal distributions at about -1e-17; clipped, sqrt(JS) (a metric) is never NaN there
    return np.maximum(js, 0.0)[()]


def hellinger(log_p, log_q, axis: int = -1) -> np.ndarray:
    """Hellinger distance sqrt(1 − Σ_v sqrt(p_v q_v)), between 0 and 1.

    Parameters
    ----------
    log_p, log_q : array_like, broadcastable, shape (..., outcome)
        Log-probabilities; ``-inf`` for probability 0.
    axis : int, default -1
        The outcome axis.

    Returns
    -------
    np.ndarray, shape the broadcast shape without `axis`
        A metric (symmetric, triangle inequality); NaN where either holds a NaN.
    """
    log_p = np.asarray(log_p, dtype=np.float64)
    log_q = np.asarray(log_q, dtype=np.float64)
    affinity = np.sum(np.exp(0.5 * (log_p + log_q)), axis=axis)
    return np.sqrt(np.maximum(1.0 - affinity, 0.0))  # rounding can push the affinity past 1


def relative_distance(d_h_a, d_h_b, d_a_b) -> np.ndarray:
    """Where a learner h sits between two references A and B: (d(h,A) − d(h,B)) / d(A,B).

    −1 when h = A, +1 when h = B, 0 when h is equally far from both; NaN
    where d(A,B) = 0 (the references agree, so there is nothing to place h
    between). The endpoints are exact for a symmetric d (`js_divergence`,
    `hellinger`); with KL pick the direction consistently and expect
    ±KL(A‖B)/d(A,B) rather than ±1.

    Parameters
    ----------
    d_h_a, d_h_b, d_a_b : array_like, broadcastable
        Distances of h to A, of h to B, and of A to B, cell by cell.

    Returns
    -------
    np.ndarray, the broadcast shape
    """
    d_h_a, d_h_b, d_a_b = (np.asarray(d, dtype=np.float64) for d in (d_h_a, d_h_b, d_a_b))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(d_a_b == 0, np.nan, (d_h_a - d_h_b) / d_a_b)[()]


# --------------------------------------------------------------------------- proportions and calibration


def wilson_interval(successes, trials, level: float = 0.95) -> Interval:
    """Wilson score interval of a binomial proportion, cell by cell.

    Parameters
    ----------
    successes, trials : array_like, broadcastable
        Counts, ``0 <= successes <= trials``.
    level : float, default 0.95
        Coverage of the interval, in (0, 1).

    Returns
    -------
    Interval
        ``(successes / trials, low, high)``, the broadcast shape; NaN where
        ``trials == 0``.

    Examples
    --------
    >>> [round(float(b), 4) for b in wilson_interval(8, 10)]
    [0.8, 0.4902, 0.9433]
    """
    _check_level(level)
    successes = np.asarray(successes, dtype=np.float64)
    trials = np.asarray(trials, dtype=np.float64)
    if np.any(successes < 0) or np.any(successes > trials):
        raise ValueError("successes must lie in [0, trials]")
    z = stats.norm.ppf(0.5 + level / 2)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.where(trials > 0, trials, np.nan)
        p = successes / n
        denom = 1 + z**2 / n
        center = (p + z**2 / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / denom
    # At k = 0 and k = n a bound is exactly 0 or 1; rounding would leave it a hair inside.
    low = np.where(successes == 0, 0.0, np.clip(center - half, 0.0, 1.0))
    high = np.where(successes == trials, 1.0, np.clip(center + half, 0.0, 1.0))
    return Interval(p[()], np.where(np.isnan(p), np.nan, low)[()], np.where(np.isnan(p), np.nan, high)[()])


def coverage_counts(y, lower, upper, axis: Axis) -> tuple[np.ndarray, np.ndarray]:
    """How many y fall inside ``[lower, upper]``, and over how many defined cells.

    A cell where any of the three is NaN is left out of both counts. Feed the
    pair to `wilson_interval` for an interval on the coverage.

    Parameters
    ----------
    y, lower, upper : array_like, broadcastable, shape (..., episode, ...)
        Realised values and interval bounds (e.g. the 0.05 and 0.95 quantiles).
    axis : int or tuple of int
        Axis (or axes) counted over.

    Returns
    -------
    covered, defined : np.ndarray of int, the broadcast shape without `axis`
    """
    y, lower, upper = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (y, lower, upper)))
    defined = ~(np.isnan(y) | np.isnan(lower) | np.isnan(upper))
    inside = defined & (lower <= y) & (y <= upper)
    return np.sum(inside, axis=axis), np.sum(defined, axis=axis)


def coverage(y, lower, upper, axis: Axis) -> np.ndarray:
    """Fraction of y inside ``[lower, upper]`` (bounds included), ignoring NaN cells.

    Parameters
    ----------
    y, lower, upper : array_like, broadcastable, shape (..., episode, ...)
        Realised values and interval bounds; a cell where any is NaN is ignored.
    axis : int or tuple of int
        Axis (or axes) averaged over.

    Returns
    -------
    np.ndarray, the broadcast shape without `axis`
        NaN where no cell is defined. For a calibrated predictor, the nominal
        level of the interval (0.9 for the 0.05–0.95 quantiles).
    """
    covered, defined = coverage_counts(y, lower, upper, axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(defined > 0, covered / np.maximum(defined, 1), np.nan)[()]


def reliability(prob, outcome_is_event, bins: int | Sequence[float] = 10) -> Reliability:
    """Reliability diagram of predicted event probabilities, pooled over all cells.

    For tokens, an event is "y_t = v": ``prob = exp(log_prob[..., v])`` and
    ``outcome_is_event = (y == v)``; stack several v to pool outcomes.

    Parameters
    ----------
    prob : array_like, any shape
        Predicted probabilities in [0, 1]; NaN cells are ignored.
    outcome_is_event : array_like, shape of `prob`
        Whether the event happened (bool, or 0/1 with NaN for undefined).
    bins : int or sequence of float, default 10
        Number of equal-width bins on [0, 1], or increasing bin edges. Bins
        are closed on the left; the last also holds its right edge.

    Returns
    -------
    Reliability
        ``(mean_predicted, observed_frequency, count)``, each of shape
        ``(bins,)``: the mean predicted probability and the observed event
        frequency of the cells in each bin (NaN for an empty bin), and their
        number.
    """
    prob = np.asarray(prob, dtype=np.float64).ravel()
    event = np.asarray(outcome_is_event, dtype=np.float64).ravel()
    if prob.shape != event.shape:
        raise ValueError(f"prob has {prob.size} cells, outcome_is_event {event.size}")
    edges = np.linspace(0.0, 1.0, bins + 1) if np.ndim(bins) == 0 else np.asarray(bins, dtype=np.float64)
    if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0):
        raise ValueError("bins must be a positive int or at least two increasing edges")
    keep = ~(np.isnan(prob) | np.isnan(event))
    prob, event = prob[keep], event[keep]
    if np.any((prob < 0) | (prob > 1)):
        raise ValueError("prob must lie in [0, 1]")
    num_bins = edges.size - 1
    index = np.clip(np.searchsorted(edges, prob, side="right") - 1, 0, num_bins - 1)
    count = np.bincount(index, minlength=num_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.bincount(index, weights=prob, minlength=num_bins) / count
        observed = np.bincount(index, weights=event, minlength=num_bins) / count
    return Reliability(mean_predicted, observed, count)


# --------------------------------------------------------------------------- xarray wrappers


def _dims(dim: Dim) -> list[Hashable]:
    return [dim] if isinstance(dim, str) or not isinstance(dim, Sequence) else list(dim)


def _reduce(func, arrays, dim: Dim, name: str) -> xr.DataArray:
    dims = _dims(dim)
    result = xr.apply_ufunc(
        func,
        *arrays,
        input_core_dims=[dims] * len(arrays),
        join="exact",
        keep_attrs=False,
        kwargs={"axis": tuple(range(-len(dims), 0))},
    )
    return result.rename(name)


def _interval_dataset(interval: tuple[xr.DataArray, ...], **extra: xr.DataArray) -> xr.Dataset:
    return xr.Dataset(dict(zip(Interval._fields, interval), **extra))


def xr_num_defined(values: xr.DataArray, dim: Dim = EPISODE) -> xr.DataArray:
    """`num_defined` over named dim(s); returns ``values`` without `dim`, named ``num_defined``."""
    return _reduce(num_defined, [values], dim, "num_defined")


def xr_cross_entropy(log_score: xr.DataArray, dim: Dim = EPISODE) -> xr.DataArray:
    """`cross_entropy` over named dim(s).

    Parameters
    ----------
    log_score : xr.DataArray, dims (..., episode, ...)
        E.g. the comparison Dataset's ``log_score (predictor, scenario, episode, position)``.
    dim : str or sequence of str, default "episode"

    Returns
    -------
    xr.DataArray named ``cross_entropy``, dims of `log_score` without `dim`
    """
    return _reduce(cross_entropy, [log_score], dim, "cross_entropy")


def xr_squared_error(
    prediction: xr.DataArray, target: xr.DataArray, dim: Dim = EPISODE, *, scale: float = 1.0
) -> xr.DataArray:
    """`squared_error` over named dim(s), inputs broadcast by name; named ``squared_error``."""
    dims = _dims(dim)
    result = xr.apply_ufunc(
        squared_error, prediction, target, input_core_dims=[dims] * 2, join="exact", keep_attrs=False,
        kwargs={"axis": tuple(range(-len(dims), 0)), "scale": scale},
    )
    return result.rename("squared_error")


def xr_excess_loss(log_score: xr.DataArray, ref_log_score: xr.DataArray, dim: Dim = EPISODE) -> xr.DataArray:
    """`excess_loss` over named dim(s); the inputs broadcast by name and must share coordinates.

    Parameters
    ----------
    log_score : xr.DataArray, dims (..., episode, ...)
    ref_log_score : xr.DataArray, dims (..., episode, ...)
        E.g. ``log_score.sel(predictor="bayes")``: broadcast against every predictor.
    dim : str or sequence of str, default "episode"

    Returns
    -------
    xr.DataArray named ``excess_loss``, the broadcast dims without `dim`
    """
    return _reduce(excess_loss, [log_score, ref_log_score], dim, "excess_loss")


def xr_bootstrap_interval(
    values: xr.DataArray,
    dim: Hashable = EPISODE,
    *,
    num_resamples: int = 1000,
    level: float = 0.95,
    rng: np.random.Generator,
) -> xr.Dataset:
    """`bootstrap_interval` over one named dim.

    Parameters
    ----------
    values : xr.DataArray, dims (..., episode, ...)
    dim : str, default "episode"
        The resampled dim.
    num_resamples, level, rng
        As in `bootstrap_interval`.

    Returns
    -------
    xr.Dataset
        Variables ``estimate``, ``low``, ``high`` and ``num_defined``, dims of
        `values` without `dim`; ``attrs["level"]`` and ``attrs["num_resamples"]``.
    """
    interval = xr.apply_ufunc(
        bootstrap_interval,
        values,
        input_core_dims=[[dim]],
        output_core_dims=[[], [], []],
        keep_attrs=False,
        kwargs={"axis": -1, "num_resamples": num_resamples, "level": level, "rng": rng},
    )
    result = _interval_dataset(interval, num_defined=xr_num_defined(values, dim))
    result.attrs.update(level=level, num_resamples=num_resamples)
    return result


def xr_cross_entropy_interval(
    log_score: xr.DataArray,
    dim: Hashable = EPISODE,
    *,
    num_resamples: int = 1000,
    level: float = 0.95,
    rng: np.random.Generator,
) -> xr.Dataset:
    """`cross_entropy_interval` over one named dim; returns the Dataset of `xr_bootstrap_interval`."""
    return xr_bootstrap_interval(-log_score, dim, num_resamples=num_resamples, level=level, rng=rng)


def _divergence(func, log_p, log_q, dim: Hashable, name: str) -> xr.DataArray:
    result = xr.apply_ufunc(
        func, log_p, log_q, input_core_dims=[[dim], [dim]], join="exact", keep_attrs=False, kwargs={"axis": -1}
    )
    return result.rename(name)


def xr_kl_divergence(log_p: xr.DataArray, log_q: xr.DataArray, dim: Hashable = OUTCOME) -> xr.DataArray:
    """`kl_divergence` over a named outcome dim.

    Parameters
    ----------
    log_p, log_q : xr.DataArray, dims (..., outcome)
        E.g. ``log_prob.sel(predictor="bayes")`` and ``log_prob`` (broadcast by
        name: KL of Bayes to every predictor). Coordinates must match.
    dim : str, default "outcome"

    Returns
    -------
    xr.DataArray named ``kl_divergence``, the broadcast dims without `dim`
    """
    return _divergence(kl_divergence, log_p, log_q, dim, "kl_divergence")


def xr_js_divergence(log_p: xr.DataArray, log_q: xr.DataArray, dim: Hashable = OUTCOME) -> xr.DataArray:
    """`js_divergence` over a named outcome dim; named ``js_divergence``, see `xr_kl_divergence`."""
    return _divergence(js_divergence, log_p, log_q, dim, "js_divergence")


def xr_hellinger(log_p: xr.DataArray, log_q: xr.DataArray, dim: Hashable = OUTCOME) -> xr.DataArray:
    """`hellinger` over a named outcome dim; named ``hellinger``, see `xr_kl_divergence`."""
    return _divergence(hellinger, log_p, log_q, dim, "hellinger")


def xr_grid_kl_divergence(log_p: xr.DataArray, log_q: xr.DataArray, dim: Hashable = Y_GRID) -> xr.DataArray:
    """`grid_kl_divergence` over a named grid dim whose coordinate holds the y values.

    Parameters
    ----------
    log_p, log_q : xr.DataArray, dims (..., y_grid)
        E.g. ``grid_log_density`` of two predictors; the `dim` coordinate is
        the grid and must match between them.
    dim : str, default "y_grid"

    Returns
    -------
    xr.DataArray named ``grid_kl_divergence``, the broadcast dims without `dim`
    """
    if dim not in log_p.coords:
        raise ValueError(f"log_p needs a {dim!r} coordinate holding the grid")
    y_grid = log_p[dim].to_numpy()
    result = xr.apply_ufunc(
        grid_kl_divergence,
        log_p,
        log_q,
        input_core_dims=[[dim], [dim]],
        join="exact", keep_attrs=False,
        kwargs={"y_grid": y_grid, "axis": -1},
    )
    return result.rename("grid_kl_divergence")


def xr_relative_distance(d_h_a: xr.DataArray, d_h_b: xr.DataArray, d_a_b: xr.DataArray) -> xr.DataArray:
    """`relative_distance` cell by cell, broadcast by name; named ``relative_distance``."""
    result = xr.apply_ufunc(relative_distance, d_h_a, d_h_b, d_a_b, join="exact", keep_attrs=False)
    return result.rename("relative_distance")


def xr_wilson_interval(successes: xr.DataArray, trials: xr.DataArray, level: float = 0.95) -> xr.Dataset:
    """`wilson_interval` cell by cell, broadcast by name.

    Returns
    -------
    xr.Dataset
        Variables ``estimate``, ``low``, ``high``; ``attrs["level"]``.
    """
    interval = xr.apply_ufunc(
        wilson_interval,
        successes,
        trials,
        output_core_dims=[[], [], []],
        join="exact",
        keep_attrs=False,
        kwargs={"level": level},
    )
    result = _interval_dataset(interval)
    result.attrs.update(level=level)
    return result


def xr_coverage(y: xr.DataArray, lower: xr.DataArray, upper: xr.DataArray, dim: Dim = EPISODE) -> xr.DataArray:
    """`coverage` over named dim(s), inputs broadcast by name; named ``coverage``.

    E.g. ``xr_coverage(ds.y, q.sel(quantile=0.05), q.sel(quantile=0.95))`` with
    ``q = ds.quantile_value``.
    """
    return _reduce(coverage, [y, lower, upper], dim, "coverage")


__all__ = [
    "Interval",
    "Reliability",
    "num_defined",
    "cross_entropy",
    "excess_loss",
    "squared_error",
    "bootstrap_interval",
    "cross_entropy_interval",
    "kl_divergence",
    "grid_kl_divergence",
    "js_divergence",
    "hellinger",
    "relative_distance",
    "wilson_interval",
    "coverage_counts",
    "coverage",
    "reliability",
    "xr_num_defined",
    "xr_cross_entropy",
    "xr_excess_loss",
    "xr_squared_error",
    "xr_bootstrap_interval",
    "xr_cross_entropy_interval",
    "xr_kl_divergence",
    "xr_js_divergence",
    "xr_hellinger",
    "xr_grid_kl_divergence",
    "xr_relative_distance",
    "xr_wilson_interval",
    "xr_coverage",
]
