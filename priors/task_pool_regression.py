"""Linear regression over a finite pool of tasks: Raventós et al., "Pretraining task diversity and the
emergence of non-Bayesian in-context learning for regression" (arXiv:2306.15063).

A pool of M weight vectors w_1..w_M ~ N(0, τ² I_d) is drawn once, with numpy, from ``pool_seed``; each
episode picks one uniformly, x ~ N(0, I_d) and y = w·x + N(0, σ²). The task index is a Categorical
latent, so the enumeration engine gives the exact Bayes predictive, their "dMMSE" estimator: posterior
weights over the pool ∝ Π_{s<t} N(y_s; w_m·x_s, σ²), predictive the mixture of N(w_m·x_t, σ²). Their
"ridge" reference, Bayes under the Gaussian prior the pool was drawn from, is
`toolkit.baselines.RidgePredictor(tau=tau, sigma=sigma)`. The pool is ``prior.metadata["pool"]``.
"""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from toolkit import Prior, register_prior
from toolkit.errors import ModelError


def task_pool(d: int = 5, pool_size: int = 64, pool_seed: int = 0, tau: float = 1.0) -> np.ndarray:
    """The pool of weight vectors, shape (pool_size, d): N(0, tau² I) draws from ``default_rng(pool_seed)``."""
    return tau * np.random.default_rng(pool_seed).standard_normal((pool_size, d))


@register_prior("task_pool_regression")
def task_pool_regression(d=5, pool_size=64, pool_seed=0, tau=1.0, sigma=0.1) -> Prior:
    """One of ``pool_size`` fixed weight vectors (drawn from ``pool_seed``) per episode; y = w·x + N(0, sigma²)."""
    for label, value in (("d", d), ("pool_size", pool_size)):
        if int(value) != value or value < 1:
            raise ModelError(f"task_pool_regression needs a positive integer {label}, got {value!r}")
    if int(pool_seed) != pool_seed or pool_seed < 0:
        raise ModelError(f"task_pool_regression needs a non-negative integer pool_seed, got {pool_seed!r}")
    if not (tau > 0 and sigma > 0):
        raise ModelError(f"task_pool_regression needs tau > 0 and sigma > 0, got tau={tau}, sigma={sigma}")
    d, pool_size = int(d), int(pool_size)
    pool = task_pool(d, pool_size, int(pool_seed), float(tau))  # numpy float64 under x64 tracing
    sigma = float(sigma)

    def model(length, x=None, y=None):
        task = numpyro.sample("task", dist.Categorical(probs=np.full(pool_size, 1.0 / pool_size)))
        w = jnp.asarray(pool)[task]
        with numpyro.plate("position", length):
            x = numpyro.sample("x", dist.Normal(np.zeros(d), 1.0).to_event(1), obs=x)
            numpyro.sample("y", dist.Normal(jnp.dot(x, w), sigma), obs=y)

    return Prior(model, kind="regression", x_dim=d, metadata={"pool": pool})
