"""The aⁿbⁿ analysis: prompt sets, the rule classifier, pairwise Jensen–Shannon, rule rates, bad input and a tiny
end-to-end run."""

import json

import numpy as np
import pytest
import xarray as xr
from scipy import stats
from scipy.spatial.distance import jensenshannon

import priors
from comparisons.analyses.anbn import (
    CONFLICT,
    LOW,
    PREFIXES,
    RULES,
    ZERO,
    add_rules,
    analyse,
    classify_anbn,
    pairwise_js,
    prompt_log_prob,
    prompt_scenarios,
    rule_counts,
)
from comparisons.run import main
from toolkit.bayes import bayes_predictor
from toolkit.completions import NOT_SAMPLED, add_completions
from toolkit.errors import DataError
from toolkit.dims import COMPLETION, COMPLETION_STEP, EPISODE, OUTCOME, POSITION, PREDICTOR, PROMPT, PROMPT_SCENARIO, SCENARIO
from toolkit.io import read_netcdf

CONFIG = "comparisons/configs/anbn.toml"
TINY = ("--config", CONFIG, "--profile", "tiny", "--no-progress")
TINY_LEARNERS = ["transformer_learned-s0", "transformer_learned-s1", "transformer_rotary-s0", "lstm-s0"]


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



def test_add_rules_classifies_each_sampled_completion_beside_its_prompt():
    y = np.zeros((2, 3, 4))
    mask = np.zeros((2, 3, 4), bool)
    mask[0] = True
    for e, text in enumerate(["a", "aa"]):  # two prompts; the prompt scenario's third episode is padding
        mask[1, e, : len(text)] = True
    ds = xr.Dataset(
        {"y": ((SCENARIO, EPISODE, POSITION), y), "mask": ((SCENARIO, EPISODE, POSITION), mask)},
        coords={PREDICTOR: ["bayes", "h"], SCENARIO: ["in_distribution", "prompts"], EPISODE: [0, 1, 2],
                POSITION: [1, 2, 3, 4], OUTCOME: ["a", "b", "<eos>"]},
    )
    completions = np.full((2, 2, 6), NOT_SAMPLED, np.int8)  # 2 prompts x 2 completions
    completions[0, 0, :2], completions[0, 1, :1] = [1, 2], [2]
    completions[1, 0, :3], completions[1, 1, :3] = [1, 1, 2], [0, 0, 0]
    out = add_rules(add_completions(ds, {("h", "prompts"): completions}), {"prompts": [tokens("a"), tokens("aa")]})
    assert out["completion_rule"].dims == (PREDICTOR, PROMPT_SCENARIO, PROMPT, COMPLETION)
    assert [str(r) for r in out["rule"].values] == list(RULES)
    assert np.all(out["completion_rule"].sel({PREDICTOR: "bayes"}) == NOT_SAMPLED)  # nothing sampled there
    assert [RULES[k] for k in out["completion_rule"].sel({PREDICTOR: "h"}).values[0].ravel()] == [
        "both", "no_a_after_b", "both", "no_eos"]


@pytest.fixture(scope="module")
def prior():
    return priors.get("anbn", q=0.5, max_length=16)


def test_prompt_sets_split_strings_by_prior_probability(prior):
    bayes = bayes_predictor(prior)
    zero, prefixes, low = prompt_scenarios(prior, bayes, max_prompt_length=3, min_prior_prob=0.01)
    text = lambda s: sorted("".join("ab"[t] for t in p) for p in s.prompts)  # noqa: E731
    assert text(prefixes) == ["a", "aa", "aaa", "aab", "ab"]
    assert text(zero) == ["aba", "abb", "b", "ba", "baa", "bab", "bb", "bba", "bbb"]
    assert (zero.name, prefixes.name, low.name) == (ZERO, PREFIXES, LOW)
    # a^n has probability P(n' >= n) = (2^-(n-1) - 2^-7) / (1 - 2^-7) with n' <= 7: at least 0.01 for n <= 6
    assert text(low) == ["aaaa", "aaaaa", "aaaaaa"]
    log_p = prompt_log_prob(prior, bayes, ["aaaa", "ba", "ab"])
    weights = priors.anbn.length_weights(0.5, 16)
    np.testing.assert_allclose(np.exp(log_p), [weights[4:].sum(), 0.0, weights[1]], rtol=1e-12)


