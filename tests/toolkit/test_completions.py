"""Sampled completions and the aⁿbⁿ rule classifier, against hand-written cases and exact distributions."""

from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from toolkit.completions import (
    NOT_SAMPLED,
    RULES,
    add_completions,
    classify_anbn,
    completion_strings,
    rule_counts,
    sample_completions,
)
from toolkit.dims import COMPLETION, COMPLETION_STEP, EPISODE, OUTCOME, POSITION, PREDICTOR, PROMPT, PROMPT_SCENARIO, SCENARIO
from toolkit.episodes import Episodes
from toolkit.errors import ConfigError, DataError

A, B, EOS = 0, 1, 2
OUTCOMES = ("a", "b", "<eos>")


def tokens(text: str) -> list[int]:
    """``"ab$"`` -> [0, 1, 2]."""
    return ["ab$".index(c) for c in text]


# --------------------------------------------------------------------------- the classifier

CASES = [  # prompt, completion ($ = EOS), rule
    ("aabab", "b$", "both"),  # 3 a, 3 b, no a written
    ("aabab", "$", "no_a_after_b"),  # 3 a, 2 b
    ("aabab", "bbb$", "no_a_after_b"),
    ("aabab", "bab$", "equal_count"),  # 4 a, 4 b, an a after a b
    ("aabab", "ab$", "neither"),
    ("ba", "$", "both"),
    ("ba", "ab$", "equal_count"),
    ("abb", "a$", "equal_count"),  # the only way to balance writes an a after a b
    ("abb", "$", "no_a_after_b"),
    ("abb", "bbbb", "no_eos"),  # the length limit came first
    ("aab", "b$", "both"),  # the in-distribution completion obeys both
    ("aab", "abb$", "equal_count"),
    ("aa", "ba$", "neither"),  # 3 a, 1 b, and an a after the generated b
    ("aa", "ab$", "no_a_after_b"),  # the a comes before the first b
    ("aa", "abbb$", "both"),  # the a comes first, then the counts balance
    ("aa", "babb$", "equal_count"),
    ("aa", "aabb$", "no_a_after_b"),  # a's before the first b are fine
    ("a", "", "no_eos"),  # nothing generated (the context was full)
    ("ab", "$ab", "both"),  # tokens after EOS do not count
]


@pytest.mark.parametrize("prompt, completion, rule", CASES)
def test_classifier_on_hand_written_completions(prompt, completion, rule):
    row = np.full((1, 1, 6), NOT_SAMPLED)
    row[0, 0, : len(completion)] = tokens(completion)
    assert RULES[classify_anbn([tokens(prompt)], row)[0, 0]] == rule


def test_classifier_is_vectorised_over_prompts_and_completions():
    prompts = sorted({p for p, _, _ in CASES})
    by_prompt = {p: [(c, r) for q, c, r in CASES if q == p] for p in prompts}
    width = max(len(v) for v in by_prompt.values())
    completions = np.full((len(prompts), width, 6), NOT_SAMPLED)
    expected = np.full((len(prompts), width), -1)
    for i, p in enumerate(prompts):
        for j, (c, r) in enumerate(by_prompt[p]):
            completions[i, j, : len(c)] = tokens(c)
            expected[i, j] = RULES.index(r)
    got = classify_anbn([tokens(p) for p in prompts], completions)
    np.testing.assert_array_equal(got[expected >= 0], expected[expected >= 0])
    counts = rule_counts(np.where(expected >= 0, got, -1), axis=(0, 1))
    np.testing.assert_array_equal(counts, [sum(r == k for _, _, r in CASES) for k in RULES])


def test_classifier_rejects_misshapen_completions():
    with pytest.raises(DataError, match="shape"):
        classify_anbn([[0], [1]], np.zeros((1, 1, 3), int))


# --------------------------------------------------------------------------- the sampler


class CountingPredictor:
    """Writes b until the counts balance, then EOS: the equal_count rule (a deterministic toy learner)."""

    def __init__(self, block_size=16, name="counting"):
        self.config = SimpleNamespace(block_size=block_size, vocab_size=3)
        self.name = name
        self.calls = 0

    def log_prob(self, y):
        self.calls += 1
        y = np.asarray(y)
        before_a = np.cumsum(y == A, axis=1) - (y == A)  # counts in y_<t
        before_b = np.cumsum(y == B, axis=1) - (y == B)
        choice = np.where(before_a > before_b, B, EOS)
        with np.errstate(divide="ignore"):
            return np.log(np.eye(3)[choice])


class FixedPredictor:
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
    assert np.all(classify_anbn(prompts, out) == RULES.index("both"))


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
    assert RULES[classify_anbn([tokens("aaaa")], out)[0, 0]] == "no_eos"


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
    rule = classify_anbn([tokens("a"), tokens("aa")], completions)
    out = add_completions(ds, {("h", "prompts"): (completions, rule)}, attrs={"temperature": 1.0})
    dims = (PREDICTOR, PROMPT_SCENARIO, PROMPT, COMPLETION)
    assert out["completion_tokens"].dims == dims + (COMPLETION_STEP,)
    assert out["completion_rule"].dims == out["completion_length"].dims == dims
    assert list(out[PROMPT_SCENARIO].values) == ["prompts"] and out.sizes[PROMPT] == 2
    assert out.sizes[COMPLETION_STEP] == 3  # the longest completion, not max_new_tokens
    assert list(out["prompt_text"].sel({PROMPT_SCENARIO: "prompts"}).values) == ["a", "aa"]
    np.testing.assert_array_equal(out["completion_tokens"].sel({PREDICTOR: "h"}).values[0], completions[..., :3])
    assert np.all(out["completion_tokens"].sel({PREDICTOR: "bayes"}) == NOT_SAMPLED)
    assert np.all(out["completion_rule"].sel({PREDICTOR: "bayes"}) == NOT_SAMPLED)
    np.testing.assert_array_equal(out["completion_length"].sel({PREDICTOR: "h"}).values[0], [[2, 1], [3, 3]])
    assert [str(r) for r in out["rule"].values] == list(RULES)
    assert [RULES[k] for k in out["completion_rule"].sel({PREDICTOR: "h"}).values[0].ravel()] == [
        "both", "no_a_after_b", "both", "no_eos"]
    assert out["completion_tokens"].attrs["temperature"] == 1.0


def test_wilson_intervals_of_rule_rates_match_scipy():
    from toolkit.metrics import wilson_interval

    for k, n in [(0, 10), (3, 10), (10, 10), (47, 300)]:
        low, high = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        interval = wilson_interval(k, n)
        np.testing.assert_allclose([interval.low, interval.high], [low, high], rtol=0, atol=1e-12)
