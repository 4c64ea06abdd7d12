"""Simulation-based calibration: a right engine passes, a wrong one fails, for each kind of engine."""

import jax
import numpy as np
import pytest
from scipy import stats

import priors
from toolkit.enumeration import enumerate_posterior
from toolkit.episodes import Episodes
from toolkit.errors import ModelError
from toolkit.sbc import NEXT, simulation_based_calibration

KEY = jax.random.key(7)


def sbc(prior, engine, **kwargs):
    kwargs = {"num_simulations": 300, "length": 8, "num_draws": 49, "key": KEY, **kwargs}
    return simulation_based_calibration(prior, engine=engine, **kwargs)


def test_closed_form_passes_and_a_wrong_prior_scale_fails():
    right = sbc(priors.get("beta_bernoulli"), "closed_form")
    assert right.attrs["passed"] and set(right["sbc_quantity"].values) == {"p", NEXT}
    # a second opinion on the same ranks: scipy's Kolmogorov-Smirnov test does not reject either
    assert stats.kstest(right["sbc_rank"].sel(sbc_quantity="p").values, "uniform").pvalue > 0.01
    wrong = sbc(priors.get("beta_bernoulli"), "closed_form", engine_prior=priors.get("beta_bernoulli", a=5.0, b=5.0))
    assert not wrong.attrs["passed"]
    assert float(wrong["sbc_pvalue_adjusted"].sel(sbc_quantity="p")) < 0.01
    again = sbc(priors.get("beta_bernoulli"), "closed_form")  # the same key: the same simulations, draws and ranks
    np.testing.assert_array_equal(again["sbc_rank"].values, right["sbc_rank"].values)


def test_enumeration_passes_and_wrong_weights_fail():
    coins = (0.1, 0.4, 0.6, 0.9)
    right = sbc(priors.get("coin_mixture", thetas=coins), "enumeration")
    assert right.attrs["passed"]
    wrong = sbc(priors.get("coin_mixture", thetas=coins), "enumeration",
                engine_prior=priors.get("coin_mixture", thetas=coins, weights=(0.55, 0.25, 0.15, 0.05)))
    assert not wrong.attrs["passed"]


def test_enumerated_posterior_is_bayes_rule_over_the_grid():
    coins = np.array([0.1, 0.4, 0.6, 0.9])
    prior = priors.get("coin_mixture", thetas=tuple(coins), weights=(0.1, 0.2, 0.3, 0.4))
    episodes = prior.sample(jax.random.key(3), 6, 9, jit=False)
    episodes = Episodes(y=episodes.y, mask=np.arange(9) < np.array([9, 9, 9, 4, 1, 0])[:, None])
    grid, log_w = enumerate_posterior(prior, episodes)
    rainbows = ((episodes.y == 0) & episodes.mask).sum(1)[:, None]  # outcome 0 has probability theta
    others = (episodes.mask.sum(1))[:, None] - rainbows
    want = np.array([0.1, 0.2, 0.3, 0.4]) * coins**rainbows * (1 - coins) ** others
    np.testing.assert_allclose(np.exp(log_w), want / want.sum(1, keepdims=True), rtol=1e-10)
    np.testing.assert_array_equal(grid.values(np.arange(4))["z"], np.arange(4))


def test_mcmc_draws_are_ranked_after_thinning():
    out = sbc(priors.get("beta_bernoulli"), "mcmc", num_simulations=80, num_draws=20, num_warmup=150, num_samples=60)
    assert out.attrs["num_draws"] == 20 and out.attrs["engine"] == "mcmc"  # 4 chains x 5, evenly spaced
    assert np.isfinite(out["sbc_rank"]).all() and out.attrs["max_r_hat"] < 1.1 and out.attrs["passed"]


def test_an_engine_without_its_posterior_names_the_fix():
    with pytest.raises(ModelError, match="exact_posterior"):
        sbc(priors.get("gmm_linear_regression", d=2), "closed_form", num_simulations=10)
