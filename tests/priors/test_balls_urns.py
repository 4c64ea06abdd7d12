"""The balls-and-urns prior: its pool, its two Bayes predictors against numpy, and against each other as M grows.

Memorising = the prior's own Bayes (enumeration over the M urns); generalising = the ``dirichlet`` predictor
(the Dirichlet–categorical closed form under the Dirichlet the urns were drawn from).
"""

import hashlib

import jax
import numpy as np
import pytest
from scipy.special import logsumexp

import priors
from comparisons.predictors import build_predictor
from priors.balls_urns import urn_pool
from toolkit.baselines import FrequencyPredictor
from toolkit.bayes import bayes_predictor
from toolkit.errors import ConfigError, ModelError

V, ALPHA, LENGTH = 4, 0.8, 12


def numpy_memorising(y: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """log P(y_t = v | y_<t) under a uniform prior over the urns of ``pool`` (M, V): (episode, position, outcome)."""
    log_pool = np.log(pool)  # (M, V)
    per_item = log_pool[:, y]  # (M, E, T): log p_m(y_t)
    before = np.cumsum(per_item, axis=-1) - per_item  # log Π_{s<t} p_m(y_s)
    log_w = before - logsumexp(before, axis=0)  # posterior over the urns, (M, E, T)
    return logsumexp(log_w[..., None] + log_pool[:, None, None, :], axis=0)


def numpy_generalising(y: np.ndarray, alpha: float, num_outcomes: int) -> np.ndarray:
    """log (α + n_v) / (Vα + t − 1), n_v the count of v in y_<t: (episode, position, outcome)."""
    onehot = y[..., None] == np.arange(num_outcomes)
    before = np.cumsum(onehot, axis=1) - onehot
    return np.log(alpha + before) - np.log(num_outcomes * alpha + np.arange(y.shape[1]))[None, :, None]


@pytest.fixture(scope="module")
def small():
    """A pool of 16 urns, its enumeration Bayes, 40 episodes from it and 40 from fresh urns (one shape: one compile)."""
    prior = priors.get("balls_urns", num_outcomes=V, pool_size=16, pool_seed=1, alpha=ALPHA)
    fresh = priors.get("dirichlet_categorical", num_outcomes=V, alpha=ALPHA)
    return (prior, bayes_predictor(prior), prior.sample(jax.random.key(2), 40, LENGTH, jit=False),
            fresh.sample(jax.random.key(4), 40, LENGTH, jit=False))


def test_the_pool_is_fixed_by_its_seed_and_named_in_the_provenance(small):
    prior, _, episodes, _ = small
    pool = urn_pool(V, 16, 1, ALPHA)
    assert pool.shape == (16, V)
    np.testing.assert_allclose(pool.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(pool, np.random.default_rng(1).dirichlet(np.full(V, ALPHA), size=16))
    assert prior.describe()["pool_sha256"] == hashlib.sha256(pool.tobytes()).hexdigest()
    assert not np.array_equal(pool, urn_pool(V, 16, 2, ALPHA))
    assert set(np.unique(episodes.latents["urn"])) <= set(range(16))


def test_memorising_bayes_is_enumeration_over_the_pool_as_numpy_computes_it(small):
    _, bayes, episodes, fresh = small
    assert bayes.engine == "enumeration"
    for data in (episodes, fresh):
        got = bayes.predict(data)["log_prob"].values
        np.testing.assert_allclose(got, numpy_memorising(data.y, urn_pool(V, 16, 1, ALPHA)), rtol=0, atol=1e-9)


def test_generalising_bayes_is_the_dirichlet_closed_form_as_numpy_computes_it(small):
    prior, _, episodes, _ = small
    dirichlet = build_predictor("dirichlet", prior, {}, progress=False)
    assert dirichlet.name == "dirichlet" and dirichlet.engine == "closed_form"
    got = dirichlet.predict(episodes)["log_prob"].values
    np.testing.assert_allclose(got, numpy_generalising(episodes.y, ALPHA, V), rtol=0, atol=1e-12)
    same = FrequencyPredictor(prior.outcomes, alpha=ALPHA).predict(episodes)["log_prob"].values  # Laplace at α
    np.testing.assert_allclose(got, same, rtol=0, atol=1e-12)
    other = build_predictor("dirichlet", prior, {"dirichlet": {"alpha": 2.0}}, progress=False)
    np.testing.assert_allclose(other.predict(episodes)["log_prob"].values, numpy_generalising(episodes.y, 2.0, V),
                               rtol=0, atol=1e-12)


def test_the_two_bayes_predictors_meet_as_the_pool_grows(small):
    """On fresh urns, Bayes over M urns drawn from Dirichlet(α) tends to Bayes under Dirichlet(α) itself."""
    prior, bayes, _, fresh = small
    generalising = np.exp(build_predictor("dirichlet", prior, {}, progress=False).predict(fresh)["log_prob"].values)
    large = bayes_predictor(priors.get("balls_urns", num_outcomes=V, pool_size=2**15, pool_seed=1, alpha=ALPHA))
    gaps = [np.abs(np.exp(b.predict(fresh)["log_prob"].values) - generalising) for b in (bayes, large)]
    assert gaps[0].max() > 0.1 and gaps[0].mean() > 0.02, gaps[0].mean()  # 16 urns: far apart
    assert gaps[1].max() < 0.03 and gaps[1].mean() < 0.003, gaps[1].mean()  # 2^15 urns: Monte-Carlo error only


@pytest.mark.parametrize("params, match", [
    ({"pool_size": 0}, "integer pool_size >= 1"),
    ({"num_outcomes": 1}, "integer num_outcomes >= 2"),
    ({"pool_seed": -1}, "integer pool_seed >= 0"),
    ({"alpha": 0.0}, "alpha > 0"),
    ({"alpha": [1.0, 2.0]}, "one per colour"),
    ({"alpha": 1e-3}, "use alpha >= 0.05"),
])
def test_bad_parameters_are_one_line_naming_the_fix(params, match):
    with pytest.raises(ModelError, match=match):
        priors.get("balls_urns", **params)


def test_the_dirichlet_predictor_needs_an_alpha_and_no_other_option():
    coins = priors.get("coin_mixture")
    with pytest.raises(ConfigError, match="evaluation.predictor_options.dirichlet: the prior has no parameter alpha"):
        build_predictor("dirichlet", coins, {}, progress=False)
    assert build_predictor("dirichlet", coins, {"dirichlet": {"alpha": 1.0}}, progress=False).engine == "closed_form"
    prior = priors.get("balls_urns")
    with pytest.raises(ConfigError, match="unknown option.* beta; the dirichlet predictor takes alpha"):
        build_predictor("dirichlet", prior, {"dirichlet": {"beta": 1.0}}, progress=False)
    with pytest.raises(ConfigError, match="dirichlet: alpha: "):
        build_predictor("dirichlet", prior, {"dirichlet": {"alpha": -1.0}}, progress=False)
