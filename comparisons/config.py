"""Experiment configuration: typed defaults, TOML files, ``--set a.b=value`` overrides.

nanoGPT's configurator idea without its ``exec``: values are parsed as TOML
literals and validated by pydantic, so a wrong key or type fails with one line
naming the key and what is allowed.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from toolkit.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "coin_mixture.toml"

PredictorName = Literal[
    "bayes", "bayes_mcmc", "oracle", "best_mixture", "frequency", "ridge", "least_squares", "knn", "averaging", "learner"
]
Architecture = Literal["transformer", "rnn", "pfn"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PriorConfig(Strict):
    name: str = "coin_mixture"  # a registered prior, "path/file.py:obj" or "module:obj"
    params: dict[str, Any] = {}  # keyword arguments of the prior's factory
    kind: Literal["tokens", "regression"] | None = None  # only for a bare model given by path
    outcomes: list[str] | None = None  # only for a bare tokens model given by path


class ScenarioConfig(Strict):
    kind: Literal["in_distribution", "misspecified", "prompts"]
    description: str = ""
    prior: str | None = None  # misspecified: the source q (registered name or path)
    params: dict[str, Any] = {}  # misspecified: q's parameters shared by every grid point
    grid: dict[str, list[Any]] | None = None  # misspecified: one scenario per combination
    prompts: list[str | list[int]] | None = None  # prompts: label strings or token lists

    @field_validator("grid")
    @classmethod
    def _grid_not_empty(cls, grid):
        for key, values in (grid or {}).items():
            if not values:
                raise ValueError(f"grid.{key} is empty; give at least one value")
        return grid


def _grid_size(num: int) -> int:
    if num == 1:
        raise ValueError("num_y_grid must be 0 (no y-grid) or at least 2 points")
    return num


class YGridConfig(Strict):
    """Points of the regression y-grid (grid density, KL on the grid, quantiles of grid-only predictors)."""

    low: float
    high: float
    num: int = Field(201, ge=2)

    @field_validator("high")
    @classmethod
    def _ordered(cls, high, info):
        if "low" in info.data and not high > info.data["low"]:
            raise ValueError(f"high must exceed low, got low={info.data['low']}, high={high}")
        return high


class EvaluationConfig(Strict):
    num_episodes: int = Field(2000, gt=0)  # evaluation episodes per scenario
    length: int = Field(64, gt=0)  # positions per episode
    seed: int = 1  # evaluation episodes come from this seed
    predictors: list[PredictorName] = ["bayes", "oracle", "best_mixture", "frequency", "learner"]
    report_positions: list[int] = [1, 8, 32, 64]  # positions tabulated in report.md
    bootstrap_resamples: int = Field(1000, gt=0)  # for cross-entropy intervals
    predictor_options: dict[str, dict[str, Any]] = {}  # keyword arguments per baseline, e.g. knn = { k = 5 }
    y_grid: YGridConfig | None = None  # regression: None = from the prior's samples (0.1 % to 99.9 %, widened)
    num_y_grid: int = Field(201, ge=0)  # regression: points of the y-grid derived from the prior; 0 = no y-grid

    _num_y_grid = field_validator("num_y_grid")(_grid_size)


class CurriculumStage(Strict):
    """One ``[[learner.curriculum]]`` stage: the training batches before step ``until`` come from this prior."""

    until: int = Field(gt=0)  # the stage draws the steps before this one (after the previous stage's)
    prior: str | None = None  # a registered name or path; None: the experiment's [prior]
    params: dict[str, Any] = {}  # the stage prior's parameters; over [prior] params when `prior` is left out


def _stages_increase(stages):
    if stages is not None and any(b.until <= a.until for a, b in zip(stages, stages[1:])):
        raise ValueError(f"stages must have increasing `until`, got {[s.until for s in stages]}")
    return stages


class LearnerConfig(Strict):
    architecture: Architecture | None = None  # None: "transformer" for a tokens prior, "pfn" for regression
    model: dict[str, Any] = {}  # overrides of the architecture's config (TransformerConfig, RNNConfig, PFNConfig)
    training: dict[str, Any] = {}  # overrides of learners.TrainConfig
    curriculum: list[CurriculumStage] = []  # easier priors for the first steps (Garg et al.); [] trains on [prior]

    _curriculum = field_validator("curriculum")(_stages_increase)


class LearnerSpec(Strict):
    """One ``[learners.NAME]`` table: an architecture trained once per seed (predictors ``NAME-s<seed>``)."""

    architecture: Architecture = "transformer"  # CausalTransformer, RecurrentLM, or the regression PFNTransformer
    model: dict[str, Any] = {}  # overrides of the architecture's config (TransformerConfig, RNNConfig, PFNConfig)
    training: dict[str, Any] = {}  # overrides of [learner.training], which every learner shares
    curriculum: list[CurriculumStage] | None = None  # None: [learner]'s curriculum; [] none
    seeds: list[int] = [0]  # one learner per seed: initial weights and training batches

    _curriculum = field_validator("curriculum")(_stages_increase)

    @field_validator("seeds")
    @classmethod
    def _seeds_distinct(cls, seeds):
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct integers, got {seeds}")
        return seeds


class CompletionsConfig(Strict):
    """Sampled continuations of every prompt scenario's prompts, per learner."""

    num: int = Field(100, gt=0)  # completions per prompt per learner
    max_new_tokens: int = Field(48, gt=0)  # most tokens generated (EOS included); the learner's context also caps it
    temperature: float = Field(1.0, gt=0)  # 1 samples the learner's own distribution
    seed: int = 2  # completions of learner i on scenario j use numpy seed (seed, j, crc32(name))


