"""The finite-grid priors of Müller, Hollmann & Hutter (2024): their grids, samples, engine and exact Bayes.

Each prior's predictive is checked against the sum over its latent grid written here in numpy
(small grids, built with the factories' own parameters); the default grids are only enumerated
as supports (sizes, weights), never run through the engine.
"""


import jax
import numpy as np
import pytest
from scipy import special, stats

import priors
from toolkit import Episodes
from toolkit.bayes import bayes_predictor, engine_choice
from toolkit.enumeration import enumerate_predictive, enumeration_path, latent_grid

DEFAULT_SIZES = {
    "sines": 101,
    "lines_and_sines": 101 * 101 + 101,
    "step_functions": 101**3,
    "step_updown": 201**3,
    "counting": 101,
}
REGRESSION = ["sines", "lines_and_sines", "step_functions", "step_updown"]


@pytest.mark.parametrize("name, size", DEFAULT_SIZES.items())
def test_default_grid_size_and_engine(name, size):
    prior = priors.get(name)
    grid = latent_grid(prior, max_support=10**7)
    assert grid.size == size
    engine, reason = engine_choice(prior)
    assert engine == "enumeration" and str(size) in reason
    assert enumeration_path(prior) == "cumulative"
    assert bayes_predictor(prior).engine == "enumeration"


@pytest.mark.parametrize("name", REGRESSION)
def test_regression_samples_have_the_declared_shapes_and_noise(name):
    prior = priors.get(name)
    assert prior.kind == "regression" and prior.x_dim == 1 and prior.params["sigma"] == 0.1
    episodes = prior.sample(jax.random.key(0), 64, 12)
    assert episodes.y.shape == (64, 12) and episodes.x.shape == (64, 12, 1)
    assert np.all((episodes.x >= -1) & (episodes.x <= 1))
    f = functions(name, prior, episodes)  # the true function at x from the sampled grid indices
    residual = episodes.y - f
    assert abs(residual.std() - 0.1) < 0.01 and abs(residual.mean()) < 0.01


def test_counting_samples_tokens_from_the_grid_bias():
    prior = priors.get("counting")
    assert prior.kind == "tokens" and prior.outcomes == ("0", "1")
    episodes = prior.sample(jax.random.key(0), 200, 50)
    p = np.linspace(0, 1, 101)[episodes.latents["p_index"]]
    assert episodes.y.shape == (200, 50) and set(np.unique(episodes.y)) <= {0, 1}
    assert np.all(episodes.y[p == 0] == 0) and np.all(episodes.y[p == 1] == 1)
    assert abs(episodes.y.mean(1) - p).mean() < 0.06


def functions(name, prior, episodes):
    """f(x) of each episode's sampled function, from its latent grid indices, (episode, position)."""
    x, lat, p = episodes.x[..., 0], episodes.latents, prior.params
    if name == "sines":
        phase = np.linspace(0, 2 * np.pi, p["num_offsets"], endpoint=False)[lat["phase_index"]][:, None]
        return p["amplitude"] * np.sin(p["frequency"] * x + phase)
    if name == "lines_and_sines":
        return lines_and_sines_table(p)(lat["function_index"][:, None], x)
    if name == "step_functions":
        x_off = np.linspace(*p["x_offset_range"], p["num_x_offsets"])[lat["x_offset_index"]][:, None]
        y_off = np.linspace(*p["y_offset_range"], p["num_y_offsets"])[lat["y_offset_index"]][:, None]
        amp = np.linspace(*p["amplitude_range"], p["num_amplitudes"])[lat["amplitude_index"]][:, None]
        return y_off + amp * (x > x_off)
    edges = np.linspace(*p["edge_range"], p["num_edges"])
    a, b = edges[lat["edge_a_index"]][:, None], edges[lat["edge_b_index"]][:, None]
    h = np.linspace(*p["height_range"], p["num_heights"])[lat["height_index"]][:, None]
    return h * ((x > np.minimum(a, b)) & (x <= np.maximum(a, b)))


