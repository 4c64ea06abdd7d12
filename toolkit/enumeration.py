"""Exact Bayes by enumerating a prior's finite global latents.

For a model whose observations are i.i.d. given global latents with finite
support, one vectorised trace per latent value gives the pointwise
log-likelihood ``l[k, episode, t]``; cumulative sums over t give the log
posterior weight of every latent value for every prefix at once, O(K·T) per
episode. The predictive mixes the per-latent predictives with those weights.
The latent axis is processed in chunks with running log-sum-exp accumulators,
so 10⁶–10⁷ latent values fit in memory. Everything runs in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from numpyro import handlers

from .dims import X_SITE, Y_SITE
from .episodes import Episodes
from .errors import ModelError
from .prior import Prior

# Elements of one chunk's largest intermediate (latent x episode x position x values).
DEFAULT_CHUNK_ELEMENTS = 2**24


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


def latent_grid(prior: Prior, *, max_support: int | None = None) -> LatentGrid:
    """Enumerate the joint support of the prior's global latents.

    Raises
    ------
    ModelError
        A latent without finite support, a latent inside the position plate,
        or a joint support larger than ``max_support``.
    """
    tr = prior.trace(jax.random.key(0), 2)
    latents = prior.latent_sites(2)
    local = prior.local_latent_sites(2)
    if local:
        raise ModelError(
            f"latent sites {sorted(local)} sit inside the position plate: observations are not i.i.d. "
            "given global latents, so the cumulative enumeration path does not apply"
        )
    names, sizes, supports = [], [], {}
    for name, info in latents.items():
        if not info.has_enumerate_support or info.support_size is None:
            raise ModelError(f"latent site {name!r} has no finite support; use the MCMC engine or declare a grid")
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
) -> dict[str, np.ndarray]:
    """Exact posterior predictive of y_t given y_<t for every episode and position.

    Parameters
    ----------
    prior : Prior
        A prior whose global latents have finite joint support.
    episodes : Episodes
        ``y (episode, position)`` (and ``x`` for regression).
    y_grid : np.ndarray, shape (y_grid,), optional
        Regression only: points for ``grid_log_density`` and for inverting the CDF.

    Returns
    -------
    dict
        Tokens: ``log_prob (episode, position, outcome)``. Regression:
        ``log_score``, ``mean``, ``variance`` (episode, position) and, with a
        grid, ``grid_log_density (episode, position, y_grid)`` and
        ``grid_cdf``. Always ``log_evidence (episode, position)`` = log p(y_<t)
        of the context before t. Cells whose context has probability zero are NaN.
    """
    grid = latent_grid(prior, max_support=max_support)
    if prior.kind == "tokens":
        return _enumerate_tokens(prior, episodes, grid, chunk_elements)
    return _enumerate_regression(prior, episodes, grid, y_grid, chunk_elements)


def _chunks(total: int, per_item: int, chunk_elements: int):
    step = max(1, chunk_elements // max(per_item, 1))
    for start in range(0, total, step):
        yield np.arange(start, min(total, start + step))


def _enumerate_tokens(prior: Prior, episodes: Episodes, grid: LatentGrid, chunk_elements: int):
    num_episodes, length = episodes.y.shape
    num_outcomes = prior.num_outcomes
    trace_at = _component_fn(prior, length)
    outcomes = jnp.arange(num_outcomes)[:, None]

    @jax.jit
    def component_table(values):
        def one(v):
            log_prior, fn = trace_at(v, None)
            return log_prior, fn.log_prob(outcomes).T  # (position, outcome)

        return jax.vmap(one)(values)  # (k,), (k, position, outcome)

    y = jnp.asarray(episodes.y)
    observed = jnp.ones(y.shape, bool) if episodes.mask is None else jnp.asarray(episodes.mask)

    @jax.jit
    def accumulate(carry, log_prior, table):
        num, den = carry
        # l[k, e, t] = log p(y_t | latent k); padding contributes nothing
        lik = jnp.take_along_axis(table[:, None, :, :], y[None, :, :, None], axis=-1)[..., 0]
        lik = jnp.where(observed[None], lik, 0.0)
        before = jnp.cumsum(lik, axis=-1) - lik  # log p(y_<t | k)
        log_w = log_prior[:, None, None] + before  # (k, episode, position)
        num = jnp.logaddexp(num, logsumexp(log_w[..., None] + table[:, None, :, :], axis=0))
        den = jnp.logaddexp(den, logsumexp(log_w, axis=0))
        return num, den

    num = jnp.full((num_episodes, length, num_outcomes), -jnp.inf)
    den = jnp.full((num_episodes, length), -jnp.inf)
    for index in _chunks(grid.size, num_episodes * length * num_outcomes, chunk_elements):
        values = {n: jnp.asarray(v) for n, v in grid.values(index).items()}
        log_prior, table = component_table(values)
        num, den = accumulate((num, den), log_prior, table)
    num, den = np.asarray(num), np.asarray(den)
    defined = np.isfinite(den)
    with np.errstate(invalid="ignore"):
        log_prob = np.where(defined[..., None], num - den[..., None], np.nan)
    return {"log_prob": log_prob, "log_evidence": den}


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
        before = jnp.cumsum(lik, axis=-1) - lik
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


__all__ = ["LatentGrid", "latent_grid", "enumerate_predictive"]
