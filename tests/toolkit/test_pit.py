"""``pit``, the predictive CDF at the realised y_t, of the closed-form regression predictors (MCMC's: test_mcmc.py)."""

import jax
import numpy as np
import pytest
from scipy import stats

import priors
from toolkit.baselines import RidgePredictor
from toolkit.bayes import bayes_predictor
from toolkit.oracles import OraclePredictor


@pytest.fixture(scope="module")
def setup():
    prior = priors.get("linear_regression", d=2, sigma=0.3)
    return prior, prior.sample(jax.random.key(0), 6, 5)


def test_closed_form_and_ridge_pit_is_the_normal_cdf(setup):
    prior, episodes = setup
    bayes = bayes_predictor(prior).predict(episodes)
    want = stats.norm.cdf(episodes.y, bayes["mean"], np.sqrt(bayes["variance"]))
    np.testing.assert_allclose(bayes["pit"], want, rtol=1e-10)
    ridge = RidgePredictor(tau=1.0, sigma=0.3).predict(episodes)
    np.testing.assert_allclose(ridge["pit"], want, rtol=1e-9)


def test_oracle_pit_uses_the_true_weights(setup):
    prior, episodes = setup
    oracle = OraclePredictor(prior).predict(episodes)
    mean = np.einsum("etf,ef->et", episodes.x, episodes.latents["w"])
    np.testing.assert_allclose(oracle["pit"], stats.norm.cdf(episodes.y, mean, 0.3), rtol=1e-10)
