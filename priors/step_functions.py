"""Step functions on a finite grid (Müller, Hollmann & Hutter 2024, "Bayes' Power for Explaining
In-Context Learning Generalizations", arXiv:2410.01565).

    f(x) = y_offset + amplitude · [x > x_offset],   y_t ~ N(f(x_t), σ²),   x_t ~ U(−1, 1)

with x_offset and y_offset on ``linspace(−1, 1, 101)``, amplitude on ``linspace(0, 2, 101)`` (steps go
up only) and σ = 0.1. The three grid indices are independent and uniform, so the 101³ = 1,030,301
functions are equally likely and the exact posterior is a sum over them (the enumeration engine).
The latent sites hold grid indices (``x_offset_index``, ...), not the values.
"""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from toolkit import Prior, register_prior
from toolkit.errors import ModelError


@register_prior("step_functions")
def step_functions(
    num_x_offsets=101,
    num_y_offsets=101,
    num_amplitudes=101,
    x_offset_range=(-1.0, 1.0),
    y_offset_range=(-1.0, 1.0),
    amplitude_range=(0.0, 2.0),
    sigma=0.1,
) -> Prior:
    """Steps ``y_offset + amplitude · [x > x_offset]``, each parameter uniform on its ``linspace`` grid."""
    sizes = (int(num_x_offsets), int(num_y_offsets), int(num_amplitudes))
    if min(sizes) < 1:
        raise ModelError(f"step_functions needs at least one value per grid, got sizes {sizes}")
    if not sigma > 0:
        raise ModelError(f"step_functions needs sigma > 0, got {sigma}")
    # numpy, not jnp: the constants stay float64 when an engine traces the model under x64
    x_offsets = np.linspace(*map(float, x_offset_range), sizes[0])
    y_offsets = np.linspace(*map(float, y_offset_range), sizes[1])
    amplitudes = np.linspace(*map(float, amplitude_range), sizes[2])
    sigma = float(sigma)

    def model(length, x=None, y=None):
        i = numpyro.sample("x_offset_index", dist.Categorical(probs=np.full(sizes[0], 1 / sizes[0])))
        j = numpyro.sample("y_offset_index", dist.Categorical(probs=np.full(sizes[1], 1 / sizes[1])))
        k = numpyro.sample("amplitude_index", dist.Categorical(probs=np.full(sizes[2], 1 / sizes[2])))
        with numpyro.plate("position", length):
            x = numpyro.sample("x", dist.Uniform(-1.0, 1.0).expand([1]).to_event(1), obs=x)  # (position, 1)
            f = jnp.asarray(y_offsets)[j] + jnp.asarray(amplitudes)[k] * (x[..., 0] > jnp.asarray(x_offsets)[i])
            numpyro.sample("y", dist.Normal(f, sigma), obs=y)

    return Prior(model, kind="regression", x_dim=1, params={"num_functions": int(np.prod(sizes))})
