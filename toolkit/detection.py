"""Misspecification detection: scores that do not know q, and how well they separate q from the prior (ROC AUC).

Two layers, as in `toolkit.metrics`: numpy functions over ``axis=``, thin
``xr_*`` wrappers over ``dim=``.

Scores, per (episode, position t), computed from the context y_≤t alone:

- `cumulative_surprise` and `standardize`: a predictor's surprise
  S_t = −Σ_{s≤t} log p(y_s | y_<s), standardised per t against its
  distribution on in-distribution episodes (episodes of the prior, which the
  learner's user can always simulate): z_t = (S_t − mean) / sd. High: the
  context surprises the predictor more than the prior's own data do.
- `prequential_surprise` (tokens) and `pit_surprise` (real y): Bayes'
  sequential posterior-predictive check of the context (Dawid 1984;
  Seillier-Moiseiwitsch & Dawid 1993): each y_s is scored against Bayes'
  posterior predictive given y_<s, and the scores are standardised by that
  predictive's own moments, so no reference sample is needed. For tokens
  Z_t = Σ_{s≤t} (−log p_s(y_s) − H_s) / √(Σ_{s≤t} V_s), with H_s and V_s the
  mean and variance of −log p_s(Y) under p_s: under the prior the terms are
  martingale differences, so the sum has mean 0 and variance E Σ V_s, and
  Z_t tends to N(0, 1) where the posterior settles (the martingale central
  limit theorem; at small t, or a posterior near certainty, it is skewed, so
  its AUC is read against in-distribution episodes). For real y the PIT
  values u_s = F_s(y_s) are i.i.d. Uniform(0, 1) under the prior (Rosenblatt
  1952), and Z_t = Σ_{s≤t} (Φ⁻¹(u_s)² − 1) / √(2t).

`auc` is the Mann–Whitney probability that a misspecified episode scores
higher than an in-distribution one (ties count one half); `auc_interval`
adds a percentile bootstrap over the episodes of both groups.

References
----------
Dawid, A. P. (1984). Present position and potential developments: some personal
views. Statistical theory: the prequential approach. *JRSS A* 147(2).
Seillier-Moiseiwitsch, F. & Dawid, A. P. (1993). On testing the validity of
sequential probability forecasts. *JASA* 88(421).
Rosenblatt, M. (1952). Remarks on a multivariate transformation. *Ann. Math. Stat.* 23(3).
Hanley, J. A. & McNeil, B. J. (1982). The meaning and use of the area under a
receiver operating characteristic (ROC) curve. *Radiology* 143(1).
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np
import xarray as xr
from scipy import special

from .dims import EPISODE, OUTCOME, POSITION
from .metrics import Interval

# Bytes the bootstrap's weight arrays may take at once.
_AUC_CHUNK_BYTES = 64 * 2**20


# --------------------------------------------------------------------------- scores


def _cumsum_defined(values: np.ndarray, axis: int) -> np.ndarray:
    """Cumulative sum along ``axis`` where NaN marks "no item here" (padding: adds nothing), NaN until the first item."""
    values = np.asarray(values, dtype=np.float64)
    seen = np.cumsum(~np.isnan(values), axis=axis) > 0
    return np.where(seen, np.cumsum(np.where(np.isnan(values), 0.0, values), axis=axis), np.nan)


def cumulative_surprise(log_score, axis: int = -1) -> np.ndarray:
    """S_t = −Σ_{s≤t} log p(y_s | y_<s) along the position ``axis``; NaN scores (padding) add nothing.

    An infinite surprise (a y_s the predictor gave probability zero) stays infinite.
    """
    return _cumsum_defined(-np.asarray(log_score, dtype=np.float64), axis)


def standardize(values, reference, axis: int) -> np.ndarray:
    """(values − mean) / sd, with the mean and standard deviation of ``reference`` over ``axis`` (NaN ignored).

    ``values`` and ``reference`` share every axis but ``axis`` (the episodes; their numbers may differ).
    Where the reference has no spread (sd 0 or undefined) the result is NaN.
    """
    reference = np.asarray(reference, dtype=np.float64)
    finite = np.where(np.isfinite(reference), reference, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"), _quiet():
        mean = np.nanmean(finite, axis=axis, keepdims=True)
        sd = np.nanstd(finite, axis=axis, ddof=1, keepdims=True)
        return (np.asarray(values, dtype=np.float64) - mean) / np.where(sd > 0, sd, np.nan)


def prequential_surprise(log_prob, y, *, position_axis: int = -2, outcome_axis: int = -1) -> np.ndarray:
    """Z_t = Σ_{s≤t}(−log p_s(y_s) − H_s) / √(Σ_{s≤t} V_s): the context checked against the predictive, tokens.

    Parameters
    ----------
    log_prob : array_like, shape (..., position, outcome)
        The predictive of y_s given y_<s at every position; NaN where undefined.
    y : array_like, shape (..., position)
        The realised outcomes; NaN (as float) on padding, which adds nothing.
    position_axis, outcome_axis : int
        Axes of ``log_prob``; ``y`` has ``log_prob``'s shape without the outcome axis.

    Returns
    -------
    np.ndarray, shape of ``y``
        A self-normalised martingale when the data come from the predictor's own prior (about N(0, 1)
        once its posterior settles); large when the
        context surprises it more than its predictive expects; ``+inf`` from a y_s it gave probability
        zero on (and where it is undefined after one); NaN where it was certain at every position so far.
    """
    lp = np.moveaxis(np.asarray(log_prob, dtype=np.float64), (position_axis, outcome_axis), (-2, -1))
    y = np.asarray(y, dtype=np.float64)
    p = np.exp(lp)
    with np.errstate(invalid="ignore"):
        plogp = np.where(p > 0, p * lp, 0.0)
        entropy = -plogp.sum(-1)
        second = np.where(p > 0, p * lp**2, 0.0).sum(-1)
    index = np.clip(np.nan_to_num(y, nan=0.0), 0, lp.shape[-1] - 1).astype(np.int64)[..., None]
    surprise = -np.take_along_axis(lp, index, axis=-1)[..., 0]
    padding = np.isnan(y)
    undefined = np.any(np.isnan(lp), axis=-1) & ~padding
    step = np.where(padding, np.nan, np.where(undefined, np.inf, surprise - entropy))
    variance = np.where(padding, np.nan, second - entropy**2)
    axis = y.ndim - 1
    total, spread = _cumsum_defined(step, axis), _cumsum_defined(variance, axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = total / np.sqrt(np.where(spread > 0, spread, np.nan))
    # a y_s of probability zero under the predictive (or after one, where it is undefined): surprise without bound
    return np.where(np.isinf(total), np.inf, z)


def pit_surprise(pit, axis: int = -1) -> np.ndarray:
    """Z_t = Σ_{s≤t}(Φ⁻¹(u_s)² − 1) / √(2t) of PIT values u_s = F_s(y_s) along the position ``axis``.

    Under the predictor's own prior the u_s are i.i.d. Uniform(0, 1), so Z_t has mean 0 and variance 1;
    it grows when the realised y fall further from the predictive's centre than its spread says.
    NaN PIT values (padding) add nothing and do not count in t.
    """
    u = np.clip(np.asarray(pit, dtype=np.float64), 1e-300, 1.0 - 1e-16)
    z = special.ndtri(u)
    step = np.where(np.isnan(u), np.nan, z**2 - 1.0)
    count = np.cumsum(~np.isnan(u), axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _cumsum_defined(step, axis) / np.sqrt(2.0 * count)


class _quiet:
    """Silence numpy's "mean of empty slice" warnings: an all-NaN slice means NaN here."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


