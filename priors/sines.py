"""Sine curves of one amplitude and frequency at 101 phases (Müller, Hollmann & Hutter 2024,
"Bayes' Power for Explaining In-Context Learning Generalizations", arXiv:2410.01565).

    f(x) = amplitude · sin(frequency · x + φ),   y_t ~ N(f(x_t), σ²),   x_t ~ U(−1, 1)

with amplitude 0.2, frequency 3π, σ = 0.1 and the phase φ uniform on
``linspace(0, 2π, num_offsets, endpoint=False)`` (101 phases; 0 and 2π are the same curve, so the
endpoint is left out). The latent site ``phase_index`` holds the grid index.
"""

import math

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from toolkit import Prior, register_prior
from toolkit.errors import ModelError


@register_prior("sines")
def sines(amplitude=0.2, frequency=3 * math.pi, num_offsets=101, sigma=0.1) -> Prior:
    """``amplitude · sin(frequency · x + φ)``, φ uniform on ``num_offsets`` equally spaced phases in [0, 2π)."""
    num_offsets = int(num_offsets)
    if num_offsets < 1:
        raise ModelError(f"sines needs num_offsets >= 1, got {num_offsets}")
    if not sigma > 0:
        raise ModelError(f"sines needs sigma > 0, got {sigma}")
    phases = np.linspace(0.0, 2 * math.pi, num_offsets, endpoint=False)
    amplitude, frequency, sigma = float(amplitude), float(frequency), float(sigma)

    def model(length, x=None, y=None):
        i = numpyro.sample("phase_index", dist.Categorical(probs=np.full(num_offsets, 1 / num_offsets)))
        with numpyro.plate("position", length):
            x = numpyro.sample("x", dist.Uniform(-1.0, 1.0).expand([1]).to_event(1), obs=x)  # (position, 1)
            f = amplitude * jnp.sin(frequency * x[..., 0] + jnp.asarray(phases)[i])
            numpyro.sample("y", dist.Normal(f, sigma), obs=y)

    return Prior(model, kind="regression", x_dim=1, params={"phases": "linspace(0, 2π, num_offsets, endpoint=False)"})
