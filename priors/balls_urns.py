"""Balls and urns over a finite pool of urns: the token task-diversity setting of Wurgaft et al., "In-context
learning strategies emerge rationally", after Raventós et al.'s task pools (arXiv:2306.15063).

A pool of M urns p_1..p_M ~ Dirichlet(α) over V colours is drawn once, with numpy, from ``pool_seed``; each
episode picks one urn uniformly and draws y_t ~ Categorical(p_m) i.i.d. The urn index is a Categorical
latent, so the enumeration engine gives the exact Bayes predictive, the "memorising" predictor: posterior
weights over the pool ∝ Π_{s<t} p_m(y_s), predictive Σ_m w_m p_m. The "generalising" predictor, Bayes
under the Dirichlet(α) the pool was drawn from, is the Dirichlet–categorical closed form (the prior
``dirichlet_categorical``; the predictor ``dirichlet`` in a config); the two agree as M grows. The pool is
``urn_pool(num_outcomes, pool_size, pool_seed, alpha)``; ``prior.metadata["pool_sha256"]`` identifies it in
the provenance (the pool itself would put M x V numbers into every checkpoint's JSON).
"""

import hashlib

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from toolkit import Prior, register_prior
from toolkit.errors import ModelError


def urn_pool(num_outcomes: int = 5, pool_size: int = 64, pool_seed: int = 0, alpha=1.0) -> np.ndarray:
    """The pool of urns, shape (pool_size, num_outcomes): Dirichlet(alpha) draws from ``default_rng(pool_seed)``."""
    alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (num_outcomes,))
    return np.random.default_rng(pool_seed).dirichlet(alpha, size=pool_size)


@register_prior("balls_urns")
def balls_urns(num_outcomes=5, pool_size=64, pool_seed=0, alpha=1.0) -> Prior:
    """One of ``pool_size`` fixed urns (Dirichlet(alpha) draws from ``pool_seed``) per episode; i.i.d. draws from it."""
    for label, value, least in (("num_outcomes", num_outcomes, 2), ("pool_size", pool_size, 1), ("pool_seed", pool_seed, 0)):
        if isinstance(value, bool) or int(value) != value or value < least:
            raise ModelError(f"balls_urns needs an integer {label} >= {least}, got {value!r}")
    num_outcomes, pool_size = int(num_outcomes), int(pool_size)
    alpha_vector = np.asarray(alpha, dtype=np.float64)
    if alpha_vector.ndim > 1 or alpha_vector.size not in (1, num_outcomes) or not np.all(alpha_vector > 0):
        raise ModelError(f"balls_urns needs alpha > 0, a number or one per colour ({num_outcomes}), got {alpha!r}")
    pool = urn_pool(num_outcomes, pool_size, int(pool_seed), alpha_vector)  # numpy float64 under x64 tracing
    if not np.all(pool > 0):  # a colour of probability 0 would make some data impossible under an urn
        raise ModelError(f"balls_urns: alpha = {alpha!r} is so small that an urn of the pool gives a colour "
                         "probability 0; use alpha >= 0.05")

    def model(length, y=None):
        urn = numpyro.sample("urn", dist.Categorical(probs=np.full(pool_size, 1.0 / pool_size)))
        with numpyro.plate("position", length):
            numpyro.sample("y", dist.Categorical(probs=jnp.asarray(pool)[urn]), obs=y)

    return Prior(model, kind="tokens", outcomes=tuple(str(v) for v in range(num_outcomes)), metadata={"pool_sha256": hashlib.sha256(pool.tobytes()).hexdigest()})
