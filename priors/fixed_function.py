"""One fixed function observed with Gaussian noise: the data sources of the out-of-distribution regression scenarios.

x ~ U(x_low, x_high) and y = f(x) + ε, ε ~ N(0, σ²), with f one of

- ``"line"``: slope · x + offset
- ``"sine"``: amplitude · sin(frequency · x + phase) + offset
- ``"sine_plus_line"``: the two added (a sloped sine)
- ``"step"``: offset + height · [x > up]
- ``"bump"``: offset + height · [up < x < down] (up, then back down)

Nothing is latent, so the closed form is the noise model itself: Bayes' Power
(Müller, Hollmann & Hutter, arXiv:2410.01565) evaluates priors with finite
function families on functions like these that the families do not contain
(a sine plus slope 0.23 for lines + sines, the line y = 0.2x for steps).
As a training prior it is the oracle: every episode is the same function.
"""

import math

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

from toolkit import Prior, register_prior
from toolkit.errors import ModelError

FORMS = ("line", "sine", "sine_plus_line", "step", "bump")


@register_prior("fixed_function")
def fixed_function(
    form="sine_plus_line",
    slope=0.0,
    offset=0.0,
    amplitude=0.2,
    frequency=3 * math.pi,
    phase=0.0,
    height=1.0,
    up=0.0,
    down=1.0,
    sigma=0.1,
    x_low=-1.0,
    x_high=1.0,
) -> Prior:
    """y = f(x) + N(0, sigma²) for one function f named by ``form`` (see the module docstring)."""
    if form not in FORMS:
        raise ModelError(f"fixed_function form must be one of {', '.join(FORMS)}, got {form!r}")
    if not sigma > 0:
        raise ModelError(f"fixed_function needs sigma > 0, got {sigma}")
    if not x_high > x_low:
        raise ModelError(f"fixed_function needs x_low < x_high, got {x_low}, {x_high}")
    if form == "bump" and not down > up:
        raise ModelError(f"a bump goes up at `up` and down at `down` > up, got up={up}, down={down}")

    def f(x):
        line = slope * x + offset
        sine = amplitude * jnp.sin(frequency * x + phase)
        return {
            "line": line,
            "sine": sine + offset,
            "sine_plus_line": sine + line,
            "step": offset + height * (x > up),
            "bump": offset + height * ((x > up) & (x < down)),
        }[form]

    def model(length, x=None, y=None):
        with numpyro.plate("position", length):
            x = numpyro.sample("x", dist.Uniform(x_low, x_high).expand([1]).to_event(1), obs=x)
            numpyro.sample("y", dist.Normal(f(x[..., 0]), sigma), obs=y)

    def exact_predictive(episodes):
        return dist.Normal(f(jnp.asarray(episodes.x[..., 0], dtype=jnp.float64)), sigma)

    return Prior(model, kind="regression", x_dim=1, exact_predictive=exact_predictive)
