"""Baselines, oracles and the best fixed mixture against plain numpy / scipy; causality of every predictor."""

import jax
import numpy as np
import pytest
import torch
from scipy import optimize, special

import learners
import priors
from toolkit import Episodes
from toolkit.baselines import FrequencyPredictor
from toolkit.bayes import bayes_predictor
from toolkit.errors import ModelError
from toolkit.oracles import BestMixturePredictor, OraclePredictor, component_log_prob, fit_mixture_weights
from toolkit.scenario import Scenario, scenario_grid

COINS = (1 / 3, 2 / 3)


@pytest.fixture(scope="module")
def coin_prior():
    return priors.get("coin_mixture", thetas=COINS)


@pytest.fixture(scope="module")
def q_half():
    (scenario,) = scenario_grid("q", "coin_mixture", params={"weights": [1.0]}, grid={"thetas": [[0.5]]})
    return scenario


def laplace_rule(y, num_outcomes, alpha, mask=None):
    """(count of v among the observed y_<t + α) / (number observed before t + α V), by explicit loops."""
    num_episodes, length = y.shape
    mask = np.ones(y.shape, bool) if mask is None else mask
    out = np.empty((num_episodes, length, num_outcomes))
    for e in range(num_episodes):
        for t in range(length):
            seen = y[e, :t][mask[e, :t]]
            for v in range(num_outcomes):
                out[e, t, v] = (np.sum(seen == v) + alpha) / (len(seen) + alpha * num_outcomes)
    return out


# --------------------------------------------------------------------------- frequency


@pytest.mark.parametrize("alpha", [1.0, 0.5])
@pytest.mark.parametrize("num_outcomes", [2, 3])
def test_frequency_is_the_laplace_rule(rng, alpha, num_outcomes):
    outcomes = tuple("abc"[:num_outcomes])
    y = rng.integers(0, num_outcomes, size=(4, 9))
    pred = FrequencyPredictor(outcomes, alpha=alpha).predict(Episodes(y=y))
    np.testing.assert_allclose(np.exp(pred["log_prob"].values), laplace_rule(y, num_outcomes, alpha), rtol=1e-12)
    assert list(pred["outcome"].values) == list(outcomes)


def test_frequency_ignores_padding(rng):
    y = rng.integers(0, 2, size=(3, 8))
    mask = np.arange(8)[None, :] < np.array([[3], [8], [0]])
    pred = FrequencyPredictor(("a", "b")).predict(Episodes(y=y, mask=mask))
    np.testing.assert_allclose(np.exp(pred["log_prob"].values), laplace_rule(y, 2, 1.0, mask), rtol=1e-12)
    assert np.isnan(pred["log_score"].values[~mask]).all()


def test_frequency_rejects_a_non_positive_alpha():
    with pytest.raises(ValueError, match="alpha"):
        FrequencyPredictor(("a", "b"), alpha=0.0)


# --------------------------------------------------------------------------- oracle


def test_oracle_predicts_the_true_coin_of_each_episode(coin_prior):
    thetas = (0.2, 0.7, 0.95)
    q = priors.get("coin_mixture", thetas=thetas, weights=(0.4, 0.3, 0.3))
    scenario = Scenario.misspecified(q, "three coins")
    episodes = scenario.episodes(jax.random.key(2), 12, 5)
    oracle = OraclePredictor().bind(coin_prior, scenario, episodes)
    pred = oracle.predict(episodes)
    expected = np.asarray(thetas)[episodes.latents["z"]][:, None]  # P(🌈) of each episode's coin
    np.testing.assert_allclose(np.exp(pred["log_prob"].sel(outcome="🌈").values), np.broadcast_to(expected, (12, 5)))
    np.testing.assert_allclose(np.exp(pred["log_prob"].sel(outcome="🦄").values), 1 - np.broadcast_to(expected, (12, 5)))


def test_oracle_has_no_answer_for_prompts_and_needs_binding(coin_prior):
    scenario = Scenario.from_prompts("prompts", ["🌈🦄"], coin_prior.outcomes)
    episodes = scenario.episodes(None, 1, 1)
    assert OraclePredictor().bind(coin_prior, scenario, episodes) is None
    with pytest.raises(ModelError, match="bind"):
        OraclePredictor().predict(episodes)


# --------------------------------------------------------------------------- best mixture


def mixture_cross_entropy(rho, probs, target):
    weight = target / target.sum()
    return -np.sum(weight * np.log(np.einsum("k,ktv->tv", rho, probs)))


def test_fit_mixture_weights_splits_two_symmetric_coins_evenly_for_a_fair_coin(coin_prior):
    components = component_log_prob(coin_prior, 4)  # (component, position, outcome)
    assert components.shape == (2, 4, 2)
    np.testing.assert_allclose(np.exp(components[:, 0, 0]), COINS, rtol=1e-12)
    rho = fit_mixture_weights(components, np.full((4, 2), 0.5))
    np.testing.assert_allclose(rho, [0.5, 0.5], atol=1e-9)


def test_fit_mixture_weights_recovers_a_mixture_inside_the_hull(rng):
    probs = rng.dirichlet(np.ones(4), size=(3, 2))  # (component, position, outcome)
    rho_true = np.array([0.2, 0.5, 0.3])
    rho = fit_mixture_weights(np.log(probs), np.einsum("k,ktv->tv", rho_true, probs))
    np.testing.assert_allclose(rho, rho_true, atol=1e-6)


