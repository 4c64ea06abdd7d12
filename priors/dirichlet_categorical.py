"""Dirichlet–categorical ("balls and urns"): an urn's colour proportions p ~ Dirichlet(α), draws y_t ~ Categorical(p).

P(y_t = v | counts n_v of each colour in y_<t) = (α_v + n_v) / (Σ α + t − 1); the posterior of p after
them is Dirichlet(α + n).
"""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from toolkit import Prior, register_prior
from toolkit.errors import ModelError


@register_prior("dirichlet_categorical")
def dirichlet_categorical(num_outcomes=5, alpha=1.0, outcomes=None) -> Prior:
    """``num_outcomes`` colours, concentration ``alpha`` (a number, or one per colour)."""
    alpha = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (int(num_outcomes),)).copy()
    if num_outcomes < 2:
        raise ModelError(f"dirichlet_categorical needs num_outcomes >= 2, got {num_outcomes}")
    if not np.all(alpha > 0):
        raise ModelError(f"dirichlet_categorical needs alpha > 0, got {alpha.tolist()}")
    labels = tuple(str(v) for v in range(len(alpha))) if outcomes is None else tuple(outcomes)
    if len(labels) != len(alpha):
        raise ModelError(f"dirichlet_categorical has {len(alpha)} outcomes but {len(labels)} labels")

    def model(length, y=None):
        p = numpyro.sample("p", dist.Dirichlet(jnp.asarray(alpha)))
        with numpyro.plate("position", length):
            numpyro.sample("y", dist.Categorical(probs=p), obs=y)

    def exact_predictive(episodes):
        y = np.asarray(episodes.y)
        seen = np.ones(y.shape, bool) if episodes.mask is None else episodes.mask
        onehot = (y[..., None] == np.arange(len(alpha))) & seen[..., None]  # (episode, position, outcome)
        before = np.cumsum(onehot, axis=1) - onehot  # counts in y_<t
        probs = (alpha + before) / (alpha.sum() + before.sum(axis=-1, keepdims=True))
        return dist.Categorical(probs=jnp.asarray(probs))

    def exact_posterior(episodes):
        y = np.asarray(episodes.y)
        seen = np.ones(y.shape, bool) if episodes.mask is None else episodes.mask
        counts = ((y[..., None] == np.arange(len(alpha))) & seen[..., None]).sum(axis=1)  # (episode, outcome)
        return {"p": dist.Dirichlet(jnp.asarray(alpha + counts))}

    return Prior(model, kind="tokens", outcomes=labels, exact_predictive=exact_predictive,
                 exact_posterior=exact_posterior)
