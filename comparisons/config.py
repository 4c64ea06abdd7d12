"""Experiment configuration: typed defaults, TOML files, ``--set a.b=value`` overrides.

nanoGPT's configurator idea without its ``exec``: values are parsed as TOML
literals and validated by pydantic, so a wrong key or type fails with one line
naming the key and what is allowed.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from toolkit.errors import ConfigError, MetabayesError

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "coin_mixture.toml"

# Largest seed that jax.random.key (int64) and torch.Generator both accept.
SEED_MAX = 2**63 - 1
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]


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


def _known_predictors(names):
    from comparisons.predictors import available_predictors

    if names is not None:
        known = available_predictors()
        for i, name in enumerate(names):
            if name not in known:
                raise ValueError(f"item {i}: unknown predictor {name!r}; known predictors: {', '.join(known)}")
        if len(set(names)) != len(names):
            raise ValueError(f"names a predictor twice: {names}")
    return names


class EvaluationConfig(Strict):
    num_episodes: int = Field(2000, gt=0)  # evaluation episodes per scenario
    length: int = Field(64, gt=0)  # positions per episode
    seed: Seed = 1  # evaluation episodes come from this seed
    predictors: list[str] | None = None  # registered predictor names; None = the prior kind's defaults
    report_positions: list[int] | None = None  # positions tabulated in report.md, within 1..length; None: 1, 8, 32, 64
    # up to the length, and the length
    bootstrap_resamples: int = Field(1000, gt=0)  # for cross-entropy intervals
    predictor_options: dict[str, dict[str, Any]] = {}  # keyword arguments per baseline, e.g. knn = { k = 5 }
    y_grid: YGridConfig | None = None  # regression: None = from the prior's samples (0.1 % to 99.9 %, widened)
    num_y_grid: int = Field(201, ge=0)  # regression: points of the y-grid derived from the prior; 0 = no y-grid

    _num_y_grid = field_validator("num_y_grid")(_grid_size)
    _predictors = field_validator("predictors")(_known_predictors)


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
    architecture: str | None = None  # "transformer", "rnn" or "pfn"; None: the prior kind's default
    model: dict[str, Any] = {}  # overrides of the architecture's config (TransformerConfig, RNNConfig, PFNConfig)
    training: dict[str, Any] = {}  # overrides of learners.TrainConfig
    curriculum: list[CurriculumStage] = []  # easier priors for the first steps (Garg et al.); [] trains on [prior]

    _curriculum = field_validator("curriculum")(_stages_increase)


class LearnerSpec(Strict):
    """One ``[learners.NAME]`` table: an architecture trained once per seed (predictors ``NAME-s<seed>``)."""

    architecture: str = "transformer"  # "transformer", "rnn" (RecurrentLM), or the regression "pfn"
    model: dict[str, Any] = {}  # overrides of the architecture's config (TransformerConfig, RNNConfig, PFNConfig)
    training: dict[str, Any] = {}  # overrides of [learner.training], which every learner shares
    curriculum: list[CurriculumStage] | None = None  # None: [learner]'s curriculum; [] none
    seeds: list[Seed] = [0]  # one learner per seed: initial weights and training batches

    _curriculum = field_validator("curriculum")(_stages_increase)

    @field_validator("seeds")
    @classmethod
    def _seeds_distinct(cls, seeds):
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct integers, got {seeds}")
        return seeds


class RunConfig(Strict):
    prior: PriorConfig = PriorConfig()
    scenarios: dict[str, ScenarioConfig] = {"in_distribution": ScenarioConfig(kind="in_distribution")}
    evaluation: EvaluationConfig = EvaluationConfig()
    learner: LearnerConfig = LearnerConfig()
    learners: dict[str, LearnerSpec] = {}  # further learners, evaluated beside the predictors listed
    analysis: dict[str, dict[str, Any]] = {}  # [analysis.NAME] tables: analyses to run beyond the kind's default
    torch_threads: int | None = Field(None, gt=0)  # torch's intra-op threads for this run; None = torch's default

    @field_validator("scenarios")
    @classmethod
    def _some_scenario(cls, scenarios):
        if not scenarios:
            raise ValueError('no scenarios; add at least one, e.g. [scenarios.in_distribution] kind = "in_distribution"')
        return scenarios


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"a.b=value"`` -> (["a", "b"], value), the value read as a TOML literal (bare words stay strings).

    The key is a TOML key, so a part with dots is quoted: ``sweep."learner.training.seed"=[0, 1]``.
    """
    key, sep, raw = _split_key(item)
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set evaluation.length=32")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return _key_path(key.strip(), item), value


def _split_key(item: str) -> tuple[str, str, str]:
    """``item`` split at its first ``=`` outside quotes."""
    quote = None
    for i, char in enumerate(item):
        if char in "\"'" and quote in (None, char):
            quote = None if quote else char
        elif char == "=" and quote is None:
            return item[:i], "=", item[i + 1:]
    return item, "", ""


