"""The plan of a run: every part built and every check that spans parts made, before anything trains.

`build_plan` turns a validated `RunConfig` into a `Plan`: the prior, the
scenarios (the config's and the analyses'), each learner with its resolved
architecture and training config (so its context is known), the other
predictors built, the analyses, the y-grid. It checks, once and up front
(nanoGPT asserts ``t <= block_size`` before the forward; a run that would
fail after an hour of training must fail in its first second):

- the output folder can be written, and is not a file;
- every predictor predicts the prior's kind of data; names are unique;
- the evaluation length and every prompt fit every learner's context;
- report positions and MCMC positions lie within 1..length;
- curriculum stages (`learners.check_curriculum`) and architectures fit the prior;
- ``predictor_options`` only configure predictors that run and take options;
- the comparison Dataset, its bootstrap and each training batch fit in memory;
- each analysis' own `check`.

A failed check is a `MetabayesError` whose one line names the setting to change.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

import learners
import priors  # noqa: F401 - the built-in priors register on import, also where no entry point is installed
from comparisons.analyses import Analysis, build_analyses
from comparisons.config import RunConfig
from comparisons.predictors import LEARNER, build_predictor, predictor_entry
from learners.train import pick_device, resumable_meta
from toolkit.completions import check_prompt_lengths
from toolkit.dims import QUANTILES
from toolkit.errors import ConfigError, MetabayesError
from toolkit.kinds import DataKind
from toolkit.predictive import Predictor
from toolkit.prior import Prior
from toolkit.registry import get_prior, load_prior
from toolkit.scenario import Scenario, scenario_grid


DEFAULT_REPORT_POSITIONS = (1, 8, 32, 64)


def in_context(exc: MetabayesError, where: str) -> MetabayesError:
    """``exc`` with its message prefixed by the config key it came from, keeping its type and fields.

    Rebuilding it as ``type(exc)(message)`` fails for errors whose constructor takes more than a
    message (`UnknownNameError`).
    """
    exc.args = (f"{where}: {exc}",) + exc.args[1:]
    return exc


@dataclass
class LearnerPlan:
    """One learner to train (or reuse): predictor ``name`` from the config table ``where``."""

    name: str  # its predictor name: "learner", or "NAME-s<seed>" for [learners.NAME]
    group: str  # the table it came from: "learner" or NAME (the ``architecture`` coordinate)
    architecture: str  # "transformer", "rnn", "pfn"
    model: Any  # the architecture's config, resolved against the prior and the training length
    train: learners.TrainConfig
    curriculum: list[tuple[int, Prior]]
    directory: Path  # its checkpoints
    where: str  # the config key its settings came from, for errors
    label: str | None = None  # announced before training ([learners.NAME] learners)

    @property
    def context(self) -> int:
        """The longest episode it reads: ``model.block_size`` (the training length by default)."""
        return int(self.model.block_size)


@dataclass
class Plan:
    """Everything a run needs, built and checked (see the module docstring)."""

    config: RunConfig
    config_name: str
    out: Path
    prior: Prior
    scenarios: list[Scenario]
    predictor_names: list[str]  # the comparison's predictor order: the config's list, then [learners.NAME]
    predictors: dict[str, Predictor]  # every predictor but the learners, built
    learners: dict[str, LearnerPlan]
    analyses: list[Analysis]
    y_grid: np.ndarray | None = None

    @property
    def kind(self) -> DataKind:
        return self.prior.data_kind

    @property
    def length(self) -> int:
        return self.config.evaluation.length

    @property
    def report_positions(self) -> list[int]:
        """The positions report.md tabulates: as configured, else 1, 8, 32, 64 up to the length, and the length."""
        given = self.config.evaluation.report_positions
        if given is not None:
            return list(given)
        return sorted({t for t in DEFAULT_REPORT_POSITIONS if t <= self.length} | {self.length})

    @property
    def eval_steps(self) -> tuple[int, ...]:
        """The steps every learner is also evaluated at (``learner.training.eval_steps``); () for none."""
        return next(iter(self.learners.values())).train.eval_steps if self.learners else ()

    def has_analysis(self, name: str) -> bool:
        return any(a.name == name for a in self.analyses)

    @property
    def groups(self) -> dict[str, str]:
        """Learner name -> the config table (architecture group) it came from."""
        return {name: lp.group for name, lp in self.learners.items()}


@dataclass
class RunState:
    """A run in progress, as analyses see it: the plan, the built predictors, what they kept, timings."""

    plan: Plan
    predictors: dict[str, Predictor]
    inference_data: dict[str, Any] = field(default_factory=dict)  # scenario -> ArviZ InferenceData (MCMC)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step: train, evaluate, and analyses'

    @property
    def learner_names(self) -> list[str]:
        return list(self.plan.learners)


# --------------------------------------------------------------------------- building


def build_prior(cfg: RunConfig, name: str | None = None, params: dict | None = None, *, where: str = "prior") -> Prior:
    """The experiment's prior; with ``name`` / ``params``, another built the same way (a curriculum stage)."""
    p = cfg.prior
    name = p.name if name is None else name
    params = p.params if params is None else params
    try:
        if p.kind is not None and name == p.name:
            return load_prior(name, kind=p.kind, outcomes=p.outcomes, **params)
        return get_prior(name, **params)
    except MetabayesError as exc:
        raise in_context(exc, where) from None


