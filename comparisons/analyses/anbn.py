"""The aⁿbⁿ comparison: zero-probability prompts and the disagreement of equally good learners.

Huszár (2023, "Autoregressive models, zero probability prompts"): two
autoregressive models that define the same distribution over aⁿbⁿ may
complete ``aabab`` by "as many b as a" or by "no a after a b"; the
cross-entropy cannot tell them apart, inductive bias decides. This module

- builds the prompt sets (`prompt_scenarios`): every string over {a, b} up to
  a length that the prior gives probability zero, the in-distribution
  prefixes of the same lengths, and long aⁿ prefixes down to a prior
  probability;
- reduces a comparison Dataset holding several learners and their sampled
  completions to the numbers the question needs (`analyse`): each learner's
  in-distribution KL from Bayes (the bar every learner must clear), pairwise
  Jensen–Shannon divergences of next-token distributions per prompt set and
  per prompt, and rule adherence with Wilson intervals;
- sorts each sampled completion (the ``completions`` analysis) by the rules
  every aⁿbⁿ sequence obeys (`classify_anbn`): ``equal_count`` (as many a as
  b in prompt plus completion when EOS comes) and ``no_a_after_b`` (the
  completion writes no a once a b has been seen), both, neither, or
  ``no_eos`` (the maximum length, or the learner's context, came first);
- writes the report section (`report_section`, `answer`) and two figures
  (`adherence_figure`, `disagreement_figure`).

All of it runs as the ``anbn`` analysis (`AnbnAnalysis`, ``[analysis.anbn]``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from pydantic import Field

from comparisons.analyses import Analysis, AnalysisSettings, register_analysis
from comparisons.figures import plt, save_figure
from priors.anbn import A, B, EOS
from toolkit import metrics as tm
from toolkit.bayes import bayes_predictor
from toolkit.completions import NOT_SAMPLED, completion_strings, prompts_of
from toolkit.dims import (
    COMPLETION,
    EPISODE,
    OUTCOME,
    PAIR,
    POSITION,
    PREDICTOR,
    PROMPT,
    PROMPT_CLASS,
    PROMPT_SCENARIO,
    RULE,
    SCENARIO,
)
from toolkit.episodes import Episodes
from toolkit.errors import ConfigError, DataError
from toolkit.scenario import Scenario
from toolkit.summaries import evaluation_mask

ZERO = "zero_probability"
PREFIXES = "in_distribution_prefixes"
LOW = "low_probability"
CONFLICT = "rules_conflict"  # zero-probability prompts with more b than a: no completion obeys both rules
KL_BAR = 0.01  # nats per token: the in-distribution bar every learner must clear
RULES = ("both", "equal_count", "no_a_after_b", "neither", "no_eos")
EXAMPLE_PROMPTS = ("ba", "abab", "aabab", "abb", "bba", "aab", "aaaaaaaaaa")


# --------------------------------------------------------------------------- prompt sets


def prompt_scenarios(prior, bayes, *, max_prompt_length: int = 8, min_prior_prob: float = 1e-6) -> list[Scenario]:
    """The three prompt sets of the aⁿbⁿ question, as prompt scenarios.

    Parameters
    ----------
    prior : Prior
        The aⁿbⁿ prior (outcomes ``a``, ``b`` and an end token).
    bayes : Predictor
        Its Bayes reference: the prompts' prior probabilities come from its ``prior_log_prob``.
    max_prompt_length : int
        Longest string of the zero-probability and in-distribution-prefix sets.
    min_prior_prob : float
        The long aⁿ prefixes (longer than ``max_prompt_length``) run down to this prior probability.

    Returns
    -------
    list of Scenario
        ``zero_probability``, ``in_distribution_prefixes``, ``low_probability``
        (the last omitted when no longer aⁿ reaches ``min_prior_prob``).
    """
    if max_prompt_length < 1:
        raise ConfigError(f"anbn.max_prompt_length must be >= 1, got {max_prompt_length}")
    if not 0 < min_prior_prob < 1:
        raise ConfigError(f"anbn.min_prior_prob must lie in (0, 1), got {min_prior_prob}")
    a, b = prior.outcomes[0], prior.outcomes[1]
    strings = ["".join(s) for n in range(1, max_prompt_length + 1) for s in itertools.product((a, b), repeat=n)]
    log_p = prompt_log_prob(prior, bayes, strings)
    zero = [s for s, lp in zip(strings, log_p) if np.isneginf(lp)]
    positive = [s for s, lp in zip(strings, log_p) if np.isfinite(lp)]
    longest = int(prior.metadata.get("max_n", 2 * max_prompt_length))
    long_a = [a * n for n in range(max_prompt_length + 1, longest + 1)]
    long_p = prompt_log_prob(prior, bayes, long_a) if long_a else np.array([])
    low = [s for s, lp in zip(long_a, long_p) if lp >= np.log(min_prior_prob)]
    out = [
        Scenario.from_prompts(
            ZERO, zero, prior.outcomes,
            description=f"the {len(zero)} strings over {{{a}, {b}}} of length 1–{max_prompt_length} that the prior "
            "gives probability zero: Bayes is undefined after them",
        ),
        Scenario.from_prompts(
            PREFIXES, positive, prior.outcomes,
            description=f"the {len(positive)} strings of length 1–{max_prompt_length} that begin some aⁿbⁿ",
        ),
    ]
    if low:
        lowest = float(np.exp(long_p[len(low) - 1]))
        out.append(Scenario.from_prompts(
            LOW, low, prior.outcomes,
            description=f"aⁿ for n = {max_prompt_length + 1}–{max_prompt_length + len(low)}: in-distribution but "
            f"improbable, prior probability down to {lowest:.2g}",
        ))
    for scenario in out:
        scenario.params = {"prompt_set": scenario.name}
    return out


def prompt_log_prob(prior, bayes, prompts: Sequence[str]) -> np.ndarray:
    """log p_π(prompt) for each prompt (label strings), −inf where the prior cannot produce it."""
    episodes = Scenario.from_prompts("candidates", list(prompts), prior.outcomes).episodes(None, 0, 0)
    lengths = episodes.mask.sum(axis=1)
    prior_log_prob = bayes.predict(episodes)["prior_log_prob"].values  # (episode, position)
    return prior_log_prob[np.arange(len(prompts)), lengths - 1]


# --------------------------------------------------------------------------- rules of completions


def classify_anbn(
    prompts: Sequence[Sequence[int]] | Episodes,
    completions: np.ndarray,
    *,
    a: int = 0,
    b: int = 1,
    eos: int = 2,
) -> np.ndarray:
    """Which aⁿbⁿ rule each completion follows: an index into `RULES`.

    ``equal_count``: at EOS, prompt plus completion hold as many a as b.
    ``no_a_after_b``: the completion writes no a after a b (in the prompt or
    earlier in the completion). ``both`` and ``neither`` as they say;
    ``no_eos``: the completion ended without EOS (maximum length or context).

    Parameters
    ----------
    prompts : sequence of int sequences, or Episodes
        One prompt per row of ``completions``.
    completions : np.ndarray of int, shape (prompt, completion, completion_step)
        Generated tokens, `NOT_SAMPLED` (−1) after the end.
    a, b, eos : int
        The tokens of a, b and the end.

    Returns
    -------
    np.ndarray of int8, shape (prompt, completion)

    Examples
    --------
    >>> RULES[classify_anbn([[0, 0, 1, 0, 1]], np.array([[[1, 2]]]))[0, 0]]   # aabab + b EOS: 3 a, 3 b
    'both'
    >>> RULES[classify_anbn([[0, 0, 1, 0, 1]], np.array([[[1, 1, 1, 2]]]))[0, 0]]   # aabab + bbb EOS
    'no_a_after_b'
    """
    if isinstance(prompts, Episodes):
        prompts = prompts_of(prompts)
    completions = np.asarray(completions)
    if completions.ndim != 3 or completions.shape[0] != len(prompts):
        raise DataError(
            f"completions must have shape (prompt, completion, completion_step) with {len(prompts)} prompts, "
            f"got {completions.shape}"
        )
    prompt_a = np.array([np.sum(np.asarray(p) == a) for p in prompts])[:, None]  # (P, 1)
    prompt_b = np.array([np.sum(np.asarray(p) == b) for p in prompts])[:, None]
    ended = np.cumsum(completions == eos, axis=-1) > 0  # at or after the first EOS
    before_eos = (np.cumsum(completions == eos, axis=-1) - (completions == eos)) == 0
    has_eos = ended[..., -1]
    gen_a = (completions == a) & before_eos  # (P, C, S)
    gen_b = (completions == b) & before_eos
    equal = prompt_a + gen_a.sum(-1) == prompt_b + gen_b.sum(-1)
    b_before = (prompt_b[..., None] > 0) | ((np.cumsum(gen_b, axis=-1) - gen_b) > 0)  # a b precedes step s
    monotone = ~np.any(gen_a & b_before, axis=-1)
    code = np.select(
        [~has_eos, equal & monotone, equal, monotone],
        [RULES.index("no_eos"), RULES.index("both"), RULES.index("equal_count"), RULES.index("no_a_after_b")],
        default=RULES.index("neither"),
    )
    return code.astype(np.int8)


def rule_counts(rule: np.ndarray, axis) -> np.ndarray:
    """How many completions fall in each rule, ignoring `NOT_SAMPLED` cells.

    Parameters
    ----------
    rule : np.ndarray of int, any shape
        Indices into `RULES`, −1 where nothing was sampled.
    axis : int or tuple of int
        Axes counted over.

    Returns
    -------
    np.ndarray of int, shape ``rule`` without ``axis``, plus a last axis of len(RULES)
    """
    rule = np.asarray(rule)
    return np.stack([np.sum(rule == k, axis=axis) for k in range(len(RULES))], axis=-1)



def add_rules(ds: xr.Dataset, prompts: Mapping[str, Sequence[Sequence[int]]], *, a: int = A, b: int = B,
              eos: int = EOS) -> xr.Dataset:
    """``ds`` plus ``completion_rule`` (predictor, prompt_scenario, prompt, completion): each completion's rule.

    ``prompts`` maps each sampled prompt scenario to its prompts, in episode order. The rule is an
    index into the ``rule`` coordinate (`RULES`), `NOT_SAMPLED` (−1) where nothing was sampled.
    """
    tokens, length = ds["completion_tokens"].values, ds["completion_length"].values
    rule = np.full(length.shape, NOT_SAMPLED, np.int8)
    for s, scenario in enumerate(ds[PROMPT_SCENARIO].values):
        items = prompts[str(scenario)]
        for p in range(tokens.shape[0]):
            codes = classify_anbn(items, tokens[p, s, : len(items)], a=a, b=b, eos=eos)
            rule[p, s, : len(items)] = np.where(length[p, s, : len(items)] >= 0, codes, NOT_SAMPLED)
    out = ds.assign_coords({RULE: list(RULES)})
    out["completion_rule"] = ((PREDICTOR, PROMPT_SCENARIO, PROMPT, COMPLETION), rule)
    out["completion_rule"].attrs = {
        "long_name": "aⁿbⁿ rule the completion follows: an index into the rule coordinate",
        "flag_values": list(range(len(RULES))),
        "flag_meanings": " ".join(RULES),
        "fill": NOT_SAMPLED,
    }
    return out


# --------------------------------------------------------------------------- analysis


def learner_groups(ds: xr.Dataset) -> dict[str, str]:
    """Predictor name -> architecture group, from the ``architecture`` coordinate (learners only)."""
    if "architecture" not in ds.coords:
        return {}
    return {str(p): str(g) for p, g in zip(ds[PREDICTOR].values, ds["architecture"].values) if str(g)}


def prompt_cells(ds: xr.Dataset, scenarios: Sequence[str]) -> xr.Dataset:
    """Per prompt: the next-token log-probabilities, the prompt's length and its prior log-probability.

    Returns
    -------
    xr.Dataset
        ``next_log_prob (predictor, scenario, episode, outcome)``: the
        prediction right after the prompt; ``prompt_length``,
        ``prompt_log_prob`` (log p_π(prompt)) and ``exists`` (scenario, episode).
    """
    sub = ds.sel({SCENARIO: list(scenarios)})
    exists = sub["y"].notnull().any(POSITION)
    length = sub["mask"].sum(POSITION).where(exists, 0).astype(int)
    index = length.clip(max=sub.sizes[POSITION] - 1)
    next_lp = sub["log_prob"].isel({POSITION: index}).where(exists)
    # the position after the prompt is padding, so prior_log_prob there is still log p(prompt)
    log_p = sub["prior_log_prob"].isel({POSITION: index}).where(exists)
    return xr.Dataset({"next_log_prob": next_lp, "prompt_length": length, "prompt_log_prob": log_p, "exists": exists}).drop_vars(
        POSITION, errors="ignore"
    )


def learner_pairs(groups: Mapping[str, str]) -> list[tuple[str, str]]:
    """Every unordered pair of learners, in the order the learners are listed."""
    return list(itertools.combinations(list(groups), 2))


def pairwise_js(log_prob: xr.DataArray, groups: Mapping[str, str]) -> xr.DataArray:
    """Exact Jensen–Shannon divergence between every pair of learners, cell by cell.

    Parameters
    ----------
    log_prob : xr.DataArray, dims (predictor, ..., outcome)
    groups : mapping of learner name to architecture group

    Returns
    -------
    xr.DataArray, dims (pair, ...)
        Coordinates ``pair_first``, ``pair_second`` and ``same_architecture`` on ``pair``.
    """
    pairs = learner_pairs(groups)
    if not pairs:
        raise ConfigError("pairwise disagreement needs at least two learners")
    first = log_prob.sel({PREDICTOR: [p for p, _ in pairs]}).rename({PREDICTOR: PAIR}).drop_vars(PAIR)
    second = log_prob.sel({PREDICTOR: [q for _, q in pairs]}).rename({PREDICTOR: PAIR}).drop_vars(PAIR)
    drop = [c for c in first.coords if PAIR in first[c].dims]
    js = tm.xr_js_divergence(first.drop_vars(drop), second.drop_vars(drop))
    return js.assign_coords({
        PAIR: [f"{p} | {q}" for p, q in pairs],
        "pair_first": (PAIR, [p for p, _ in pairs]),
        "pair_second": (PAIR, [q for _, q in pairs]),
        "same_architecture": (PAIR, [groups[p] == groups[q] for p, q in pairs]),
    }).rename("js")


def _pooled_mean(values: xr.DataArray, dims) -> xr.DataArray:
    return tm.xr_cross_entropy(-values, [d for d in dims if d in values.dims])  # NaN-ignoring mean


def class_membership(cells: xr.Dataset, ds: xr.Dataset) -> xr.DataArray:
    """Which prompts (scenario, episode) belong to each prompt class: the prompt sets plus `CONFLICT`."""
    scenarios = [str(s) for s in cells[SCENARIO].values]
    classes = list(scenarios)
    members = [(cells[SCENARIO] == s) & cells["exists"] for s in scenarios]
    if ZERO in scenarios:
        y = ds["y"].sel({SCENARIO: scenarios}).where(ds["mask"].sel({SCENARIO: scenarios}))
        more_b = (y == B).sum(POSITION) > (y == A).sum(POSITION)
        classes.append(CONFLICT)
        members.append((cells[SCENARIO] == ZERO) & cells["exists"] & more_b)
    return xr.concat(members, dim=PROMPT_CLASS).assign_coords({PROMPT_CLASS: classes}).transpose(PROMPT_CLASS, SCENARIO, EPISODE)


def analyse(ds: xr.Dataset, *, groups: Mapping[str, str] | None = None, reference: str = "bayes") -> xr.Dataset:
    """The numbers of the aⁿbⁿ question, from a comparison Dataset with several learners.

    Parameters
    ----------
    ds : xr.Dataset
        The comparison Dataset: an in-distribution scenario, the prompt
        scenarios of `prompt_scenarios`, the Bayes reference, two or more
        learners and (optionally) ``completion_rule`` from their completions.
    groups : mapping of learner name to architecture group, optional
        Default: the ``architecture`` coordinate of ``ds``.
    reference : str
        The Bayes predictor.

    Returns
    -------
    xr.Dataset
        - ``kl_in_distribution`` (predictor): mean KL(bayes‖learner) per token
          over every cell of the in-distribution scenario (the bar: ≤ 0.01);
          ``kl_prefixes`` (predictor): the same over the in-distribution
          prefixes' next-token cells (each prefix weighted equally).
        - ``js_mean``, ``js_max`` (pair, scenario): Jensen–Shannon divergence
          between two learners' next-token distributions, mean and maximum
          over the scenario's prompts (every cell for sampled scenarios).
        - ``prompt_disagreement`` (scenario, episode): mean JS over all pairs
          at each prompt's next token; ``prompt_disagreement_same``,
          ``prompt_disagreement_cross``: over same- and cross-architecture
          pairs; ``prompt_log_prob``: log p_π(prompt).
        - with completions: ``rule_count`` (predictor, prompt_class, rule),
          ``rule_rate``, ``rule_rate_low``, ``rule_rate_high`` (Wilson 95 %),
          and ``equal_count_rate*``, ``no_a_after_b_rate*`` (both included).
    """
    groups = dict(groups if groups is not None else learner_groups(ds))
    if len(groups) < 2:
        raise ConfigError("the aⁿbⁿ analysis needs at least two learners (a [learners.NAME] table with seeds)")
    learners = list(groups)
    kinds = ds["scenario_kind"].to_series() if "scenario_kind" in ds.coords else None
    sampled = [str(s) for s, k in kinds.items() if k != "prompts"] if kinds is not None else []
    prompt_sets = [str(s) for s, k in kinds.items() if k == "prompts"] if kinds is not None else []
    out = xr.Dataset()
    valid = evaluation_mask(ds)
    lp = ds["log_prob"]

    # the bar: KL(bayes || learner) per token where the context has positive probability
    in_dist = [s for s in sampled if ds["scenario_kind"].sel({SCENARIO: s}) == "in_distribution"]
    if reference in ds[PREDICTOR].values and in_dist:
        ref = lp.sel({PREDICTOR: reference}, drop=True)
        kl = tm.xr_kl_divergence(ref, lp.sel({PREDICTOR: learners})).where(valid & ds["bayes_defined"])
        out["kl_in_distribution"] = _pooled_mean(kl.sel({SCENARIO: in_dist}), [SCENARIO, EPISODE, POSITION])
        out["kl_in_distribution"].attrs = {"long_name": "mean KL(bayes || learner) per token, in-distribution episodes",
                                           "units": "nats", "bar": KL_BAR}
    cells = prompt_cells(ds, prompt_sets) if prompt_sets else None
    if reference in ds[PREDICTOR].values and cells is not None and PREFIXES in prompt_sets:
        nl = cells["next_log_prob"].sel({SCENARIO: PREFIXES})
        kl = tm.xr_kl_divergence(nl.sel({PREDICTOR: reference}, drop=True), nl.sel({PREDICTOR: learners}))
        out["kl_prefixes"] = _pooled_mean(kl, [EPISODE])
        out["kl_prefixes"].attrs = {"long_name": "mean KL(bayes || learner) at the next token of each in-distribution prefix",
                                    "units": "nats"}

    # disagreement between learners: the sampled scenarios' every cell, the prompts' next token
    parts = []
    for s in sampled:
        js = pairwise_js(lp.sel({SCENARIO: s}, drop=True).sel({PREDICTOR: learners}), groups).where(valid.sel({SCENARIO: s}, drop=True))
        parts.append(xr.Dataset({"js_mean": _pooled_mean(js, [EPISODE, POSITION]), "js_max": js.max([EPISODE, POSITION])}))
    prompt_js = pairwise_js(cells["next_log_prob"].sel({PREDICTOR: learners}), groups) if cells is not None else None
    for s in prompt_sets:
        one = prompt_js.sel({SCENARIO: s}, drop=True)
        parts.append(xr.Dataset({"js_mean": _pooled_mean(one, [EPISODE]), "js_max": one.max(EPISODE)}))
    if parts:
        stacked = xr.concat(parts, dim=SCENARIO).assign_coords({SCENARIO: sampled + prompt_sets})
        out["js_mean"], out["js_max"] = stacked["js_mean"], stacked["js_max"]
        out["js_mean"].attrs = {"long_name": "mean Jensen-Shannon divergence of two learners' next-token distributions",
                                "units": "nats", "exact": "over the outcomes, natural log, at most log 2"}
    if prompt_js is not None:
        same = prompt_js["same_architecture"]
        nan = prompt_js.isel({PAIR: 0}, drop=True) * np.nan
        out["prompt_disagreement"] = prompt_js.mean(PAIR)
        out["prompt_disagreement_same"] = prompt_js.where(same).mean(PAIR) if bool(same.any()) else nan
        out["prompt_disagreement_cross"] = prompt_js.where(~same).mean(PAIR) if bool((~same).any()) else nan
        for name in ("prompt_disagreement", "prompt_disagreement_same", "prompt_disagreement_cross"):
            out[name].attrs = {"long_name": "mean Jensen-Shannon divergence between learners at the prompt's next token",
                               "units": "nats"}
        out["prompt_log_prob"] = cells["prompt_log_prob"]
        out["prompt_length"] = cells["prompt_length"].where(cells["exists"], -1)

    # rule adherence of the sampled completions
    if "completion_rule" in ds and cells is not None:
        members = class_membership(cells, ds)
        # completions sit on their own prompt dims; as (scenario, episode) they line up with the prompts
        rule = ds["completion_rule"].sel({PREDICTOR: learners}).rename({PROMPT_SCENARIO: SCENARIO, PROMPT: EPISODE})
        rule, members = xr.align(rule, members, join="inner")
        counts = []
        for k in range(len(RULES)):
            hit = (rule == k) & members
            counts.append(hit.sum([SCENARIO, EPISODE, COMPLETION]))
        count = xr.concat(counts, dim="rule").assign_coords(rule=list(RULES)).transpose(PREDICTOR, PROMPT_CLASS, "rule")
        out["rule_count"] = count
        _add_rates(out, count)
    out = out.assign_coords(architecture=(PREDICTOR, [groups.get(str(p), "") for p in out[PREDICTOR].values]))
    out.attrs = {"kl_bar": KL_BAR, "reference": reference, "learners": learners}
    return out


def _add_rates(out: xr.Dataset, count: xr.DataArray, prefix: str = "") -> None:
    """Rates of each rule, and of each rule counting ``both``, with Wilson 95 % intervals."""
    trials = count.sum("rule")
    interval = tm.xr_wilson_interval(count, trials)
    out[f"{prefix}rule_rate"], out[f"{prefix}rule_rate_low"], out[f"{prefix}rule_rate_high"] = (
        interval["estimate"], interval["low"], interval["high"]
    )
    for name in ("equal_count", "no_a_after_b"):
        hits = count.sel(rule=name) + count.sel(rule="both")
        iv = tm.xr_wilson_interval(hits, trials)
        out[f"{prefix}{name}_rate"], out[f"{prefix}{name}_rate_low"], out[f"{prefix}{name}_rate_high"] = (
            iv["estimate"], iv["low"], iv["high"]
        )


def by_architecture(analysis: xr.Dataset) -> xr.Dataset:
    """Rule counts and rates pooled over the seeds of each architecture (dim ``architecture``)."""
    count = analysis["rule_count"].where(analysis["architecture"] != "", drop=True).groupby("architecture").sum()
    order = list(dict.fromkeys(str(a) for a in analysis["architecture"].values if str(a)))  # as configured
    count = count.sel(architecture=order)
    out = xr.Dataset({"rule_count": count})
    _add_rates(out, count)
    return out


# --------------------------------------------------------------------------- report


def _f(value, digits: int = 3) -> str:
    value = float(value)
    return "–" if np.isnan(value) else f"{value:.{digits}f}"


def _pct(rate, low, high) -> str:
    rate, low, high = (float(v) for v in (rate, low, high))
    if np.isnan(rate):
        return "–"
    return f"{100 * rate:.1f} % [{100 * low:.1f}, {100 * high:.1f}]"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def _js_summary(analysis: xr.Dataset, scenario: str) -> tuple[float, float, float, float]:
    m = analysis["js_mean"].sel({SCENARIO: scenario})
    same = analysis["same_architecture"]
    pick = lambda sel: float(m.where(sel).mean()) if bool(sel.any()) else np.nan  # noqa: E731
    return float(m.mean()), pick(same), pick(~same), float(analysis["js_max"].sel({SCENARIO: scenario}).max())


def favoured_rule(rates: xr.Dataset, architecture: str, prompt_class: str) -> str:
    """In words: which rule the architecture's completions follow more often in ``prompt_class``."""
    r = rates.sel(architecture=architecture, prompt_class=prompt_class)
    eq, mono = float(r["rule_rate"].sel(rule="equal_count")), float(r["rule_rate"].sel(rule="no_a_after_b"))
    eq_low, eq_high = float(r["rule_rate_low"].sel(rule="equal_count")), float(r["rule_rate_high"].sel(rule="equal_count"))
    mono_low, mono_high = float(r["rule_rate_low"].sel(rule="no_a_after_b")), float(r["rule_rate_high"].sel(rule="no_a_after_b"))
    if np.isnan(eq) or np.isnan(mono):
        return "no completions"
    if eq_low > mono_high:
        return f"equal_count ({100 * eq:.0f} % vs {100 * mono:.0f} %)"
    if mono_low > eq_high:
        return f"no_a_after_b ({100 * mono:.0f} % vs {100 * eq:.0f} %)"
    return f"neither clearly ({100 * eq:.0f} % vs {100 * mono:.0f} %, intervals overlap)"


