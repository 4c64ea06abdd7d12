"""Scenarios: where evaluation episodes come from (DESIGN.md, "Evaluation").

``in_distribution`` samples the prior itself; ``misspecified`` samples another
prior q (often over a grid of parameter values, one scenario each);
``prompts`` evaluates fixed sequences given by the user.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

import numpy as np

from .episodes import Episodes
from .errors import ConfigError, DataError
from .prior import Prior
from .registry import get_prior

ScenarioKind = Literal["in_distribution", "misspecified", "prompts"]


@dataclass
class Scenario:
    """A named source of evaluation episodes.

    Parameters
    ----------
    name : str
    kind : {"in_distribution", "misspecified", "prompts"}
    description : str
    source : Prior, optional
        The generating distribution (the prior itself, or q); None for prompts.
    prompts : list of sequences of int, optional
        Fixed token sequences (``prompts`` kind).
    params : dict
        Scenario parameters, recorded as coordinates on the scenario dim.
    """

    name: str
    kind: ScenarioKind
    description: str = ""
    source: Prior | None = None
    prompts: list[list[int]] | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def in_distribution(cls, prior: Prior, name: str = "in_distribution") -> Scenario:
        return cls(name, "in_distribution", f"episodes drawn from the prior {prior.name}", source=prior)

    @classmethod
    def misspecified(cls, q: Prior, name: str | None = None, *, description: str = "", params=None) -> Scenario:
        name = name or q.name
        return cls(name, "misspecified", description or f"episodes drawn from {q!r}", source=q, params=dict(params or {}))

    @classmethod
    def from_prompts(cls, name: str, prompts: Sequence, outcomes: Sequence[str], *, description: str = "") -> Scenario:
        """Prompts as label strings (one character per outcome), label lists, or integer lists."""
        if not prompts:
            raise ConfigError(f"scenario {name!r} has an empty prompt list; give at least one prompt")
        index = {label: i for i, label in enumerate(outcomes)}
        encoded = []
        for prompt in prompts:
            items = list(prompt)
            try:
                encoded.append([int(t) if not isinstance(t, str) else index[t] for t in items])
            except KeyError as exc:
                raise DataError(
                    f"prompt {prompt!r} of scenario {name!r} holds {exc.args[0]!r}, which is not an outcome; "
                    f"allowed: {', '.join(outcomes)}"
                ) from None
            if any(t < 0 or t >= len(outcomes) for t in encoded[-1]):
                raise DataError(f"prompt {prompt!r} of scenario {name!r} holds a token outside 0..{len(outcomes) - 1}")
        return cls(name, "prompts", description or f"{len(prompts)} fixed prompts", prompts=encoded)

    def episodes(self, key, num_episodes: int, length: int) -> Episodes:
        """Evaluation episodes: sampled from the source, or the prompts padded to a common length.

        A prompt of n tokens fills positions 1..n (mask True) and leaves
        position n + 1, where its next-token prediction sits, masked.
        """
        if self.kind == "prompts":
            longest = max(len(p) for p in self.prompts)
            width = max(longest + 1, 1)
            y = np.zeros((len(self.prompts), width), np.int64)
            mask = np.zeros_like(y, bool)
            for i, p in enumerate(self.prompts):
                y[i, : len(p)] = p
                mask[i, : len(p)] = True
            return Episodes(y=y, mask=mask)
        return self.source.sample(key, num_episodes, length, jit=False)  # sampled once: not worth compiling


def scenario_grid(
    name: str,
    prior_name: str,
    *,
    params: dict[str, Any] | None = None,
    grid: dict[str, Sequence] | None = None,
    description: str = "",
) -> list[Scenario]:
    """One misspecified scenario per point of ``grid`` (a product over its keys).

    Names read ``name=value`` (one grid key with one-element values print bare:
    ``q=0.5``), else ``name[key=value,...]``.

    Examples
    --------
    >>> scenario_grid("q", "coin_mixture", params={"weights": [1.0]}, grid={"thetas": [[0.5], [0.1]]})  # doctest: +SKIP
    """
    params = dict(params or {})
    if not grid:
        return [Scenario.misspecified(get_prior(prior_name, **params), name, description=description, params=params)]
    keys = list(grid)
    out = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        point = dict(zip(keys, combo))
        shown = {k: _scalar(v) for k, v in point.items()}
        label = f"{name}={_fmt(shown[keys[0]])}" if len(keys) == 1 else (
            f"{name}[" + ",".join(f"{k}={_fmt(v)}" for k, v in shown.items()) + "]"
        )
        q = get_prior(prior_name, **params, **point)
        desc = description or f"{prior_name} with " + ", ".join(f"{k}={_fmt(v)}" for k, v in shown.items())
        out.append(Scenario.misspecified(q, label, description=desc, params={k: shown[k] for k in keys}))
    return out


def _scalar(value):
    arr = np.asarray(value)
    return arr.item() if arr.size == 1 else arr.tolist()


def _fmt(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


__all__ = ["Scenario", "scenario_grid", "ScenarioKind"]