# --------------------------------------------------------------------------- AUC


def _weighted_auc(neg: np.ndarray, pos: np.ndarray, w_neg: np.ndarray, w_pos: np.ndarray) -> np.ndarray:
    """AUC per row: Σ_j w⁺_j (W⁻(< s_j) + ½ W⁻(= s_j)) / (Σ w⁺ Σ w⁻), rows (B, n), weights (R, n) -> (B, R).

    The negatives of a row are sorted once; W⁻ below each positive is a cumulative sum of their weights
    in that order, read where the positive would be inserted, so each resample costs O(n).
    """
    out = np.empty((neg.shape[0], w_neg.shape[0]))
    w_neg_t, w_pos_t = np.ascontiguousarray(w_neg.T), np.ascontiguousarray(w_pos.T)  # (n, R): rows gather fast
    for b in range(neg.shape[0]):
        keep_neg = np.flatnonzero(~np.isnan(neg[b]))
        keep_pos = np.flatnonzero(~np.isnan(pos[b]))
        order = keep_neg[np.argsort(neg[b, keep_neg], kind="stable")]
        sorted_neg = neg[b, order]
        s = pos[b, keep_pos]
        below = np.searchsorted(sorted_neg, s, side="left")  # negatives < s_j
        not_above = np.searchsorted(sorted_neg, s, side="right")  # negatives <= s_j
        cum = np.zeros((order.size + 1, w_neg.shape[0]))
        np.cumsum(w_neg_t[order], axis=0, out=cum[1:])
        wp = w_pos_t[keep_pos]
        numerator = np.einsum("jr,jr->r", wp, cum[below] + cum[not_above]) * 0.5
        total = wp.sum(axis=0) * cum[-1]
        with np.errstate(invalid="ignore", divide="ignore"):
            out[b] = np.where(total > 0, numerator / total, np.nan)
    return out


