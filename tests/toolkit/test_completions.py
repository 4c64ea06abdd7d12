"""Sampled completions, against a deterministic toy learner and exact distributions (the aⁿbⁿ rules of
completions are the aⁿbⁿ analysis', ``tests/comparisons/analyses/test_anbn_analysis.py``)."""

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from toolkit import Predictor
from toolkit.completions import NOT_SAMPLED, add_completions, completion_strings, sample_completions
from toolkit.dims import COMPLETION, COMPLETION_STEP, EPISODE, OUTCOME, POSITION, PREDICTOR, PROMPT, PROMPT_SCENARIO, SCENARIO
from toolkit.episodes import Episodes
from toolkit.errors import ConfigError, DataError

A, B, EOS = 0, 1, 2
OUTCOMES = ("a", "b", "<eos>")


def tokens(text: str) -> list[int]:
    """``"ab$"`` -> [0, 1, 2]."""
    return ["ab$".index(c) for c in text]


# --------------------------------------------------------------------------- the sampler


class CountingPredictor(Predictor):
    """Writes b until the counts balance, then EOS: the equal_count rule (a deterministic toy learner).

    Its next-token tables come from `token_log_prob` (as a learner's do), never from ``predict``.
    """

    def __init__(self, block_size=16, name="counting"):
        self.context = block_size
        self.name = name
        self.calls = 0

    def predict(self, episodes, *, y_grid=None):
        raise AssertionError("sampling asks for token_log_prob")

    def token_log_prob(self, y, mask=None):
        self.calls += 1
        y = np.asarray(y)
        before_a = np.cumsum(y == A, axis=1) - (y == A)  # counts in y_<t
        before_b = np.cumsum(y == B, axis=1) - (y == B)
        choice = np.where(before_a > before_b, B, EOS)
        with np.errstate(divide="ignore"):
            return np.log(np.eye(3)[choice])


class FixedPredictor(Predictor):
    """The same next-token distribution everywhere; predictions through ``predict`` only."""

    name = "fixed"

    def __init__(self, probs):
        self.probs = np.asarray(probs, float)

    def predict(self, episodes, *, y_grid=None):
        from toolkit.predictive import token_predictions

        log_prob = np.broadcast_to(np.log(self.probs), episodes.y.shape + (3,))
        return token_predictions(log_prob, episodes, OUTCOMES)


def test_a_deterministic_predictor_gives_its_completions_and_shares_forward_passes():
    predictor = CountingPredictor()
    prompts = [tokens("aabab"), tokens("aaa"), tokens("ba")]
    out = sample_completions(predictor, prompts, num_completions=50, max_new_tokens=6, rng=np.random.default_rng(0), eos=EOS)
    assert out.shape == (3, 50, 6) and out.dtype == np.int8
    strings = completion_strings(out, OUTCOMES, eos=EOS)
    assert set(strings[0]) == {"b·"} and set(strings[1]) == {"bbb·"} and set(strings[2]) == {"·"}
    assert predictor.calls == 4  # one pass per step over the distinct sequences, not one per completion


def test_sampled_frequencies_follow_the_distribution_and_the_temperature():
    probs = np.array([0.2, 0.3, 0.5])
    prompts = Episodes(y=np.zeros((2, 3), int), mask=np.array([[True, False, False], [True, True, False]]))
    out = sample_completions(FixedPredictor(probs), prompts, num_completions=4000, max_new_tokens=1,
                             rng=np.random.default_rng(1), eos=EOS)
    first = out[..., 0].ravel()
    freq = np.bincount(first, minlength=3) / first.size
    assert np.all(np.abs(freq - probs) < 4 * np.sqrt(probs * (1 - probs) / first.size))
    hot = sample_completions(FixedPredictor(probs), prompts, num_completions=4000, max_new_tokens=1,
                             rng=np.random.default_rng(1), eos=EOS, temperature=0.5)[..., 0].ravel()
    sharpened = probs**2 / np.sum(probs**2)
    freq = np.bincount(hot, minlength=3) / hot.size
    assert np.all(np.abs(freq - sharpened) < 4 * np.sqrt(sharpened * (1 - sharpened) / hot.size))


def test_same_rng_state_same_completions_and_stops_at_eos():
    kwargs = dict(num_completions=20, max_new_tokens=10, eos=EOS)
    a = sample_completions(FixedPredictor([0.4, 0.4, 0.2]), [[0, 1]], rng=np.random.default_rng(5), **kwargs)
    b = sample_completions(FixedPredictor([0.4, 0.4, 0.2]), [[0, 1]], rng=np.random.default_rng(5), **kwargs)
    np.testing.assert_array_equal(a, b)
    for row in a[0]:
        ends = np.flatnonzero(row == EOS)
        if ends.size:
            assert np.all(row[ends[0] + 1 :] == NOT_SAMPLED)
        else:
            assert np.all(row >= 0)  # no EOS: it ran to max_new_tokens


