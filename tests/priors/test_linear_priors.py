"""The linear-regression priors: closed forms and enumeration against independent numpy computations.

``linear_regression`` and ``gmm_linear_regression`` are checked against the joint Gaussian of
y_<=t (a multivariate normal over the episode's outcomes, conditioned with scipy), which shares no code
with their closed forms (a conjugate update over w with a running marginal likelihood);
``task_pool_regression``'s enumeration against a plain numpy dMMSE (posterior weights over the pool).
All to 1e-9 in float64.
"""

import jax
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

import priors
from toolkit.bayes import bayes_predictor, select_engine
from toolkit.dims import QUANTILES
from toolkit.episodes import Episodes
from toolkit.errors import ModelError
from priors.linear_regression import input_scales
from priors.task_pool_regression import task_pool

TOL = {"rtol": 1e-9, "atol": 1e-9}


def joint_gaussian_predictive(x, y, prior_mean, w_sd, sigma):
    """Per position: (log p(y_<t), mean, variance of y_t | y_<t, log p(y_<=t)) for one episode and one
    Gaussian prior w ~ N(prior_mean, w_sd² I), by conditioning the joint normal of y_1..y_T."""
    mu = x @ prior_mean  # (T,)
    cov = w_sd**2 * x @ x.T + sigma**2 * np.eye(len(y))  # (T, T)
    out = []
    for t in range(len(y)):
        c, s = slice(0, t), t
        if t:
            gain = np.linalg.solve(cov[c, c], cov[c, s])
            mean = mu[s] + gain @ (y[c] - mu[c])
            var = cov[s, s] - cov[s, c] @ gain
            before = stats.multivariate_normal(mu[c], cov[c, c]).logpdf(y[c])
        else:
            mean, var, before = mu[s], cov[s, s], 0.0
        upto = stats.multivariate_normal(mu[: t + 1], cov[: t + 1, : t + 1]).logpdf(y[: t + 1])
        out.append((before, mean, var, upto))
    return np.array(out).T  # (4, T)


def assert_grid_close(got, want, floor=-600.0):
    """Log densities on the grid to 1e-9 wherever the density exceeds e^floor.

    Below it an engine may sum densities in linear space and underflow to -inf (e^-745 is float64's
    smallest); such cells carry no weight in any metric.
    """
    keep = want > floor
    np.testing.assert_allclose(got[keep], want[keep], rtol=1e-9, atol=1e-9)
    assert np.all(got[~keep] <= floor + 1e-6)


# ---------------------------------------------------------------------------- linear_regression


LINEAR_CASES = [
    {},
    {"d": 3, "tau": 0.7, "sigma": 0.3, "x_scale": 0.5, "y_scale": 2.0},
    {"d": 4, "sigma": 1.0, "x_cov": "skewed", "x_subspace": 2},
]


@pytest.mark.parametrize("params", LINEAR_CASES)
def test_linear_closed_form_matches_the_joint_gaussian_to_1e_9(params):
    prior = priors.get("linear_regression", **params)
    assert select_engine(prior) == "closed_form"
    episodes = prior.sample(jax.random.key(3), 5, 9)
    grid = np.linspace(-8, 8, 33)
    pred = bayes_predictor(prior).predict(episodes, y_grid=grid)
    w_sd = prior.params["tau"] * prior.params["y_scale"]
    sigma = prior.params["sigma"]
    for e in range(episodes.num_episodes):
        _, mean, var, _ = joint_gaussian_predictive(episodes.x[e], episodes.y[e], np.zeros(prior.x_dim), w_sd, sigma)
        np.testing.assert_allclose(pred["mean"].values[e], mean, **TOL)
        np.testing.assert_allclose(pred["variance"].values[e], var, **TOL)
        np.testing.assert_allclose(pred["log_score"].values[e], stats.norm.logpdf(episodes.y[e], mean, np.sqrt(var)), **TOL)
        want_q = stats.norm.ppf(np.asarray(QUANTILES)[None], mean[:, None], np.sqrt(var)[:, None])
        np.testing.assert_allclose(pred["quantile_value"].values[e], want_q, **TOL)
        want_grid = stats.norm.logpdf(grid[None], mean[:, None], np.sqrt(var)[:, None])
        assert_grid_close(pred["grid_log_density"].values[e], want_grid)
    # position 1 is the prior predictive N(0, w_sd² |x_1|² + sigma²)
    np.testing.assert_allclose(
        pred["variance"].values[:, 0], w_sd**2 * (episodes.x[:, 0] ** 2).sum(-1) + sigma**2, rtol=1e-12
    )


