"""Bayesian linear regression with a Gaussian prior on the weights, and its conjugate predictive.

w ~ N(0, (y_scale·τ)² I_d), x ~ N(0, x_scale² Σ), y = w·x + ε with ε ~ N(0, σ²). With the defaults it
is the in-distribution task of Garg et al., "What can transformers learn in-context? A case study of
simple function classes" (arXiv:2208.01066); the other parameters describe their shifted data sources q
(their Section 4) as misspecified scenarios:

- ``x_scale`` in (1/3, 1/2, 2, 3): "scaled x"; ``y_scale`` likewise: "scaled y" (the weights, hence the
  regression function, are scaled; the noise is not);
- ``x_cov="skewed"``: "skewed covariance", eigenvalues of Σ ∝ 1/i² (their evaluation code scales x by a
  matrix of eigenvalues 1/i, so the covariance has 1/i²);
- ``x_subspace=d // 2``: "half subspace", x confined to a k-dimensional coordinate subspace;
- ``sigma=1``: "noisy y".

Σ is normalised to trace d, as their evaluation code does (``sample_transformation(normalize=True)``), so
E|x|² = x_scale² d in every case. Σ is kept diagonal (the subspace is that of the first k coordinates)
rather than rotated by a random eigenbasis as in their code: the weight prior is isotropic, so the Bayes
predictive, ridge, least squares, k-NN and averaging are all rotation-equivariant and give the same
errors, in distribution, either way.

The closed form: given the prefix, w ~ N(μ_t, Σ_t) with Σ_t = (I/τ'² + X_<tᵀX_<t/σ²)⁻¹ and
μ_t = Σ_t X_<tᵀ y_<t/σ² (τ' = y_scale·τ), so y_t ~ N(x_tᵀμ_t, x_tᵀΣ_tx_t + σ²); ``exact_posterior`` gives
that law of w after a whole episode.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from toolkit import Prior, register_prior
from toolkit.baselines import gaussian_linear_predictive
from toolkit.errors import ModelError

X_COVARIANCES = ("identity", "skewed")


def input_scales(d: int, x_cov: str = "identity", x_subspace: int | None = None) -> np.ndarray:
    """Standard deviations of the d input coordinates before ``x_scale``: sqrt of Σ's diagonal (trace d).

    ``"identity"``: all ones; ``"skewed"``: variance ∝ 1/i² for coordinate i = 1..d. With ``x_subspace=k``
    the coordinates after the k-th are exactly zero and the first k are rescaled so the trace stays d.
    """
    if x_cov not in X_COVARIANCES:
        raise ModelError(f"x_cov must be one of {X_COVARIANCES}, got {x_cov!r}")
    variance = np.ones(d) if x_cov == "identity" else 1.0 / np.arange(1, d + 1) ** 2
    if x_subspace is not None:
        if int(x_subspace) != x_subspace or not 1 <= x_subspace <= d:
            raise ModelError(f"x_subspace must be an integer in [1, d={d}] or None, got {x_subspace!r}")
        variance[int(x_subspace) :] = 0.0
    return np.sqrt(variance * d / variance.sum())


class SubspaceNormal(dist.Distribution):
    """Independent N(0, scale_i²) coordinates; coordinates with scale 0 are exactly 0.

    A degenerate Gaussian on a coordinate subspace. ``log_prob`` is the density with respect to
    Lebesgue measure on the subspace (the nonzero coordinates), and -inf off it.

    Parameters
    ----------
    scale : np.ndarray, shape (feature,)
        Non-negative standard deviations; the zeros mark the coordinates outside the subspace.
    """

    arg_constraints = {}
    support = constraints.real_vector
    pytree_data_fields = ("scale",)

    def __init__(self, scale, *, validate_args=None):
        self.scale = jnp.asarray(scale)
        super().__init__(batch_shape=(), event_shape=self.scale.shape[-1:], validate_args=validate_args)

    def sample(self, key, sample_shape=()):
        z = jax.random.normal(key, sample_shape + self.batch_shape + self.event_shape)
        return jnp.where(self.scale > 0, self.scale * z, 0.0)  # exact zeros, not -0.0

    def log_prob(self, value):
        inside = self.scale > 0
        safe = jnp.where(inside, self.scale, 1.0)
        log_density = jnp.where(inside, dist.Normal(0.0, safe).log_prob(value), 0.0).sum(-1)
        off = jnp.any(~inside & (value != 0), axis=-1)
        return jnp.where(off, -jnp.inf, log_density)

    @property
    def mean(self):
        return jnp.zeros(self.batch_shape + self.event_shape)

    @property
    def variance(self):
        return jnp.broadcast_to(self.scale**2, self.batch_shape + self.event_shape)


@register_prior("linear_regression")
def linear_regression(
    d=5, tau=1.0, sigma=0.1, x_scale=1.0, y_scale=1.0, x_cov="identity", x_subspace=None
) -> Prior:
    """w ~ N(0, (y_scale·tau)² I_d); x ~ N(0, x_scale² Σ) (``x_cov``, ``x_subspace``); y = w·x + N(0, sigma²)."""
    if int(d) != d or d < 1:
        raise ModelError(f"linear_regression needs a positive integer d, got {d!r}")
    d = int(d)
    for label, value in (("tau", tau), ("sigma", sigma), ("x_scale", x_scale), ("y_scale", y_scale)):
        if not value > 0:
            raise ModelError(f"linear_regression needs {label} > 0, got {value}")
    # numpy, not jnp: the constants stay float64 when an engine traces the model under x64
    x_sd = float(x_scale) * input_scales(d, x_cov, x_subspace)
    w_sd = float(y_scale) * float(tau)
    sigma = float(sigma)
    x_dist = SubspaceNormal(x_sd) if np.any(x_sd == 0) else dist.Normal(np.zeros(d), x_sd).to_event(1)

    def model(length, x=None, y=None):
        w = numpyro.sample("w", dist.Normal(np.zeros(d), w_sd).to_event(1))
        with numpyro.plate("position", length):
            x = numpyro.sample("x", x_dist, obs=x)
            numpyro.sample("y", dist.Normal(jnp.dot(x, w), sigma), obs=y)

    def exact_predictive(episodes):
        mean, variance = gaussian_linear_predictive(
            episodes.x, episodes.y, tau=w_sd, sigma=sigma, observed=episodes.mask
        )
        return dist.Normal(jnp.asarray(mean[0]), jnp.asarray(np.sqrt(variance)))

    def exact_posterior(episodes):
        seen = np.ones(episodes.y.shape, bool) if episodes.mask is None else episodes.mask
        x = np.where(seen[..., None], np.asarray(episodes.x, np.float64), 0.0)  # (episode, position, feature)
        y = np.where(seen, np.asarray(episodes.y, np.float64), 0.0)
        precision = np.eye(d) / w_sd**2 + np.einsum("eti,etj->eij", x, x) / sigma**2
        covariance = np.linalg.inv(precision)
        mean = np.einsum("eij,ej->ei", covariance, np.einsum("eti,et->ei", x, y)) / sigma**2
        covariance = 0.5 * (covariance + np.swapaxes(covariance, -1, -2))
        return {"w": dist.MultivariateNormal(jnp.asarray(mean), covariance_matrix=jnp.asarray(covariance))}

    return Prior(
        model,
        kind="regression",
        x_dim=d,
        exact_predictive=exact_predictive,
        exact_posterior=exact_posterior,
        metadata={"x_sd": x_sd, "w_sd": w_sd},
    )