def test_pairwise_js_matches_scipy():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=(3, 5))  # (predictor, episode, outcome)
    probs[0, 0] = [1.0, 0.0, 0.0]  # exact zeros stay exact
    probs[1, 0] = [0.0, 0.5, 0.5]
    with np.errstate(divide="ignore"):
        log_prob = xr.DataArray(np.log(probs), dims=(PREDICTOR, EPISODE, OUTCOME), coords={PREDICTOR: ["u", "v", "w"]})
    js = pairwise_js(log_prob, {"u": "x", "v": "x", "w": "y"})
    assert list(js["pair"].values) == ["u | v", "u | w", "v | w"]
    assert list(js["same_architecture"].values) == [True, False, False]
    for k, (i, j) in enumerate([(0, 1), (0, 2), (1, 2)]):
        expected = [jensenshannon(probs[i, e], probs[j, e]) ** 2 for e in range(5)]
        np.testing.assert_allclose(js.isel(pair=k).values, expected, rtol=1e-10, atol=1e-15)


def synthetic_comparison() -> xr.Dataset:
    """Two prompt scenarios, one sampled scenario, two learners with known completions."""
    rng = np.random.default_rng(1)
    predictors = ["bayes", "h1", "h2"]
    scenarios = ["in_distribution", ZERO, PREFIXES]
    y = np.zeros((3, 4, 4))
    mask = np.zeros((3, 4, 4), bool)
    mask[0] = True
    prompts = {ZERO: ["ba", "abb", "bba", "b"], PREFIXES: ["a", "ab", "aab", "aa"]}
    for s, texts in prompts.items():
        for e, t in enumerate(texts):
            y[scenarios.index(s), e, : len(t)] = ["ab".index(c) for c in t]
            mask[scenarios.index(s), e, : len(t)] = True
    log_prob = np.log(rng.dirichlet(np.ones(3), size=(3, 3, 4, 4)))
    rule = rng.integers(0, len(RULES), size=(3, 2, 4, 6)).astype(np.int8)  # on the two prompt scenarios
    rule[0] = -1  # Bayes samples nothing
    ds = xr.Dataset(
        {
            "y": ((SCENARIO, EPISODE, POSITION), y),
            "mask": ((SCENARIO, EPISODE, POSITION), mask),
            "log_prob": ((PREDICTOR, SCENARIO, EPISODE, POSITION, OUTCOME), log_prob),
            "prior_log_prob": ((SCENARIO, EPISODE, POSITION), np.zeros((3, 4, 4))),
            "bayes_defined": ((SCENARIO, EPISODE, POSITION), np.ones((3, 4, 4), bool)),
            "completion_rule": ((PREDICTOR, PROMPT_SCENARIO, PROMPT, COMPLETION), rule),
        },
        coords={PREDICTOR: predictors, SCENARIO: scenarios, EPISODE: np.arange(4), POSITION: np.arange(1, 5),
                OUTCOME: ["a", "b", "<eos>"], "scenario_kind": (SCENARIO, ["in_distribution", "prompts", "prompts"]),
                "architecture": (PREDICTOR, ["", "x", "y"]), PROMPT_SCENARIO: [ZERO, PREFIXES], PROMPT: np.arange(4)},
    )
    return ds, prompts


def test_rule_rates_and_wilson_intervals_match_plain_counts():
    ds, prompts = synthetic_comparison()
    out = analyse(ds)
    assert list(out[PREDICTOR].values) == ["h1", "h2"]
    more_b = np.array([t.count("b") > t.count("a") for t in prompts[ZERO]])
    for p in ("h1", "h2"):
        rule = ds["completion_rule"].sel({PREDICTOR: p})
        zero, prefixes = rule.sel({PROMPT_SCENARIO: ZERO}).values, rule.sel({PROMPT_SCENARIO: PREFIXES}).values
        for c, sel in ((ZERO, zero), (PREFIXES, prefixes), (CONFLICT, zero[more_b])):
            counts = np.array([np.sum(sel == k) for k in range(len(RULES))])
            np.testing.assert_array_equal(out["rule_count"].sel({PREDICTOR: p, "prompt_class": c}).values, counts)
            n = counts.sum()
            for k, name in enumerate(RULES):
                ci = stats.binomtest(int(counts[k]), int(n)).proportion_ci(method="wilson")
                r = out.sel({PREDICTOR: p, "prompt_class": c, "rule": name})
                np.testing.assert_allclose([r["rule_rate"], r["rule_rate_low"], r["rule_rate_high"]],
                                           [counts[k] / n, ci.low, ci.high], atol=1e-12)
            hits = counts[RULES.index("equal_count")] + counts[RULES.index("both")]
            ci = stats.binomtest(int(hits), int(n)).proportion_ci(method="wilson")
            r = out.sel({PREDICTOR: p, "prompt_class": c})
            np.testing.assert_allclose([r["equal_count_rate_low"], r["equal_count_rate_high"]], [ci.low, ci.high], atol=1e-12)