def answer(analysis: xr.Dataset) -> list[str]:
    """The aⁿbⁿ question answered in a few lines of numbers."""
    lines = []
    learners = list(analysis.attrs.get("learners", []))
    if "kl_in_distribution" in analysis:
        kl = analysis["kl_in_distribution"].sel({PREDICTOR: learners})
        passed = int((kl <= KL_BAR).sum())
        lines.append(
            f"**In-distribution bar**: {passed} of {len(learners)} learners reach mean KL(bayes‖learner) ≤ {KL_BAR} "
            f"nats per token on in-distribution episodes (range {_f(kl.min(), 4)}–{_f(kl.max(), 4)})"
            + ("." if passed == len(learners) else f"; short of it: {', '.join(str(p) for p in kl[PREDICTOR].values[(kl > KL_BAR).values])}.")
        )
    scenarios = [str(s) for s in analysis[SCENARIO].values]
    if ZERO in scenarios and PREFIXES in scenarios:
        z, p = _js_summary(analysis, ZERO), _js_summary(analysis, PREFIXES)
        ratio = z[0] / p[0] if p[0] > 0 else np.inf
        lines.append(
            f"**Disagreement**: on zero-probability prompts the learners' next-token distributions differ by a mean "
            f"Jensen–Shannon divergence of {_f(z[0], 4)} nats between two learners (same architecture {_f(z[1], 4)}, "
            f"different architectures {_f(z[2], 4)}; largest {_f(z[3])}, the maximum possible is log 2 = 0.693), "
            f"against {_f(p[0], 5)} on the in-distribution prefixes of the same lengths ({ratio:.0f}× more)."
        )
    if LOW in scenarios:
        low = _js_summary(analysis, LOW)
        lines.append(f"**Low-probability prompts** (long aⁿ): mean pairwise JS {_f(low[0], 4)} nats (largest {_f(low[3])}).")
    if "prompt_disagreement" in analysis:
        lines.append("**Disagreement against prior probability**: " + _trend(analysis))
    if "rule_count" in analysis:
        rates = by_architecture(analysis)
        classes = [str(c) for c in rates[PROMPT_CLASS].values]
        focus = CONFLICT if CONFLICT in classes else ZERO
        parts = [f"{a} favours {favoured_rule(rates, a, focus)}" for a in rates["architecture"].values]
        eq = rates["equal_count_rate"].sel({PROMPT_CLASS: ZERO}) if ZERO in classes else None
        lines.append(
            "**Rules** on zero-probability prompts where they conflict (more b than a): " + "; ".join(parts) + "."
            + ("" if eq is None else " Over all zero-probability prompts, completions with as many a as b: "
               + ", ".join(f"{a} {100 * float(eq.sel(architecture=a)):.0f} %" for a in rates["architecture"].values) + ".")
        )
    return lines


