"""Exact Bayes (enumeration and closed form) against formulas written here in plain numpy / scipy.

Coins: P(🌈 | k 🌈 in n) = Σᵢ wᵢ θᵢ with wᵢ ∝ πᵢ θᵢᵏ (1 − θᵢ)ⁿ⁻ᵏ, θᵢ = P(🌈) of coin i;
outcome 0 is 🌈. Beta–Bernoulli: P(1 | k ones in n) = (a + k) / (a + b + n), and
the same number by numerical integration of the posterior. Drifting coins, whose
P(🌈) changes with the position: the posterior mixture by explicit loops over positions.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy import integrate, special, stats

import priors
from toolkit import Episodes, Prior
from toolkit.bayes import bayes_predictor
from toolkit.enumeration import _context_counts, enumerate_predictive, latent_grid
from toolkit.errors import ModelError

COIN_CASES = {
    "two coins, the default": ((1 / 3, 2 / 3), None),
    "two coins, unequal weights": ((0.2, 0.9), (0.8, 0.2)),
    "three coins, unequal weights": ((0.1, 0.5, 0.85), (0.5, 0.3, 0.2)),
    "one coin": ((0.3,), (1.0,)),
}
BETA_CASES = [(1.0, 1.0), (0.5, 2.0), (3.0, 1.5)]


def coin_episodes(rng, num_episodes=6, length=12):
    return Episodes(y=rng.integers(0, 2, size=(num_episodes, length)))


def rainbows_before(y):
    """(k, n): 🌈 (outcome 0) count and item count before each position, shape (episode, position)."""
    rainbow = (np.asarray(y) == 0).astype(float)
    k = np.cumsum(rainbow, axis=1) - rainbow
    n = np.broadcast_to(np.arange(y.shape[1]), y.shape)
    return k, n


def coin_closed_form(thetas, weights, k, n):
    """P(🌈 | k of n) = Σᵢ wᵢ θᵢ, wᵢ ∝ πᵢ θᵢᵏ (1 − θᵢ)ⁿ⁻ᵏ, elementwise over k and n."""
    thetas = np.asarray(thetas, float)
    weights = np.full(len(thetas), 1 / len(thetas)) if weights is None else np.asarray(weights, float)
    log_w = np.log(weights) + k[..., None] * np.log(thetas) + (n - k)[..., None] * np.log1p(-thetas)
    w = np.exp(log_w - log_w.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    return (w * thetas).sum(-1)


def coin_prefix_probability(thetas, weights, y):
    """p(y_<=t) = Σᵢ πᵢ θᵢᵏ (1 − θᵢ)ⁿ⁻ᵏ with k, n counted up to and including t."""
    thetas = np.asarray(thetas, float)
    weights = np.full(len(thetas), 1 / len(thetas)) if weights is None else np.asarray(weights, float)
    k = np.cumsum(np.asarray(y) == 0, axis=1)[..., None]
    n = np.arange(1, y.shape[1] + 1)[None, :, None]
    return (weights * thetas**k * (1 - thetas) ** (n - k)).sum(-1)


@pytest.mark.parametrize("thetas, weights", COIN_CASES.values(), ids=COIN_CASES.keys())
def test_coin_mixture_enumeration_matches_the_closed_form(rng, thetas, weights):
    prior = priors.get("coin_mixture", thetas=thetas, weights=weights)
    episodes = coin_episodes(rng)
    pred = bayes_predictor(prior, engine="enumeration").predict(episodes)
    k, n = rainbows_before(episodes.y)
    expected = coin_closed_form(thetas, weights, k, n)
    np.testing.assert_allclose(np.exp(pred["log_prob"].sel(outcome="🌈").values), expected, rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.exp(pred["log_prob"].sel(outcome="🦄").values), 1 - expected, rtol=0, atol=1e-9)
    assert pred["bayes_defined"].values.all()


@pytest.mark.parametrize("thetas, weights", COIN_CASES.values(), ids=COIN_CASES.keys())
def test_prior_log_prob_is_the_log_marginal_probability_of_the_prefix(rng, thetas, weights):
    prior = priors.get("coin_mixture", thetas=thetas, weights=weights)
    episodes = coin_episodes(rng)
    pred = bayes_predictor(prior).predict(episodes)
    expected = np.log(coin_prefix_probability(thetas, weights, episodes.y))
    np.testing.assert_allclose(pred["prior_log_prob"].values, expected, rtol=1e-10, atol=1e-10)


def test_log_evidence_is_the_log_probability_of_the_context_before_t(rng):
    thetas, weights = COIN_CASES["three coins, unequal weights"]
    prior = priors.get("coin_mixture", thetas=thetas, weights=weights)
    episodes = coin_episodes(rng)
    out = enumerate_predictive(prior, episodes)
    before = np.log(coin_prefix_probability(thetas, weights, episodes.y))[:, :-1]
    np.testing.assert_allclose(out["log_evidence"][:, 0], 0.0, atol=1e-12)  # the empty context
    np.testing.assert_allclose(out["log_evidence"][:, 1:], before, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("chunk_elements", [1, 50])
def test_chunking_over_latents_gives_the_one_chunk_answer(rng, chunk_elements):
    thetas, weights = COIN_CASES["three coins, unequal weights"]
    prior = priors.get("coin_mixture", thetas=thetas, weights=weights)
    episodes = coin_episodes(rng, num_episodes=3, length=5)
    whole = enumerate_predictive(prior, episodes, chunk_elements=2**30)
    chunked = enumerate_predictive(prior, episodes, chunk_elements=chunk_elements)
    np.testing.assert_allclose(chunked["log_prob"], whole["log_prob"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(chunked["log_evidence"], whole["log_evidence"], rtol=0, atol=1e-12)


@pytest.mark.parametrize("a, b", BETA_CASES)
def test_beta_bernoulli_closed_form_matches_the_conjugate_formula(rng, a, b):
    prior = priors.get("beta_bernoulli", a=a, b=b)
    episodes = Episodes(y=rng.integers(0, 2, size=(5, 10)))
    pred = bayes_predictor(prior).predict(episodes)
    assert pred.attrs == {} and bayes_predictor(prior).engine == "closed_form"
    ones = np.cumsum(episodes.y, axis=1) - episodes.y
    n = np.arange(episodes.length)[None, :]
    np.testing.assert_allclose(np.exp(pred["log_prob"].sel(outcome="1").values), (a + ones) / (a + b + n), atol=1e-12)
    # p(y_<=t) of a Beta-Bernoulli sequence: B(a + k, b + n - k) / B(a, b), k ones in n = t items
    k_incl, n_incl = np.cumsum(episodes.y, axis=1), n + 1
    expected = special.betaln(a + k_incl, b + n_incl - k_incl) - special.betaln(a, b)
    np.testing.assert_allclose(pred["prior_log_prob"].values, expected, rtol=1e-10)


@pytest.mark.parametrize("a, b", BETA_CASES)
@pytest.mark.parametrize("ones, n", [(0, 0), (0, 3), (2, 3), (7, 9)])
def test_beta_bernoulli_closed_form_matches_numerical_integration(a, b, ones, n):
    """P(y = 1 | data) = ∫ p π(p | data) dp, the posterior integrated by scipy.integrate.quad."""
    prior = priors.get("beta_bernoulli", a=a, b=b)
    y = np.array([[1] * ones + [0] * (n - ones) + [0]])  # the last item is the predicted position
    pred = bayes_predictor(prior).predict(Episodes(y=y))

    def unnormalised(p):
        return p**ones * (1 - p) ** (n - ones) * stats.beta.pdf(p, a, b)

    evidence, _ = integrate.quad(unnormalised, 0, 1, epsabs=1e-13, epsrel=1e-12, limit=200)
    first_moment, _ = integrate.quad(lambda p: p * unnormalised(p), 0, 1, epsabs=1e-13, epsrel=1e-12, limit=200)
    predicted = np.exp(pred["log_prob"].sel(outcome="1").values[0, n])
    np.testing.assert_allclose(predicted, first_moment / evidence, rtol=1e-7)


def test_zero_probability_context_is_undefined_not_guessed():
    """Coins that always (θ = 1) or never (θ = 0) show 🌈: seeing both has probability 0."""
    prior = priors.get("coin_mixture", thetas=(0.0, 1.0))
    episodes = Episodes(y=np.array([[0, 1, 0, 0], [0, 0, 0, 0]]))
    pred = bayes_predictor(prior).predict(episodes)
    defined = pred["bayes_defined"].values
    np.testing.assert_array_equal(defined, [[True, True, False, False], [True, True, True, True]])
    # position 1: either coin; position 2: after one 🌈 only the θ = 1 coin is left
    np.testing.assert_allclose(np.exp(pred["log_prob"].values[0, :2, 0]), [0.5, 1.0], atol=1e-12)
    assert pred["log_score"].values[0, 1] == -np.inf  # the 🦄 it said could not happen
    assert np.isnan(pred["log_prob"].values[0, 2:]).all()
    assert np.isnan(pred["log_score"].values[0, 2:]).all()
    assert np.all(pred["prior_log_prob"].values[0, 1:] == -np.inf)
    np.testing.assert_allclose(pred["prior_log_prob"].values[1], np.log(0.5), atol=1e-12)
    out = enumerate_predictive(prior, episodes)
    assert np.isnan(out["log_prob"][0, 2:]).all() and not np.isnan(out["log_prob"][1]).any()
    np.testing.assert_array_equal(out["log_evidence"][0, 2:], -np.inf)


def test_latent_grid_enumerates_the_coins():
    grid = latent_grid(priors.get("coin_mixture", thetas=(0.1, 0.5, 0.9)))
    assert grid.names == ("z",) and grid.size == 3
    np.testing.assert_array_equal(grid.values(np.arange(3))["z"], [0, 1, 2])


def test_latent_grid_refuses_a_continuous_latent():
    with pytest.raises(ModelError, match="'p'.*no finite support"):
        latent_grid(priors.get("beta_bernoulli"))
    with pytest.raises(ModelError, match="no finite support"):
        bayes_predictor(priors.get("beta_bernoulli"), engine="enumeration")


def test_latent_grid_refuses_a_support_above_max_support():
    with pytest.raises(ModelError, match="max_support=2"):
        latent_grid(priors.get("coin_mixture", thetas=(0.1, 0.5, 0.9)), max_support=2)


def test_padding_contributes_nothing():
    """Masked positions neither move the posterior nor the prefix probability, whatever they hold."""
    prior = priors.get("coin_mixture", thetas=(0.2, 0.7), weights=(0.6, 0.4))
    y = np.array([[0, 0, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1]])
    mask = np.array([[True, True, True, False, False, False]] * 2)
    pred = bayes_predictor(prior).predict(Episodes(y=y, mask=mask))
    log_prob = pred["log_prob"].values
    np.testing.assert_array_equal(log_prob[0], log_prob[1])  # the padding values differ, nothing else
    for t in range(3, 6):  # every prediction after the data is the one right after it
        np.testing.assert_allclose(log_prob[:, t], log_prob[:, 3], rtol=0, atol=1e-12)
    unpadded = bayes_predictor(prior).predict(Episodes(y=y[:1, :3]))
    np.testing.assert_allclose(log_prob[0, :3], unpadded["log_prob"].values[0], rtol=0, atol=1e-12)
    prefix = pred["prior_log_prob"].values
    np.testing.assert_allclose(prefix[:, 3:], prefix[:, 2:3].repeat(3, axis=1), rtol=0, atol=1e-12)
    assert np.isnan(pred["log_score"].values[:, 3:]).all()
    assert pred["bayes_defined"].values.all()


# --------------------------------------------------------------------------- counts and position-dependent tables


@pytest.mark.parametrize(
    "num_outcomes, length",
    [(2, 12), (5, 16), (16, 20)],
    ids=["few possible counts: marked", "many possible counts: sorted", "counts beyond one int64 key: rows"],
)
def test_context_counts_are_the_counts_before_each_position(rng, num_outcomes, length):
    y = rng.integers(0, num_outcomes, size=(5, length))
    observed = rng.random(y.shape) < 0.8
    y = np.where(observed, y, -7)  # padding may hold anything
    counts, index = _context_counts(y, observed, num_outcomes)
    assert len(np.unique(counts, axis=0)) == len(counts)  # each distinct count vector once
    for e in range(y.shape[0]):
        for t in range(length):
            seen = y[e, :t][observed[e, :t]]
            np.testing.assert_array_equal(counts[index[e, t]], np.bincount(seen, minlength=num_outcomes))


DRIFT_THETAS, DRIFTS = (0.2, 0.7, 0.95), (0.0, 1.5)


def drifting_coins():
    """Coin z, drift d: P(🌈 at t) = θ_z^(1 + d t / T). Drift 0 keeps a coin's table the same at every position."""

    def model(length, y=None):
        z = numpyro.sample("z", dist.Categorical(probs=jnp.full(len(DRIFT_THETAS), 1 / len(DRIFT_THETAS))))
        d = numpyro.sample("d", dist.Categorical(probs=jnp.array([0.5, 0.5])))
        theta = jnp.asarray(DRIFT_THETAS)[z] ** (1.0 + jnp.asarray(DRIFTS)[d] * jnp.arange(length) / length)
        with numpyro.plate("position", length):
            numpyro.sample("y", dist.Categorical(probs=jnp.stack([theta, 1.0 - theta], axis=-1)), obs=y)

    return Prior(model, kind="tokens", outcomes=("🌈", "🦄"))


