"""What the learners' config dataclasses share: plain-dict round trips validated by pydantic, and range checks.

Every architecture config (`TransformerConfig`, `RNNConfig`, `PFNConfig`) and
`TrainConfig` is a frozen dataclass that inherits `ConfigDict`: it is built
from a TOML table or a checkpoint's JSON with ``from_dict`` (unknown keys and
ill-typed values are a `ConfigError` naming the setting) and written back with
``to_dict``. Architecture configs also inherit `ArchitectureConfig`: the data
kind they learn and ``resolve``, which fills what they read from the prior and
the training length (`TokenModelConfig` does it for the token learners).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, ClassVar

from toolkit.errors import ConfigError, UnknownNameError
from toolkit.kinds import get_kind


class ConfigDict:
    """Mixin for a config dataclass: ``to_dict`` / ``from_dict`` under the TOML section ``SECTION``."""

    SECTION: ClassVar[str] = "model"  # the [learner.<section>] table its settings come from, named in errors

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        """Build from a plain dict (a TOML table, a checkpoint's JSON), validating names and types."""
        return from_dict(cls, values, cls.SECTION)

    def require_positive(self, *names: str) -> None:
        """ConfigError unless every setting in ``names`` is a positive integer."""
        for name in names:
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{self.SECTION}.{name} must be a positive integer, got {getattr(self, name)!r}")

    def require_finite(self, *names: str) -> None:
        """ConfigError unless every setting in ``names`` is a finite number (NaN compares false to every bound)."""
        for name in names:
            if not math.isfinite(float(getattr(self, name))):
                raise ConfigError(f"{self.SECTION}.{name} must be a finite number, got {getattr(self, name)!r}")


# Architecture name in configs ([learner] architecture = NAME) -> its config class; filled by subclassing.
_CONFIGS: dict[str, type] = {}


class ArchitectureConfig(ConfigDict):
    """Mixin of every architecture config: its name, the data kind it learns, and ``resolve`` against a prior.

    A subclass that sets ``NAME`` registers itself: configs name it (``[learner] architecture = NAME``).
    """

    NAME: ClassVar[str | None] = None  # the architecture's name in configs; None for a shared base
    KIND: ClassVar[str] = "tokens"  # the data kind (toolkit.kinds) the architecture learns
    DATA_FIELDS: ClassVar[tuple[str, ...]] = ("block_size",)  # settings read from the prior and training length

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("NAME"):
            _CONFIGS[cls.NAME] = cls

    @property
    def resolved(self) -> bool:
        return all(getattr(self, name) is not None for name in self.DATA_FIELDS)

    def check_data_fields(self) -> None:
        """ConfigError for a set ``DATA_FIELDS`` value below its least sensible value (2 outcomes, else 1)."""
        for name in self.DATA_FIELDS:
            value, least = getattr(self, name), 2 if name == "vocab_size" else 1
            if value is not None and value < least:
                raise ConfigError(f"model.{name} must be at least {least} (or left out: read from the prior), got {value}")

    def resolve(self, prior, train_config):
        """The config with what it reads from ``prior`` and ``train_config`` filled in, checked against them."""
        raise NotImplementedError

    @property
    def output_width(self) -> int:
        """Values the network outputs per position (logits over outcomes or buckets); resolved configs only."""
        raise NotImplementedError

    @classmethod
    def check_kind(cls, prior) -> None:
        """ConfigError naming the architectures that fit, unless ``prior`` produces this architecture's kind of data."""
        if prior.kind != cls.KIND:
            fitting = architectures_for(prior.kind)
            classes = " or ".join(f"learners.{_CONFIGS[name].__name__}" for name in fitting)
            names = " or ".join(f'"{name}"' for name in fitting)
            raise ConfigError(
                f"prior {prior.name!r} is a {prior.kind} prior, but {cls.__name__} is a {cls.KIND} "
                f"architecture; use one that learns {prior.kind} data ({classes}; in a config, "
                f"[learner] architecture = {names})"
            )


def architectures_for(kind: str) -> list[str]:
    """Names of the architectures that learn ``kind`` data, the kind's default first."""
    default = get_kind(kind).default_architecture
    return sorted((name for name, cls in _CONFIGS.items() if cls.KIND == kind), key=lambda n: (n != default, n))


def architecture_config(name: str) -> type:
    """The config class of the architecture called ``name`` in configs (``"transformer"``, ``"rnn"``, ``"pfn"``)."""
    if name not in _CONFIGS:
        raise UnknownNameError("architecture", name, _CONFIGS)
    return _CONFIGS[name]


def context_length(block_size: int | None, train_length: int) -> int:
    """A learner's context: ``block_size``, or the training length when None; it must hold the training episodes."""
    block = train_length if block_size is None else block_size
    if block < train_length:
        raise ConfigError(
            f"train.length ({train_length}) is longer than model.block_size ({block}); "
            "raise model.block_size or shorten train.length"
        )
    return block


@dataclass(frozen=True)
class TokenModelConfig(ArchitectureConfig):
    """The settings every token learner reads from its prior: the vocabulary and the context."""

    DATA_FIELDS = ("vocab_size", "block_size")

    vocab_size: int | None = None  # outcomes V of the prior (inputs add a BOS token); None = read from the prior
    block_size: int | None = None  # longest context the model accepts; None = the training length

    def __post_init__(self):
        self.check_data_fields()

    @property
    def output_width(self) -> int:
        return int(self.vocab_size)

    def resolve(self, prior, train_config):
        """``vocab_size`` from the prior's outcomes and ``block_size`` from the training length, checked."""
        self.check_kind(prior)
        vocab = prior.num_outcomes if self.vocab_size is None else self.vocab_size
        if vocab != prior.num_outcomes:
            raise ConfigError(f"model.vocab_size is {vocab} but prior {prior.name!r} has {prior.num_outcomes} outcomes")
        return replace(self, vocab_size=vocab, block_size=context_length(self.block_size, train_config.length))


def from_dict(cls, values: dict[str, Any], section: str):
    """Construct the dataclass ``cls`` from ``values``, rejecting unknown keys and ill-typed values."""
    import pydantic

    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown {section} setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        return pydantic.TypeAdapter(cls).validate_python(dict(values))
    except pydantic.ValidationError as exc:
        problems = []
        for e in exc.errors():
            original = e.get("ctx", {}).get("error")
            if isinstance(original, ConfigError):  # raised by __post_init__: already says what to fix
                problems.append(str(original))
            else:
                problems.append(f"{section}.{'.'.join(map(str, e['loc']))}: {e['msg']} (got {e.get('input')!r})")
        raise ConfigError("; ".join(problems)) from None


__all__ = ["ConfigDict", "ArchitectureConfig", "architecture_config", "architectures_for", "TokenModelConfig", "context_length", "from_dict"]