class AnbnConfig(Strict):
    """The aⁿbⁿ prompt sets and the rule / disagreement analysis (comparisons/anbn.py)."""

    max_prompt_length: int = Field(8, gt=0)  # zero-probability strings and in-distribution prefixes up to this length
    min_prior_prob: float = Field(1e-6, gt=0, lt=1)  # long aⁿ prompts down to this prior probability


class RunConfig(Strict):
    prior: PriorConfig = PriorConfig()
    scenarios: dict[str, ScenarioConfig] = {"in_distribution": ScenarioConfig(kind="in_distribution")}
    evaluation: EvaluationConfig = EvaluationConfig()
    learner: LearnerConfig = LearnerConfig()
    learners: dict[str, LearnerSpec] = {}  # further learners, evaluated beside the predictors listed
    completions: CompletionsConfig | None = None  # sample completions of the prompt scenarios
    anbn: AnbnConfig | None = None  # add the aⁿbⁿ prompt sets and analysis
    torch_threads: int | None = Field(None, gt=0)  # torch's intra-op threads for this run; None = torch's default

    @field_validator("scenarios")
    @classmethod
    def _some_scenario(cls, scenarios):
        if not scenarios:
            raise ValueError('no scenarios; add at least one, e.g. [scenarios.in_distribution] kind = "in_distribution"')
        return scenarios


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (["a", "b"], value), the value read as a TOML literal (bare words stay strings)."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set evaluation.length=32")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip().split("."), value


def _apply(tree: dict, path: list[str], value: Any) -> None:
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {part} is a value, not a table")
        node = child
    node[path[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] = (), profile: str | None = None) -> RunConfig:
    """Read a TOML config (the default experiment when ``path`` is None), apply a profile and overrides.

    A ``[profiles.NAME]`` table in the file holds overrides applied by ``profile=NAME``.
    """
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(CONFIG_DIR.glob("*.toml")))
        raise ConfigError(f"config file {path} does not exist; built-in configs: {known}")
    try:
        tree = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    profiles = tree.pop("profiles", {})
    if profile is not None:
        if profile not in profiles:
            raise ConfigError(f"profile {profile!r} is not in {path.name}; profiles there: {', '.join(profiles) or '(none)'}")
        _merge(tree, profiles[profile])
    for item in overrides:
        _apply(tree, *parse_override(item))
    return validate(tree)


def _merge(base: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def validate(tree: dict) -> RunConfig:
    """A `RunConfig` from a plain dict, or a `ConfigError` naming the first bad key."""
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            msg = "is not a known key"
            parent = _model_at(err["loc"][:-1])
            if parent is not None:
                msg += f"; allowed here: {', '.join(parent.model_fields)}"
        else:
            msg = err["msg"]
            if "input" in err and not isinstance(err["input"], dict):
                msg += f" (got {err['input']!r})"
        raise ConfigError(f"config key {key}: {msg}") from None


def _annotation_parts(annotation) -> list:
    """``annotation`` and every type nested in it (``list[X] | None`` -> the union, list[X], X, None)."""
    return [annotation, *(part for arg in get_args(annotation) for part in _annotation_parts(arg))]


def _model_at(loc) -> type[BaseModel] | None:
    model: Any = RunConfig
    for part in loc:
        if model is RunConfig and part in ("scenarios", "learners"):
            model = part
            continue
        if model in ("scenarios", "learners"):
            model = ScenarioConfig if model == "scenarios" else LearnerSpec
            continue
        if isinstance(part, int):  # an item of a list of tables (curriculum stages): same model
            continue
        field = model.model_fields.get(part) if isinstance(model, type) else None
        # `X | None` tables (completions, anbn) and `list[X] | None` (curriculum) name their model inside
        options = _annotation_parts(field.annotation) if field is not None else ()
        tables = [t for t in options if isinstance(t, type) and issubclass(t, BaseModel)]
        if not tables:
            return None
        model = tables[0]
    return model if isinstance(model, type) else None


__all__ = ["RunConfig", "PriorConfig", "ScenarioConfig", "EvaluationConfig", "YGridConfig", "LearnerConfig", "LearnerSpec",
           "CurriculumStage", "CompletionsConfig", "AnbnConfig", "load_config", "validate", "parse_override", "DEFAULT_CONFIG"]