def build_curriculum(cfg: RunConfig, stages, where: str) -> list[tuple[int, Prior]]:
    """``(until, prior)`` pairs for `learners.train` from ``[[learner.curriculum]]`` stages.

    A stage without ``prior`` is the experiment's prior with its ``params``
    laid over those of ``[prior]``; one naming a prior takes its ``params`` alone.
    """
    out = []
    for i, stage in enumerate(stages or ()):
        if stage.prior is None or stage.prior == cfg.prior.name:
            params = {**cfg.prior.params, **stage.params}
        else:
            params = dict(stage.params)
        out.append((stage.until, build_prior(cfg, stage.prior, params, where=f"{where}.curriculum[{i}]")))
    return out


def build_scenarios(cfg: RunConfig, prior: Prior) -> list[Scenario]:
    scenarios = []
    for name, sc in cfg.scenarios.items():
        try:
            if sc.kind == "in_distribution":
                item = Scenario.in_distribution(prior, name)
                item.description = sc.description or item.description
                scenarios.append(item)
            elif sc.kind == "misspecified":
                if not sc.prior:
                    raise ConfigError("a misspecified scenario needs `prior`, the source q (a registered name or path)")
                scenarios += scenario_grid(name, sc.prior, params=sc.params, grid=sc.grid, description=sc.description)
            else:
                if not prior.data_kind.finite_outcomes:
                    raise ConfigError("prompt scenarios need a tokens prior")
                scenarios.append(Scenario.from_prompts(name, sc.prompts or [], prior.outcomes, description=sc.description))
        except MetabayesError as exc:
            raise in_context(exc, f"scenarios.{name}") from None
    return scenarios


def _learner_plan(cfg: RunConfig, prior: Prior, *, name, group, architecture, model, training, stages, directory,
                  where, label=None) -> LearnerPlan:
    try:
        config_cls = learners.architecture_config(architecture)
        config_cls.check_kind(prior)  # before its settings: a token architecture's settings do not fit a PFN's
        train_cfg = learners.TrainConfig.from_dict(training)
        model_cfg = config_cls.from_dict(model).resolve(prior, train_cfg)
        curriculum = build_curriculum(cfg, stages, where)
        learners.check_curriculum(prior, curriculum, train_cfg)
        pick_device(train_cfg.device)  # train.device = "cuda" on a machine without one
    except MetabayesError as exc:
        raise in_context(exc, where) from None
    # a damaged checkpoint, or one of another configuration, fails now rather than after the other learners trained
    resumable_meta(directory, learners.run_signature(prior, model_cfg, train_cfg, curriculum))
    return LearnerPlan(name, group, architecture, model_cfg, train_cfg, curriculum, directory, where, label)


def plan_learners(cfg: RunConfig, prior: Prior, out: Path, names: list[str]) -> dict[str, LearnerPlan]:
    """The ``[learner]`` learner (when ``learner`` is a predictor) and every ``[learners.NAME]`` learner, per seed."""
    plans = {}
    if LEARNER in names:
        plans[LEARNER] = _learner_plan(
            cfg, prior, name=LEARNER, group=LEARNER,
            architecture=cfg.learner.architecture or prior.data_kind.default_architecture,
            model=cfg.learner.model, training=cfg.learner.training, stages=cfg.learner.curriculum,
            directory=out / "learner", where="learner",
        )
    for group, spec in cfg.learners.items():
        stages = cfg.learner.curriculum if spec.curriculum is None else spec.curriculum
        for seed in spec.seeds:
            name = f"{group}-s{seed}"
            plans[name] = _learner_plan(
                cfg, prior, name=name, group=group, architecture=spec.architecture, model=spec.model,
                training={**cfg.learner.training, **spec.training, "seed": seed}, stages=stages,
                directory=out / "learners" / name, where=f"learners.{group}", label=f"{name} ({spec.architecture})",
            )
    return plans