def _mp_predictive(x, y, w_sd, sigma, positions, digits=50):
    """Predictive mean and variance at 1-based ``positions`` in ``digits``-digit arithmetic (mpmath)."""
    mpmath = pytest.importorskip("mpmath")
    with mpmath.workdps(digits):
        d = x.shape[1]
        xm, s2 = mpmath.matrix(x.tolist()), mpmath.mpf(sigma) ** 2
        precision, xty = mpmath.eye(d) / mpmath.mpf(w_sd) ** 2, mpmath.matrix(d, 1)
        out, seen = [], 0
        for t in positions:  # increasing: the context grows from the previous position's
            for s in range(seen, t - 1):
                row = xm[s, :]
                precision += row.T * row / s2
                xty += row.T * mpmath.mpf(y[s]) / s2
            seen = t - 1
            cov, xt = precision**-1, xm[t - 1, :]
            out.append((float((xt * cov * xty)[0]), float((xt * cov * xt.T)[0] + s2)))
    return np.array(out).T


@pytest.mark.parametrize(
    "d, length, episodes, positions",
    [(6, 12, 2, (1, 3, 6, 7, 12)), pytest.param(20, 100, 1, (1, 10, 20, 21, 22, 60, 100), marks=pytest.mark.slow)],
)
def test_linear_closed_form_is_accurate_for_small_noise(d, length, episodes, positions):
    """sigma = 1e-3: the posterior over w is nearly singular before d items and tight after; compared with
    50-digit arithmetic, the float64 closed form keeps at least 7 significant digits."""
    prior = priors.get("linear_regression", d=d, sigma=1e-3)
    sample = prior.sample(jax.random.key(4), episodes, length)
    d_out = prior.exact_predictive(sample)
    mean, var = np.asarray(d_out.mean), np.asarray(d_out.variance)
    assert np.all(np.isfinite(mean)) and np.all(var >= 1e-6)
    index = np.array(positions) - 1
    for e in range(episodes):
        want_mean, want_var = _mp_predictive(sample.x[e], sample.y[e], 1.0, 1e-3, positions)
        np.testing.assert_allclose(var[e, index], want_var, rtol=1e-7)
        # the mean's error is small against the predictive sd, the scale that matters for every score
        assert np.all(np.abs(mean[e, index] - want_mean) <= 1e-6 * np.sqrt(want_var))


SKEWED = 1.0 / np.arange(1, 7) ** 2
SHIFTED = [  # (params, sd of each x coordinate, sd of each weight, noise sd), d = 6
    ({}, np.ones(6), np.ones(6), 0.1),
    ({"x_scale": 3.0}, np.full(6, 3.0), np.ones(6), 0.1),
    ({"y_scale": 0.5}, np.ones(6), np.full(6, 0.5), 0.1),
    ({"x_cov": "skewed"}, np.sqrt(SKEWED * 6 / SKEWED.sum()), np.ones(6), 0.1),
    ({"x_subspace": 3}, np.r_[np.full(3, np.sqrt(2.0)), np.zeros(3)], np.ones(6), 0.1),  # trace d kept
    ({"sigma": 1.0}, np.ones(6), np.ones(6), 1.0),
]


@pytest.mark.parametrize("params, x_sd, w_sd, noise_sd", SHIFTED)
def test_linear_shifted_sources_sample_as_documented(params, x_sd, w_sd, noise_sd):
    """Garg et al.'s shifted sources: scaled x, scaled y (the weights), skewed covariance, subspace, noisy y.

    Sample standard deviations within 5 standard errors of the documented ones; off the subspace, exact zeros.
    """
    n, length = 2000, 4
    prior = priors.get("linear_regression", d=6, **params)
    np.testing.assert_allclose(prior.metadata["x_sd"], x_sd, rtol=1e-12)
    ep = prior.sample(jax.random.key(5), n, length)
    x, w = ep.x.reshape(-1, 6), ep.latents["w"]
    noise = (ep.y - np.einsum("etd,ed->et", ep.x, w)).reshape(-1, 1)
    for values, want in ((x, x_sd), (w, w_sd), (noise, np.full(1, noise_sd))):
        got = np.std(values, axis=0)
        assert np.all(np.abs(got - want) <= 5 * want / np.sqrt(2 * values.shape[0])), (got, want)
        assert np.all(values[:, want == 0] == 0.0)


@pytest.mark.parametrize("scale", [1 / 3, 0.5, 2.0, 3.0])
def test_linear_scaled_sources_scale_x_and_w(scale):
    """Garg et al.'s scale factors: x_scale multiplies every x sd, y_scale every weight's sd (not the noise)."""
    prior = priors.get("linear_regression", d=3, x_scale=scale, y_scale=scale, sigma=0.2)
    np.testing.assert_allclose(prior.metadata["x_sd"], np.full(3, scale), rtol=1e-12)
    assert prior.metadata["w_sd"] == pytest.approx(scale)
    tr = prior.trace(jax.random.key(0), 2)
    np.testing.assert_allclose(np.asarray(tr["x"]["fn"].variance), scale**2, rtol=1e-12)  # (position, feature)
    np.testing.assert_allclose(np.asarray(tr["w"]["fn"].variance), scale**2, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(tr["y"]["fn"].variance), 0.2**2, rtol=1e-12)


