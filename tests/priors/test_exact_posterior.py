"""The priors with a closed-form posterior: it agrees with their own closed-form predictive, exactly.

After n items the predictive of item n + 1 is the posterior mean of its law given θ: for the coin and the
urn, P(y = v) = E[p_v]; for linear regression, N(x·μ, xᵀΣx + σ²) with (μ, Σ) the posterior of w.
"""

import jax
import numpy as np

import priors
from toolkit.bayes import bayes_predictor
from toolkit.episodes import Episodes

LENGTH = 6


def after(prior, key=1):
    episodes = prior.sample(jax.random.key(key), 5, LENGTH + 1, jit=False)
    context = Episodes(y=episodes.y[:, :LENGTH], x=None if episodes.x is None else episodes.x[:, :LENGTH])
    return episodes, prior.exact_posterior(context), bayes_predictor(prior).predict(episodes).isel(position=LENGTH)


def test_coin_and_urn_posteriors_give_their_predictive():
    for prior in (priors.get("beta_bernoulli", a=2.0, b=0.5), priors.get("dirichlet_categorical", alpha=0.7)):
        _, law, predictive = after(prior)
        mean = np.asarray(law["p"].mean)
        if mean.ndim == 1:  # the coin's p = P(y = 1)
            mean = np.stack([1 - mean, mean], axis=-1)
        np.testing.assert_allclose(mean, np.exp(predictive["log_prob"].values), rtol=1e-10)


def test_linear_regression_posterior_gives_its_predictive():
    prior = priors.get("linear_regression", d=3, tau=0.7, sigma=0.2)
    episodes, law, predictive = after(prior)
    x = episodes.x[:, LENGTH]
    mean, cov = np.asarray(law["w"].mean), np.asarray(law["w"].covariance_matrix)
    np.testing.assert_allclose(np.einsum("ef,ef->e", x, mean), predictive["mean"].values, rtol=1e-9)
    np.testing.assert_allclose(np.einsum("ef,efg,eg->e", x, cov, x) + 0.2**2, predictive["variance"].values, rtol=1e-9)


def test_padding_is_left_out_of_the_posterior():
    prior = priors.get("beta_bernoulli")
    y = np.array([[1, 1, 0, 0], [1, 1, 1, 1]])
    law = prior.exact_posterior(Episodes(y=y, mask=np.array([[True, True, False, False], [True] * 4])))
    np.testing.assert_allclose(law["p"].concentration1, [3.0, 5.0])
    np.testing.assert_allclose(law["p"].concentration0, [1.0, 1.0])