def drifting_coins_brute_force(y, mask):
    """P(🌈 | y_<t) and log p(y_<t), mixing the 6 latents (z, d) by explicit loops over positions."""
    num_episodes, length = y.shape
    t = np.arange(length)
    rainbow = np.array([[th ** (1 + dr * t / length) for dr in DRIFTS] for th in DRIFT_THETAS]).reshape(-1, length)
    prob, log_evidence = np.empty(y.shape), np.empty(y.shape)
    for e in range(num_episodes):
        log_w = np.full(len(rainbow), -np.log(len(rainbow)))
        for s in range(length):
            w = np.exp(log_w - log_w.max())
            prob[e, s] = (w * rainbow[:, s]).sum() / w.sum()
            log_evidence[e, s] = log_w.max() + np.log(w.sum())
            if mask[e, s]:
                log_w = log_w + np.log(np.where(y[e, s] == 0, rainbow[:, s], 1 - rainbow[:, s]))
    return prob, log_evidence


@pytest.mark.parametrize("chunk_elements", [1, 200, 2**20])
def test_a_table_that_depends_on_the_position_matches_brute_force(rng, chunk_elements):
    """With small chunks the first latents (drift 0) go by counts and the rest by cumulative sums."""
    y = rng.integers(0, 2, size=(4, 9))
    mask = np.ones(y.shape, bool)
    mask[1, 6:] = False
    out = enumerate_predictive(drifting_coins(), Episodes(y=y, mask=mask), chunk_elements=chunk_elements)
    prob, log_evidence = drifting_coins_brute_force(y, mask)
    np.testing.assert_allclose(np.exp(out["log_prob"][..., 0]), prob, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.exp(out["log_prob"][..., 1]), 1 - prob, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["log_evidence"], log_evidence, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk_elements", [1, 40, 2**20])
def test_counts_give_the_cumulative_sums_answer(rng, chunk_elements):
    """Coins (a table the same at every position, summed by counts) against the same sums over positions."""
    thetas, weights = COIN_CASES["three coins, unequal weights"]
    y = rng.integers(0, 2, size=(5, 11))
    mask = np.arange(11)[None, :] < np.array([[11], [4], [11], [0], [7]])
    out = enumerate_predictive(priors.get("coin_mixture", thetas=thetas, weights=weights),
                               Episodes(y=y, mask=mask), chunk_elements=chunk_elements)
    theta = np.asarray(thetas)[:, None, None]
    lik = np.where(mask, np.log(np.where(y == 0, theta, 1 - theta)), 0.0)  # (coin, episode, position)
    log_w = np.log(weights)[:, None, None] + np.cumsum(lik, axis=-1) - lik
    shift = log_w.max(0)
    w = np.exp(log_w - shift)
    np.testing.assert_allclose(np.exp(out["log_prob"][..., 0]), (w * theta).sum(0) / w.sum(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["log_evidence"], shift + np.log(w.sum(0)), rtol=1e-12, atol=1e-12)



def test_a_prior_without_latents_enumerates_to_its_own_likelihood():
    """No latent sites: one empty assignment of weight 1, so the predictive is the noise model itself."""
    prior = priors.get("fixed_function", form="sine_plus_line", slope=0.23)
    episodes = prior.sample(jax.random.key(0), 3, 5)
    grid = np.linspace(-1.5, 1.5, 7)
    enumerated = enumerate_predictive(prior, episodes, y_grid=grid)
    closed = bayes_predictor(prior, engine="closed_form").predict(episodes, y_grid=grid)
    for var in ("mean", "variance", "log_score", "grid_log_density"):
        np.testing.assert_allclose(enumerated[var], closed[var].values, rtol=1e-12, atol=1e-12)