def build_plan(cfg: RunConfig, out: Path, *, config_name: str = "", progress: bool = True) -> Plan:
    """The checked plan of the run ``cfg`` into ``out`` (see the module docstring); nothing is written."""
    check_out(out)
    prior = build_prior(cfg)
    names = list(cfg.evaluation.predictors or prior.data_kind.default_predictors)
    check_predictor_kinds(names, prior)
    learner_plans = plan_learners(cfg, prior, out, names)
    analyses = build_analyses(prior.data_kind.default_analysis, cfg.analysis)
    options = cfg.evaluation.predictor_options
    built = {n: build_predictor(n, prior, options, progress=progress) for n in names if n != LEARNER}
    plan = Plan(cfg, config_name, out, prior, build_scenarios(cfg, prior), names + [n for n in learner_plans if n not in names],
                built, learner_plans, analyses)
    check_predictor_options(plan)
    check_mcmc_positions(plan)
    for analysis in analyses:  # what it needs first, then what it adds
        try:
            analysis.check(plan)
            plan.scenarios += analysis.scenarios(plan)
        except MetabayesError as exc:
            raise in_context(exc, f"analysis.{analysis.name}") from None
    scenario_names = [s.name for s in plan.scenarios]
    if len(set(scenario_names)) != len(scenario_names):
        raise ConfigError(f"scenario names must be unique, got {scenario_names}")
    check_lengths(plan)
    check_memory(plan)
    check_eval_steps(plan)
    ev = cfg.evaluation
    grid = None if ev.y_grid is None else (ev.y_grid.low, ev.y_grid.high, ev.y_grid.num)
    plan.y_grid = prior.data_kind.evaluation_grid(prior, grid=grid, num=ev.num_y_grid, key=jax.random.key(ev.seed),
                                                  length=ev.length)
    return plan


# --------------------------------------------------------------------------- checks


def check_out(out: Path) -> None:
    """ConfigError unless ``out`` is (or can be created as) a folder this process can write."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; name a folder (it is created if missing)")
    existing = out
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"--out {out}: {existing} is a file, so no folder can be made below it; choose another --out")
    try:  # os.access says yes to root even on read-only filesystems: try it
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(f"no write permission on {existing}")
        tempfile.TemporaryDirectory(dir=existing, prefix=".metabayes-probe-").cleanup()
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write into {existing} ({exc.strerror or exc}); choose another --out") from None


def check_predictor_kinds(names: list[str], prior: Prior) -> None:
    """ConfigError for a predictor of another data kind than the prior's, naming those that fit."""
    for name in names:
        entry = predictor_entry(name)
        if entry.kind is not None and entry.kind != prior.kind:
            fitting = ", ".join(prior.data_kind.baselines)
            raise ConfigError(
                f"evaluation.predictors: {name!r} predicts {entry.kind} data, but prior {prior.name!r} is a "
                f"{prior.kind} prior; its baselines are {fitting}"
            )


def check_lengths(plan: Plan) -> None:
    """The evaluation length and every prompt against every learner's context; report positions in 1..length."""
    ev = plan.config.evaluation
    for name, lp in plan.learners.items():
        if ev.length > lp.context:
            raise ConfigError(
                f"evaluation.length = {ev.length} is longer than the context of learner {name!r} ({lp.context}, "
                f"its training length): evaluate at evaluation.length <= {lp.context}, or train it longer "
                f"({lp.where}.training.length >= {ev.length})"
            )
        for scenario in plan.scenarios:
            if scenario.kind == "prompts":
                try:
                    check_prompt_lengths(scenario.prompts, lp.context, who=f"learner {name!r}",
                                         where=f"scenario {scenario.name!r}", outcomes=plan.prior.outcomes)
                except MetabayesError as exc:
                    raise in_context(exc, f"scenarios.{scenario.name}") from None
    bad = [t for t in plan.report_positions if not 1 <= t <= ev.length]
    if bad:
        raise ConfigError(
            f"evaluation.report_positions {bad} lie outside 1..{ev.length} (evaluation.length); "
            f"list positions up to {ev.length}"
        )


def check_eval_steps(plan: Plan) -> None:
    """Every learner keeps checkpoints at the same ``eval_steps``, so that they share one ``step`` dim."""
    kept = {name: lp.train.eval_steps for name, lp in plan.learners.items()}
    if len(set(kept.values())) > 1:
        listed = ", ".join(f"{name} {list(steps)}" for name, steps in kept.items())
        raise ConfigError(f"learner.training.eval_steps differ between learners ({listed}); give every learner the "
                          "same steps (set them in [learner.training], which every [learners.NAME] shares)")


