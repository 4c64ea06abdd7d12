"""Beta–Bernoulli: a coin whose bias is drawn from Beta(a, b), with its conjugate predictive.

P(y_t = 1 | k ones in n) = (a + k) / (a + b + n); the posterior of p after them is Beta(a + k, b + n − k).
"""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from toolkit import Prior, register_prior
from toolkit.errors import ModelError


@register_prior("beta_bernoulli")
def beta_bernoulli(a=1.0, b=1.0) -> Prior:
    """Bias p ~ Beta(a, b) per episode (p = P(y = 1)); y_t ~ Bernoulli(p)."""
    if a <= 0 or b <= 0:
        raise ModelError(f"beta_bernoulli needs a > 0 and b > 0, got a={a}, b={b}")

    def model(length, y=None):
        p = numpyro.sample("p", dist.Beta(a, b))
        with numpyro.plate("position", length):
            numpyro.sample("y", dist.Bernoulli(probs=p), obs=y)

    def exact_predictive(episodes):
        y = np.asarray(episodes.y, dtype=np.float64)
        ones_before = np.concatenate([np.zeros((y.shape[0], 1)), np.cumsum(y, axis=1)[:, :-1]], axis=1)
        seen = np.arange(y.shape[1])[None, :]
        return dist.Bernoulli(probs=jnp.asarray((a + ones_before) / (a + b + seen)))

    def exact_posterior(episodes):
        y = np.asarray(episodes.y, dtype=np.float64)
        seen = np.ones(y.shape, bool) if episodes.mask is None else episodes.mask
        ones, n = np.sum(np.where(seen, y, 0.0), axis=1), np.sum(seen, axis=1)
        return {"p": dist.Beta(jnp.asarray(a + ones), jnp.asarray(b + n - ones))}

    return Prior(model, kind="tokens", outcomes=("0", "1"), exact_predictive=exact_predictive,
                 exact_posterior=exact_posterior)