def test_pairwise_disagreement_sits_at_each_prompts_next_token():
    ds, prompts = synthetic_comparison()
    out = analyse(ds)
    lp = ds["log_prob"]
    for s in (ZERO, PREFIXES):
        for e, t in enumerate(prompts[s]):
            p = np.exp(lp.sel({PREDICTOR: "h1", SCENARIO: s, EPISODE: e, POSITION: len(t) + 1}).values)
            q = np.exp(lp.sel({PREDICTOR: "h2", SCENARIO: s, EPISODE: e, POSITION: len(t) + 1}).values)
            np.testing.assert_allclose(float(out["prompt_disagreement"].sel({SCENARIO: s, EPISODE: e})),
                                       jensenshannon(p, q) ** 2, rtol=1e-10)
    # a sampled scenario averages over every cell it holds
    p, q = (np.exp(lp.sel({PREDICTOR: h, SCENARIO: "in_distribution"}).values) for h in ("h1", "h2"))
    expected = np.mean([jensenshannon(a, b) ** 2 for a, b in zip(p.reshape(-1, 3), q.reshape(-1, 3))])
    np.testing.assert_allclose(out["js_mean"].sel({SCENARIO: "in_distribution", "pair": "h1 | h2"}).item(), expected, rtol=1e-10)


# --------------------------------------------------------------------------- through the CLI


@pytest.mark.parametrize(
    "overrides, message",
    [
        (['scenarios.extra={kind="prompts", prompts=["abca"]}'], "'abca'.*'c'.*not an outcome"),
        (['scenarios.extra={kind="prompts", prompts=[]}'], "empty prompt list"),
        ([f'scenarios.extra={{kind="prompts", prompts=["{"a" * 16}"]}}'], f"prompt '{'a' * 16}' \\(16 tokens.*context holds 16"),
    ],
)
def test_bad_prompts_fail_before_training_with_the_prompt_named(tmp_path, capsys, overrides, message):
    out = tmp_path / "run"
    args = [*TINY, "--out", str(out)]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: scenarios.extra") or err.startswith("error: prompt")
    import re

    assert re.search(message, err), err
    assert not (out / "learners").exists() and not (out / "comparison.nc").exists()


@pytest.fixture(scope="module")
def tiny_anbn(tmp_path_factory):
    out = tmp_path_factory.mktemp("anbn") / "run"
    assert main([*TINY, "--out", str(out)]) == 0
    return out


def test_tiny_run_writes_completions_rules_and_the_report(tiny_anbn):
    ds = read_netcdf(tiny_anbn / "comparison.nc")
    assert list(ds[PREDICTOR].values) == ["bayes", "frequency", *TINY_LEARNERS]
    assert list(ds[SCENARIO].values) == ["in_distribution", ZERO, PREFIXES, LOW]
    assert ds["completion_tokens"].dims == (PREDICTOR, PROMPT_SCENARIO, PROMPT, COMPLETION, COMPLETION_STEP)
    assert list(ds[PROMPT_SCENARIO].values) == [ZERO, PREFIXES, LOW] and ds.sizes[COMPLETION] == 8
    assert sorted(ds["prompt_text"].sel({PROMPT_SCENARIO: PREFIXES}).values[:5]) == ["a", "aa", "aaa", "aab", "ab"]
    rule = ds["completion_rule"]
    assert np.all(rule.sel({PREDICTOR: ["bayes", "frequency"]}) == -1)
    sampled = rule.sel({PREDICTOR: TINY_LEARNERS, PROMPT_SCENARIO: ZERO}).isel({PROMPT: slice(0, 9)})
    assert np.all((sampled >= 0) & (sampled < len(RULES)))
    assert np.all(rule.sel({PROMPT_SCENARIO: ZERO}).isel({PROMPT: slice(9, None)}) == -1)  # 9 prompts, the rest padding
    assert list(ds["architecture"].values) == ["", "", "transformer_learned", "transformer_learned",
                                               "transformer_rotary", "lstm"]
    metrics = read_netcdf(tiny_anbn / "metrics.nc")
    for name in ("kl_in_distribution", "js_mean", "prompt_disagreement", "rule_rate", "equal_count_rate_high"):
        assert name in metrics, name
    assert json.loads(metrics.attrs["learners"]) == TINY_LEARNERS  # nested attrs are stored as JSON
    report = (tiny_anbn / "report.md").read_text(encoding="utf-8")
    for heading in ("## aⁿbⁿ", "### Learners and the in-distribution bar", "### Rules followed", "**Disagreement**"):
        assert heading in report, heading
    for png in ("adherence.png", "disagreement.png"):
        assert (tiny_anbn / "figures" / png).read_bytes()[:4] == b"\x89PNG"
    for name in TINY_LEARNERS:
        assert (tiny_anbn / "learners" / name).is_dir()