def check_predictor_options(plan: Plan) -> None:
    """Options only for predictors that run and take them (bayes_mcmc's also where bayes itself runs NUTS)."""
    running = {n for n in plan.predictor_names if n in plan.predictors and predictor_entry(n).takes_options}
    bayes = plan.predictors.get("bayes")
    if bayes is not None and bayes.describe().get("engine") == "mcmc":
        running.add("bayes_mcmc")
    for name in plan.config.evaluation.predictor_options:
        if name not in running:
            why = ("takes no options" if name in plan.predictors or name == LEARNER else
                   "is not in evaluation.predictors")
            raise ConfigError(
                f"evaluation.predictor_options.{name}: predictor {name!r} {why}; remove the table"
                + (f" (configurable here: {', '.join(sorted(running))})" if running else "")
            )


def check_mcmc_positions(plan: Plan) -> None:
    """MCMC positions within 1..length, for every predictor that runs NUTS."""
    mcmc = sys.modules.get("toolkit.mcmc")  # loaded by whatever built an MCMC predictor; else there is none
    if mcmc is None:
        return
    for name, predictor in plan.predictors.items():
        if isinstance(predictor, mcmc.MCMCPredictor) and predictor.config.positions is not None:
            bad = [p for p in predictor.config.positions if not 1 <= p <= plan.length]
            if bad:
                raise ConfigError(
                    f"evaluation.predictor_options.bayes_mcmc.positions {bad} lie outside 1..{plan.length} "
                    f"(evaluation.length) for predictor {name!r}"
                )


# Memory a run may plan to use, as a share of this machine's RAM: the rest is interpreter, JAX, torch, copies.
MEMORY_SHARE = 0.5


def physical_memory() -> int:
    """Bytes of RAM on this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"


def estimated_sizes(plan: Plan) -> dict[str, tuple[int, str]]:
    """Bytes of the run's largest arrays, each with the settings that scale it.

    The comparison Dataset (float64 per predictor, scenario, episode, position and value), the
    bootstrap's resampled means (per predictor, scenario, position and resample) and, per
    learner, one training batch's activations (float32, about 16 values per token, layer and
    channel, plus the output logits).
    """
    ev, kind = plan.config.evaluation, plan.kind
    sampled = [s for s in plan.scenarios if s.kind != "prompts"]
    prompts = max((len(s.prompts) for s in plan.scenarios if s.kind == "prompts"), default=0)
    episodes = max(ev.num_episodes if sampled else 0, prompts)
    positions = max([ev.length] + [max(len(p) for p in s.prompts) + 1 for s in plan.scenarios if s.kind == "prompts"])
    values = (plan.prior.num_outcomes + 1) if kind.finite_outcomes else (3 + len(QUANTILES) + ev.num_y_grid)
    features = plan.prior.x_dim or 0
    cells = len(plan.scenarios) * episodes * positions
    sizes = {
        "the comparison Dataset": (
            8 * cells * (len(plan.predictor_names) * values + features + 8),
            "evaluation.num_episodes or evaluation.length" + ("" if kind.finite_outcomes else " or evaluation.num_y_grid"),
        ),
        "the bootstrap of the cross-entropy": (
            8 * ev.bootstrap_resamples * len(plan.predictor_names) * len(plan.scenarios) * positions,
            "evaluation.bootstrap_resamples or evaluation.length",
        ),
    }
    for name, lp in plan.learners.items():
        width = lp.model.n_embd * lp.model.n_layer * 16 + lp.model.output_width
        sizes[f"a training batch of learner {name!r}"] = (
            4 * lp.train.batch_size * lp.train.length * width, f"{lp.where}.training.batch_size or length",
        )
    return sizes


def check_memory(plan: Plan, *, available: int | None = None) -> None:
    """ConfigError naming the estimate and the setting to lower when an array cannot fit in memory."""
    limit = int(MEMORY_SHARE * (physical_memory() if available is None else available))
    for what, (size, setting) in estimated_sizes(plan).items():
        if size > limit:
            raise ConfigError(
                f"{what} would take about {_bytes(size)}, more than {_bytes(limit)} ({MEMORY_SHARE:.0%} of this "
                f"machine's memory); lower {setting}"
            )


__all__ = ["Plan", "LearnerPlan", "RunState", "build_plan", "build_prior", "build_curriculum", "build_scenarios",
           "check_memory", "estimated_sizes", "in_context"]
