"""Linear regression whose weights come from a two-component Gaussian mixture: Panwar et al.,
"In-context learning through the Bayesian prism" (arXiv:2306.04891).

Per episode a component c is drawn (probabilities ``weights``, default ½, ½), then
w ~ N(μ_c, τ² I_d) with μ_0 = +mean_scale·e₁ and μ_1 = −mean_scale·e₁, x ~ N(0, I_d) and
y = w·x + N(0, σ²).

The closed form: given the prefix, each component's posterior over w is Gaussian (the conjugate update
of `toolkit.baselines.gaussian_linear_predictive`, shared covariance, component-specific mean), and the
component posterior is ∝ prior weight × marginal likelihood of the prefix. That marginal likelihood is
accumulated by the chain rule, log p(y_<t | c) = Σ_{s<t} log N(y_s; component c's predictive at s), so it
is a running sum of the per-component predictive log densities and never forms an ill-conditioned
t×t covariance. The predictive is the two-component mixture of Normals.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax.scipy.special import logsumexp as jax_logsumexp
from jax.scipy.special import ndtr, ndtri
from scipy.special import logsumexp

from toolkit import Prior, register_prior
from toolkit.baselines import gaussian_linear_predictive
from toolkit.errors import ModelError

# Safeguarded Newton for the mixture's quantiles stops once no quantile moves by more than ICDF_TOL
# (relative), within ICDF_STEPS steps: about 10 steps, leaving the CDF within ~1e-14 of each level.
ICDF_STEPS = 100
ICDF_TOL = 1e-12


class NormalMixture(dist.MixtureSameFamily):
    """A mixture of Normals with batch shape (episode, position), with a quantile function (``icdf``).

    ``log_prob`` and ``icdf`` are fused, jitted versions: a y-grid of a few hundred points over
    thousands of episodes and positions stays in reach.

    Parameters
    ----------
    probs, loc, scale : array, shape (episode, position, component)
    """

    def __init__(self, probs, loc, scale):
        super().__init__(dist.Categorical(probs=probs), dist.Normal(loc, scale))

    def _parts(self):
        c = self.component_distribution
        return self.mixing_distribution.probs, c.loc, c.scale

    def log_prob(self, value):
        return _mixture_log_prob(jnp.asarray(value, jnp.float64), *self._parts())

    def icdf(self, q):
        """Quantile at levels ``q`` (broadcast against the batch shape): the CDF there is within ~1e-14 of q."""
        return _mixture_icdf(jnp.asarray(q, jnp.float64), *self._parts())


@jax.jit
def _mixture_log_prob(value, probs, loc, scale):
    z = (value[..., None] - loc) / scale
    return jax_logsumexp(jnp.log(probs) - 0.5 * z**2 - jnp.log(scale) - 0.5 * np.log(2 * np.pi), axis=-1)


@jax.jit
def _mixture_icdf(q, probs, loc, scale):
    """Safeguarded Newton on F(y) = q inside a bracket that always holds the root.

    The quantile lies between the smallest and largest component quantile: there every component's CDF
    is below (above) q, so the mixture's is too. Each step shrinks the bracket to the side of the
    current point that holds the root; a Newton step that leaves the bracket is replaced by bisection.
    """
    component_q = loc + scale * ndtri(q)[..., None]  # (..., component)
    lo, hi = jnp.min(component_q, axis=-1), jnp.max(component_q, axis=-1)
    y = jnp.sum(probs * component_q, axis=-1)  # a convex combination: inside the bracket

    def body(state):
        y, lo, hi, i, _ = state
        z = (y[..., None] - loc) / scale
        excess = jnp.sum(probs * ndtr(z), axis=-1) - q
        density = jnp.sum(probs * jnp.exp(-0.5 * z**2) / scale, axis=-1) / np.sqrt(2 * np.pi)
        lo, hi = jnp.where(excess < 0, y, lo), jnp.where(excess < 0, hi, y)
        newton = y - excess / density
        inside = (newton >= lo) & (newton <= hi) & (density > 0)
        new = jnp.where(inside, newton, 0.5 * (lo + hi))
        new = jnp.where(excess == 0, y, new)
        moved = jnp.max(jnp.abs(new - y) / jnp.maximum(1.0, jnp.abs(y)))
        return new, lo, hi, i + 1, moved

    def unfinished(state):
        return (state[3] < ICDF_STEPS) & (state[4] > ICDF_TOL)

    y = jax.lax.while_loop(unfinished, body, (y, lo, hi, 0, jnp.inf))[0]
    return jnp.where(q <= 0, -jnp.inf, jnp.where(q >= 1, jnp.inf, y))


def component_means(d: int, mean_scale: float) -> np.ndarray:
    """μ_0 = +mean_scale·e₁, μ_1 = −mean_scale·e₁: shape (2, d)."""
    means = np.zeros((2, d))
    means[:, 0] = (mean_scale, -mean_scale)
    return means


@register_prior("gmm_linear_regression")
def gmm_linear_regression(d=5, mean_scale=3.0, tau=1.0, sigma=0.1, weights=None) -> Prior:
    """w ~ Σ_c weights[c] N(±mean_scale·e₁, tau² I_d) (c = 0 is +), x ~ N(0, I_d), y = w·x + N(0, sigma²)."""
    if int(d) != d or d < 1:
        raise ModelError(f"gmm_linear_regression needs a positive integer d, got {d!r}")
    if not (tau > 0 and sigma > 0):
        raise ModelError(f"gmm_linear_regression needs tau > 0 and sigma > 0, got tau={tau}, sigma={sigma}")
    weights = np.full(2, 0.5) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    if len(weights) != 2 or np.any(weights < 0) or not np.isclose(weights.sum(), 1.0):
        raise ModelError(
            f"gmm_linear_regression weights must be 2 non-negative numbers summing to 1, got {weights.tolist()}"
        )
    d, tau, sigma = int(d), float(tau), float(sigma)
    means = component_means(d, float(mean_scale))  # numpy float64 under x64 tracing

    def model(length, x=None, y=None):
        c = numpyro.sample("component", dist.Categorical(probs=weights))
        w = numpyro.sample("w", dist.Normal(jnp.asarray(means)[c], tau).to_event(1))
        with numpyro.plate("position", length):
            x = numpyro.sample("x", dist.Normal(np.zeros(d), 1.0).to_event(1), obs=x)
            numpyro.sample("y", dist.Normal(jnp.dot(x, w), sigma), obs=y)

    def exact_predictive(episodes):
        y = np.asarray(episodes.y, np.float64)
        observed = np.ones(y.shape, bool) if episodes.mask is None else episodes.mask
        mean, variance = gaussian_linear_predictive(
            episodes.x, y, tau=tau, sigma=sigma, prior_means=means, observed=observed
        )  # (component, E, T), (E, T)
        step = -0.5 * (np.log(2 * np.pi * variance) + (y - mean) ** 2 / variance)  # log p(y_t | y_<t, c)
        step = np.where(observed, step, 0.0)
        before = np.cumsum(step, axis=-1) - step  # log p(y_<t | c): exact here, every step is finite
        with np.errstate(divide="ignore"):
            log_w = np.log(weights)[:, None, None] + before
        probs = np.exp(log_w - logsumexp(log_w, axis=0, keepdims=True))  # (component, E, T)
        sd = np.broadcast_to(np.sqrt(variance), mean.shape)
        probs, mean, sd = (jnp.asarray(np.moveaxis(a, 0, -1)) for a in (probs, mean, sd))  # (E, T, component)
        return NormalMixture(probs, mean, sd)

    return Prior(
        model,
        kind="regression",
        x_dim=d,
        exact_predictive=exact_predictive,
        metadata={"component_means": means, "weights": weights},
    )
