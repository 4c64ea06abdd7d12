"""The checkpoint axis: every learner evaluated at each of ``learner.training.eval_steps``, one training.

Training keeps a checkpoint at each step of ``train.eval_steps`` (``learner/steps/``). After the run's
own comparison, the learners are loaded at each of those steps and the comparison, its metrics and
every analysis' additions are computed again; the predictors that do not change with the step (Bayes,
oracles, baselines) are computed once and reused (`Memoized`). The metrics of every step are
concatenated along the ``step`` dim (the trained learners' final step last when it is not in the list)
into ``metrics.nc``; the comparison Dataset, figures and report stay those of the final learners.
"""

from __future__ import annotations

import hashlib

import numpy as np
import xarray as xr

import learners
from comparisons.plan import RunState
from learners.train import EVAL_FOLDER
from toolkit.dims import STEP
from toolkit.episodes import Episodes
from toolkit.predictive import Prediction, Predictor


class Memoized(Predictor):
    """``predictor`` with its predictions kept per episodes: the same episodes are predicted once."""

    def __init__(self, predictor: Predictor, cache: dict | None = None):
        self.inner, self.cache = predictor, {} if cache is None else cache
        self.name, self.kind, self.context = predictor.name, predictor.kind, predictor.context

    def bind(self, prior, scenario, episodes):
        bound = self.inner.bind(prior, scenario, episodes)
        return None if bound is None else Memoized(bound, self.cache.setdefault(scenario.name, {}))

    def predict(self, episodes: Episodes, *, y_grid=None) -> xr.Dataset:
        return self.run(episodes, y_grid=y_grid).dataset

    def run(self, episodes: Episodes, *, y_grid=None) -> Prediction:
        key = _fingerprint(episodes, y_grid)
        if key not in self.cache:
            self.cache[key] = self.inner.run(episodes, y_grid=y_grid)
        return self.cache[key]

    def token_log_prob(self, y, mask=None):
        return self.inner.token_log_prob(y, mask)

    def describe(self):
        return self.inner.describe()


def _fingerprint(episodes: Episodes, y_grid) -> str:
    h = hashlib.sha256()
    for part in (episodes.y, episodes.x, episodes.mask, y_grid):
        h.update(b"-" if part is None else np.ascontiguousarray(part).tobytes())
    return h.hexdigest()


def metrics_at_steps(state: RunState, evaluate) -> list[tuple[int, xr.Dataset]]:
    """``(step, metrics)`` of the learners at each of ``eval_steps`` (none without); ``evaluate(state) -> (ds, metrics)``.

    The other predictors of ``state`` are made `Memoized` in place: the evaluation of the final learners
    that follows reuses their predictions too.
    """
    plan = state.plan
    if not plan.eval_steps:
        return []
    for name, predictor in state.predictors.items():
        if name not in plan.learners and not isinstance(predictor, Memoized):
            state.predictors[name] = Memoized(predictor)
    parts = []
    for step in plan.eval_steps:
        loaded = {name: learners.load(lp.directory / EVAL_FOLDER, name=name, step=step) for name, lp in plan.learners.items()}
        predictors = {name: loaded.get(name, state.predictors[name]) for name in plan.predictor_names}
        parts.append((step, evaluate(RunState(plan, predictors, timings=state.timings))[1]))
    return parts


def with_steps(metrics: xr.Dataset, parts: list[tuple[int, xr.Dataset]], plan) -> xr.Dataset:
    """``metrics`` of the final learners and those of ``parts`` along ``step``; ``metrics`` itself without parts."""
    if not parts:
        return metrics
    final_step = max(lp.train.steps for lp in plan.learners.values())
    parts = [(s, m) for s, m in parts if s != final_step] + [(final_step, metrics)]
    out = xr.concat([m for _, m in parts], dim=STEP, join="outer", coords="minimal", compat="override",
                    combine_attrs="drop")
    out = out.assign_coords({STEP: [s for s, _ in parts]})
    out[STEP].attrs = {"long_name": "training step of the learners' checkpoint (learner.training.eval_steps)"}
    out.attrs = dict(metrics.attrs)
    return out


__all__ = ["Memoized", "metrics_at_steps", "with_steps"]
