"""The aⁿbⁿ prior: samples, the closed-form predictive against enumeration and against every sequence, zeros.

The brute-force reference enumerates all 3^T strings of length T, weighs each
by its probability under the NumPyro model (n summed out by hand), and reads
off p(y_t | y_<t) for every prefix: nothing of the closed form or of the
enumeration engine is reused.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers
from numpyro.infer.util import log_density

import priors
from priors.anbn import A, B, EOS, closed_form_probs, length_weights
from toolkit.bayes import bayes_predictor
from toolkit.episodes import Episodes
from toolkit.errors import ModelError
from toolkit.scenario import Scenario

MAX_LENGTH = 7  # n ≤ 3
Q = 0.6


@pytest.fixture(scope="module")
def prior():
    return priors.get("anbn", q=Q, max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def sampled(prior):
    return prior.sample(jax.random.key(0), 2000, MAX_LENGTH)


@pytest.fixture(scope="module")
def all_strings():
    """Every string over {a, b, EOS} of length MAX_LENGTH and its probability under the model."""
    strings = np.array(list(itertools.product(range(3), repeat=MAX_LENGTH)))
    return strings


@pytest.fixture(scope="module")
def string_probs(prior, all_strings):
    def joint(y, n):  # log p(y, n) from the model itself
        model = handlers.substitute(prior.model, data={"n": n})
        lp, _ = log_density(model, (MAX_LENGTH,), {"y": y}, {})
        return lp

    ns = jnp.arange(len(length_weights(Q, MAX_LENGTH)))
    table = jax.jit(jax.vmap(lambda y: jax.vmap(lambda n: joint(y, n))(ns)))(jnp.asarray(all_strings))
    return np.exp(np.asarray(jax.scipy.special.logsumexp(table, axis=1)))


def test_the_strings_with_mass_are_anbn_eos(all_strings, string_probs):
    np.testing.assert_allclose(string_probs.sum(), 1.0, atol=1e-12)
    support = {"".join("ab$"[t] for t in s) for s in all_strings[string_probs > 0]}
    assert support == {"ab$$$$$", "aabb$$$", "aaabbb$"}
    weights = length_weights(Q, MAX_LENGTH)
    np.testing.assert_allclose(weights[1:], np.array([Q, Q**2, Q**3]) / (Q + Q**2 + Q**3), rtol=1e-12)


def test_closed_form_matches_every_prefix_of_every_sequence(prior, all_strings, string_probs):
    """p(y_t = v | y_<t) by summing string probabilities, for all 3^(t-1) prefixes at every t."""
    for t in range(1, MAX_LENGTH + 1):
        prefixes = np.array(list(itertools.product(range(3), repeat=t - 1)), np.int64).reshape(3 ** (t - 1), t - 1)
        expected = np.full((len(prefixes), 3), np.nan)
        for i, prefix in enumerate(prefixes):
            match = np.all(all_strings[:, : t - 1] == prefix, axis=1)
            total = string_probs[match].sum()
            if total > 0:
                expected[i] = [string_probs[match & (all_strings[:, t - 1] == v)].sum() / total for v in range(3)]
        padded = np.zeros((len(prefixes), t), np.int64)
        padded[:, : t - 1] = prefixes
        got = closed_form_probs(padded, None, Q, MAX_LENGTH)[:, t - 1]
        np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
        np.testing.assert_allclose(got[~np.isnan(got)], expected[~np.isnan(expected)], rtol=0, atol=1e-12)


def test_closed_form_matches_the_enumeration_engine(prior, all_strings, sampled):
    """Both Bayes engines on every string (zero-probability ones included) and on sampled, masked episodes."""
    closed = bayes_predictor(prior)
    assert closed.engine == "closed_form"
    enumerated = bayes_predictor(prior, engine="enumeration")
    episodes = Episodes(  # one batch, one compilation: unmasked strings, then masked samples
        y=np.concatenate([all_strings, sampled.y[:200]]),
        mask=np.concatenate([np.ones(all_strings.shape, bool), sampled.mask[:200]]),
    )
    a, b = closed.predict(episodes), enumerated.predict(episodes)
    assert not a["bayes_defined"].values.all() and a["bayes_defined"].values[len(all_strings):].all()
    np.testing.assert_array_equal(a["bayes_defined"].values, b["bayes_defined"].values)
    np.testing.assert_allclose(a["log_prob"].values, b["log_prob"].values, rtol=0, atol=1e-12)
    np.testing.assert_allclose(a["prior_log_prob"].values, b["prior_log_prob"].values, rtol=0, atol=1e-12)


def test_samples_are_anbn_with_the_mask_up_to_the_first_eos(sampled):
    episodes = sampled
    n = episodes.latents["n"]
    t = np.arange(1, MAX_LENGTH + 1)
    expected = np.where(t <= n[:, None], A, np.where(t <= 2 * n[:, None], B, EOS))
    np.testing.assert_array_equal(episodes.y, expected)
    np.testing.assert_array_equal(episodes.mask, t <= 2 * n[:, None] + 1)
    freq = np.bincount(n, minlength=4)[1:] / len(n)
    weights = length_weights(Q, MAX_LENGTH)[1:]
    assert np.all(np.abs(freq - weights) < 4 * np.sqrt(weights * (1 - weights) / len(n)))


def test_truncated_mass_is_recorded(prior):
    described = prior.describe()
    assert described["params"] == {"q": Q, "max_length": MAX_LENGTH}
    assert described["max_n"] == 3
    assert described["truncated_mass"] == pytest.approx(Q**3)  # P(n > 3) under the untruncated geometric law


def test_zero_probability_prompts_are_undefined_and_long_a_runs_improbable():
    prior = priors.get("anbn", q=0.5, max_length=48)
    prompts = ["ba", "aabab", "abab", "aab", "a" * 20]
    episodes = Scenario.from_prompts("p", prompts, prior.outcomes).episodes(None, 0, 0)
    pred = bayes_predictor(prior).predict(episodes)
    length = episodes.mask.sum(1)
    defined = pred["bayes_defined"].values[np.arange(len(prompts)), length]  # the cell after each prompt
    np.testing.assert_array_equal(defined, [False, False, False, True, True])
    after = pred["log_prob"].values[np.arange(len(prompts)), length]
    assert np.all(np.isnan(after[:3])) and np.all(np.isfinite(np.exp(after[3:])))
    np.testing.assert_allclose(np.exp(after[3]), [0.0, 1.0, 0.0])  # aab -> b
    log_p = pred["prior_log_prob"].values[np.arange(len(prompts)), length - 1]
    assert np.all(np.isneginf(log_p[:3]))
    weights = length_weights(0.5, 48)
    np.testing.assert_allclose(np.exp(log_p[3]), weights[2], rtol=1e-12)  # aab: n = 2 exactly
    np.testing.assert_allclose(np.exp(log_p[4]), weights[20:].sum(), rtol=1e-10)  # a^20: n >= 20
    assert 1e-6 < np.exp(log_p[4]) < 2e-6


@pytest.mark.parametrize("params", [{"q": 0.0}, {"q": 1.0}, {"max_length": 2}, {"max_length": 7.5}])
def test_bad_parameters_fail_with_a_model_error(params):
    with pytest.raises(ModelError, match="anbn needs"):
        priors.get("anbn", **params)
