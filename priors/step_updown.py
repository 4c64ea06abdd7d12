"""Bumps: a step up and a step back down, on a 201³ grid (after the step-function experiments of
Müller, Hollmann & Hutter 2024, "Bayes' Power for Explaining In-Context Learning Generalizations",
arXiv:2410.01565).

    f(x) = height · [min(a, b) < x ≤ max(a, b)],   y_t ~ N(f(x_t), σ²),   x_t ~ U(−1, 1)

The two edges a and b are independent and uniform on ``linspace(−1, 1, 201)`` and the height on
``linspace(−1, 1, 201)`` (a negative height is a dip), σ = 0.1. The function goes up at the smaller
edge and down at the larger one; drawing the edges independently (rather than a < b) keeps the
support a product grid with uniform weights: each bump with a ≠ b is drawn as (a, b) and as (b, a),
and a = b (or height 0) is the zero function. The parameterisation is this module's own definition,
written down here because the paper's exact grid for this prior could not be checked. 201³ =
8,120,601 functions: within the enumeration engine's default ``max_support`` of 10⁷.
"""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from toolkit import Prior, register_prior
from toolkit.errors import ModelError


@register_prior("step_updown")
def step_updown(num_edges=201, num_heights=201, edge_range=(-1.0, 1.0), height_range=(-1.0, 1.0), sigma=0.1) -> Prior:
    """``height · [min(a, b) < x ≤ max(a, b)]``, edges a, b and the height uniform on their ``linspace`` grids."""
    num_edges, num_heights = int(num_edges), int(num_heights)
    if min(num_edges, num_heights) < 1:
        raise ModelError(f"step_updown needs at least one value per grid, got {num_edges} edges, {num_heights} heights")
    if not sigma > 0:
        raise ModelError(f"step_updown needs sigma > 0, got {sigma}")
    edges = np.linspace(*map(float, edge_range), num_edges)
    heights = np.linspace(*map(float, height_range), num_heights)
    sigma = float(sigma)

    def model(length, x=None, y=None):
        a = numpyro.sample("edge_a_index", dist.Categorical(probs=np.full(num_edges, 1 / num_edges)))
        b = numpyro.sample("edge_b_index", dist.Categorical(probs=np.full(num_edges, 1 / num_edges)))
        h = numpyro.sample("height_index", dist.Categorical(probs=np.full(num_heights, 1 / num_heights)))
        lo, hi = jnp.asarray(edges)[jnp.minimum(a, b)], jnp.asarray(edges)[jnp.maximum(a, b)]
        with numpyro.plate("position", length):
            x = numpyro.sample("x", dist.Uniform(-1.0, 1.0).expand([1]).to_event(1), obs=x)  # (position, 1)
            inside = (x[..., 0] > lo) & (x[..., 0] <= hi)
            numpyro.sample("y", dist.Normal(jnp.asarray(heights)[h] * inside, sigma), obs=y)

    return Prior(model, kind="regression", x_dim=1, params={"num_functions": num_edges**2 * num_heights})
