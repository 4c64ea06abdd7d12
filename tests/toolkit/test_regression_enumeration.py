"""The cumulative regression enumeration against the posterior predictive written in plain numpy.

For latents k with prior weights π_k, p(y_t | y_<t) = Σ_k w_k p_k(y_t) with w_k ∝ π_k Π_{s<t} p_k(y_s):
every output (log score, mean, variance, evidence, grid density, grid CDF) is computed here by
summing over every latent value with numpy/scipy, and the engine must agree to 1e-9.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import special, stats

import priors
from toolkit import Episodes, Prior
from toolkit.enumeration import enumerate_predictive

STEP_GRID = dict(num_x_offsets=5, num_y_offsets=4, num_amplitudes=3)


def log_or_minus_inf(a):
    with np.errstate(divide="ignore"):
        return np.log(a)


def brute_force(log_prior, log_lik, mean, var, density, cdf):
    """Posterior predictive by summing over every latent. Inputs (k[, e, t[, g]]); outputs (e, t[, g])."""
    before = np.concatenate([np.zeros(log_lik.shape[:-1] + (1,)), np.cumsum(log_lik, axis=-1)[..., :-1]], axis=-1)
    log_w = log_prior[:, None, None] + before
    evidence = special.logsumexp(log_w, axis=0)
    w = np.exp(log_w - evidence)
    return {
        "log_evidence": evidence,
        "log_score": special.logsumexp(log_w + log_lik, axis=0) - evidence,
        "mean": (w * mean).sum(0),
        "variance": (w * (var + mean**2)).sum(0) - (w * mean).sum(0) ** 2,
        "grid_log_density": log_or_minus_inf((w[..., None] * density).sum(0)),
        "grid_cdf": (w[..., None] * cdf).sum(0),
    }


def assert_agrees(out, expected, tol=1e-9):
    """Every output to ``tol``; the grid density as a density, and in logs where it is not a denormal."""
    for name, value in expected.items():
        if name == "grid_log_density":
            np.testing.assert_allclose(np.exp(out[name]), np.exp(value), rtol=tol, atol=1e-300, err_msg=name)
            normal = value > -600  # e^-600 ~ 1e-261: nearer the denormals the two sums round differently
            np.testing.assert_allclose(out[name][normal], value[normal], rtol=tol, atol=tol, err_msg=name)
        else:
            np.testing.assert_allclose(out[name], value, rtol=tol, atol=tol, err_msg=name)


def step_expectation(episodes, y_grid, sigma=0.1):
    x_off, y_off, amp = np.meshgrid(
        np.linspace(-1, 1, 5), np.linspace(-1, 1, 4), np.linspace(0, 2, 3), indexing="ij"
    )
    x_off, y_off, amp = (a.reshape(-1, 1, 1) for a in (x_off, y_off, amp))
    f = y_off + amp * (episodes.x[None, ..., 0] > x_off)  # (k, e, t)
    g = y_grid[None, None, None, :]
    return brute_force(
        np.full(f.shape[0], -np.log(f.shape[0])),
        stats.norm.logpdf(episodes.y[None], f, sigma),
        f,
        np.full(f.shape, sigma**2),
        stats.norm.pdf(g, f[..., None], sigma),
        stats.norm.cdf(g, f[..., None], sigma),
    )


@pytest.fixture(scope="module")
def step_case():
    prior = priors.get("step_functions", **STEP_GRID)
    episodes = prior.sample(jax.random.key(3), 5, 9)
    y_grid = np.linspace(-1.6, 3.6, 41)
    return prior, episodes, y_grid


def test_step_grid_matches_the_sum_over_every_latent(step_case):
    prior, episodes, y_grid = step_case
    out = enumerate_predictive(prior, episodes, y_grid=y_grid)
    expected = step_expectation(episodes, y_grid)
    assert set(out) == set(expected)
    for name, value in expected.items():
        assert out[name].shape == value.shape, name
    assert_agrees(out, expected)


def test_a_grid_point_far_from_every_function_underflows_to_zero_density_only(step_case):
    """The density there is below the float64 range (z > 38 from every component), the rest is exact."""
    prior, episodes, _ = step_case
    out = enumerate_predictive(prior, episodes, y_grid=np.array([-9.0, 0.0]))
    assert np.all(out["grid_log_density"][..., 0] == -np.inf)
    np.testing.assert_allclose(out["grid_cdf"][..., 0], 0.0, atol=1e-300)
    assert np.all(np.isfinite(out["grid_log_density"][..., 1]))


@pytest.mark.parametrize("chunk_elements", [1, 3000])
def test_chunked_latents_give_the_one_chunk_answer(step_case, chunk_elements):
    prior, episodes, y_grid = step_case
    whole = enumerate_predictive(prior, episodes, y_grid=y_grid, chunk_elements=2**30)
    chunked = enumerate_predictive(prior, episodes, y_grid=y_grid, chunk_elements=chunk_elements)
    assert_agrees(chunked, whole, tol=1e-12)


def test_a_far_realised_y_keeps_an_exact_finite_log_score(step_case):
    """log p(y_t | y_<t) from the ratio of evidences, not from exp(log p_k(y_t)), which underflows at z ≈ 38."""
    prior, episodes, y_grid = step_case
    y = episodes.y.copy()
    y[:, 4] = 12.0  # 80 sd above the highest step: p_k(y) = exp(-3200) for every k
    far = Episodes(y=y, x=episodes.x)
    out = enumerate_predictive(prior, far)
    expected = step_expectation(far, y_grid)
    assert np.all(np.isfinite(out["log_score"][:, 4])) and np.all(out["log_score"][:, 4] < -3000)
    np.testing.assert_allclose(out["log_score"], expected["log_score"], rtol=1e-10)
    np.testing.assert_allclose(out["mean"], expected["mean"], rtol=1e-9, atol=1e-9)


def laplace_prior(locs=(-0.5, 0.0, 0.7), scales=(0.2, 0.5)):
    """A user's model whose y is not Normal (Laplace): the engine's general path, through the trace."""
    locs, scales = np.asarray(locs, dtype=np.float64), np.asarray(scales, dtype=np.float64)

    def model(length, x=None, y=None):
        i = numpyro.sample("loc_index", dist.Categorical(probs=np.array([0.2, 0.3, 0.5])))
        j = numpyro.sample("scale_index", dist.Categorical(probs=np.array([0.6, 0.4])))
        with numpyro.plate("position", length):
            x = numpyro.sample("x", dist.Normal(0.0, 1.0), obs=x)  # (position,): one feature, no feature dim
            numpyro.sample("y", dist.Laplace(jnp.asarray(locs)[i] + 0.3 * x, jnp.asarray(scales)[j]), obs=y)

    return Prior(model, kind="regression"), locs, scales


def test_a_non_normal_likelihood_matches_the_sum_over_every_latent():
    prior, locs, scales = laplace_prior()
    episodes = prior.sample(jax.random.key(1), 4, 6)
    y_grid = np.linspace(-3, 3, 25)
    out = enumerate_predictive(prior, episodes, y_grid=y_grid, chunk_elements=1)
    loc, scale = np.meshgrid(locs, scales, indexing="ij")
    log_prior = (np.log([0.2, 0.3, 0.5])[:, None] + np.log([0.6, 0.4])[None, :]).reshape(-1)
    f = loc.reshape(-1, 1, 1) + 0.3 * episodes.x[None, ..., 0]
    b = np.broadcast_to(scale.reshape(-1, 1, 1), f.shape)
    g = y_grid[None, None, None, :]
    expected = brute_force(
        log_prior,
        stats.laplace.logpdf(episodes.y[None], f, b),
        f,
        2 * b**2,
        stats.laplace.pdf(g, f[..., None], b[..., None]),
        stats.laplace.cdf(g, f[..., None], b[..., None]),
    )
    assert_agrees(out, expected)