def test_fit_mixture_weights_agrees_with_scipy_on_the_simplex(rng):
    probs = rng.dirichlet(np.ones(4), size=(3, 2))
    target = rng.random((2, 4)) + 0.1
    rho = fit_mixture_weights(np.log(probs), target)
    res = optimize.minimize(
        lambda phi: mixture_cross_entropy(special.softmax(phi), probs, target),
        np.zeros(3), method="BFGS", options={"gtol": 1e-11, "maxiter": 10_000},
    )
    rho_scipy = special.softmax(res.x)
    assert rho.sum() == pytest.approx(1.0, abs=1e-12) and np.all(rho >= 0)
    assert mixture_cross_entropy(rho, probs, target) <= res.fun + 1e-10
    np.testing.assert_allclose(rho, rho_scipy, atol=1e-4)


def test_best_mixture_on_a_fair_coin_predicts_one_half(coin_prior, q_half):
    episodes = q_half.episodes(jax.random.key(3), 6, 7)
    bound = BestMixturePredictor().bind(coin_prior, q_half, episodes)
    np.testing.assert_allclose(bound.weights, [0.5, 0.5], atol=1e-9)
    pred = bound.predict(episodes)
    np.testing.assert_allclose(np.exp(pred["log_prob"].values), 0.5, atol=1e-9)
    assert bound.describe()["weights"] == pytest.approx([0.5, 0.5], abs=1e-9)


def test_best_mixture_fits_prompt_frequencies_and_skips_continuous_priors(coin_prior):
    prompts = Scenario.from_prompts("prompts", ["🌈🌈🌈🦄", "🌈"], coin_prior.outcomes)
    episodes = prompts.episodes(None, 1, 1)
    bound = BestMixturePredictor().bind(coin_prior, prompts, episodes)
    # 4 🌈 of 5 lies outside the coins' hull [1/3, 2/3]: all weight on the 2/3 coin
    np.testing.assert_allclose(bound.weights, [0.0, 1.0], atol=1e-9)
    beta = priors.get("beta_bernoulli")
    assert BestMixturePredictor().bind(beta, Scenario.in_distribution(beta), episodes) is None
    with pytest.raises(ModelError, match="bind"):
        BestMixturePredictor().predict(episodes)


# --------------------------------------------------------------------------- causality


def random_learner(num_outcomes, length):
    config = learners.TransformerConfig(vocab_size=num_outcomes, block_size=length, n_layer=1, n_head=2, n_embd=16)
    model = learners.CausalTransformer(config, generator=torch.Generator().manual_seed(0))
    return learners.LearnerPredictor(model, {"outcomes": ["🌈", "🦄"]})


def bound(predictor, prior, scenario, episodes):
    return predictor.bind(prior, scenario, episodes) if hasattr(predictor, "bind") else predictor


CAUSAL_CASES = {
    # name: (prior name, predictor factory, does position t + 1 react to y_t?)
    "bayes enumeration": ("coin_mixture", lambda prior, length: bayes_predictor(prior), True),
    "bayes closed form": ("beta_bernoulli", lambda prior, length: bayes_predictor(prior), True),
    "frequency": ("coin_mixture", lambda prior, length: FrequencyPredictor(prior.outcomes), True),
    "oracle": ("coin_mixture", lambda prior, length: OraclePredictor(), False),
    "best_mixture": ("coin_mixture", lambda prior, length: BestMixturePredictor(), False),
    "learner": ("coin_mixture", lambda prior, length: random_learner(prior.num_outcomes, length), True),
}


@pytest.fixture(scope="module")
def causal_data(coin_prior, q_half):
    """(prior, scenario, episodes) per prior name, sampled once for every predictor."""
    beta = priors.get("beta_bernoulli")
    beta_scenario = Scenario.in_distribution(beta)
    return {
        "coin_mixture": (coin_prior, q_half, q_half.episodes(jax.random.key(4), 3, 6)),
        "beta_bernoulli": (beta, beta_scenario, beta_scenario.episodes(jax.random.key(4), 3, 6)),
    }


@pytest.mark.parametrize("prior_name, make, reacts", CAUSAL_CASES.values(), ids=CAUSAL_CASES.keys())
def test_changing_y_t_never_changes_predictions_up_to_t(causal_data, prior_name, make, reacts):
    prior, scenario, base = causal_data[prior_name]
    num_episodes, length = base.y.shape
    predictor = bound(make(prior, length), prior, scenario, base)
    # one batch: the base episodes, then copies with y_t flipped for t = 1..length (one predict call)
    ys = [base.y]
    for t in range(1, length + 1):
        y = base.y.copy()
        y[:, t - 1] = 1 - y[:, t - 1]
        ys.append(y)
    batch = Episodes(y=np.concatenate(ys), latents={k: np.tile(v, length + 1) for k, v in base.latents.items()})
    log_prob = predictor.predict(batch)["log_prob"].values.reshape(length + 1, num_episodes, length, -1)
    before = log_prob[0]
    for t in range(1, length + 1):
        after = log_prob[t]
        np.testing.assert_array_equal(after[:, :t], before[:, :t], err_msg=f"y_{t} leaked into positions <= {t}")
        if reacts and t < length:
            assert not np.allclose(after[:, t], before[:, t], rtol=0, atol=1e-12), f"position {t + 1} ignores y_{t}"
