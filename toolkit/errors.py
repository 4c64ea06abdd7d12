"""Errors a user can act on: each names the problem and the fix.

The CLI catches `MetabayesError` and prints its message on one line with exit
code 2; anything else is a bug and keeps its traceback.
"""


class MetabayesError(Exception):
    """Base class for errors caused by the user's input, not by a bug."""


class ConfigError(MetabayesError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class UnknownNameError(MetabayesError, KeyError):
    """A prior, predictor, scenario or engine name is not registered."""

    def __init__(self, kind: str, name: str, known, *, plural: str | None = None):
        known = sorted(known)
        self.kind, self.name, self.known = kind, name, known
        plural = plural or (kind[:-2] + "es" if kind.endswith("is") else kind + "s")  # analysis -> analyses
        super().__init__(f"unknown {kind} {name!r}; known {plural}: {', '.join(known) or '(none)'}")

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return self.args[0]


class ModelError(MetabayesError, ValueError):
    """A NumPyro model does not follow the prior convention."""


class DataError(MetabayesError, ValueError):
    """Evaluation data are malformed (wrong shape, NaN, token out of range)."""


class CheckpointError(MetabayesError, ValueError):
    """A checkpoint is missing, corrupt, or belongs to another configuration."""


class TrainingError(MetabayesError, RuntimeError):
    """Training cannot go on (the loss or the weights stopped being finite); the message says what to change."""


__all__ = [
    "MetabayesError",
    "ConfigError",
    "UnknownNameError",
    "ModelError",
    "DataError",
    "CheckpointError",
    "TrainingError",
]
