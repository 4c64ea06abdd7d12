"""Lines and sines, two equally likely families on finite grids (Müller, Hollmann & Hutter 2024,
"Bayes' Power for Explaining In-Context Learning Generalizations", arXiv:2410.01565).

    family line (probability ½): f(x) = slope · x + offset, slope and offset on linspace(−1, 1, 101)
    family sine (probability ½): f(x) = 0.2 · sin(3π x + φ), φ on linspace(0, 2π, 101, endpoint=False)
    y_t ~ N(f(x_t), σ²) with σ = 0.1,   x_t ~ U(−1, 1)

One latent, ``function_index``, runs over the union of the two grids: indices 0 .. S·O − 1 are the
lines (slope-major: slope ``i // O``, offset ``i % O``), the next P indices the sines (phase
``i − S·O``); each line has probability ½ / (S·O), each sine ½ / P. A family latent next to one
latent per parameter would make the enumerated support the product 2 × 101³ (each function
repeated for the other family's unused parameters, the same posterior at 200 times the cost).
"""

import math

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from toolkit import Prior, register_prior
from toolkit.errors import ModelError


@register_prior("lines_and_sines")
def lines_and_sines(
    num_slopes=101,
    num_offsets=101,
    slope_range=(-1.0, 1.0),
    offset_range=(-1.0, 1.0),
    amplitude=0.2,
    frequency=3 * math.pi,
    num_phases=101,
    line_probability=0.5,
    sigma=0.1,
) -> Prior:
    """Lines ``slope · x + offset`` (probability ``line_probability``) or sines ``amplitude · sin(frequency x + φ)``."""
    num_slopes, num_offsets, num_phases = int(num_slopes), int(num_offsets), int(num_phases)
    if min(num_slopes, num_offsets, num_phases) < 1:
        raise ModelError(
            f"lines_and_sines needs at least one value per grid, got {num_slopes}, {num_offsets}, {num_phases}"
        )
    if not 0 < line_probability < 1:
        raise ModelError(f"lines_and_sines needs 0 < line_probability < 1, got {line_probability}")
    if not sigma > 0:
        raise ModelError(f"lines_and_sines needs sigma > 0, got {sigma}")
    slopes = np.linspace(*map(float, slope_range), num_slopes)
    offsets = np.linspace(*map(float, offset_range), num_offsets)
    phases = np.linspace(0.0, 2 * math.pi, num_phases, endpoint=False)
    num_lines = num_slopes * num_offsets
    probs = np.concatenate(
        [np.full(num_lines, line_probability / num_lines), np.full(num_phases, (1 - line_probability) / num_phases)]
    )
    amplitude, frequency, sigma = float(amplitude), float(frequency), float(sigma)

    def model(length, x=None, y=None):
        i = numpyro.sample("function_index", dist.Categorical(probs=probs))
        line, sine = jnp.minimum(i, num_lines - 1), jnp.clip(i - num_lines, 0, num_phases - 1)
        with numpyro.plate("position", length):
            x = numpyro.sample("x", dist.Uniform(-1.0, 1.0).expand([1]).to_event(1), obs=x)  # (position, 1)
            x = x[..., 0]
            f_line = jnp.asarray(slopes)[line // num_offsets] * x + jnp.asarray(offsets)[line % num_offsets]
            f_sine = amplitude * jnp.sin(frequency * x + jnp.asarray(phases)[sine])
            numpyro.sample("y", dist.Normal(jnp.where(i < num_lines, f_line, f_sine), sigma), obs=y)

    return Prior(model, kind="regression", x_dim=1, params={"num_functions": num_lines + num_phases})
