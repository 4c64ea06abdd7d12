"""Sampled completions of every prompt scenario's prompts, per learner (`toolkit.completions`).

What a learner does with a prompt shows in what it writes next: this analysis
samples ``num`` continuations of each prompt from each learner, at a
temperature, up to the end token or ``max_new_tokens`` (or the learner's
context), and puts them into the comparison Dataset beside the prompts
(``completion_tokens``, ``completion_length``; dims ``prompt_scenario``,
``prompt``, ``completion``, ``completion_step``). Experiments read them
(the aⁿbⁿ analysis sorts them by rule).
"""

from __future__ import annotations

import time
import zlib

import numpy as np
from pydantic import Field

from comparisons.analyses import Analysis, AnalysisSettings, register_analysis
from comparisons.config import Seed
from toolkit.completions import add_completions, sample_completions
from toolkit.errors import ConfigError


@register_analysis("completions")
class CompletionsAnalysis(Analysis):
    """Sample completions of the prompt scenarios from every learner."""

    class Settings(AnalysisSettings):
        num: int = Field(100, gt=0)  # completions per prompt per learner
        max_new_tokens: int = Field(48, gt=0)  # most tokens generated (EOS included); the learner's context also caps it
        temperature: float = Field(1.0, gt=0, allow_inf_nan=False)  # 1 samples the learner's own distribution
        seed: Seed = 2  # completions of learner i on scenario j use numpy seed (seed, j, crc32(name))

    def check(self, plan):
        if not plan.kind.finite_outcomes:
            raise ConfigError("completions continue token prompts; a regression prior has none")
        if not plan.learners:
            raise ConfigError("there is no learner to sample completions from; add [learner] or [learners.NAME]")

    def comparison(self, ds, run):
        start = time.perf_counter()
        c, prior = self.settings, run.plan.prior
        sampled = {}
        for j, scenario in enumerate(run.plan.scenarios):
            if scenario.kind != "prompts":
                continue
            for name in run.learner_names:
                rng = np.random.default_rng([c.seed, j, zlib.crc32(name.encode())])
                sampled[(name, scenario.name)] = sample_completions(
                    run.predictors[name], scenario.prompts, num_completions=c.num, max_new_tokens=c.max_new_tokens,
                    rng=rng, eos=prior.eos, temperature=c.temperature, outcomes=prior.outcomes, name=name,
                )
        run.timings["completions"] = time.perf_counter() - start
        return add_completions(ds, sampled, attrs=c.model_dump())

    def setup(self, run):
        c = self.settings
        return {"completions": f"{c.num} per prompt per learner, temperature {c.temperature:g}, "
                               f"at most {c.max_new_tokens} tokens, seed {c.seed}"}


__all__ = ["CompletionsAnalysis"]
