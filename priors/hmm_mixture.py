"""A small mixture of hidden Markov models, in the spirit of GINC (Xie et al. 2022, arXiv:2111.02080).

Each episode picks one HMM (a "concept") and emits a sequence from it. The
hidden states make the tokens depend on each other, so the Bayes reference
runs the prefix-masking enumeration path: NumPyro's enumeration sums the
hidden states out of the ``scan`` (the forward algorithm) and the HMM index
out of the mixture, exactly.

The HMMs' parameters are drawn once from ``seed`` (numpy, float64): each
transition matrix is mostly a random permutation of the states (a "concept"
walks its states in its own order) plus a Dirichlet perturbation; each
emission row is Dirichlet(``emission_concentration``).
"""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.contrib.control_flow import scan
from numpyro.ops.indexing import Vindex

from toolkit import Prior, register_prior
from toolkit.errors import ModelError


def hmm_parameters(num_hmms=3, num_states=4, num_symbols=5, *, seed=0, stickiness=0.8, emission_concentration=0.5):
    """Start, transition and emission probabilities of the mixture's HMMs.

    Returns
    -------
    start : np.ndarray, shape (hmm, state)
    transition : np.ndarray, shape (hmm, state, state)
        ``transition[k, i, j]`` = P(h_t = j | h_{t-1} = i) in HMM k.
    emission : np.ndarray, shape (hmm, state, symbol)
    """
    rng = np.random.default_rng(seed)
    start = rng.dirichlet(np.ones(num_states), size=num_hmms)
    perms = np.stack([np.eye(num_states)[rng.permutation(num_states)] for _ in range(num_hmms)])
    noise = rng.dirichlet(np.ones(num_states), size=(num_hmms, num_states))
    transition = stickiness * perms + (1 - stickiness) * noise
    emission = rng.dirichlet(np.full(num_symbols, emission_concentration), size=(num_hmms, num_states))
    return start, transition, emission


@register_prior("hmm_mixture")
def hmm_mixture(
    num_hmms=3, num_states=4, num_symbols=5, seed=0, stickiness=0.8, emission_concentration=0.5, weights=None
) -> Prior:
    """``num_hmms`` HMMs with ``num_states`` hidden states over ``num_symbols`` symbols, HMM k chosen with ``weights[k]``."""
    if min(num_hmms, num_states, num_symbols) < 1 or num_symbols < 2:
        raise ModelError(
            f"hmm_mixture needs num_hmms, num_states >= 1 and num_symbols >= 2, got {num_hmms}, {num_states}, {num_symbols}"
        )
    if not 0 <= stickiness <= 1:
        raise ModelError(f"hmm_mixture stickiness must lie in [0, 1], got {stickiness}")
    start, transition, emission = hmm_parameters(
        num_hmms, num_states, num_symbols, seed=seed, stickiness=stickiness,
        emission_concentration=emission_concentration,
    )
    weights = np.full(num_hmms, 1 / num_hmms) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    if len(weights) != num_hmms or np.any(weights < 0) or not np.isclose(weights.sum(), 1.0):
        raise ModelError(f"hmm_mixture weights must be {num_hmms} non-negative numbers summing to 1, got {weights.tolist()}")
    # row num_states of `step` is the start distribution: the scan begins from that pseudo-state
    step = np.concatenate([transition, start[:, None, :]], axis=1)  # (hmm, state + 1, state)

    def model(length, y=None):
        k = numpyro.sample("hmm", dist.Categorical(probs=jnp.asarray(weights)))

        def emit(h_prev, y_t):
            h = numpyro.sample("h", dist.Categorical(probs=Vindex(jnp.asarray(step))[k, h_prev]))
            y_t = numpyro.sample("y", dist.Categorical(probs=Vindex(jnp.asarray(emission))[k, h]), obs=y_t)
            return h, y_t

        scan(emit, num_states, y, length=length)

    return Prior(
        model,
        kind="tokens",
        outcomes=tuple(str(v) for v in range(num_symbols)),
        metadata={"start": start, "transition": transition, "emission": emission, "weights": weights},
    )
