"""Exact Bayes by enumerating a prior's finite latents.

Cumulative path. For a model whose observations are i.i.d. given global
latents with finite support, one vectorised trace per latent value gives the
pointwise log-likelihood ``l[k, episode, t]``; cumulative sums over t give the
log posterior weight of every latent value for every prefix at once, O(K·T)
per episode. The predictive mixes the per-latent predictives with those
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
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
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
        kwargs = {"y": None} if prior.kind == "tokens" else {"x": x, "y": None}
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
    if method == "prefix":
        if prior.kind == "tokens":
            return _prefix_tokens(prior, episodes, grid, chunk_elements)
        return _prefix_regression(prior, episodes, grid, y_grid, chunk_elements)
    if prior.kind == "tokens":
        return _enumerate_tokens(prior, episodes, grid, chunk_elements)
    return _enumerate_regression(prior, episodes, grid, y_grid, chunk_elements)


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


def _chunks(total: int, per_item: int, chunk_elements: int):
    step = max(1, chunk_elements // max(per_item, 1))
    for start in range(0, total, step):
        yield np.arange(start, min(total, start + step))


@lru_cache(maxsize=32)
def _component_table_fn(prior: Prior, length: int):
    """``table(values) -> (log_prior (k,), log p(y_t = v | k) (k, position, outcome))``, compiled once per prior."""
    trace_at = _component_fn(prior, length)
    outcomes = jnp.arange(prior.num_outcomes)[:, None]

    @jax.jit
    def component_table(values):
        def one(v):
            log_prior, fn = trace_at(v, None)
            return log_prior, fn.log_prob(outcomes).T  # (position, outcome)

        return jax.vmap(one)(values)

    return component_table


@jax.jit
def _accumulate_tokens(carry, log_prior, table, y, observed):
    """Fold one chunk of latents into running sums, rescaled to a running max of the log weights.

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
    num_episodes, length = episodes.y.shape
    component_table = _component_table_fn(prior, length)
    y = jnp.asarray(episodes.y)
    observed = jnp.ones(y.shape, bool) if episodes.mask is None else jnp.asarray(episodes.mask)
    carry = (
        jnp.full((num_episodes, length), -jnp.inf),
        jnp.zeros((num_episodes, length, prior.num_outcomes)),
        jnp.zeros((num_episodes, length)),
    )
    for index in _chunks(grid.size, num_episodes * length, chunk_elements):
        values = {n: jnp.asarray(v) for n, v in grid.values(index).items()}
        log_prior, table = component_table(values)
        carry = _accumulate_tokens(carry, log_prior, table, y, observed)
    shift, num, den = (np.asarray(a) for a in carry)
    defined = den > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        log_prob = np.where(defined[..., None], np.log(num) - np.log(den)[..., None], np.nan)
        log_evidence = np.where(defined, np.log(den) + shift, -np.inf)
    return {"log_prob": log_prob, "log_evidence": log_evidence}


def _enumerate_regression(prior, episodes, grid, y_grid, chunk_elements):
    num_episodes, length = episodes.y.shape
    trace_at = _component_fn(prior, length)
    grid_pts = jnp.zeros((0,)) if y_grid is None else jnp.asarray(y_grid, dtype=jnp.float64)
    num_grid = int(grid_pts.shape[0])
    y = jnp.asarray(episodes.y, dtype=jnp.float64)
    x = jnp.asarray(episodes.x, dtype=jnp.float64)

    @jax.jit
    def chunk_stats(values):
        def per_latent(v):
            def per_episode(x_e, y_e):
                log_prior, fn = trace_at(v, x_e)
                lik = fn.log_prob(y_e)  # (position,)
                mean, var = fn.mean, fn.variance
                grid_lp = fn.log_prob(grid_pts[:, None]).T if num_grid else jnp.zeros((length, 0))
                grid_cdf = fn.cdf(grid_pts[:, None]).T if num_grid else jnp.zeros((length, 0))
                return log_prior, lik, jnp.broadcast_to(mean, (length,)), jnp.broadcast_to(var, (length,)), grid_lp, grid_cdf

            return jax.vmap(per_episode)(x, y)

        log_prior, lik, mean, var, grid_lp, grid_cdf = jax.vmap(per_latent)(values)
        log_prior = log_prior[:, 0]
        before = _exclusive_cumsum(lik)
        log_w = log_prior[:, None, None] + before  # (k, episode, position)
        return (
            logsumexp(log_w, axis=0),
            logsumexp(log_w + lik, axis=0),
            log_w,
            mean,
            var,
            grid_lp,
            grid_cdf,
        )

    den = jnp.full((num_episodes, length), -jnp.inf)
    score = jnp.full((num_episodes, length), -jnp.inf)
    m1 = jnp.zeros((num_episodes, length))
    m2 = jnp.zeros((num_episodes, length))
    glp = jnp.full((num_episodes, length, num_grid), -jnp.inf)
    gcdf = jnp.zeros((num_episodes, length, num_grid))
    per_item = num_episodes * length * max(num_grid, 4)
    for index in _chunks(grid.size, per_item, chunk_elements):
        values = {n: jnp.asarray(v) for n, v in grid.values(index).items()}
        c_den, c_score, log_w, mean, var, grid_lp, grid_cdf = chunk_stats(values)
        new_den = jnp.logaddexp(den, c_den)
        # rescale running weighted sums to the new normaliser
        old_scale = jnp.exp(den - new_den)
        w = jnp.exp(log_w - new_den[None])
        m1 = m1 * old_scale + jnp.sum(w * mean, axis=0)
        m2 = m2 * old_scale + jnp.sum(w * (var + mean**2), axis=0)
        gcdf = gcdf * old_scale[..., None] + jnp.sum(w[..., None] * grid_cdf, axis=0)
        glp = jnp.logaddexp(glp, logsumexp(log_w[..., None] + grid_lp, axis=0))
        score = jnp.logaddexp(score, c_score)
        den = new_den
    den = np.asarray(den)
    defined = np.isfinite(den)
    nan = np.where(defined, 0.0, np.nan)
    out = {
        "log_score": np.asarray(score) - den + nan,
        "mean": np.asarray(m1) + nan,
        "variance": np.asarray(m2) - np.asarray(m1) ** 2 + nan,
        "log_evidence": den,
    }
    if num_grid:
        out["grid_log_density"] = np.asarray(glp) - den[..., None] + nan[..., None]
        out["grid_cdf"] = np.asarray(gcdf) + nan[..., None]
    return out


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
        kwargs = {"y": y} if prior.kind == "tokens" else {"x": x, "y": y}
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
    "enumeration_path",
    "ObservationMask",
    "log_joint_fn",
    "EnumerationMethod",
]
