"""Regression baselines against plain numpy loops, one episode and one position at a time.

Also: ridge with the prior's τ and σ is the ``linear_regression`` closed form, and the issue's check of
minimum-norm least squares in the noiseless limit, E[(ŷ_t − y_t)²]/d = max(0, 1 − k/d) after k examples.
"""

import jax
import numpy as np
import pytest
import xarray as xr
from scipy import stats

import priors
from toolkit.baselines import AveragingPredictor, KNNPredictor, LeastSquaresPredictor, RidgePredictor
from toolkit.bayes import bayes_predictor
from toolkit.dims import QUANTILES
from toolkit.episodes import Episodes
from toolkit.errors import ConfigError, DataError

POINT_PREDICTORS = [LeastSquaresPredictor(), KNNPredictor(k=1), KNNPredictor(k=3), AveragingPredictor()]


def random_episodes(rng, num_episodes=6, length=11, d=4, noise=0.3):
    x = rng.standard_normal((num_episodes, length, d))
    w = rng.standard_normal((num_episodes, d))
    y = np.einsum("etd,ed->et", x, w) + noise * rng.standard_normal((num_episodes, length))
    return Episodes(y=y, x=x)


# ---------------------------------------------------------------------------- plain numpy references


def ridge_loop(x, y, tau, sigma):
    mean, var = np.zeros(len(y)), np.zeros(len(y))
    for t in range(len(y)):
        precision = np.eye(x.shape[1]) / tau**2 + x[:t].T @ x[:t] / sigma**2
        cov = np.linalg.inv(precision)
        w = cov @ x[:t].T @ y[:t] / sigma**2
        mean[t], var[t] = x[t] @ w, x[t] @ cov @ x[t] + sigma**2
    return mean, var


def least_squares_loop(x, y):
    out = np.zeros(len(y))
    for t in range(1, len(y)):
        w = np.linalg.lstsq(x[:t], y[:t], rcond=None)[0]  # the minimum-norm solution when underdetermined
        out[t] = x[t] @ w
    return out


def knn_loop(x, y, k):
    out = np.zeros(len(y))
    for t in range(1, len(y)):
        dists = [(float(np.sum((x[s] - x[t]) ** 2)), s) for s in range(t)]
        nearest = [s for _, s in sorted(dists)[:k]]  # ties: the earlier position
        out[t] = np.mean(y[nearest])
    return out


def averaging_loop(x, y):
    out = np.zeros(len(y))
    for t in range(1, len(y)):
        w = sum(y[s] * x[s] for s in range(t)) / t
        out[t] = w @ x[t]
    return out


# ---------------------------------------------------------------------------- ridge