def test_linear_input_scales_and_parameters():
    np.testing.assert_array_equal(input_scales(4), np.ones(4))
    scales = input_scales(5, "skewed", 3)
    np.testing.assert_allclose((scales**2).sum(), 5.0, rtol=1e-14)
    np.testing.assert_allclose(scales[:3] ** 2 / scales[0] ** 2, [1, 1 / 4, 1 / 9], rtol=1e-14)
    assert np.all(scales[3:] == 0)
    prior = priors.get("linear_regression", d=4, x_subspace=2, x_scale=2.0)
    assert prior.params == {
        "d": 4, "tau": 1.0, "sigma": 0.1, "x_scale": 2.0, "y_scale": 1.0, "x_cov": "identity", "x_subspace": 2
    }
    episodes = prior.sample(jax.random.key(6), 3, 7)
    assert episodes.x.shape == (3, 7, 4) and episodes.y.shape == (3, 7) and episodes.latents["w"].shape == (3, 4)
    # x off the subspace has probability zero under that source
    tr = prior.trace(jax.random.key(0), 2, x=np.array([[1.0, 0.0, 0.5, 0.0], [1.0, 2.0, 0.0, 0.0]]))
    log_px = np.asarray(tr["x"]["fn"].log_prob(tr["x"]["value"]))
    assert log_px[0] == -np.inf and np.isfinite(log_px[1])
    for bad in ({"x_cov": "round"}, {"x_subspace": 7}, {"sigma": 0.0}, {"d": 0}):
        with pytest.raises(ModelError):
            priors.get("linear_regression", **{"d": 4, **bad})