def _key_path(key: str, item: str) -> list[str]:
    if '"' not in key and "'" not in key:
        return key.split(".")
    try:
        node = tomllib.loads(f"{key} = 0")
    except tomllib.TOMLDecodeError:
        raise ConfigError(f"--set {item!r}: {key!r} is not a valid key (quote a part with dots: a.\"b.c\")") from None
    path = []
    while isinstance(node, dict):
        (part, node), = node.items()
        path.append(part)
    return path


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
    tree = read_toml(path, "config file", CONFIG_DIR)
    profiles = tree.pop("profiles", {})
    if profile is not None:
        if profile not in profiles:
            raise ConfigError(f"profile {profile!r} is not in {path.name}; profiles there: {', '.join(profiles) or '(none)'}")
        _merge(tree, profiles[profile])
    for item in overrides:
        _apply(tree, *parse_override(item))
    return validate(tree)


def read_toml(path: Path, what: str, built_in: Path) -> dict:
    """The TOML file ``path`` as a dict; a `ConfigError` naming the ``built_in`` ones when it does not exist."""
    if not path.is_file():
        known = ", ".join(p.stem for p in sorted(built_in.glob("*.toml")))
        raise ConfigError(f"{what} {path} does not exist; built-in {what.split()[0]}s: {known or '(none)'}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def add_config_arguments(parser) -> None:
    """The options every experiment command shares: --config, --profile, --set, --out, --no-progress."""
    parser.add_argument("--config", help="TOML config (default: comparisons/configs/coin_mixture.toml)")
    parser.add_argument("--profile", help="a [profiles.NAME] table of the config to apply (e.g. tiny, cpu, paper)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set evaluation.length=32 (repeatable)")
    parser.add_argument("--out", help="output folder (default: results/<config name>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def config_from_args(args) -> tuple[RunConfig, str, Path]:
    """The validated config, its name and the output folder of parsed `add_config_arguments` options."""
    if args.config and Path(args.config).is_dir():
        raise ConfigError(f"--config {args.config} is a folder; name a TOML file, e.g. {DEFAULT_CONFIG}")
    cfg = load_config(args.config, args.overrides, args.profile)
    name = Path(args.config).stem if args.config else DEFAULT_CONFIG.stem
    out = Path(args.out) if args.out else Path("results") / name
    return cfg, name, out


def _merge(base: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


# Top-level tables that became analyses: a config that still has one is told where it went.
MOVED_TO_ANALYSIS = ("anbn", "completions")


def validate(tree: dict) -> RunConfig:
    """A `RunConfig` from a plain dict, or a `ConfigError` naming the first bad key.

    Each ``[analysis.NAME]`` table is checked against that analysis' settings too.
    """
    for name in MOVED_TO_ANALYSIS:
        if name in tree:
            raise ConfigError(f"config key {name}: the [{name}] table is now [analysis.{name}]; rename it")
    check_finite(tree)
    try:
        cfg = RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_message(exc.errors()[0], RunConfig)) from None
    from comparisons.analyses import get_analysis

    for name, table in cfg.analysis.items():
        try:
            get_analysis(name).Settings.model_validate(table)
        except MetabayesError as exc:
            raise ConfigError(f"config key analysis.{name}: {exc}") from None
        except ValidationError as exc:
            raise ConfigError(_message(exc.errors()[0], get_analysis(name).Settings, ("analysis", name))) from None
    return cfg


def check_finite(value, key: str = "") -> None:
    """ConfigError naming the first NaN or infinite number anywhere in a config tree (tables, lists, values).

    No setting means anything as NaN or infinity, and NaN passes every bound check silently
    (``nan < 0`` is false): a NaN weight decay once trained an all-NaN learner.
    """
    if isinstance(value, dict):
        for k, v in value.items():
            check_finite(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_finite(v, f"{key}.{i}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key {key}: {value} is not a finite number; give a finite value")


def _message(err: dict, root: type[BaseModel], prefix: tuple = ()) -> str:
    """``config key a.b: what is wrong`` for one pydantic error of the model ``root`` (at ``prefix``)."""
    loc = tuple(prefix) + tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        msg = "is not a known key"
        parent = _model_at(err["loc"][:-1], root)
        if parent is not None:
            msg += f"; allowed here: {', '.join(parent.model_fields)}"
    else:
        msg = err["msg"]
        if "input" in err and not isinstance(err["input"], dict):
            msg += f" (got {err['input']!r})"
    return f"config key {key}: {msg}"


def _annotation_parts(annotation) -> list:
    """``annotation`` and every type nested in it (``list[X] | None`` -> the union, list[X], X, None)."""
    return [annotation, *(part for arg in get_args(annotation) for part in _annotation_parts(arg))]


def _model_at(loc, root: type[BaseModel] = None) -> type[BaseModel] | None:
    model: Any = RunConfig if root is None else root
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
           "CurriculumStage", "Strict", "Seed", "SEED_MAX", "load_config", "add_config_arguments", "config_from_args", "validate", "parse_override", "DEFAULT_CONFIG"]