def auc(negative, positive, axis: int = -1) -> np.ndarray:
    """ROC AUC of ``positive`` against ``negative``: P(X⁺ > X⁻) + ½ P(X⁺ = X⁻) (Mann–Whitney U / (n⁺ n⁻)).

    Parameters
    ----------
    negative, positive : array_like, shapes (..., n⁻, ...) and (..., n⁺, ...)
        Scores of the two groups (in-distribution and misspecified episodes); every axis but ``axis``
        must match. NaN scores are left out; ``+inf`` ranks above every finite score.
    axis : int
        The axis of the observations (episodes).

    Returns
    -------
    np.ndarray, the shape without ``axis``
        In [0, 1]; 0.5 when the score does not separate the groups, NaN where a group is empty.
    """
    neg = np.moveaxis(np.asarray(negative, dtype=np.float64), axis, -1)
    pos = np.moveaxis(np.asarray(positive, dtype=np.float64), axis, -1)
    batch = neg.shape[:-1]
    out = _weighted_auc(neg.reshape(-1, neg.shape[-1]), pos.reshape(-1, pos.shape[-1]),
                        np.ones((1, neg.shape[-1])), np.ones((1, pos.shape[-1])))
    return out[:, 0].reshape(batch)[()]


def auc_interval(negative, positive, axis: int = -1, *, num_resamples: int = 1000, level: float = 0.95,
                 rng: np.random.Generator) -> Interval:
    """`auc` with a percentile bootstrap interval: each group's observations resampled with replacement.

    The resampled observations are shared by every other index (each position, each predictor), as in
    `toolkit.metrics.bootstrap_interval`; resample r of a group of n draws ``rng.integers(0, n, n)``,
    the negatives' resamples first.

    Returns
    -------
    Interval
        ``(estimate, low, high)``, each of the shape without ``axis``.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be at least 1, got {num_resamples}")
    neg = np.moveaxis(np.asarray(negative, dtype=np.float64), axis, -1)
    pos = np.moveaxis(np.asarray(positive, dtype=np.float64), axis, -1)
    batch, n_neg, n_pos = neg.shape[:-1], neg.shape[-1], pos.shape[-1]
    neg, pos = neg.reshape(-1, n_neg), pos.reshape(-1, n_pos)
    estimate = _weighted_auc(neg, pos, np.ones((1, n_neg)), np.ones((1, n_pos)))[:, 0]

    def counts(n):
        index = rng.integers(0, n, size=(num_resamples, n))
        rows = np.arange(num_resamples)[:, None] * n
        return np.bincount((index + rows).ravel(), minlength=num_resamples * n).reshape(num_resamples, n)

    w_neg, w_pos = counts(n_neg).astype(np.float64), counts(n_pos).astype(np.float64)
    chunk = max(1, _AUC_CHUNK_BYTES // (8 * 6 * (n_neg + n_pos)))
    resampled = np.concatenate(
        [_weighted_auc(neg, pos, w_neg[s : s + chunk], w_pos[s : s + chunk]) for s in range(0, num_resamples, chunk)],
        axis=1,
    )
    with np.errstate(invalid="ignore"), _quiet():
        low = np.nanquantile(resampled, (1 - level) / 2, axis=1)
        high = np.nanquantile(resampled, (1 + level) / 2, axis=1)
    return Interval(*(a.reshape(batch)[()] for a in (estimate, low, high)))


# --------------------------------------------------------------------------- xarray wrappers


def xr_cumulative_surprise(log_score: xr.DataArray, dim: Hashable = POSITION) -> xr.DataArray:
    """`cumulative_surprise` along the named position dim; same dims, named ``surprise``."""
    out = xr.apply_ufunc(cumulative_surprise, log_score, input_core_dims=[[dim]], output_core_dims=[[dim]],
                         kwargs={"axis": -1})
    return out.transpose(*log_score.dims).rename("surprise")


def xr_standardize(values: xr.DataArray, reference: xr.DataArray, dim: Hashable = EPISODE) -> xr.DataArray:
    """`standardize` with the reference's mean and sd over ``dim``; ``values`` keeps its dims."""
    ref = reference.rename({dim: "_reference"})
    out = xr.apply_ufunc(
        lambda v, r: standardize(v[..., None], r, axis=-1)[..., 0], values, ref,
        input_core_dims=[[], ["_reference"]], join="exact",
    )
    return out.transpose(*values.dims)