@pytest.mark.parametrize("tau, sigma", [(1.0, 0.1), (0.5, 1.3)])
def test_ridge_matches_a_numpy_loop(rng, tau, sigma):
    episodes = random_episodes(rng)
    grid = np.linspace(-6, 6, 13)
    pred = RidgePredictor(tau=tau, sigma=sigma).predict(episodes, y_grid=grid)
    for e in range(episodes.num_episodes):
        mean, var = ridge_loop(episodes.x[e], episodes.y[e], tau, sigma)
        sd = np.sqrt(var)
        np.testing.assert_allclose(pred["mean"].values[e], mean, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(pred["variance"].values[e], var, rtol=1e-9)
        np.testing.assert_allclose(pred["log_score"].values[e], stats.norm.logpdf(episodes.y[e], mean, sd), rtol=1e-9)
        q = stats.norm.ppf(np.asarray(QUANTILES)[None], mean[:, None], sd[:, None])
        np.testing.assert_allclose(pred["quantile_value"].values[e], q, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(
            pred["grid_log_density"].values[e], stats.norm.logpdf(grid[None], mean[:, None], sd[:, None]), rtol=1e-9
        )
    assert RidgePredictor(tau=tau, sigma=sigma).lam == pytest.approx(sigma**2 / tau**2)


def test_ridge_with_the_priors_tau_and_sigma_is_the_linear_regression_closed_form():
    prior = priors.get("linear_regression", d=5, tau=1.0, sigma=0.1)
    episodes = prior.sample(jax.random.key(0), 16, 12)
    grid = np.linspace(-10, 10, 41)
    bayes = bayes_predictor(prior).predict(episodes, y_grid=grid)
    ridge = RidgePredictor(tau=1.0, sigma=0.1).predict(episodes, y_grid=grid)
    for var in ("mean", "variance", "log_score", "quantile_value", "grid_log_density"):
        xr.testing.assert_allclose(ridge[var], bayes[var], rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------- point baselines


@pytest.mark.parametrize("predictor", POINT_PREDICTORS, ids=lambda p: f"{p.name}{getattr(p, 'k', '')}")
def test_point_baselines_match_numpy_loops(rng, predictor):
    episodes = random_episodes(rng)
    pred = predictor.predict(episodes)
    for e in range(episodes.num_episodes):
        x, y = episodes.x[e], episodes.y[e]
        if isinstance(predictor, LeastSquaresPredictor):
            want = least_squares_loop(x, y)
        elif isinstance(predictor, KNNPredictor):
            want = knn_loop(x, y, predictor.k)
        else:
            want = averaging_loop(x, y)
        np.testing.assert_allclose(pred["mean"].values[e], want, rtol=1e-8, atol=1e-10)


def test_knn_breaks_ties_by_the_earlier_position_and_uses_fewer_neighbours_early():
    x = np.array([[[0.0], [1.0], [-1.0], [0.0], [3.0]]])
    y = np.array([[10.0, 20.0, 30.0, 40.0, 50.0]])
    mean = KNNPredictor(k=2).predict(Episodes(y=y, x=x))["mean"].values[0]
    # t=2: only y_1 exists; t=3: y_1 and y_2; t=4 (x = 0): x_1 (distance 0), then x_2 and x_3 tie at 1 and the
    # earlier, x_2, wins; t=5 (x = 3): x_2 (distance 2), then x_1 and x_4 tie at 3 and x_1 wins
    np.testing.assert_allclose(mean, [0.0, 10.0, 15.0, 15.0, 15.0])


@pytest.mark.parametrize("predictor", POINT_PREDICTORS, ids=lambda p: f"{p.name}{getattr(p, 'k', '')}")
def test_point_baselines_predict_zero_first_and_leave_the_distribution_nan(rng, predictor):
    episodes = random_episodes(rng, num_episodes=3, length=5)
    grid = np.linspace(-3, 3, 7)
    pred = predictor.predict(episodes, y_grid=grid)
    assert np.all(pred["mean"].values[:, 0] == 0.0)
    assert np.all(np.isfinite(pred["mean"].values))
    for var in ("log_score", "variance", "quantile_value", "grid_log_density"):
        assert np.all(np.isnan(pred[var].values)), var
    assert pred["quantile_value"].shape == (3, 5, len(QUANTILES))
    assert pred["grid_log_density"].shape == (3, 5, len(grid))
    assert "grid_log_density" not in predictor.predict(episodes)
    assert predictor.describe()


@pytest.mark.parametrize(
    "predictor", [RidgePredictor(tau=0.8, sigma=0.4), *POINT_PREDICTORS], ids=lambda p: f"{p.name}{getattr(p, 'k', '')}"
)
def test_padding_is_never_context(rng, predictor):
    """With positions masked out, every other position is predicted as if they were not there at all."""
    episodes = random_episodes(rng, num_episodes=4, length=9)
    mask = np.ones(episodes.y.shape, bool)
    mask[:, [1, 4, 5]] = False
    kept = np.flatnonzero(mask[0])
    masked = predictor.predict(Episodes(y=episodes.y, x=episodes.x, mask=mask))
    dropped = predictor.predict(Episodes(y=episodes.y[:, kept], x=episodes.x[:, kept]))
    for var in ("mean", "variance", "log_score"):
        np.testing.assert_allclose(masked[var].values[:, kept], dropped[var].values, rtol=1e-9, atol=1e-12)


def test_baselines_need_x_and_valid_parameters():
    tokens = Episodes(y=np.zeros((2, 3)))
    for predictor in (RidgePredictor(), *POINT_PREDICTORS):
        with pytest.raises(DataError, match="needs inputs x"):
            predictor.predict(tokens)
    for make in (lambda: KNNPredictor(k=0), lambda: KNNPredictor(k=1.5), lambda: RidgePredictor(sigma=0.0)):
        with pytest.raises(ConfigError):
            make()


# ---------------------------------------------------------------------------- the check


def test_min_norm_least_squares_error_in_the_noiseless_limit_is_one_minus_k_over_d():
    """x, w ~ N(0, I_d), y = w·x exactly: after k examples the min-norm interpolant is w projected onto
    their span, so E[(ŷ − y)²] = E|w_⊥|² = d − k for k < d and 0 from k = d on.

    Monte Carlo over 4000 episodes, d = 8; each position's mean within 4 standard errors (plus 1e-9 for the
    exact zeros after k = d).
    """
    d, num_episodes = 8, 4000
    rng = np.random.default_rng(11)
    x = rng.standard_normal((num_episodes, 2 * d + 1, d))
    w = rng.standard_normal((num_episodes, d))
    episodes = Episodes(y=np.einsum("etd,ed->et", x, w), x=x)
    err = (LeastSquaresPredictor().predict(episodes)["mean"].values - episodes.y) ** 2 / d  # (episode, position)
    k = np.arange(2 * d + 1)  # context size at position k + 1
    want = np.maximum(0.0, 1.0 - k / d)
    got, se = err.mean(0), err.std(0, ddof=1) / np.sqrt(num_episodes)
    assert np.all(np.abs(got - want) <= 4 * se + 1e-9), np.c_[k, got, want, se]
    assert np.all(got[d:] < 1e-12)