@pytest.mark.parametrize("name", ["linear_regression", "gmm_linear_regression"])
def test_closed_forms_leave_padding_out_of_the_context(name):
    prior = priors.get(name, d=3)
    episodes = prior.sample(jax.random.key(7), 2, 8)
    mask = np.ones((2, 8), bool)
    mask[:, [2, 5]] = False
    masked = prior.exact_predictive(Episodes(y=episodes.y, x=episodes.x, mask=mask))
    kept = np.flatnonzero(mask[0])
    dropped = prior.exact_predictive(Episodes(y=episodes.y[:, kept], x=episodes.x[:, kept]))
    np.testing.assert_allclose(np.asarray(masked.mean)[:, kept], np.asarray(dropped.mean), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(np.asarray(masked.variance)[:, kept], np.asarray(dropped.variance), rtol=1e-12)


# ---------------------------------------------------------------------------- task_pool_regression


def dmmse(x, y, pool, sigma, grid):
    """Bayes over a uniform pool, in numpy: weights ∝ Π_{s<t} N(y_s; w_m·x_s, σ²), a mixture predictive."""
    means = x @ pool.T  # (T, M)
    lik = stats.norm.logpdf(y[:, None], means, sigma)  # (T, M)
    out = {"log_score": [], "mean": [], "variance": [], "grid_log_density": []}
    for t in range(len(y)):
        log_w = lik[:t].sum(0)
        log_w = log_w - logsumexp(log_w)  # kept in logs: far-out grid points live on weights that underflow
        w = np.exp(log_w)
        out["log_score"].append(logsumexp(log_w + lik[t]))
        m = w @ means[t]
        out["mean"].append(m)
        out["variance"].append(w @ (sigma**2 + means[t] ** 2) - m**2)
        out["grid_log_density"].append(logsumexp(log_w[None] + stats.norm.logpdf(grid[:, None], means[t], sigma), axis=1))
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize("params", [{}, {"d": 3, "pool_size": 5, "pool_seed": 3, "tau": 0.5, "sigma": 0.4}])
def test_task_pool_enumeration_matches_numpy_dmmse_to_1e_9(params):
    prior = priors.get("task_pool_regression", **params)
    assert select_engine(prior) == "enumeration"
    episodes = prior.sample(jax.random.key(8), 4, 10)
    grid = np.linspace(-6, 6, 25)
    pred = bayes_predictor(prior).predict(episodes, y_grid=grid)
    pool, sigma = prior.metadata["pool"], prior.params["sigma"]
    for e in range(episodes.num_episodes):
        want = dmmse(episodes.x[e], episodes.y[e], pool, sigma, grid)
        for var, value in want.items():
            if var == "grid_log_density":
                assert_grid_close(pred[var].values[e], value)
            else:
                np.testing.assert_allclose(pred[var].values[e], value, **TOL, err_msg=var)


def test_task_pool_is_fixed_by_its_seed_and_recorded():
    prior = priors.get("task_pool_regression", d=4, pool_size=16, pool_seed=2, tau=2.0)
    pool = prior.metadata["pool"]
    assert pool.shape == (16, 4)
    np.testing.assert_array_equal(pool, task_pool(4, 16, 2, 2.0))
    np.testing.assert_array_equal(pool, 2.0 * np.random.default_rng(2).standard_normal((16, 4)))
    assert not np.array_equal(pool, priors.get("task_pool_regression", d=4, pool_size=16, pool_seed=3).metadata["pool"])
    assert prior.params["pool_seed"] == 2 and prior.describe()["params"]["pool_size"] == 16
    episodes = prior.sample(jax.random.key(9), 50, 6)
    task = episodes.latents["task"]
    assert task.shape == (50,) and task.min() >= 0 and task.max() < 16
    resid = episodes.y - np.einsum("etd,ed->et", episodes.x, pool[task])
    assert np.abs(resid).max() < 0.1 * 6  # y is the chosen task's line plus sigma = 0.1 noise
    with pytest.raises(ModelError):
        priors.get("task_pool_regression", pool_size=0)


# ---------------------------------------------------------------------------- gmm_linear_regression


@pytest.mark.parametrize("params", [{}, {"d": 3, "mean_scale": 1.0, "tau": 0.8, "sigma": 0.5, "weights": (0.3, 0.7)}])
def test_gmm_closed_form_matches_the_joint_gaussian_mixture_to_1e_9(params):
    prior = priors.get("gmm_linear_regression", **params)
    assert select_engine(prior) == "closed_form"
    episodes = prior.sample(jax.random.key(10), 5, 8)
    grid = np.linspace(-12, 12, 49)
    pred = bayes_predictor(prior).predict(episodes, y_grid=grid)
    means, weights = prior.metadata["component_means"], prior.metadata["weights"]
    tau, sigma = prior.params["tau"], prior.params["sigma"]
    for e in range(episodes.num_episodes):
        parts = np.stack([joint_gaussian_predictive(episodes.x[e], episodes.y[e], m, tau, sigma) for m in means])
        before, comp_mean, comp_var, upto = parts.transpose(1, 0, 2)  # each (component, T)
        log_w = np.log(weights)[:, None] + before
        w = np.exp(log_w - logsumexp(log_w, axis=0))
        # log p(y_t | y_<t) as a ratio of the two mixture marginals
        log_score = logsumexp(np.log(weights)[:, None] + upto, axis=0) - logsumexp(log_w, axis=0)
        mean = (w * comp_mean).sum(0)
        np.testing.assert_allclose(pred["log_score"].values[e], log_score, **TOL)
        np.testing.assert_allclose(pred["mean"].values[e], mean, **TOL)
        np.testing.assert_allclose(pred["variance"].values[e], (w * (comp_var + comp_mean**2)).sum(0) - mean**2, **TOL)
        sd = np.sqrt(comp_var)[..., None]
        density = (w[..., None] * stats.norm.pdf(grid, comp_mean[..., None], sd)).sum(0)
        with np.errstate(divide="ignore"):  # far-out grid points: density 0 in float64
            assert_grid_close(pred["grid_log_density"].values[e], np.log(density))
        # quantiles: the mixture CDF, computed from the independent components, hits each level
        q = pred["quantile_value"].values[e]  # (T, quantile)
        cdf = (w[..., None] * stats.norm.cdf(q[None], comp_mean[..., None], sd)).sum(0)
        np.testing.assert_allclose(cdf, np.broadcast_to(QUANTILES, cdf.shape), atol=1e-10)


def test_gmm_samples_components_and_weights():
    prior = priors.get("gmm_linear_regression", d=4, weights=(0.25, 0.75))
    episodes = prior.sample(jax.random.key(11), 4000, 2)
    c, w = episodes.latents["component"], episodes.latents["w"]
    assert abs(c.mean() - 0.75) < 5 * np.sqrt(0.25 * 0.75 / 4000)
    np.testing.assert_allclose(w[c == 0, 0].mean(), 3.0, atol=5 / np.sqrt((c == 0).sum()))
    np.testing.assert_allclose(w[c == 1, 0].mean(), -3.0, atol=5 / np.sqrt((c == 1).sum()))
    np.testing.assert_allclose(w[:, 1:].std(), 1.0, atol=0.05)
    with pytest.raises(ModelError):
        priors.get("gmm_linear_regression", weights=(0.5, 0.6))
