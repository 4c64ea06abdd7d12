"""Evaluation and training data: `Episodes` (DESIGN.md, "Evaluation")."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import DataError


@dataclass(frozen=True)
class Episodes:
    """A batch of sequences, the unit every predictor consumes.

    Parameters
    ----------
    y : np.ndarray, shape (episode, position)
        Observed outcomes: integers in ``[0, V)`` for token priors, floats for
        regression priors.
    x : np.ndarray, shape (episode, position, feature), optional
        Regression inputs; ``None`` for token priors.
    latents : dict of str to np.ndarray, optional
        True values of the latent sites that generated each episode, leading
        dim ``episode``; known for sampled episodes, absent for prompts.
    mask : np.ndarray of bool, shape (episode, position), optional
        True where a position holds data; False on the padding after EOS.

    Examples
    --------
    >>> ep = Episodes(y=np.array([[0, 1, 1], [1, 1, 0]]))
    >>> ep.num_episodes, ep.length
    (2, 3)
    """

    y: np.ndarray
    x: np.ndarray | None = None
    latents: dict[str, np.ndarray] = field(default_factory=dict)
    mask: np.ndarray | None = None

    def __post_init__(self):
        y = np.asarray(self.y)
        if y.ndim != 2:
            raise DataError(f"Episodes.y must have shape (episode, position), got shape {y.shape}")
        if np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y)):
            bad = np.argwhere(~np.isfinite(y))[0]
            raise DataError(
                f"Episodes.y holds NaN or infinity (first at episode {bad[0]}, position {bad[1] + 1}); "
                "remove or impute those values before evaluating"
            )
        object.__setattr__(self, "y", y)
        if self.x is not None:
            x = np.asarray(self.x)
            if x.ndim == 2:
                x = x[..., None]
            if x.shape[:2] != y.shape:
                raise DataError(
                    f"Episodes.x must have shape (episode, position, feature) matching y {y.shape}, got {x.shape}"
                )
            if not np.all(np.isfinite(x)):
                raise DataError("Episodes.x holds NaN or infinity; remove or impute those values")
            object.__setattr__(self, "x", x)
        if self.mask is not None:
            mask = np.asarray(self.mask, dtype=bool)
            if mask.shape != y.shape:
                raise DataError(f"Episodes.mask must have the shape of y {y.shape}, got {mask.shape}")
            object.__setattr__(self, "mask", mask)
        latents = {k: np.asarray(v) for k, v in (self.latents or {}).items()}
        for name, value in latents.items():
            if value.shape[:1] != y.shape[:1]:
                raise DataError(f"latent {name!r} must lead with the episode dim ({y.shape[0]}), got {value.shape}")
        object.__setattr__(self, "latents", latents)

    @property
    def num_episodes(self) -> int:
        return self.y.shape[0]

    @property
    def length(self) -> int:
        return self.y.shape[1]

    @property
    def num_features(self) -> int:
        return 0 if self.x is None else self.x.shape[-1]

    def __getitem__(self, index) -> Episodes:
        """Select episodes (a slice or an index array) and keep every field aligned."""
        index = np.arange(self.num_episodes)[index]
        index = np.atleast_1d(index)
        return Episodes(
            y=self.y[index],
            x=None if self.x is None else self.x[index],
            latents={k: v[index] for k, v in self.latents.items()},
            mask=None if self.mask is None else self.mask[index],
        )

    def check_tokens(self, num_outcomes: int, *, labels=None) -> None:
        """Raise `DataError` unless every unmasked y is an integer token in ``[0, num_outcomes)``."""
        y = self.y
        if not np.issubdtype(y.dtype, np.integer):
            if np.any(y != np.round(y)):
                raise DataError("token episodes must hold integer outcomes, got non-integer values in y")
        valid = np.ones(y.shape, bool) if self.mask is None else self.mask
        bad = valid & ((y < 0) | (y >= num_outcomes))
        if bad.any():
            e, t = np.argwhere(bad)[0]
            allowed = f"0..{num_outcomes - 1}" + (f" ({', '.join(labels)})" if labels else "")
            raise DataError(
                f"token {y[e, t]} at episode {e}, position {t + 1} is outside the vocabulary; allowed: {allowed}"
            )


__all__ = ["Episodes"]