def test_the_context_caps_completions_without_eos():
    predictor = CountingPredictor(block_size=6)
    out = sample_completions(predictor, [tokens("aaaa")], num_completions=3, max_new_tokens=10,
                             rng=np.random.default_rng(0), eos=EOS)
    assert completion_strings(out, OUTCOMES, eos=EOS)[0, 0] == "bb"  # positions 5 and 6, then the context is full
    assert np.all(out[0, 0, 2:] == NOT_SAMPLED)  # no EOS: it stopped where the context ended


@pytest.mark.parametrize(
    "prompts, kwargs, error, match",
    [
        ([tokens("a" * 16)], {}, DataError, r"prompt 'aaaaaaaaaaaaaaaa' \(16 tokens.*context holds 16 positions"),
        ([], {}, ConfigError, "empty prompt list"),
        ([[0]], {"num_completions": 0}, ConfigError, "positive"),
        ([[0]], {"temperature": 0.0}, ConfigError, "temperature"),
    ],
)
def test_bad_input_fails_with_a_clear_error(prompts, kwargs, error, match):
    options = dict(num_completions=2, max_new_tokens=3, rng=np.random.default_rng(0), eos=EOS, outcomes=OUTCOMES)
    with pytest.raises(error, match=match):
        sample_completions(CountingPredictor(block_size=16), prompts, **{**options, **kwargs})


def test_a_predictor_without_a_distribution_cannot_be_sampled():
    with pytest.raises(DataError, match="NaN.*'ba'"):
        sample_completions(FixedPredictor([np.nan] * 3), [tokens("ba")], num_completions=2, max_new_tokens=2,
                           rng=np.random.default_rng(0), outcomes=OUTCOMES)


# --------------------------------------------------------------------------- into the Dataset


def test_add_completions_sits_beside_its_prompts():
    y = np.zeros((2, 3, 4))
    mask = np.zeros((2, 3, 4), bool)
    mask[0] = True
    for e, text in enumerate(["a", "aa"]):  # two prompts; the prompt scenario's third episode is padding
        mask[1, e, : len(text)] = True
    y[1, 2] = np.nan
    ds = xr.Dataset(
        {"y": ((SCENARIO, EPISODE, POSITION), y), "mask": ((SCENARIO, EPISODE, POSITION), mask)},
        coords={PREDICTOR: ["bayes", "h"], SCENARIO: ["in_distribution", "prompts"], EPISODE: [0, 1, 2],
                POSITION: [1, 2, 3, 4], OUTCOME: list(OUTCOMES)},
    )
    completions = np.full((2, 2, 6), NOT_SAMPLED, np.int8)  # 2 prompts x 2 completions, max_new_tokens 6
    completions[0, 0, :2], completions[0, 1, :1] = [1, 2], [2]
    completions[1, 0, :3], completions[1, 1, :3] = [1, 1, 2], [0, 0, 0]
    out = add_completions(ds, {("h", "prompts"): completions}, attrs={"temperature": 1.0})
    dims = (PREDICTOR, PROMPT_SCENARIO, PROMPT, COMPLETION)
    assert out["completion_tokens"].dims == dims + (COMPLETION_STEP,)
    assert out["completion_length"].dims == dims
    assert list(out[PROMPT_SCENARIO].values) == ["prompts"] and out.sizes[PROMPT] == 2
    assert out.sizes[COMPLETION_STEP] == 3  # the longest completion, not max_new_tokens
    assert list(out["prompt_text"].sel({PROMPT_SCENARIO: "prompts"}).values) == ["a", "aa"]
    np.testing.assert_array_equal(out["completion_tokens"].sel({PREDICTOR: "h"}).values[0], completions[..., :3])
    assert np.all(out["completion_tokens"].sel({PREDICTOR: "bayes"}) == NOT_SAMPLED)
    assert np.all(out["completion_length"].sel({PREDICTOR: "bayes"}) == NOT_SAMPLED)
    np.testing.assert_array_equal(out["completion_length"].sel({PREDICTOR: "h"}).values[0], [[2, 1], [3, 3]])
    assert out["completion_tokens"].attrs["temperature"] == 1.0


def test_wilson_intervals_of_rule_rates_match_scipy():
    from toolkit.metrics import wilson_interval

    for k, n in [(0, 10), (3, 10), (10, 10), (47, 300)]:
        low, high = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        interval = wilson_interval(k, n)
        np.testing.assert_allclose([interval.low, interval.high], [low, high], rtol=0, atol=1e-12)
