"""Predictors that know the scenario: the oracle q and the best fixed mixture ρ* of the prior's components.

Under misspecification Bayes' posterior concentrates on the component closest
to q in KL; a fixed mixture ρ of the components can do better. ``best_mixture``
finds the ρ* minimising cross-entropy against q by EM (a convex problem: the
log-likelihood is concave in ρ), the "more useful posterior" Bayes cannot reach.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from numpyro import handlers

from .dims import QUANTILES, Y_SITE
from .enumeration import latent_grid
from .episodes import Episodes
from .errors import ModelError
from .predictive import Predictor, regression_predictions, token_predictions
from .prior import Prior
from .regression import quantiles_from_cdf


def _site_log_prob_table(prior: Prior, length: int, values: dict, x=None):
    """log p(y_t = v | latents) for each set of latent values: shape (n, position, outcome)."""
    outcomes = jnp.arange(prior.num_outcomes)[:, None]

    def one(v, x_e):
        model = handlers.substitute(handlers.seed(prior.model, jax.random.key(0)), data=v)
        kwargs = prior.data_kind.model_kwargs(x=x_e)
        fn = handlers.trace(model).get_trace(length, **kwargs)[Y_SITE]["fn"]
        return fn.log_prob(outcomes).T

    return np.asarray(jax.jit(jax.vmap(one, in_axes=(0, None)))(values, x))


def component_log_prob(prior: Prior, length: int, *, max_components: int = 100_000) -> np.ndarray:
    """log p(y_t = v | component k) for every value k of the prior's enumerable latents.

    Returns
    -------
    np.ndarray, shape (component, position, outcome)
    """
    grid = latent_grid(prior, max_support=max_components)
    values = {n: jnp.asarray(v) for n, v in grid.values(np.arange(grid.size)).items()}
    return _site_log_prob_table(prior, length, values)


class OraclePredictor(Predictor):
    """The data-generating source itself: p_q(y_t | true latents of the episode).

    Bound to a scenario whose episodes carry their true latents; for prompts
    (no generating source) it has no answer.
    """

    def __init__(self, source: Prior | None = None, *, name: str = "oracle"):
        self.source, self.name = source, name

    def bind(self, prior: Prior, scenario, episodes: Episodes):
        source = scenario.source
        if source is None or (source.latent_sites() and not episodes.latents) or source.local_latent_sites():
            return None
        return OraclePredictor(source, name=self.name)

    def predict(self, episodes: Episodes, *, y_grid=None) -> xr.Dataset:
        if self.source is None:
            raise ModelError("the oracle needs a scenario's source; call bind(prior, scenario, episodes) first")
        if not self.source.data_kind.finite_outcomes:
            return self._predict_regression(episodes, y_grid)
        names = list(self.source.latent_sites())
        values = {n: jnp.asarray(episodes.latents[n]) for n in names}
        if not names:
            table = _site_log_prob_table(self.source, episodes.length, {"_": jnp.zeros(1)})
            log_prob = np.broadcast_to(table[:1], (episodes.num_episodes,) + table.shape[1:])
        else:
            log_prob = _site_log_prob_table(self.source, episodes.length, values)
        return token_predictions(log_prob, episodes, self.source.outcomes)

    def _predict_regression(self, episodes: Episodes, y_grid) -> xr.Dataset:
        """p_q(y_t | the episode's true latents, x_t): the y site's distribution with latents and x substituted."""
        if episodes.x is None:
            raise ModelError("the regression oracle needs the episodes' inputs x")
        source, length = self.source, episodes.length
        values = {n: jnp.asarray(episodes.latents[n]) for n in source.latent_sites()}
        grid = jnp.zeros((0,)) if y_grid is None else jnp.asarray(y_grid, dtype=jnp.float64)
        levels = jnp.asarray(QUANTILES)

        def one(v, x_e, y_e):
            model = handlers.substitute(handlers.seed(source.model, jax.random.key(0)), data=v)
            fn = handlers.trace(model).get_trace(length, x=x_e, y=None)[Y_SITE]["fn"]
            fn = fn if tuple(fn.batch_shape) == (length,) else fn.expand((length,))
            out = {
                "log_score": fn.log_prob(y_e),
                "mean": fn.mean,
                "variance": fn.variance,
                "grid_log_density": fn.log_prob(grid[:, None]).T,  # (position, y_grid)
                "grid_cdf": fn.cdf(grid[:, None]).T,
                "pit": fn.cdf(y_e),
            }
            try:
                out["quantile_value"] = fn.icdf(levels[:, None]).T  # (position, quantile)
            except NotImplementedError:
                pass
            return out

        # run once per scenario: op by op, rather than compiling a program used once
        out = jax.vmap(one)(values, jnp.asarray(episodes.x, jnp.float64), jnp.asarray(episodes.y, jnp.float64))
        out = {k: np.asarray(v) for k, v in out.items()}
        if "quantile_value" not in out and y_grid is not None:
            out["quantile_value"] = quantiles_from_cdf(np.asarray(y_grid), out["grid_cdf"])
        return regression_predictions(
            log_score=out["log_score"], mean=out["mean"], variance=out["variance"],
            quantile_value=out.get("quantile_value"),
            grid_log_density=out["grid_log_density"] if y_grid is not None else None, y_grid=y_grid,
            pit=out["pit"],
        )


def fit_mixture_weights(component_log_prob: np.ndarray, target: np.ndarray, *, tol=1e-12, max_iter=20_000):
    """EM for ρ* = argmin_ρ Σ_{t,v} target[t, v] · (−log Σ_k ρ_k p_k[t, v]).

    The objective is convex in ρ, so EM reaches the global optimum; it stops
    when no weight moves by more than ``tol`` or the objective stops improving
    (at float resolution), whichever comes first: the second ends the slow
    approach to an optimum on the simplex's boundary.

    Parameters
    ----------
    component_log_prob : np.ndarray, shape (component, position, outcome)
    target : np.ndarray, shape (position, outcome)
        Non-negative weights of each (position, outcome) cell (q's probabilities).

    Returns
    -------
    np.ndarray, shape (component,)
    """
    probs = np.exp(component_log_prob)  # (K, T, V)
    weight = target / target.sum()
    rho = np.full(probs.shape[0], 1.0 / probs.shape[0])
    previous = np.inf
    for _ in range(max_iter):
        mix = np.einsum("k,ktv->tv", rho, probs)
        with np.errstate(divide="ignore"):
            objective = -np.sum(np.where(weight > 0, weight * np.log(np.where(mix > 0, mix, 1.0)), 0.0))
        if previous - objective <= 4 * np.finfo(float).eps * abs(objective):
            break
        previous = objective
        resp = np.einsum("k,ktv->ktv", rho, probs) / np.where(mix > 0, mix, 1.0)
        new = np.einsum("tv,ktv->k", weight, resp)
        if np.max(np.abs(new - rho)) < tol:
            return new
        rho = new
    return rho


class BestMixturePredictor(Predictor):
    """The best fixed mixture ρ* of the prior's components for the scenario's source q.

    Predicts log Σ_k ρ*_k p(y_t | k) at every position, ignoring the context.
    The target is q's own predictive averaged over the scenario's episodes
    (the oracle's probabilities) when q is known, else the scenario's
    empirical outcome frequencies.
    """

    def __init__(self, *, max_components: int = 100_000, name: str = "best_mixture"):
        self.max_components, self.name = max_components, name
        self.weights: np.ndarray | None = None
        self._component_log_prob = None
        self._outcomes = None

    kind = "tokens"

    def bind(self, prior: Prior, scenario, episodes: Episodes):
        try:
            components = component_log_prob(prior, episodes.length, max_components=self.max_components)
        except ModelError:
            return None
        oracle = OraclePredictor().bind(prior, scenario, episodes)
        mask = np.ones(episodes.y.shape, bool) if episodes.mask is None else episodes.mask
        if oracle is not None:
            q = np.exp(oracle.predict(episodes)["log_prob"].values) * mask[..., None]
        else:
            q = (episodes.y[..., None] == np.arange(prior.num_outcomes)) * mask[..., None]
        bound = BestMixturePredictor(max_components=self.max_components, name=self.name)
        bound.weights = fit_mixture_weights(components, q.sum(axis=0))
        bound._component_log_prob, bound._outcomes = components, prior.outcomes
        return bound

    def predict(self, episodes: Episodes, *, y_grid=None) -> xr.Dataset:
        if self.weights is None:
            raise ModelError("best_mixture needs a scenario; call bind(prior, scenario, episodes) first")
        with np.errstate(divide="ignore"):
            mix = np.log(np.einsum("k,ktv->tv", self.weights, np.exp(self._component_log_prob)))
        log_prob = np.broadcast_to(mix[: episodes.length], (episodes.num_episodes,) + mix[: episodes.length].shape)
        return token_predictions(log_prob, episodes, self._outcomes)

    def describe(self):
        return {"weights": None if self.weights is None else self.weights.tolist()}


__all__ = ["OraclePredictor", "BestMixturePredictor", "fit_mixture_weights", "component_log_prob"]