def xr_prequential_surprise(log_prob: xr.DataArray, y: xr.DataArray, dim: Hashable = POSITION,
                            outcome: Hashable = OUTCOME) -> xr.DataArray:
    """`prequential_surprise` over the named position and outcome dims; dims of ``y`` (broadcast)."""
    out = xr.apply_ufunc(prequential_surprise, log_prob, y, input_core_dims=[[dim, outcome], [dim]],
                         output_core_dims=[[dim]], kwargs={"position_axis": -2, "outcome_axis": -1})
    return out.rename("prequential_surprise")


def xr_pit_surprise(pit: xr.DataArray, dim: Hashable = POSITION) -> xr.DataArray:
    """`pit_surprise` along the named position dim; same dims."""
    out = xr.apply_ufunc(pit_surprise, pit, input_core_dims=[[dim]], output_core_dims=[[dim]], kwargs={"axis": -1})
    return out.transpose(*pit.dims).rename("pit_surprise")


def xr_auc_interval(negative: xr.DataArray, positive: xr.DataArray, dim: Hashable = EPISODE, *,
                    num_resamples: int = 1000, level: float = 0.95, rng: np.random.Generator) -> xr.Dataset:
    """`auc_interval` over the named observation dim (the groups may differ in its length).

    Returns
    -------
    xr.Dataset
        ``estimate``, ``low``, ``high`` over the other dims (which must match).
    """
    neg, pos = negative.rename({dim: "_negative"}), positive.rename({dim: "_positive"})
    out = xr.apply_ufunc(
        lambda a, b: tuple(auc_interval(a, b, -1, num_resamples=num_resamples, level=level, rng=rng)), neg, pos,
        input_core_dims=[["_negative"], ["_positive"]], output_core_dims=[[], [], []], join="exact",
    )
    return xr.Dataset(dict(zip(Interval._fields, out)), attrs={"level": level, "num_resamples": num_resamples})


__all__ = [
    "cumulative_surprise",
    "standardize",
    "prequential_surprise",
    "pit_surprise",
    "auc",
    "auc_interval",
    "xr_cumulative_surprise",
    "xr_standardize",
    "xr_prequential_surprise",
    "xr_pit_surprise",
    "xr_auc_interval",
]
