"""A mixture of coins: each episode flips one coin, chosen once, for all its tokens.

The two-coin prior of the project's first question (P(🌈) = 2/3 or 1/3, each
coin with probability 1/2). With one coin and weight 1 it is the
misspecified source q of the default experiment.
"""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from toolkit import Prior, register_prior
from toolkit.errors import ModelError


@register_prior("coin_mixture")
def coin_mixture(thetas=(1 / 3, 2 / 3), weights=None) -> Prior:
    """Coins with P(y = 🌈 = 0) = ``thetas[k]``, coin k chosen with probability ``weights[k]``."""
    # numpy, not jnp: the constants stay float64 when an engine traces the model under x64
    thetas = np.asarray(thetas, dtype=np.float64).reshape(-1)
    weights = np.full(len(thetas), 1 / len(thetas)) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    if len(weights) != len(thetas):
        raise ModelError(f"coin_mixture needs one weight per coin, got {len(weights)} weights for {len(thetas)} coins")
    if not (np.all((thetas >= 0) & (thetas <= 1))):
        raise ModelError(f"coin_mixture thetas must lie in [0, 1], got {thetas.tolist()}")
    if not (np.all(weights >= 0) and np.isclose(weights.sum(), 1.0)):
        raise ModelError(f"coin_mixture weights must be non-negative and sum to 1, got {weights.tolist()}")

    def model(length, y=None):
        z = numpyro.sample("z", dist.Categorical(probs=jnp.asarray(weights)))
        theta = jnp.asarray(thetas)[z]
        # outcome 0 is 🌈 with probability theta. Categorical, not Bernoulli: Bernoulli.log_prob clamps
        # probabilities away from 0, so a coin that never shows 🌈 would give it log-probability -708, not
        # -inf, and a context impossible under the prior would look merely improbable to the Bayes engines.
        with numpyro.plate("position", length):
            numpyro.sample("y", dist.Categorical(probs=jnp.stack([theta, 1.0 - theta])), obs=y)

    return Prior(model, kind="tokens", outcomes=("🌈", "🦄"))
