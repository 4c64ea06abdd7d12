"""What the learners' config dataclasses share: plain-dict round trips validated by pydantic, and range checks.

Every architecture config (`TransformerConfig`, `RNNConfig`, `PFNConfig`) and
`TrainConfig` is a frozen dataclass that inherits `ConfigDict`: it is built
from a TOML table or a checkpoint's JSON with ``from_dict`` (unknown keys and
ill-typed values are a `ConfigError` naming the setting) and written back with
``to_dict``.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, ClassVar

from toolkit.errors import ConfigError


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


__all__ = ["ConfigDict", "from_dict"]
