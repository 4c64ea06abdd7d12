"""Sampled completions of prompts.

Two autoregressive models that define the same distribution over sequences can
still complete a prompt of probability zero in opposite ways (Huszár 2023,
"Autoregressive models, zero probability prompts"): the next-token
distributions at one position say how much they disagree, sampled completions
say what each one does with it.

`sample_completions` draws ``num_completions`` continuations of every prompt
from any token `Predictor` at a temperature, up to an end token or a maximum
length. Completions of one prompt share their prefixes, so each step runs the
predictor once per distinct sequence, not once per completion: a confident
learner costs a few forward passes per prompt whatever the number of samples.

What a completion means is the experiment's business: the aⁿbⁿ analysis
(``comparisons/analyses/anbn.py``) sorts them by the rules its grammar obeys.

Results join the comparison Dataset (`add_completions`) with the dims
``prompt_scenario`` and ``prompt`` (the prompt's scenario and episode),
``completion`` (the sample index) and ``completion_step`` (the generated
token's index).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

from .dims import COMPLETION, COMPLETION_STEP, OUTCOME, PREDICTOR, PROMPT, PROMPT_SCENARIO, SCENARIO
from .episodes import Episodes
from .predictive import Predictor
from .errors import ConfigError, DataError

NOT_SAMPLED = -1  # fill of completion_tokens after the end, and of every variable where nothing was sampled


def prompt_text(tokens: Sequence[int], outcomes: Sequence[str] | None = None) -> str:
    """A prompt as its labels: ``"aabab"`` for single-character labels, else space-separated."""
    if outcomes is None:
        return " ".join(str(int(t)) for t in tokens)
    labels = [str(outcomes[int(t)]) for t in tokens]
    return ("" if all(len(label) == 1 for label in labels) else " ").join(labels)


def prompts_of(episodes: Episodes) -> list[np.ndarray]:
    """The prompt of each episode: its tokens where ``mask`` is True (all of ``y`` without a mask).

    Prompt scenarios (`Scenario.from_prompts`) left-align each prompt and mask the rest.
    """
    if episodes.mask is None:
        return [row.astype(np.int64) for row in episodes.y]
    return [row[m].astype(np.int64) for row, m in zip(episodes.y, episodes.mask)]


def check_prompt_lengths(
    prompts: Sequence[Sequence[int]],
    context: int | None,
    *,
    who: str,
    where: str = "",
    outcomes: Sequence[str] | None = None,
) -> None:
    """Raise `DataError` naming the first prompt whose next token lies beyond ``context`` positions.

    A prompt of n tokens asks for the prediction at position n + 1, so it needs a context of n + 1.
    """
    if context is None:
        return
    for i, prompt in enumerate(prompts):
        if len(prompt) + 1 > context:
            text = prompt_text(prompt, outcomes)
            shown = text if len(text) <= 60 else text[:57] + "..."
            raise DataError(
                f"prompt {shown!r} ({len(prompt)} tokens, {where + ', ' if where else ''}prompt {i}) is too long "
                f"for {who}, whose context holds {context} positions: predicting the token after it needs "
                f"{len(prompt) + 1}; shorten the prompt or train with a length of at least {len(prompt) + 1}"
            )


def _next_token_log_prob(predictor: Predictor, y: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """log p(y_{n+1} = v | y_1..y_n) for each row, n = ``lengths``: shape (row, outcome)."""
    mask = np.arange(y.shape[1])[None, :] < lengths[:, None]
    log_prob = predictor.token_log_prob(y, mask)  # (row, position, outcome)
    return np.asarray(log_prob, dtype=np.float64)[np.arange(len(y)), lengths]


def sample_completions(
    predictor: Any,
    prompts: Sequence[Sequence[int]] | Episodes,
    *,
    num_completions: int,
    max_new_tokens: int,
    rng: np.random.Generator,
    eos: int | None = None,
    temperature: float = 1.0,
    context: int | None = None,
    outcomes: Sequence[str] | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Sample continuations of every prompt, token by token, from ``predictor``'s next-token distributions.

    Parameters
    ----------
    predictor : Predictor
        A token predictor; its ``token_log_prob`` gives the next-token distributions (a learner's
        without building a Dataset).
    prompts : sequence of int sequences, or Episodes
        The prompts; for `Episodes`, each episode's tokens where ``mask`` is True.
    num_completions : int
        Samples per prompt.
    max_new_tokens : int
        Most tokens generated per completion (EOS included).
    rng : np.random.Generator
        Source of the samples; a fixed state gives fixed completions.
    eos : int, optional
        The end token: a completion stops after it.
    temperature : float
        Log-probabilities are divided by it before sampling; 1 samples the predictor's own distribution.
    context : int, optional
        Longest sequence the predictor reads; default its ``context``. A completion
        that reaches it stops there (and has no EOS).
    outcomes : sequence of str, optional
        Labels, to name a prompt in errors.
    name : str, optional
        The predictor's name in errors.

    Returns
    -------
    np.ndarray of int8, shape (prompt, completion, completion_step)
        ``completion_step`` has ``max_new_tokens`` entries; entries after a
        completion's end are `NOT_SAMPLED` (−1).

    Raises
    ------
    DataError
        A prompt too long for the context (naming it), or a predictor without
        a distribution (NaN) after a sampled prefix.
    ConfigError
        No prompts, or a non-positive ``num_completions``, ``max_new_tokens`` or ``temperature``.
    """
    if isinstance(prompts, Episodes):
        prompts = prompts_of(prompts)
    prompts = [np.asarray(p, dtype=np.int64).reshape(-1) for p in prompts]
    who = f"predictor {name or predictor.name!r}"
    if not prompts:
        raise ConfigError("sample_completions got an empty prompt list; give at least one prompt")
    if num_completions < 1 or max_new_tokens < 1:
        raise ConfigError(f"num_completions and max_new_tokens must be positive, got {num_completions} and {max_new_tokens}")
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    context = predictor.context if context is None else int(context)
    check_prompt_lengths(prompts, context, who=who, outcomes=outcomes)

    num_prompts = len(prompts)
    rows = num_prompts * num_completions
    start = np.repeat(np.array([len(p) for p in prompts]), num_completions)  # (row,)
    total = int(start.max()) + max_new_tokens if context is None else min(int(start.max()) + max_new_tokens, context)
    seq = np.zeros((rows, max(total, 1)), np.int64)  # prompt, then the sampled tokens; zeros beyond
    for i, p in enumerate(prompts):
        seq[i * num_completions : (i + 1) * num_completions, : len(p)] = p
    length = start.copy()
    out = np.full((rows, max_new_tokens), NOT_SAMPLED, np.int8)
    active = np.ones(rows, bool)
    for step in range(max_new_tokens):
        if context is not None:
            active &= length + 1 <= context  # the next position must fit in the context
        index = np.flatnonzero(active)
        if index.size == 0:
            break
        width = int(length[index].max()) + 1
        # rows with the same tokens and length share one forward pass
        key = np.concatenate([length[index, None], seq[index, :width]], axis=1)
        unique, inverse = np.unique(key, axis=0, return_inverse=True)
        log_prob = _next_token_log_prob(predictor, unique[:, 1:], unique[:, 0]) / temperature  # (unique, V)
        bad = ~np.all(np.isfinite(log_prob) | np.isneginf(log_prob), axis=-1) | np.all(np.isneginf(log_prob), axis=-1)
        if bad.any():
            u = int(np.flatnonzero(bad)[0])
            prefix = prompt_text(unique[u, 1 : 1 + unique[u, 0]], outcomes)
            raise DataError(f"{who} gives no next-token distribution (NaN) after {prefix!r}; it cannot be sampled")
        probs = np.exp(log_prob - log_prob.max(axis=-1, keepdims=True))
        cdf = np.cumsum(probs / probs.sum(axis=-1, keepdims=True), axis=-1)[inverse.reshape(-1)]  # (active, V)
        u = rng.random(index.size)
        token = np.minimum((u[:, None] >= cdf).sum(axis=-1), cdf.shape[-1] - 1)
        seq[index, length[index]] = token
        out[index, step] = token
        length[index] += 1
        if eos is not None:
            active[index[token == eos]] = False
    return out.reshape(num_prompts, num_completions, max_new_tokens)


