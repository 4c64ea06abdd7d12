"""Errors a user can act on: each is a `MetabayesError` whose message names the problem and what is allowed."""

import numpy as np
import pytest

import priors
from toolkit import Episodes
from toolkit.baselines import FrequencyPredictor
from toolkit.bayes import bayes_predictor
from toolkit.errors import ConfigError, DataError, MetabayesError, ModelError, UnknownNameError
from toolkit.scenario import Scenario

OUTCOMES = ("🌈", "🦄")


def test_unknown_prior_lists_the_known_ones():
    with pytest.raises(UnknownNameError) as info:
        priors.get("no_such_prior")
    message = str(info.value)
    assert message.startswith("unknown prior 'no_such_prior'")
    for name in priors.available():
        assert name in message
    assert info.value.known == priors.available()
    assert isinstance(info.value, MetabayesError)


def test_unknown_factory_parameter_names_it_and_the_allowed_ones():
    with pytest.raises(ModelError, match=r"takes no parameter 'theta'.*thetas, weights"):
        priors.get("coin_mixture", theta=0.5)


@pytest.mark.parametrize(
    "params, match",
    [
        ({"thetas": (1.5,), "weights": (1.0,)}, r"thetas must lie in \[0, 1\]"),
        ({"thetas": (0.2, 0.8), "weights": (0.5,)}, "one weight per coin"),
        ({"thetas": (0.2, 0.8), "weights": (0.7, 0.7)}, "sum to 1"),
    ],
)
def test_coin_mixture_parameters_out_of_range(params, match):
    with pytest.raises(ModelError, match=match):
        priors.get("coin_mixture", **params)


def test_unknown_engine_lists_the_engines():
    with pytest.raises(UnknownNameError, match="unknown engine 'exact'.*closed_form, enumeration, mcmc"):
        bayes_predictor(priors.get("coin_mixture"), engine="exact")


def test_closed_form_engine_without_a_closed_form():
    with pytest.raises(ModelError, match="no closed-form"):
        bayes_predictor(priors.get("coin_mixture"), engine="closed_form")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_episodes_with_nan_y_name_the_position(bad):
    y = np.zeros((3, 5))
    y[1, 3] = bad
    with pytest.raises(DataError, match="episode 1, position 4"):
        Episodes(y=y)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"y": np.zeros(4)}, r"shape \(episode, position\)"),
        ({"y": np.zeros((2, 3)), "x": np.zeros((2, 4, 1))}, "matching y"),
        ({"y": np.zeros((2, 3)), "x": np.full((2, 3), np.nan)}, "x holds NaN"),
        ({"y": np.zeros((2, 3)), "mask": np.ones((2, 2), bool)}, "mask must have the shape"),
        ({"y": np.zeros((2, 3)), "latents": {"z": np.zeros(3)}}, "latent 'z' must lead with the episode dim"),
    ],
)
def test_malformed_episodes(kwargs, match):
    with pytest.raises(DataError, match=match):
        Episodes(**kwargs)


def test_token_out_of_range_names_episode_position_and_vocabulary():
    episodes = Episodes(y=np.array([[0, 1, 0], [1, 2, 0]]))
    with pytest.raises(DataError, match=r"token 2 at episode 1, position 2 .*allowed: 0\.\.1 \(🌈, 🦄\)"):
        episodes.check_tokens(2, labels=OUTCOMES)
    with pytest.raises(DataError, match="token 2 at episode 1, position 2"):
        bayes_predictor(priors.get("coin_mixture")).predict(episodes)
    with pytest.raises(DataError, match="token 2 at episode 1, position 2"):
        FrequencyPredictor(OUTCOMES).predict(episodes)
    with pytest.raises(DataError, match="token -1"):
        Episodes(y=np.array([[0, -1]])).check_tokens(2)


def test_padding_may_hold_anything():
    Episodes(y=np.array([[0, 7]]), mask=np.array([[True, False]])).check_tokens(2)


def test_prompt_label_outside_the_vocabulary():
    with pytest.raises(DataError, match=r"'x'.*not an outcome; allowed: 🌈, 🦄"):
        Scenario.from_prompts("prompts", ["🌈x"], OUTCOMES)
    with pytest.raises(DataError, match=r"outside 0\.\.1"):
        Scenario.from_prompts("prompts", [[0, 5]], OUTCOMES)


def test_prompt_labels_and_integers_encode_alike():
    scenario = Scenario.from_prompts("prompts", ["🌈🦄", ["🦄"], [0, 0, 1]], OUTCOMES)
    assert scenario.prompts == [[0, 1], [1], [0, 0, 1]]


def test_empty_prompt_list():
    with pytest.raises(ConfigError, match="empty prompt list"):
        Scenario.from_prompts("prompts", [], OUTCOMES)


def test_unknown_name_error_prints_without_keyerror_quotes():
    error = UnknownNameError("predictor", "gpt", ["bayes", "oracle"])
    assert str(error) == "unknown predictor 'gpt'; known predictors: bayes, oracle"