def lines_and_sines_table(p):
    slopes = np.linspace(*p["slope_range"], p["num_slopes"])
    offsets = np.linspace(*p["offset_range"], p["num_offsets"])
    phases = np.linspace(0, 2 * np.pi, p["num_phases"], endpoint=False)
    num_lines = len(slopes) * len(offsets)

    def f(i, x):
        line = slopes[np.minimum(i, num_lines - 1) // len(offsets)] * x + offsets[np.minimum(i, num_lines - 1) % len(offsets)]
        sine = p["amplitude"] * np.sin(p["frequency"] * x + phases[np.clip(i - num_lines, 0, len(phases) - 1)])
        return np.where(i < num_lines, line, sine)

    return f


def every_function(name, prior, x):
    """(log prior weight (k,), f(x) (k, episode, position)) over the whole grid, in numpy."""
    p = prior.params
    if name == "lines_and_sines":
        num_lines = p["num_slopes"] * p["num_offsets"]
        k = np.arange(num_lines + p["num_phases"])
        w = np.where(k < num_lines, p["line_probability"] / num_lines, (1 - p["line_probability"]) / p["num_phases"])
        return np.log(w), lines_and_sines_table(p)(k[:, None, None], x[None])
    if name == "sines":
        phase = np.linspace(0, 2 * np.pi, p["num_offsets"], endpoint=False)[:, None, None]
        return np.full(len(phase), -np.log(len(phase))), p["amplitude"] * np.sin(p["frequency"] * x[None] + phase)
    if name == "step_functions":
        grids = [np.linspace(*p[r], p[n]) for r, n in
                 [("x_offset_range", "num_x_offsets"), ("y_offset_range", "num_y_offsets"), ("amplitude_range", "num_amplitudes")]]
        x_off, y_off, amp = (g.reshape(-1, 1, 1) for g in np.meshgrid(*grids, indexing="ij"))
        return np.full(x_off.shape[0], -np.log(x_off.shape[0])), y_off + amp * (x[None] > x_off)
    edges = np.linspace(*p["edge_range"], p["num_edges"])
    a, b, h = (g.reshape(-1, 1, 1) for g in np.meshgrid(edges, edges, np.linspace(*p["height_range"], p["num_heights"]), indexing="ij"))
    return np.full(a.shape[0], -np.log(a.shape[0])), h * ((x[None] > np.minimum(a, b)) & (x[None] <= np.maximum(a, b)))


SMALL = {
    "sines": {},
    "lines_and_sines": dict(num_slopes=3, num_offsets=4, num_phases=5, line_probability=0.3),
    "step_functions": dict(num_x_offsets=5, num_y_offsets=4, num_amplitudes=3),
    "step_updown": dict(num_edges=5, num_heights=3),
}


@pytest.mark.parametrize("name", REGRESSION)
def test_regression_predictive_is_the_sum_over_the_grid(name):
    prior = priors.get(name, **SMALL[name])
    episodes = prior.sample(jax.random.key(2), 4, 8)
    y_grid = np.linspace(-2.5, 3.5, 31)
    out = enumerate_predictive(prior, episodes, y_grid=y_grid)
    log_prior, f = every_function(name, prior, episodes.x[..., 0])
    lik = stats.norm.logpdf(episodes.y[None], f, 0.1)
    log_w = log_prior[:, None, None] + np.concatenate([np.zeros(lik.shape[:-1] + (1,)), np.cumsum(lik, -1)[..., :-1]], -1)
    evidence = special.logsumexp(log_w, axis=0)
    w = np.exp(log_w - evidence)
    mean = (w * f).sum(0)
    np.testing.assert_allclose(out["log_evidence"], evidence, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out["log_score"], special.logsumexp(log_w + lik, axis=0) - evidence, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out["mean"], mean, atol=1e-10)
    np.testing.assert_allclose(out["variance"], (w * (0.01 + f**2)).sum(0) - mean**2, atol=1e-10)
    density = (w[..., None] * stats.norm.pdf(y_grid, f[..., None], 0.1)).sum(0)
    np.testing.assert_allclose(np.exp(out["grid_log_density"]), density, rtol=1e-9, atol=1e-300)
    cdf = (w[..., None] * stats.norm.cdf(y_grid, f[..., None], 0.1)).sum(0)
    np.testing.assert_allclose(out["grid_cdf"], cdf, atol=1e-10)


def test_counting_predictive_counts_on_the_grid():
    """P(1 | k ones in n) = Σ_p p^(k+1) (1 − p)^(n−k) / Σ_p p^k (1 − p)^(n−k) over p in linspace(0, 1, 101)."""
    prior = priors.get("counting")
    y = np.array([[1, 1, 1, 1, 1, 1], [0, 1, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0]])
    pred = bayes_predictor(prior).predict(Episodes(y=y))
    ones = np.cumsum(y, axis=1) - y
    n = np.arange(y.shape[1])[None, :]
    p = np.linspace(0, 1, 101)[:, None, None]
    with np.errstate(divide="ignore"):
        log_w = special.xlogy(ones, p) + special.xlog1py(n - ones, -p)
    expected = np.exp(special.logsumexp(log_w, b=p, axis=0) - special.logsumexp(log_w, axis=0))
    np.testing.assert_allclose(np.exp(pred["log_prob"].sel(outcome="1").values), expected, atol=1e-12)