def completion_strings(tokens: np.ndarray, outcomes: Sequence[str], *, eos: int | None = None, eos_label: str = "·") -> np.ndarray:
    """Completions as text, e.g. ``"bb·"`` (EOS shown as ``eos_label``); tokens shape (..., completion_step)."""
    tokens = np.asarray(tokens)
    flat = tokens.reshape(-1, tokens.shape[-1])
    labels = [eos_label if v == eos else str(o) for v, o in enumerate(outcomes)]
    sep = "" if all(len(label) == 1 for label in labels) else " "
    text = [sep.join(labels[int(t)] for t in row if t >= 0) for row in flat]
    return np.array(text, dtype=object).reshape(tokens.shape[:-1])


def add_completions(
    ds: xr.Dataset,
    sampled: Mapping[tuple[str, str], np.ndarray],
    *,
    attrs: dict | None = None,
) -> xr.Dataset:
    """Put sampled completions into the comparison Dataset, beside the prompts they continue.

    The completions have their own prompt dims, ``prompt_scenario`` (the
    scenarios that were sampled) and ``prompt`` (the prompt's episode index
    in that scenario), so the sampled scenarios' prompts alone take memory,
    not every episode of every scenario; ``ds.y.sel(scenario=s, episode=i)``
    is the prompt of ``completion_tokens.sel(prompt_scenario=s, prompt=i)``.

    Parameters
    ----------
    ds : xr.Dataset
        The comparison Dataset (dims predictor, scenario, episode, position; ``mask`` marks each prompt).
    sampled : mapping of (predictor, scenario) to tokens
        Tokens of shape (prompt, completion, completion_step) from
        `sample_completions`, prompts in the scenario's episode order.
    attrs : dict, optional
        Settings recorded on ``completion_tokens`` (temperature, seed, ...).

    Returns
    -------
    xr.Dataset
        ``ds`` plus ``completion_tokens`` (predictor, prompt_scenario, prompt,
        completion, completion_step), int8, −1 after the end and where nothing
        was sampled (the step dim runs to the longest completion);
        ``completion_length`` (predictor, prompt_scenario, prompt, completion),
        tokens generated (EOS included), −1 where nothing was sampled; and
        the coordinate ``prompt_text`` (prompt_scenario, prompt).
    """
    if not sampled:
        return ds
    shapes = {tokens.shape[1] for tokens in sampled.values()}
    if len(shapes) != 1:
        raise ValueError(f"every completion array must hold the same number of completions, got {sorted(shapes)}")
    num_completions = shapes.pop()
    predictors = list(ds[PREDICTOR].values)
    scenarios = [s for s in ds[SCENARIO].values if any(s == sc for _, sc in sampled)]
    num_prompts = max(tokens.shape[0] for tokens in sampled.values())
    num_steps = max(1, max(int((tokens >= 0).sum(-1).max(initial=0)) for tokens in sampled.values()))
    shape = (len(predictors), len(scenarios), num_prompts, num_completions)
    tokens_all = np.full(shape + (num_steps,), NOT_SAMPLED, np.int8)
    length_all = np.full(shape, NOT_SAMPLED, np.int16)
    for (predictor, scenario), tokens in sampled.items():
        p, s, n = predictors.index(predictor), scenarios.index(scenario), tokens.shape[0]
        tokens_all[p, s, :n] = tokens[..., :num_steps]
        length_all[p, s, :n] = (tokens >= 0).sum(-1)
    labels = [str(o) for o in ds[OUTCOME].values] if OUTCOME in ds.coords else None
    text = np.full((len(scenarios), num_prompts), "", dtype=object)
    for s, scenario in enumerate(scenarios):
        y = ds["y"].sel({SCENARIO: scenario}).values
        mask = ds["mask"].sel({SCENARIO: scenario}).values if "mask" in ds else np.isfinite(y)
        for i in range(min(num_prompts, y.shape[0])):
            if np.isfinite(y[i]).any():
                text[s, i] = prompt_text(y[i][mask[i]].astype(np.int64), labels)
    dims = (PREDICTOR, PROMPT_SCENARIO, PROMPT, COMPLETION)
    out = ds.assign_coords({
        PROMPT_SCENARIO: scenarios,
        PROMPT: np.arange(num_prompts),
        "prompt_text": ((PROMPT_SCENARIO, PROMPT), text.astype(str)),
        COMPLETION: np.arange(num_completions),
        COMPLETION_STEP: np.arange(1, num_steps + 1),
    })
    out["completion_tokens"] = (dims + (COMPLETION_STEP,), tokens_all)
    out["completion_tokens"].attrs = {
        "long_name": "sampled continuation of the prompt, token by token", "fill": NOT_SAMPLED, **(attrs or {}),
    }
    out["completion_length"] = (dims, length_all)
    out["completion_length"].attrs = {"long_name": "tokens generated, EOS included", "fill": NOT_SAMPLED}
    return out


__all__ = [
    "NOT_SAMPLED",
    "sample_completions",
    "add_completions",
    "completion_strings",
    "prompts_of",
    "prompt_text",
    "check_prompt_lengths",
]
