"""Exact Bayes by enumerating a prior's finite latents.

Cumulative path. For a model whose observations are i.i.d. given global
latents with finite support, one vectorised trace per latent value gives the
pointwise log-likelihood ``l[k, episode, t]``; cumulative sums over t give the
log posterior weight of every latent value for every prefix at once, O(K·T)
per episode. When every latent's p(y_t | k) is the same at every position (tokens),
the outcome counts of y_<t are sufficient: the sums run over the distinct count
vectors of the contexts, one exp per (distinct context, latent). Regression
runs one compiled scan over fixed-size latent chunks. The predictive mixes the per-latent predictives with those
weights. The latent axis is processed in chunks with running log-sum-exp
accumulators, so 10⁶–10⁷ latent values fit in memory. Everything runs in float64.

Prefix-masking path. When observations are not independent given the global
latents (local latents on the position axis, e.g. an HMM's hidden states
written with ``scan``), each prefix's marginal likelihood is computed on its
own: the likelihood of ``y`` at positions after t is masked
(`ObservationMask`), so every cell shares one array shape and one
compilation, and NumPyro's enumeration (funsor; the forward algorithm for a
``scan``) sums the local latents out. p(y_t = v | y_<t) = p(y_<t, y_t = v) /
p(y_<t): O(K·T²·V) per episode, so any finite-latent model works, if more slowly.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache, partial
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import logsumexp, ndtr
from numpyro import handlers
from numpyro.primitives import Messenger

from .dims import POSITION_PLATE, X_SITE, Y_SITE
from .episodes import Episodes
from .errors import ModelError
from .prior import Prior
from .validation import SCAN_TAG, model_trace

# Elements of one chunk's largest intermediate (latent x episode x position [x values]); small
# chunks keep the cumulative path in cache (2**20 ran 1.6x faster than 2**24 at T = 256).
DEFAULT_CHUNK_ELEMENTS = 2**20

EnumerationMethod = Literal["auto", "cumulative", "prefix"]


@dataclass(frozen=True)
class LatentGrid:
    """The joint support of a prior's enumerable global latents.

    ``values[name]`` has shape (K, *site_shape): the joint grid in C order over the sites.
    """

    names: tuple[str, ...]
    sizes: tuple[int, ...]
    supports: dict[str, np.ndarray]

    @property
    def size(self) -> int:
        return math.prod(self.sizes)

    def values(self, index: np.ndarray) -> dict[str, np.ndarray]:
        """Latent values at joint indices ``index`` (shape (k,))."""
        if not self.names:  # no latents: the single "value" is the empty assignment
            return {}
        parts = np.unravel_index(index, self.sizes)
        return {n: self.supports[n][i] for n, i in zip(self.names, parts)}


def latent_grid(prior: Prior, *, max_support: int | None = None, allow_local: bool = False) -> LatentGrid:
    """Enumerate the joint support of the prior's global latents.

    A global latent without finite support may be enumerated on a grid the
    prior declares: ``Prior(..., metadata={"grid": {name: values}})`` with
    ``values`` of shape (K, *site_shape); its prior weights are its density
    at the grid points, normalised over the grid.

    Parameters
    ----------
    allow_local : bool
        Accept local latents (on the position axis) with finite support: the
        prefix-masking path sums them out by enumeration.

    Raises
    ------
    ModelError
        A latent without finite support, a local latent (unless
        ``allow_local``), or a joint support larger than ``max_support``.
    """
    tr = model_trace(prior, 2)
    latents = prior.latent_sites(2)
    local = prior.local_latent_sites(2)
    if local and not allow_local:
        raise ModelError(
            f"latent sites {sorted(local)} sit inside the position plate: observations are not i.i.d. "
            "given global latents, so the cumulative enumeration path does not apply"
        )
    for name, info in local.items():
        if not info.has_enumerate_support:
            raise ModelError(
                f"local latent site {name!r} (on the position axis) has no finite support, so it cannot be "
                "summed out by enumeration; use the MCMC engine"
            )
    declared = dict(prior.metadata.get("grid") or {})
    names, sizes, supports = [], [], {}
    for name, info in latents.items():
        if name in declared:
            support = np.asarray(declared[name], dtype=np.asarray(tr[name]["value"]).dtype)
        elif not info.has_enumerate_support or info.support_size is None:
            raise ModelError(f"latent site {name!r} has no finite support; use the MCMC engine or declare a grid")
        else:
            support = np.asarray(tr[name]["fn"].enumerate_support(expand=False))
        support = support.reshape((support.shape[0],) + info.shape)
        names.append(name)
        sizes.append(support.shape[0])
        supports[name] = support
    grid = LatentGrid(tuple(names), tuple(sizes), supports)
    if max_support is not None and grid.size > max_support:
        raise ModelError(
            f"the joint latent support has {grid.size} values, above max_support={max_support}; "
            "raise max_support or use the MCMC engine"
        )
    return grid


def _component_fn(prior: Prior, length: int):
    """Build ``f(latent_values, x_episode) -> (log_prior, fn)`` over one latent value."""

    def trace_at(values, x):
        model = handlers.substitute(handlers.seed(prior.model, jax.random.key(0)), data=values)
        kwargs = prior.data_kind.model_kwargs(x=x)
        tr = handlers.trace(model).get_trace(length, **kwargs)
        log_prior = sum(jnp.sum(tr[n]["fn"].log_prob(values[n])) for n in values)
        return log_prior, tr[Y_SITE]["fn"]

    return trace_at


def enumerate_predictive(
    prior: Prior,
    episodes: Episodes,
    *,
    y_grid: np.ndarray | None = None,
    max_support: int | None = None,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
    method: EnumerationMethod = "auto",
) -> dict[str, np.ndarray]:
    """Exact posterior predictive of y_t given y_<t for every episode and position.

    Parameters
    ----------
    prior : Prior
        A prior whose global latents have finite joint support (local latents,
        if any, finite too).
    episodes : Episodes
        ``y (episode, position)`` (and ``x`` for regression).
    y_grid : np.ndarray, shape (y_grid,), optional
        Regression only: points for ``grid_log_density`` and for inverting the CDF.
    method : {"auto", "cumulative", "prefix"}
        ``"cumulative"`` needs observations i.i.d. given the global latents;
        ``"prefix"`` (prefix masking) works for any finite-latent model;
        ``"auto"`` takes the cumulative path when the model has no local latents.

    Returns
    -------
    dict
        Tokens: ``log_prob (episode, position, outcome)``. Regression:
        ``log_score``, ``mean``, ``variance`` (episode, position) and, with a
        grid, ``grid_log_density (episode, position, y_grid)`` and
        ``grid_cdf``. Always ``log_evidence (episode, position)`` = log p(y_<t)
        of the context before t. Cells whose context has probability zero are NaN.
    """
    if method not in ("auto", "cumulative", "prefix"):
        raise ModelError(f"enumeration method must be 'auto', 'cumulative' or 'prefix', got {method!r}")
    if method == "auto":
        method = enumeration_path(prior)
    grid = latent_grid(prior, max_support=max_support, allow_local=method == "prefix")
    tables = prior.data_kind.finite_outcomes  # a table over the outcomes, else densities and moments of real y
    if method == "prefix":
        if tables:
            return _prefix_tokens(prior, episodes, grid, chunk_elements)
        return _prefix_regression(prior, episodes, grid, y_grid, chunk_elements)
    if tables:
        return _enumerate_tokens(prior, episodes, grid, chunk_elements)
    return _enumerate_regression(prior, episodes, grid, y_grid, chunk_elements)


def enumerate_posterior(
    prior: Prior,
    episodes: Episodes,
    *,
    max_support: int | None = None,
    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
) -> tuple[LatentGrid, np.ndarray]:
    """The exact posterior over the joint grid of the global latents given each whole episode.

    log p(k | y, x) ∝ log p(k, y[observed]) from `log_joint_fn` (local latents, if any, summed out by
    NumPyro's enumeration), one vectorised trace per (latent value, episode), chunked over the grid.

    Parameters
    ----------
    prior : Prior
        A prior whose global latents have finite joint support (or a declared grid).
    episodes : Episodes
        ``y (episode, position)`` (``x`` for regression; ``mask`` leaves padding out).

    Returns
    -------
    grid : LatentGrid
        The joint grid; ``grid.values(index)`` gives the latent values of joint indices.
    log_weights : np.ndarray, shape (episode, K)
        Normalised log posterior weights; NaN for an episode of probability zero under the prior.
    """
    grid = latent_grid(prior, max_support=max_support, allow_local=True)
    num_episodes, length = episodes.y.shape
    log_joint = log_joint_fn(prior, length)
    y = jnp.asarray(prior.data_kind.cast_y(episodes.y))
    if episodes.x is None:
        x = jnp.zeros((num_episodes, length, 1))  # tokens: the model takes no x
    else:
        x = jnp.asarray(episodes.x, dtype=jnp.float64)
        if len(prior.sites(3)[X_SITE].shape) == 1:
            x = x[..., 0]  # the model's x site is (position,): one feature, no feature dim
    observed = jnp.ones((num_episodes, length), bool) if episodes.mask is None else jnp.asarray(episodes.mask)
    per_episode = jax.vmap(log_joint, in_axes=(None, 0, 0, 0))
    table = jax.jit(jax.vmap(per_episode, in_axes=(0, None, None, None)))
    size = int(min(grid.size, max(1, chunk_elements // max(num_episodes * length, 1))))
    if grid.names:
        parts = [np.asarray(table(values, y, x, observed))[: int(valid.sum())]  # the padding is at the end
                 for values, valid in _padded_chunks(grid, size)]
        log_w = np.concatenate(parts, axis=0).T  # (episode, K)
    else:  # no latents: one "value", weight 1
        log_w = np.zeros((num_episodes, 1))
    with np.errstate(invalid="ignore"):
        total = np.logaddexp.reduce(log_w, axis=1, keepdims=True)
        return grid, np.where(np.isfinite(total), log_w - total, np.nan)


def enumeration_path(prior: Prior) -> Literal["cumulative", "prefix"]:
    """``"cumulative"`` when observations are i.i.d. given the global latents (no local latents), else ``"prefix"``."""
    return "prefix" if prior.local_latent_sites(2) else "cumulative"


def _exclusive_cumsum(lik):
    """Σ_{s<t} lik[..., s] along the last axis.

    Not ``cumsum(lik) - lik``: an impossible observation (lik = -inf) would give -inf - (-inf) = NaN
    there, and the zero-probability context after it would poison every latent's weight.
    """
    total = jnp.cumsum(lik, axis=-1)
    return jnp.concatenate([jnp.zeros_like(total[..., :1]), total[..., :-1]], axis=-1)


def _context_counts(y: np.ndarray, observed: np.ndarray, num_outcomes: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct outcome counts of the contexts y_<t, and which one each (episode, position) has.

    Returns ``counts (context, outcome)``: n_v(y_<t), masked positions not counted, each distinct count
    vector once; and ``index (episode, position)`` into it. When every latent's p(y_t | k) is the same
    at every position, the counts are a sufficient statistic: log p(k, y_<t) = log p(k) + Σ_v n_v log p_k(v).
    """
    num_episodes, length = y.shape
    tokens = np.where(observed, y, 0).astype(np.int64)
    base = max(length, 2)  # an exclusive count is at most T - 1
    if num_outcomes * math.log2(base) < 62:  # a count vector fits one int64 key, written in base T
        step = np.where(observed, base**tokens, 0)  # y_t = v adds base**v
        key = (np.cumsum(step, axis=1) - step).reshape(-1)  # the context before t
        if base**num_outcomes <= 4 * key.size:  # few possible keys: mark them, no sort
            present = np.zeros(base**num_outcomes, bool)
            present[key] = True
            unique = np.flatnonzero(present)
            index = (np.cumsum(present) - 1)[key]
        else:
            unique, index = np.unique(key, return_inverse=True)
        counts = (unique[:, None] // base ** np.arange(num_outcomes)) % base
    else:
        onehot = (tokens[..., None] == np.arange(num_outcomes)) & observed[..., None]
        counts = np.cumsum(onehot, axis=1, dtype=np.int64) - onehot
        counts, index = np.unique(counts.reshape(-1, num_outcomes), axis=0, return_inverse=True)
    return counts.astype(np.float64), index.reshape(num_episodes, length)


def _token_chunks(grid: LatentGrid, size: int, start: int = 0):
    """``(first, values, valid)`` for fixed-size chunks of the joint grid from ``start``, as numpy arrays.

    The last chunk is padded with index 0 and ``valid`` False, so every chunk shares one compilation.
    """
    for first in range(start, grid.size, size):
        index = np.arange(first, first + size)
        valid = index < grid.size
        yield first, grid.values(np.where(valid, index, 0)), valid


@lru_cache(maxsize=32)
def _component_table_fn(prior: Prior, length: int):
    """``table(values, valid) -> (log_prior (k,), log p(y_t = v | k) (k, position, outcome))``, compiled once per prior.

    Padded latents (``valid`` False) get log prior -inf, so they weigh nothing. The program runs on
    k·T·V numbers per chunk, next to the accumulation's k·contexts, so it is compiled without LLVM's
    optimisation passes: half the compile time, no measurable run time.
    """
    trace_at = _component_fn(prior, length)
    outcomes = np.arange(prior.num_outcomes)[:, None]

    @partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
    def component_table(values, valid):
        def one(v):
            log_prior, fn = trace_at(v, None)
            return log_prior, fn.log_prob(outcomes).T  # (position, outcome)

        log_prior, table = jax.vmap(one, axis_size=valid.shape[0])(values)  # no latents: one value, weight 1
        return jnp.where(valid, log_prior, -jnp.inf), table

    return component_table


def _accumulate_counts(carry, log_prior, log_p, counts):
    """Fold a chunk of latents whose p(y_t | k) = p_k does not depend on t into running sums per context.

    ``log_prior (k,)``, ``log_p (k, outcome)``, ``counts (outcome, context)`` (`_context_counts`', transposed):
    log p(k, y_<t) = log p(k) + Σ_v n_v log p_k(v), then the fold of `_accumulate_tokens`. In numpy, with
    no compilation (which would take several times as long as the fold on a first call); ``einsum``,
    not ``@``: these products have an inner dimension of V or k, where BLAS's threads only cost.
    """
    shift, num, den = carry
    finite = np.isfinite(log_p)
    log_w = np.einsum("kv,vc->kc", np.where(finite, log_p, 0.0), counts)  # (k, context)
    log_w += log_prior[:, None]
    if not finite.all():  # n_v log p_k(v) with p_k(v) = 0: -inf once v has been seen (not 0 · -inf = NaN)
        log_w[np.einsum("kv,vc->kc", (~finite).astype(np.float64), (counts > 0).astype(np.float64)) > 0] = -np.inf
    new_shift = np.maximum(shift, log_w.max(axis=0))
    safe = np.where(np.isfinite(new_shift), new_shift, 0.0)  # an impossible context keeps zero sums
    rescale = np.exp(shift - safe)
    log_w -= safe
    w = np.exp(log_w, out=log_w)
    mixed = np.einsum("kc,kv->vc", w, np.exp(log_p)).T  # (context, outcome); this order runs fastest
    return new_shift, num * rescale[:, None] + mixed, den * rescale + w.sum(axis=0)


@jax.jit
def _accumulate_tokens(carry, log_prior, table, y, observed):
    """Fold a chunk of latents over every (episode, position), rescaled to a running max of the log weights.

    ``num[e, t, v] = Σ_k exp(log_w[k, e, t] − shift[e, t]) p_k(v)`` and ``den = Σ_k exp(log_w − shift)``:
    one exp over (k, episode, position) and a contraction over k, rather than a log-sum-exp over
    (k, episode, position, outcome).
    """
    shift, num, den = carry
    lik = table[:, jnp.arange(y.shape[1])[None, :], y]  # log p(y_t | k): (k, episode, position)
    lik = jnp.where(observed[None], lik, 0.0)  # padding contributes nothing
    log_w = log_prior[:, None, None] + _exclusive_cumsum(lik)  # log p(k, y_<t)
    new_shift = jnp.maximum(shift, jnp.max(log_w, axis=0))
    safe = jnp.where(jnp.isfinite(new_shift), new_shift, 0.0)  # an impossible context keeps zero sums
    rescale = jnp.exp(shift - safe)
    w = jnp.exp(log_w - safe[None])
    num = num * rescale[..., None] + jnp.einsum("ket,ktv->etv", w, jnp.exp(table))
    den = den * rescale + jnp.sum(w, axis=0)
    return new_shift, num, den


def _enumerate_tokens(prior: Prior, episodes: Episodes, grid: LatentGrid, chunk_elements: int):
    """Cumulative path for tokens: one table and one accumulation call per chunk of latents.

    While every latent's p(y_t | k) is the same at every position (checked on each chunk's table), the
    sums run over the distinct count vectors of the contexts (`_context_counts`): one exp per
    (distinct context, latent), no cumulative sum. From the first chunk whose table depends on the
    position, they run over every (episode, position) by cumulative sums of log p(y_t | k).
    """
    num_episodes, length = episodes.y.shape
    num_outcomes = prior.num_outcomes
    component_table = _component_table_fn(prior, length)
    y = np.asarray(episodes.y)
    observed = np.ones(y.shape, bool) if episodes.mask is None else np.asarray(episodes.mask, bool)
    counts, index = _context_counts(y, observed, num_outcomes)
    contexts = counts.shape[0]
    counts = np.ascontiguousarray(counts.T)  # (outcome, context)
    carry = (np.full(contexts, -np.inf), np.zeros((contexts, num_outcomes)), np.zeros(contexts))
    # a chunk's largest arrays: log weights (k, context) and the table (k, position, outcome)
    per_chunk = int(min(grid.size, max(1, chunk_elements // max(contexts, length * num_outcomes, 1))))
    by_cell = None  # the first latent whose table depends on the position
    for first, values, valid in _token_chunks(grid, per_chunk):
        log_prior, table = (np.asarray(a) for a in component_table(values, valid))
        if not np.array_equal(table, np.broadcast_to(table[:, :1], table.shape)):
            by_cell = first
            break
        carry = _accumulate_counts(carry, log_prior, table[:, 0], counts)
    if by_cell is not None:
        carry = tuple(np.asarray(a)[index] for a in carry)  # each cell takes its context's sums so far
        safe_y = np.where(observed, y, 0).astype(np.int64)
        per_chunk = int(min(grid.size, max(1, chunk_elements // max(num_episodes * length, length * num_outcomes, 1))))
        for _, values, valid in _token_chunks(grid, per_chunk, start=by_cell):
            log_prior, table = component_table(values, valid)
            carry = _accumulate_tokens(carry, log_prior, table, safe_y, observed)
    shift, num, den = (np.asarray(a) for a in carry)
    defined = den > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        log_prob = np.where(defined[..., None], np.log(num) - np.log(den)[..., None], np.nan)
        log_evidence = np.where(defined, np.log(den) + shift, -np.inf)
    if by_cell is None:  # sums per distinct context: each cell takes its context's
        log_prob, log_evidence = log_prob[index], log_evidence[index]
    return {"log_prob": log_prob, "log_evidence": log_evidence}


def _enumerate_regression(prior: Prior, episodes: Episodes, grid: LatentGrid, y_grid, chunk_elements: int):
    """Cumulative path for real y: compiled scans over chunks of latents with running sums.

    ``L[k, e, s] = log p(k, y_<s)`` for the T + 1 prefix lengths s = 0..T, one exp each, rescaled to a
    running max over k; every output is a ratio of sums over k of the weights ``w = exp(L − shift)``:
    p(y_<t) is the sum at s = t; p(y_t | y_<t) the sum at t + 1 over the sum at t (so a y_t far from
    every component gets its exact log score, not an underflowed exp); the moments, the grid density
    and the CDF are the w-weighted sums of each latent's own mean, variance, density and CDF. Exact:
    nothing is binned, and only float64 rounding separates it from the sum over every latent.
    """
    num_episodes, length = episodes.y.shape
    points = np.zeros((0,)) if y_grid is None else np.asarray(y_grid, dtype=np.float64).reshape(-1)
    num_grid = int(points.shape[0])
    if episodes.x is None:
        raise ModelError("regression enumeration needs episodes with x (episode, position, feature)")
    y = jnp.asarray(episodes.y, dtype=jnp.float64)
    x = jnp.asarray(episodes.x, dtype=jnp.float64)
    if len(prior.sites(3)[X_SITE].shape) == 1:
        x = x[..., 0]  # the model's x site is (position,): one feature, no feature dim
    observed = np.ones(y.shape, bool) if episodes.mask is None else np.asarray(episodes.mask, bool)
    normal = _normal_parts(model_trace(prior, length)[Y_SITE]["fn"]) is not None
    # one latent's largest intermediates: its (episode, position) tables, and per position its grid terms
    # (episode, y_grid) for a Normal y, or its whole (episode, position, y_grid) tables otherwise
    per_latent = num_episodes * (length + 1) * (4 if normal else 3 + 2 * num_grid)
    latents_per_chunk = int(min(grid.size, max(1, chunk_elements // per_latent)))
    num_chunks = -(-grid.size // latents_per_chunk)
    accumulate = _regression_accumulator_fn(prior, length, grid.names, grid.sizes, latents_per_chunk, normal)
    supports = tuple(jnp.asarray(grid.supports[n]) for n in grid.names)
    data = (x, y, jnp.asarray(observed), jnp.asarray(points))
    # XLA runs one fusion on one core: independent runs over interleaved shares of the chunks use every core.
    # Shares are padded to one length with all-padding chunks (zero weight), so one executable serves them all.
    parts = [np.arange(i, num_chunks, REGRESSION_THREADS) * latents_per_chunk for i in range(REGRESSION_THREADS)]
    parts = [p for p in parts if len(p)]
    longest = max(len(p) for p in parts)
    beyond = num_chunks * latents_per_chunk  # a chunk starting here holds no latent
    parts = [np.concatenate([p, np.full(longest - len(p), beyond, dtype=p.dtype)]) for p in parts]
    run = _compiled(accumulate, (supports, *data, jnp.asarray(parts[0])))  # traced here, in this thread only
    # one host thread per run, each blocking on its own result, so the runs execute side by side (JAX releases
    # the GIL while XLA runs; dispatched from one thread they ran mostly one after the other)
    with ThreadPoolExecutor(max_workers=len(parts)) as pool:
        runs = list(pool.map(lambda p: [np.asarray(a) for a in run(supports, *data, jnp.asarray(p))], parts))
    shift, den, m1, m2, pdf, cdf = _merge_sums(runs)
    with np.errstate(invalid="ignore", divide="ignore"):
        log_den = np.where(den > 0, np.log(den) + shift, -np.inf)  # log p(y_<s), s = 0..T
        before = den[:, :length]
        nan = np.where(before > 0, 0.0, np.nan)  # a context of probability zero: undefined, not guessed
        mean = m1 / before
        out = {
            "log_score": np.where(observed, log_den[:, 1:] - log_den[:, :-1], np.nan) + nan,
            "mean": mean + nan,
            "variance": m2 / before - mean**2 + nan,
            "log_evidence": log_den[:, :length],
        }
        if num_grid:
            out["grid_log_density"] = np.log(pdf / before[..., None]) + nan[..., None]
            out["grid_cdf"] = cdf / before[..., None] + nan[..., None]
    return out


# Concurrent runs of the regression accumulator (each over its share of the latent chunks).
REGRESSION_THREADS = max(1, min(4, os.cpu_count() or 1))

_COMPILED: dict = {}
_COMPILED_LOCK = threading.Lock()


def _compiled(fn, args):
    """``fn`` (jitted) compiled ahead of time for the shapes of ``args``, cached per function and shapes.

    Tracing a NumPyro model is not thread-safe (its handler stack is global), so the threads that run the
    accumulator side by side call this executable, traced once here, rather than the jitted function.
    """
    leaves, tree = jax.tree.flatten(args)
    key = (fn, tree, tuple((np.shape(a), str(jnp.asarray(a).dtype)) for a in leaves))
    with _COMPILED_LOCK:
        if key not in _COMPILED:
            if len(_COMPILED) >= 32:
                _COMPILED.pop(next(iter(_COMPILED)))
            _COMPILED[key] = fn.lower(*args).compile()
        return _COMPILED[key]


def _merge_sums(runs):
    """Combine running sums taken with different shifts: rescale each to the common max."""
    shifts = np.stack([r[0] for r in runs])  # (run, episode, T + 1)
    shift = np.max(shifts, axis=0)
    safe = np.where(np.isfinite(shift), shift, 0.0)
    with np.errstate(invalid="ignore"):
        scales = np.where(np.isfinite(shifts), np.exp(shifts - safe), 0.0)
    merged = [shift]
    for i in range(1, len(runs[0])):
        total = 0.0
        for r, scale in zip(runs, scales):
            s = scale[:, : r[i].shape[1]]
            total = total + r[i] * s.reshape(s.shape + (1,) * (r[i].ndim - 2))
        merged.append(total)
    return merged


def _normal_parts(fn):
    """``(loc, scale)`` when ``fn`` is a Normal (possibly expanded by the position plate), else None."""
    while isinstance(fn, dist.ExpandedDistribution):
        fn = fn.base_dist
    return (fn.loc, fn.scale) if type(fn) is dist.Normal else None


@lru_cache(maxsize=32)
def _regression_accumulator_fn(prior: Prior, length: int, names, sizes, latents_per_chunk: int, normal: bool):
    """``accumulate(supports, x, y, observed, points, starts)`` -> running sums, compiled once per prior and shape.

    Returns ``shift (episode, T + 1)``, the max over latents of ``L = log p(k, y_<s)``, and the sums over
    latents of ``w = exp(L − shift)``: ``den (episode, T + 1)``; ``m1``, ``m2 (episode, T)`` of w·mean and
    w·(variance + mean²); ``pdf``, ``cdf (episode, T, y_grid)`` of w·density and w·CDF at the grid points.
    A ``lax.scan`` runs over the chunks starting at ``starts`` (fixed-size blocks of the joint index, the
    last padded with zero weight) and, inside each, over the prefix lengths, so the latent axis is the
    contiguous one that every reduction runs along, and nothing larger than one chunk's
    (episode, T + 1, k) tables exists.
    """
    trace_at = _component_fn(prior, length)
    total = math.prod(sizes)

    def tables(values, x_e, y_e, points):  # one latent, one episode: log prior and (position[, y_grid]) tables
        log_prior, fn = trace_at(values, x_e)
        shape = (length,)
        out = {
            "lik": fn.log_prob(y_e),
            "mean": jnp.broadcast_to(fn.mean, shape),
            "var": jnp.broadcast_to(fn.variance, shape),
        }
        parts = _normal_parts(fn)
        if normal:
            if parts is None:
                raise ModelError("the model's y site changed distribution between traces; it must stay a Normal")
            out["loc"], out["scale"] = (jnp.broadcast_to(p, shape) for p in parts)
        elif points.shape[0]:
            g = points[:, None]
            out["density"], out["cdf"] = jnp.exp(fn.log_prob(g)).T, fn.cdf(g).T  # (position, y_grid)
        return log_prior, out

    def grid_terms(t, tab, points):  # density and CDF at the grid points of every (episode, latent): (e, g, k)
        if normal:
            loc, scale = tab["loc"][:, t, None, :], tab["scale"][:, t, None, :]
            z = (points[None, :, None] - loc) / scale
            return jnp.exp(-0.5 * z**2) / (scale * math.sqrt(2 * math.pi)), ndtr(z)
        return tab["density"][:, t], tab["cdf"][:, t]  # tables (e, t, g, k)

    @jax.jit
    def accumulate(supports, x, y, observed, points, starts):
        num_episodes, num_grid = y.shape[0], points.shape[0]

        def chunk(carry, start):
            index = start + jnp.arange(latents_per_chunk)
            valid = index < total
            parts = jnp.unravel_index(jnp.where(valid, index, 0), sizes)
            values = {n: s[p] for n, s, p in zip(names, supports, parts)}
            per_episode = jax.vmap(tables, in_axes=(None, 0, 0, None), out_axes=0)
            # axis_size: a prior without latents has no values to map over, and one "latent" of prior weight 1
            log_prior, tab = jax.vmap(per_episode, in_axes=(0, None, None, None), out_axes=-1,
                                      axis_size=latents_per_chunk)(values, x, y, points)
            log_prior = jnp.where(valid, log_prior[0], -jnp.inf)  # (k,): padding has zero weight
            lik = jnp.where(observed[..., None], tab["lik"], 0.0)  # (e, t, k); padding contributes nothing
            shift, den, m1, m2, pdf, cdf = carry

            def prefix(log_w, t):  # log_w = log p(k, y_<t): (e, k)
                new_shift = jnp.maximum(shift[:, t], jnp.max(log_w, axis=-1))
                safe = jnp.where(jnp.isfinite(new_shift), new_shift, 0.0)  # an impossible context keeps zero sums
                rescale = jnp.exp(shift[:, t] - safe)
                w = jnp.exp(log_w - safe[:, None])  # the one exp per (latent, episode, prefix length)
                inside = t < length
                s = jnp.minimum(t, length - 1)
                mean, var = tab["mean"][:, s], tab["var"][:, s]
                sums = (
                    den[:, t] * rescale + jnp.sum(w, axis=-1),
                    m1[:, s] * rescale + jnp.sum(w * mean, axis=-1),
                    m2[:, s] * rescale + jnp.sum(w * (var + mean**2), axis=-1),
                )
                if num_grid:
                    density, below = grid_terms(s, tab, points)
                    sums += (
                        pdf[:, s] * rescale[:, None] + jnp.sum(w[:, None] * density, axis=-1),
                        cdf[:, s] * rescale[:, None] + jnp.sum(w[:, None] * below, axis=-1),
                    )
                # a cumulative sum only adds, so an impossible y_t (-inf) keeps its latent at -inf
                step = jnp.where(inside, lik[:, s], 0.0)
                return log_w + step, (new_shift,) + sums

            init = jnp.broadcast_to(log_prior, (num_episodes, latents_per_chunk))
            _, out = jax.lax.scan(prefix, init, jnp.arange(length + 1))  # each (T + 1, e[, g])
            out = [jnp.moveaxis(o, 0, 1) for o in out]
            new = (out[0], out[1], out[2][:, :length], out[3][:, :length])
            new += (out[4][:, :length], out[5][:, :length]) if num_grid else (pdf, cdf)
            return new, None

        zeros = jnp.zeros((num_episodes, length))
        grid_zeros = jnp.zeros((num_episodes, length, num_grid))
        init = (jnp.full((num_episodes, length + 1), -jnp.inf), jnp.zeros((num_episodes, length + 1)), zeros, zeros,
                grid_zeros, grid_zeros)
        return jax.lax.scan(chunk, init, starts)[0]

    return accumulate


# ---------------------------------------------------------------------- prefix masking


class ObservationMask(Messenger):
    """Drop the likelihood of ``y`` where ``observed`` is False, keeping every array shape.

    Conditioning on a prefix this way lets every (episode, position) cell share
    one shape, so they run in one compilation. It handles ``y`` inside the
    ``position`` plate and ``y`` emitted by ``scan``, enumerated or not (under
    enumeration NumPyro's scan names the first step(s) ``_PREV_y`` and stacks
    the rest along the leftmost batch dim).

    Parameters
    ----------
    fn : callable
        The model.
    observed : array of bool, shape (position,)
    """

    def __init__(self, fn=None, observed=None):
        self.observed = jnp.asarray(observed, dtype=bool)
        self._unrolled = None
        super().__init__(fn)

    def __enter__(self):
        self._unrolled = None
        return super().__enter__()

    def process_message(self, msg):
        if msg["type"] != "sample":
            return
        name, shift = msg["name"], 0
        while name.startswith("_PREV_"):
            name, shift = name[len("_PREV_") :], shift + 1
        if name != Y_SITE:
            return
        length = self.observed.shape[0]
        if shift:  # an unrolled first step of an enumerated scan: the first one seen is step 0
            self._unrolled = shift if self._unrolled is None else self._unrolled
            mask = self.observed[self._unrolled - shift]
        elif SCAN_TAG in msg["infer"]:  # steps stacked along the leftmost batch dim
            value_batch_ndim = jnp.ndim(msg["value"]) - msg["fn"].event_dim
            steps = jnp.shape(msg["value"])[0]
            mask = self.observed[length - steps :].reshape((steps,) + (1,) * (value_batch_ndim - 1))
        else:
            dim = next((f.dim for f in msg["cond_indep_stack"] if f.name == POSITION_PLATE), -1)
            mask = self.observed.reshape((length,) + (1,) * (-dim - 1))
        msg["fn"] = msg["fn"].mask(mask)


def _max_plate_nesting(prior: Prior) -> int:
    tr = model_trace(prior, 2)
    dims = [f.dim for s in tr.values() if s["type"] == "sample" for f in s["cond_indep_stack"] if f.dim is not None]
    return -min(dims) if dims else 0


def log_joint_fn(prior: Prior, length: int, *, enumerate_local: bool | None = None):
    """``f(values, y, x, observed) -> log p(values, y[observed])`` with local latents summed out.

    ``values`` fixes latent sites (their log-prior counts); ``observed`` (bool,
    (position,)) selects the positions whose ``y`` is conditioned on. Discrete
    latents not in ``values`` are summed out by NumPyro's enumeration (funsor)
    when ``enumerate_local`` (default: when the model has local latents).
    """
    from numpyro.infer.util import log_density

    if enumerate_local is None:
        enumerate_local = bool(prior.local_latent_sites(2))
    first_dim = -_max_plate_nesting(prior) - 1

    def log_joint(values, y, x, observed):
        model = ObservationMask(handlers.condition(prior.model, data=values), observed)
        kwargs = prior.data_kind.model_kwargs(y=y, x=x)
        if enumerate_local:
            from numpyro.contrib.funsor import config_enumerate, enum
            from numpyro.contrib.funsor import log_density as enum_log_density

            return enum_log_density(enum(config_enumerate(model), first_available_dim=first_dim), (length,), kwargs, {})[0]
        return log_density(model, (length,), kwargs, {})[0]

    return log_joint


def _padded_chunks(grid: LatentGrid, size: int):
    """Fixed-size chunks of the joint grid (one compilation): values and a validity mask."""
    for start in range(0, grid.size, size):
        index = np.arange(start, start + size)
        valid = index < grid.size
        yield {n: jnp.asarray(v) for n, v in grid.values(np.where(valid, index, 0)).items()}, jnp.asarray(valid)


def _chunk_sizes(grid: LatentGrid, per_episode: int, num_episodes: int, chunk_elements: int) -> tuple[int, int]:
    latents = int(min(grid.size, max(1, chunk_elements // max(per_episode, 1))))
    episodes = int(min(num_episodes, max(1, chunk_elements // max(per_episode * latents, 1))))
    return latents, episodes


def _prefix_tokens(prior: Prior, episodes: Episodes, grid: LatentGrid, chunk_elements: int):
    num_episodes, length = episodes.y.shape
    num_outcomes = prior.num_outcomes
    y = jnp.asarray(episodes.y)
    data = jnp.ones(y.shape, bool) if episodes.mask is None else jnp.asarray(episodes.mask)
    latents_per_chunk, episodes_per_batch = _chunk_sizes(grid, length * length * num_outcomes, num_episodes, chunk_elements)
    chunk = _prefix_tokens_fn(prior, length, episodes_per_batch)
    num = jnp.full((num_episodes, length, num_outcomes), -jnp.inf)
    for values, valid in _padded_chunks(grid, latents_per_chunk):
        num = jnp.logaddexp(num, chunk(values, valid, y, data))
    num = np.asarray(num)
    den = np.asarray(logsumexp(num, axis=-1))
    with np.errstate(invalid="ignore"):
        log_prob = np.where(np.isfinite(den)[..., None], num - den[..., None], np.nan)
    return {"log_prob": log_prob, "log_evidence": den}


@lru_cache(maxsize=32)
def _prefix_tokens_fn(prior: Prior, length: int, episodes_per_batch: int):
    """``chunk(values, valid, y, data) -> logsumexp_k log p(k, y_<t, y_t = v)`` (episode, position, outcome).

    Cached per prior and length: scenarios evaluated with one prior share one compilation.
    """
    log_joint = log_joint_fn(prior, length)
    positions, outcomes = jnp.arange(length), jnp.arange(prior.num_outcomes)

    def per_episode(values, y_e, data_e):
        def cell(t, v):  # log p(latents, y_<t, y_t = v); padding in the context counts for nothing
            observed = ((positions < t) & data_e) | (positions == t)
            return log_joint(values, y_e.at[t].set(v), None, observed)

        return jax.vmap(lambda t: jax.vmap(lambda v: cell(t, v))(outcomes))(positions)  # (position, outcome)

    @jax.jit
    def chunk(values, valid, y, data):
        def one_episode(args):
            lj = jax.vmap(lambda v: per_episode(v, *args))(values)  # (k, position, outcome)
            return logsumexp(jnp.where(valid[:, None, None], lj, -jnp.inf), axis=0)

        return jax.lax.map(one_episode, (y, data), batch_size=episodes_per_batch)  # (episode, position, outcome)

    return chunk


def _prefix_regression(prior: Prior, episodes: Episodes, grid: LatentGrid, y_grid, chunk_elements: int):
    num_episodes, length = episodes.y.shape
    points = jnp.zeros((0,)) if y_grid is None else jnp.asarray(y_grid, dtype=jnp.float64)
    y = jnp.asarray(episodes.y, dtype=jnp.float64)
    x = jnp.asarray(episodes.x, dtype=jnp.float64)
    if len(prior.sites(3)[X_SITE].shape) == 1:
        x = x[..., 0]  # the model's x site is (position,): one feature, no feature dim
    data = jnp.ones(y.shape, bool) if episodes.mask is None else jnp.asarray(episodes.mask)
    per_episode_size = length * length * (points.shape[0] + 2)
    latents_per_chunk, episodes_per_batch = _chunk_sizes(grid, per_episode_size, num_episodes, chunk_elements)
    chunk = _prefix_regression_fn(prior, length, episodes_per_batch)
    den = jnp.full((num_episodes, length), -jnp.inf)
    score = jnp.full((num_episodes, length), -jnp.inf)
    glp = jnp.full((num_episodes, length, points.shape[0]), -jnp.inf)
    for values, valid in _padded_chunks(grid, latents_per_chunk):
        c_den, c_score, c_grid = chunk(values, valid, x, y, data, points)
        den, score, glp = jnp.logaddexp(den, c_den), jnp.logaddexp(score, c_score), jnp.logaddexp(glp, c_grid)
    den, score, glp = np.asarray(den), np.asarray(score), np.asarray(glp)
    nan = np.where(np.isfinite(den), 0.0, np.nan)
    out = {"log_score": score - den + nan, "log_evidence": den}
    if points.shape[0]:
        # moments and CDF by the trapezoid rule on the grid: exact only as far as the grid resolves the density
        g = np.asarray(points)
        density = np.exp(glp - den[..., None])
        mass = np.trapezoid(density, g, axis=-1)
        mean = np.trapezoid(density * g, g, axis=-1) / mass
        out["mean"] = mean + nan
        out["variance"] = np.trapezoid(density * g**2, g, axis=-1) / mass - mean**2 + nan
        steps = 0.5 * (density[..., 1:] + density[..., :-1]) * np.diff(g)
        cdf = np.concatenate([np.zeros(density.shape[:-1] + (1,)), np.cumsum(steps, axis=-1)], axis=-1)
        out["grid_log_density"] = glp - den[..., None] + nan[..., None]
        out["grid_cdf"] = cdf / mass[..., None] + nan[..., None]
    else:
        out["mean"] = out["variance"] = np.full((num_episodes, length), np.nan)
    return out


@lru_cache(maxsize=32)
def _prefix_regression_fn(prior: Prior, length: int, episodes_per_batch: int):
    """``chunk(values, valid, x, y, data, points)``: log p(k, y_<t), log p(k, y_<=t), log p(k, y_<t, y_t = g)."""
    log_joint = log_joint_fn(prior, length)
    positions = jnp.arange(length)

    def per_episode(values, x_e, y_e, data_e, points):
        def cell(t):
            context = (positions < t) & data_e
            at_t = context | (positions == t)
            before = log_joint(values, y_e, x_e, context)
            realised = log_joint(values, y_e, x_e, at_t)
            on_grid = jax.vmap(lambda g: log_joint(values, y_e.at[t].set(g), x_e, at_t))(points)
            return before, realised, on_grid

        return jax.vmap(cell)(positions)  # (position,), (position,), (position, y_grid)

    @jax.jit
    def chunk(values, valid, x, y, data, points):
        def one_episode(args):
            parts = jax.vmap(lambda v: per_episode(v, *args, points))(values)
            return tuple(
                logsumexp(jnp.where(valid.reshape((-1,) + (1,) * (p.ndim - 1)), p, -jnp.inf), axis=0) for p in parts
            )

        return jax.lax.map(one_episode, (x, y, data), batch_size=episodes_per_batch)

    return chunk


__all__ = [
    "LatentGrid",
    "latent_grid",
    "enumerate_predictive",
    "enumerate_posterior",
    "enumeration_path",
    "ObservationMask",
    "log_joint_fn",
    "EnumerationMethod",
]
