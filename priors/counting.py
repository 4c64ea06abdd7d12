"""Counting: a coin whose bias p sits on a grid of 101 values (Müller, Hollmann & Hutter 2024,
"Bayes' Power for Explaining In-Context Learning Generalizations", arXiv:2410.01565).

    p uniform on linspace(0, 1, 101),   y_t ~ Bernoulli(p)   (outcome "1" with probability p)

The exact predictive counts: P(y_t = 1 | k ones in n) = Σ_p p^(k+1) (1 − p)^(n−k) / Σ_p p^k (1 − p)^(n−k).
In the paper the inputs x are constant, so they carry no information; the prior is declared here
as kind="tokens" (no x): the toolkit's regression kind needs a real y with a density, and a
0/1 outcome scored as a regression y would mix probabilities with densities in every log score.
The endpoints p = 0 and p = 1 are kept: a context with both outcomes rules them out exactly
(y is Categorical, not Bernoulli, because Bernoulli.log_prob clamps probabilities away from 0).
"""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from toolkit import Prior, register_prior
from toolkit.errors import ModelError


@register_prior("counting")
def counting(num_probabilities=101) -> Prior:
    """Bias p uniform on ``linspace(0, 1, num_probabilities)``; y_t = 1 with probability p."""
    num_probabilities = int(num_probabilities)
    if num_probabilities < 1:
        raise ModelError(f"counting needs num_probabilities >= 1, got {num_probabilities}")
    ps = np.linspace(0.0, 1.0, num_probabilities) if num_probabilities > 1 else np.array([0.5])

    def model(length, y=None):
        i = numpyro.sample("p_index", dist.Categorical(probs=np.full(num_probabilities, 1 / num_probabilities)))
        p = jnp.asarray(ps)[i]
        with numpyro.plate("position", length):
            numpyro.sample("y", dist.Categorical(probs=jnp.stack([1.0 - p, p])), obs=y)

    return Prior(model, kind="tokens", outcomes=("0", "1"))