def _bins(log10_p: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Prompt groups by prior probability: zero, then decades."""
    out = [("0 (zero probability)", np.isneginf(log10_p))]
    edges = [(-np.inf, -4), (-4, -2), (-2, -1), (-1, 0.01)]
    labels = ["< 1e-4", "1e-4 – 1e-2", "1e-2 – 0.1", "≥ 0.1"]
    finite = np.isfinite(log10_p)
    for (lo, hi), label in zip(edges, labels):
        out.append((label, finite & (log10_p > lo) & (log10_p <= hi) if lo == -np.inf else finite & (log10_p >= lo) & (log10_p < hi)))
    return out


def _trend(analysis: xr.Dataset) -> str:
    d = analysis["prompt_disagreement"].values.ravel()
    lp = analysis["prompt_log_prob"].values.ravel() / np.log(10)
    keep = ~np.isnan(d) & ~np.isnan(lp)
    d, lp = d[keep], lp[keep]
    parts = []
    for label, sel in _bins(lp):
        if sel.any():
            parts.append(f"p {label}: {_f(np.mean(d[sel]), 4)} nats ({int(sel.sum())} prompts)")
    return "mean pairwise JS at the prompt's next token, by the prompt's prior probability p: " + "; ".join(parts) + "."


def report_section(ds: xr.Dataset, analysis: xr.Dataset, *, figures: Mapping[str, str] | None = None) -> str:
    """The report's aⁿbⁿ section (Markdown)."""
    learners = list(analysis.attrs.get("learners", []))
    out = ["## aⁿbⁿ: zero-probability prompts and the disagreement of equally good learners", ""]
    out += [
        "Every aⁿbⁿ sequence obeys both \"as many b as a\" (`equal_count`) and \"no a after a b\" "
        "(`no_a_after_b`), so after a prompt the prior cannot produce, the training loss does not say which "
        "rule to extrapolate. Learners of several architectures and seeds are trained to the same "
        f"in-distribution bar (mean KL(bayes‖learner) ≤ {KL_BAR} nats per token); then their next-token "
        "distributions and sampled completions are compared on prompts of zero, small and ordinary prior probability.",
        "",
        "### Answer",
        "",
    ]
    out += [f"- {line}" for line in answer(analysis)]
    out += ["", "### Learners and the in-distribution bar", ""]
    out += _learner_table(ds, analysis, learners)
    out += ["", "### Disagreement between learners (Jensen–Shannon divergence, nats)", "",
            "Exact JS over the three outcomes between two learners' next-token distributions: at the token after each "
            "prompt for prompt sets, at every position of every episode for sampled scenarios; averaged over those "
            "cells and over learner pairs.", ""]
    rows = []
    for s in analysis[SCENARIO].values:
        mean, same, cross, most = _js_summary(analysis, str(s))
        n = None
        if "prompt_length" in analysis and bool(analysis["prompt_length"].sel({SCENARIO: s}).notnull().any()):
            n = int((analysis["prompt_length"].sel({SCENARIO: s}) >= 0).sum())
        rows.append([str(s), "–" if n is None else str(n), _f(mean, 5), _f(same, 5), _f(cross, 5), _f(most, 4)])
    out += _table(["scenario", "prompts", "all pairs", "same architecture", "different architectures", "largest"], rows)
    if "prompt_disagreement" in analysis:
        out += ["", "By the prompt's prior probability p (mean pairwise JS at the next token):", ""]
        d = analysis["prompt_disagreement"].values.ravel()
        dc = analysis["prompt_disagreement_cross"].values.ravel()
        lp = analysis["prompt_log_prob"].values.ravel() / np.log(10)
        keep = ~np.isnan(d) & ~np.isnan(lp)
        rows = []
        for label, sel in _bins(lp[keep]):
            if sel.any():
                rows.append([label, str(int(sel.sum())), _f(np.mean(d[keep][sel]), 5), _f(np.nanmean(dc[keep][sel]), 5),
                             _f(np.max(d[keep][sel]), 4)])
        out += _table(["prior probability p", "prompts", "all pairs", "different architectures", "largest"], rows)
    if "rule_count" in analysis:
        out += _rule_tables(analysis)
    if "completion_tokens" in ds:
        out += _example_completions(ds, learners)
    if figures:
        out += ["", "### Figures", ""] + [f"![{name}]({path})" for name, path in figures.items()]
    out.append("")
    return "\n".join(out)


def _learner_table(ds: xr.Dataset, analysis: xr.Dataset, learners: list[str]) -> list[str]:
    import json

    described = ds.attrs.get("predictors", {})
    described = json.loads(described) if isinstance(described, str) else dict(described)
    rows = []
    for name in learners:
        d = described.get(name, {}) if isinstance(described.get(name), dict) else {}
        kl = float(analysis["kl_in_distribution"].sel({PREDICTOR: name})) if "kl_in_distribution" in analysis else np.nan
        klp = float(analysis["kl_prefixes"].sel({PREDICTOR: name})) if "kl_prefixes" in analysis else np.nan
        rows.append([
            name, str(analysis["architecture"].sel({PREDICTOR: name}).values), str(d.get("seed", "–")),
            str(d.get("architecture", "–")), str(d.get("num_parameters", "–")), str(d.get("steps", "–")),
            _f(d.get("wall_time_s", np.nan), 0), _f(kl, 5), _f(klp, 4), "yes" if kl <= KL_BAR else "**no**",
        ])
    return _table(["learner", "group", "seed", "network", "parameters", "steps", "training s",
                   "KL(bayes‖·) per token", "KL at prefixes' next token", f"≤ {KL_BAR}"], rows)


def _rule_tables(analysis: xr.Dataset) -> list[str]:
    rates = by_architecture(analysis)
    classes = [str(c) for c in analysis[PROMPT_CLASS].values]
    out = ["", "### Rules followed by the sampled completions", "",
           "Share of completions (all prompts of the class × all samples), Wilson 95 % intervals. `equal_count`: as many a "
           "as b at EOS; `no_a_after_b`: no a written after a b; each rate counts completions obeying both. "
           f"`{CONFLICT}`: the zero-probability prompts with more b than a, where no completion can obey both rules.", ""]
    for label, data, dim in (("architecture (seeds pooled)", rates, "architecture"), ("learner", analysis, PREDICTOR)):
        out += [f"Per {label}:", ""]
        rows = []
        for g in data[dim].values:
            for c in classes:
                r = data.sel({dim: g, PROMPT_CLASS: c})
                n = int(r["rule_count"].sum())
                if n == 0:
                    continue
                share = lambda k: _f(100 * float(r["rule_rate"].sel(rule=k)), 1)  # noqa: E731
                rows.append([str(g), c, str(n),
                             _pct(r["equal_count_rate"], r["equal_count_rate_low"], r["equal_count_rate_high"]),
                             _pct(r["no_a_after_b_rate"], r["no_a_after_b_rate_low"], r["no_a_after_b_rate_high"]),
                             share("both"), share("equal_count"), share("no_a_after_b"), share("neither"), share("no_eos")])
        out += _table([label.split(" ")[0], "prompt class", "completions", "equal_count", "no_a_after_b",
                       "% both", "% only equal_count", "% only no_a_after_b", "% neither", "% no EOS"], rows)
        out.append("")
    return out


def _example_completions(ds: xr.Dataset, learners: list[str], *, top: int = 2) -> list[str]:
    """The most frequent completions of a few named prompts, per learner."""
    outcomes = [str(o) for o in ds[OUTCOME].values]
    eos = outcomes.index("<eos>") if "<eos>" in outcomes else None
    rows = []
    for text in EXAMPLE_PROMPTS:
        for s in ds[PROMPT_SCENARIO].values:
            prompts = [str(t) for t in ds["prompt_text"].sel({PROMPT_SCENARIO: s}).values]
            if text not in prompts:
                continue
            e = prompts.index(text)
            row = [f"`{text}`", str(s)]
            for name in learners:
                tokens = ds["completion_tokens"].sel({PREDICTOR: name, PROMPT_SCENARIO: s, PROMPT: e}).values
                strings = completion_strings(tokens, outcomes, eos=eos)
                values, counts = np.unique(strings, return_counts=True)
                order = np.argsort(-counts)[:top]
                row.append(", ".join(f"`{values[i] or '(none)'}` {100 * counts[i] / counts.sum():.0f}%" for i in order))
            rows.append(row)
            break
    if not rows:
        return []
    return ["### Example completions", "",
            "Most frequent continuations of a few prompts (· is EOS; a completion without · hit the length limit).", "",
            *_table(["prompt", "set"] + list(learners), rows), ""]


# --------------------------------------------------------------------------- figures


def adherence_figure(analysis: xr.Dataset, path: Path) -> Path:
    """Share of completions per rule, per learner (bars) and per architecture (Wilson 95 % intervals)."""

    rates = by_architecture(analysis)
    classes = [c for c in (ZERO, CONFLICT, LOW, PREFIXES) if c in analysis[PROMPT_CLASS].values]
    learners = list(analysis.attrs.get("learners", []))
    colors = {"both": "tab:green", "equal_count": "tab:blue", "no_a_after_b": "tab:orange", "neither": "tab:red",
              "no_eos": "tab:gray"}
    fig, axes = plt.subplots(2, len(classes), figsize=(3.6 * len(classes) + 1, 6.6), squeeze=False)
    for j, c in enumerate(classes):
        ax = axes[0, j]
        bottom = np.zeros(len(learners))
        for rule in RULES:
            v = np.nan_to_num(analysis["rule_rate"].sel({PREDICTOR: learners, PROMPT_CLASS: c, "rule": rule}).values)
            ax.bar(np.arange(len(learners)), v, bottom=bottom, color=colors[rule], label=rule)
            bottom += v
        ax.set_xticks(np.arange(len(learners)), learners, rotation=70, fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_title(c, fontsize=10)
        ax = axes[1, j]
        archs = list(rates["architecture"].values)
        for k, (name, color) in enumerate((("equal_count", "tab:blue"), ("no_a_after_b", "tab:orange"))):
            r = rates.sel({PROMPT_CLASS: c})
            est, low, high = (r[f"{name}_rate{s}"].values for s in ("", "_low", "_high"))
            x = np.arange(len(archs)) + (k - 0.5) * 0.25
            ax.errorbar(x, est, yerr=[est - low, high - est], fmt="o", color=color, capsize=3,
                        label=f"obeys {name}")
        ax.set_xticks(np.arange(len(archs)), archs, rotation=30, fontsize=8)
        ax.set_ylim(-0.03, 1.03)
    axes[0, 0].set_ylabel("share of completions")
    axes[1, 0].set_ylabel("rule adherence (Wilson 95 %)")
    axes[0, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    axes[1, -1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle("Which rule do the completions follow? (top: per learner; bottom: per architecture, seeds pooled)")
    fig.tight_layout()
    return save_figure(fig, path)


def disagreement_figure(analysis: xr.Dataset, path: Path) -> Path:
    """Mean pairwise JS at each prompt's next token against the prompt's log prior probability."""

    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    lp = analysis["prompt_log_prob"] / np.log(10)
    finite_min = float(lp.where(np.isfinite(lp)).min()) if bool(np.isfinite(lp).any()) else 0.0
    zero_x = np.floor(finite_min) - 1.5
    rng = np.random.default_rng(0)  # jitter only
    colors = {ZERO: "tab:red", PREFIXES: "tab:blue", LOW: "tab:purple"}
    for s in analysis[SCENARIO].values:
        if s not in lp[SCENARIO].values:
            continue
        x_all = lp.sel({SCENARIO: s}).values
        jitter = rng.uniform(-0.4, 0.4, x_all.shape)
        for which, filled in (("prompt_disagreement_cross", True), ("prompt_disagreement_same", False)):
            if which not in analysis:
                continue
            d = analysis[which].sel({SCENARIO: s}).values
            keep = ~np.isnan(d) & ~np.isnan(x_all)
            if not keep.any():
                continue
            x = np.where(np.isneginf(x_all), zero_x + jitter, x_all)[keep]
            color = colors.get(str(s), "tab:gray")
            ax.plot(x, d[keep], "o", ms=3.5, alpha=0.6, color=color, mfc=color if filled else "none",
                    label=f"{s}: {'different' if filled else 'same'} architecture")
    ax.axvline(zero_x + 0.75, color="gray", lw=0.8, ls=":")
    ticks = list(range(int(np.floor(finite_min)), 1))
    ax.set_xticks([zero_x] + ticks, ["p = 0"] + [f"1e{t}" for t in ticks], fontsize=8)
    ax.set_xlabel("prior probability of the prompt, p_π(prompt)")
    ax.set_ylabel("mean pairwise JS between learners (nats)")
    ax.set_yscale("symlog", linthresh=1e-4)
    ax.set_ylim(0, np.log(2) * 1.1)
    ax.set_title("Disagreement of the learners' next-token distributions after a prompt", fontsize=10)
    ax.legend(fontsize=6.5, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.16))
    return save_figure(fig, path)


# --------------------------------------------------------------------------- the analysis


@register_analysis("anbn")
class AnbnAnalysis(Analysis):
    """The aⁿbⁿ prompt sets, the learners' disagreement on them and the rules their completions follow."""

    after = ("completions",)  # classifies the completions that analysis samples

    class Settings(AnalysisSettings):
        max_prompt_length: int = Field(8, gt=0)  # zero-probability strings and in-distribution prefixes up to this length
        min_prior_prob: float = Field(1e-6, gt=0, lt=1)  # long aⁿ prompts down to this prior probability

    def __init__(self, settings=None):
        super().__init__(settings)
        self.result: xr.Dataset | None = None  # `analyse`'s Dataset, once the metrics hook ran

    def check(self, plan):
        if plan.prior.eos is None or plan.prior.num_outcomes != 3:
            raise ConfigError(f"the aⁿbⁿ analysis needs the anbn prior (a, b and an end token), not {plan.prior.name!r}")
        if len(plan.learners) < 2:
            raise ConfigError("the aⁿbⁿ analysis compares learners: it needs at least two ([learners.NAME] tables "
                              "with seeds)")

    def scenarios(self, plan):
        return prompt_scenarios(plan.prior, bayes_predictor(plan.prior), max_prompt_length=self.settings.max_prompt_length,
                                min_prior_prob=self.settings.min_prior_prob)

    def comparison(self, ds, run):
        if not run.plan.has_analysis("completions"):
            return ds
        return add_rules(ds, {s.name: s.prompts for s in run.plan.scenarios if s.kind == "prompts"})

    def metrics(self, ds, metrics, run):
        self.result = analyse(ds, groups=run.plan.groups)
        # learners only in the analysis: align to the metrics' predictors and scenarios, keeping their order
        aligned = self.result.reindex({PREDICTOR: metrics[PREDICTOR], SCENARIO: metrics[SCENARIO]})
        aligned = aligned.assign_coords(architecture=metrics["architecture"])
        merged = xr.merge([metrics, aligned], join="left", compat="override", combine_attrs="drop")
        merged.attrs = {**metrics.attrs, **self.result.attrs}
        return merged

    def figures(self, ds, metrics, run, folder):
        figures = {}
        if "rule_count" in self.result:  # completions were sampled
            figures["rule adherence per architecture"] = "figures/adherence.png"
            adherence_figure(self.result, folder / "adherence.png")
        figures["disagreement against prior probability"] = "figures/disagreement.png"
        disagreement_figure(self.result, folder / "disagreement.png")
        return figures

    def report_section(self, ds, metrics, run):
        return report_section(ds, self.result)

    def answer(self, ds, metrics, run):
        return answer(self.result)


__all__ = [
    "AnbnAnalysis",
    "RULES",
    "classify_anbn",
    "rule_counts",
    "add_rules",
    "prompt_scenarios",
    "prompt_log_prob",
    "analyse",
    "by_architecture",
    "pairwise_js",
    "prompt_cells",
    "answer",
    "report_section",
    "adherence_figure",
    "disagreement_figure",
    "KL_BAR",
]
