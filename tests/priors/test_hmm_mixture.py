"""hmm_mixture: exact Bayes by prefix-masking enumeration against a hand-written forward algorithm.

Also checks the prefix-masking path against the cumulative path on an i.i.d.
model, where both apply.
"""

import jax
import numpy as np
import pytest
from scipy.special import logsumexp

import priors
from toolkit.bayes import bayes_predictor
from toolkit.enumeration import enumerate_predictive
from toolkit.episodes import Episodes


def forward_predictive(y, weights, start, transition, emission):
    """log p(y_t = v | y_<t) and log p(y_<t) for one sequence, by the forward algorithm in numpy.

    The mixture's posterior over HMMs and each HMM's filtered state distribution
    are updated one token at a time.
    """
    log_w = np.log(weights)  # log p(k, y_<t)
    state = start.copy()  # p(h_t | k, y_<t), shape (hmm, state)
    log_prob, evidence = [], []
    for token in y:
        per_hmm = np.einsum("kh,khv->kv", state, emission)  # p(y_t = v | k, y_<t)
        evidence.append(logsumexp(log_w))
        log_prob.append(logsumexp(log_w[:, None] + np.log(per_hmm), axis=0) - evidence[-1])
        log_w = log_w + np.log(per_hmm[:, token])
        filtered = state * emission[:, :, token] / per_hmm[:, token, None]
        state = np.einsum("kh,khj->kj", filtered, transition)
    return np.array(log_prob), np.array(evidence)


OTHER = {"num_hmms": 2, "num_states": 3, "num_symbols": 4, "seed": 5, "weights": (0.3, 0.7)}


@pytest.fixture(scope="module", params=[{}, pytest.param(OTHER, marks=pytest.mark.slow)])
def case(request):
    prior = priors.get("hmm_mixture", **request.param)
    episodes = prior.sample(jax.random.key(2), 6, 12)
    return prior, episodes, enumerate_predictive(prior, episodes)


def test_parameters_are_stochastic_matrices():
    prior = priors.get("hmm_mixture")
    m = prior.metadata
    assert m["transition"].shape == (3, 4, 4) and m["emission"].shape == (3, 4, 5) and m["start"].shape == (3, 4)
    for name in ("start", "transition", "emission"):
        np.testing.assert_allclose(m[name].sum(-1), 1.0, atol=1e-12)


def test_enumeration_matches_the_forward_algorithm_to_1e_9(case):
    prior, episodes, out = case
    m = prior.metadata
    for e, y in enumerate(episodes.y):
        log_prob, evidence = forward_predictive(y, m["weights"], m["start"], m["transition"], m["emission"])
        np.testing.assert_allclose(out["log_prob"][e], log_prob, rtol=0, atol=1e-9)
        np.testing.assert_allclose(out["log_evidence"][e], evidence, rtol=0, atol=1e-9)


def test_padding_is_left_out_of_the_context(case):
    """Positions after the mask ends hold no data: the next-token prediction after a prompt uses the prompt only."""
    prior, episodes, _ = case
    m = prior.metadata
    mask = np.ones(episodes.y.shape, bool)
    mask[1, 3:] = False
    out = bayes_predictor(prior).predict(Episodes(y=episodes.y, mask=mask))
    prompt = episodes.y[1, :3]
    want, _ = forward_predictive(np.append(prompt, 0), m["weights"], m["start"], m["transition"], m["emission"])
    np.testing.assert_allclose(out["log_prob"].values[1, :4], want, atol=1e-9)
    assert np.isnan(out["log_score"].values[1, 3])  # no realised outcome after the prompt
    np.testing.assert_allclose(out["log_prob"].values[0], case[2]["log_prob"][0], atol=1e-12)


def test_prefix_masking_equals_the_cumulative_path_on_an_iid_model():
    prior = priors.get("coin_mixture", thetas=(0.2, 0.5, 0.9), weights=(0.5, 0.3, 0.2))
    episodes = prior.sample(jax.random.key(4), 8, 16)
    cumulative = enumerate_predictive(prior, episodes, method="cumulative")
    prefix = enumerate_predictive(prior, episodes, method="prefix")
    for name in ("log_prob", "log_evidence"):
        np.testing.assert_allclose(prefix[name], cumulative[name], rtol=0, atol=1e-12)
