"""A trained learner as a toolkit `Predictor`, and `load` to rebuild one from its checkpoint directory.

Token learners give next-token log-probabilities; a regression learner (an
architecture whose class says ``kind = "regression"``, the PFN) gives the log
density of the realised y, mean, variance, quantiles and, on request, the log
density on a y-grid, all computed in float64 from its bar distribution. What
differs lives in the architecture (`learners.model.Architecture`) and the
data kind (`toolkit.kinds`), not here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from toolkit.episodes import Episodes
from toolkit.errors import CheckpointError, DataError, MetabayesError
from toolkit.kinds import get_kind
from toolkit.predictive import Predictor

from .checkpoint import checkpoint_paths, load_weights, read_meta
from .model import Architecture, architecture


class LearnerPredictor(Predictor):
    """Predictions of a trained learner (any registered architecture), as the toolkit's prediction Dataset.

    The architecture says what it reads from the episodes and what its predictive is
    (`learners.model.Architecture.episode_arrays` / ``predictive``); this class batches, checks
    lengths and kinds, and labels the result through the data kind (`toolkit.kinds`).

    Parameters
    ----------
    model : CausalTransformer, RecurrentLM or PFNTransformer
        The trained network (moved to ``device``, put in eval mode).
    meta : dict
        The checkpoint JSON (architecture, training config, prior, steps, wall
        time, weights hash), recorded by `describe`.
    name : str
        The predictor's name in the comparison Dataset.
    checkpoint : path, optional
        The checkpoint JSON this predictor came from.
    batch_size : int
        Episodes per forward pass in `predict`.
    device : str or torch.device
        Where `predict` runs.
    """

    def __init__(
        self,
        model: Architecture,
        meta: dict[str, Any],
        *,
        name: str = "learner",
        checkpoint=None,
        batch_size: int = 1024,
        device: str | torch.device = "cpu",
    ):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.meta = meta
        self.name = name
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.batch_size = int(batch_size)
        self.kind = model.kind  # "tokens" or "regression"
        self.data_kind = get_kind(model.kind)
        self.outcomes = None
        if self.data_kind.finite_outcomes:
            self.outcomes = tuple(meta.get("outcomes") or (str(v) for v in range(model.config.vocab_size)))

    @property
    def config(self):
        return self.model.config

    @property
    def context(self) -> int:
        """The longest episode the learner reads: its ``block_size`` (the training length by default)."""
        return int(self.config.block_size)

    def _check_length(self, length: int) -> None:
        """DataError naming the fix when episodes are longer than the learner's context."""
        if length > self.context:
            raise DataError(
                f"episodes of length {length} are longer than the learner's context of {self.context} "
                f"(its training length); evaluate at length <= {self.context} or retrain with "
                f"train.length >= {length}"
            )

    @torch.no_grad()
    def outputs(self, episodes: Episodes, *, y_grid: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The architecture's predictive at every position, float64 arrays led by (episode, position).

        Token learners: ``log_prob`` (episode, position, outcome). Regression learners: ``log_score``,
        ``mean``, ``variance``, ``quantile_value`` (..., quantile) and, with ``y_grid``,
        ``grid_log_density`` (..., y_grid).
        """
        self.data_kind.check_episodes(episodes, outcomes=self.outcomes)
        self._check_length(episodes.length)
        arrays = self.model.episode_arrays(episodes)
        grid = None if y_grid is None else torch.tensor(np.asarray(y_grid, np.float64), device=self.device)
        parts = []
        for lo in range(0, episodes.num_episodes, self.batch_size):
            batch = {k: torch.tensor(v[lo : lo + self.batch_size], device=self.device) for k, v in arrays.items()}
            parts.append({k: v.cpu().numpy() for k, v in self.model.predictive(batch, y_grid=grid).items()})
        return {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}

    def log_prob(self, y: np.ndarray) -> np.ndarray:
        """log p(y_t = v | y_<t) for every position and outcome.

        Parameters
        ----------
        y : np.ndarray of int, shape (episode, position)

        Returns
        -------
        np.ndarray of float64, shape (episode, position, outcome)
        """
        return self.token_log_prob(y)

    def token_log_prob(self, y: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        if not self.data_kind.finite_outcomes:
            raise DataError("this learner predicts regression episodes; it has no token log-probabilities (use predict)")
        return self.outputs(Episodes(y=np.asarray(y), mask=mask))["log_prob"]

    def predict(self, episodes: Episodes, *, y_grid: np.ndarray | None = None) -> xr.Dataset:
        """Per-position predictive distributions as the toolkit's prediction Dataset.

        Token learners give ``log_prob (episode, position, outcome)`` and
        ``log_score``; regression learners give ``log_score``, ``mean``,
        ``variance``, ``quantile_value (episode, position, quantile)`` at
        `toolkit.dims.QUANTILES` and, with ``y_grid``, ``grid_log_density
        (episode, position, y_grid)``.

        Parameters
        ----------
        episodes : Episodes
            Episodes of the learner's kind, with position count at most the
            learner's context. Masked positions get a NaN ``log_score``.
        y_grid : np.ndarray, shape (y_grid,), optional
            Regression only: points at which to report the log density.
        """
        out = self.outputs(episodes, y_grid=y_grid)
        if "log_score" in out and episodes.mask is not None:
            out["log_score"] = np.where(episodes.mask, out["log_score"], np.nan)
        return self.data_kind.predictions(out, episodes, outcomes=self.outcomes, y_grid=y_grid)

    def describe(self) -> dict[str, Any]:
        """JSON-safe provenance: architecture, training config, steps, wall time, weights hash, prior."""
        meta = self.meta
        return {
            "name": self.name,
            "architecture": meta.get("architecture", type(self.model).__name__),
            "model": meta.get("model", self.config.to_dict()),
            "train": meta.get("train", {}),
            "prior": meta.get("prior", {}),
            "seed": meta.get("seed"),
            "steps": meta.get("step"),
            "finished": meta.get("finished"),
            "wall_time_s": meta.get("wall_time_s"),
            "num_parameters": self.model.num_parameters(),
            "weights_sha256": meta.get("weights_sha256"),
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "final_loss": meta["loss_log"][-1][1] if meta.get("loss_log") else None,
        }

    def __repr__(self) -> str:
        return (
            f"LearnerPredictor(name={self.name!r}, {self.model.shape_text()}, "
            f"steps={self.meta.get('step')}, context={self.context})"
        )


def load(
    out_dir, *, name: str = "learner", device: str | torch.device = "cpu", step: int | None = None
) -> LearnerPredictor:
    """Rebuild the learner saved in ``out_dir`` (its newest checkpoint, or the one at ``step``).

    Raises
    ------
    CheckpointError
        No checkpoint in ``out_dir``, or a corrupt one (the message names the file).
    """
    meta = read_meta(out_dir, step)
    if meta is None:
        raise CheckpointError(f"no learner checkpoint in {out_dir}; train one first (learners.train)")
    path = checkpoint_paths(out_dir, meta["step"])["json"]
    fix = f"the JSON or the weights were edited or come from another version: delete {out_dir} to retrain"
    try:
        config_cls, module_cls = architecture(meta["architecture"])
        config = config_cls.from_dict(meta["model"])
        model = module_cls(config)
    except MetabayesError as exc:
        raise CheckpointError(f"checkpoint file {path}: its architecture does not build ({exc}); {fix}") from None
    weights = load_weights(out_dir, meta)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in weights.items()}
    if expected != found:
        differ = sorted(k for k in set(expected) | set(found) if expected.get(k) != found.get(k))
        k = differ[0]
        raise CheckpointError(
            f"weights in {out_dir} do not fit the {meta['architecture']} in {path.name}: {len(differ)} tensor(s) "
            f"differ, e.g. {k!r}: weights {found.get(k, 'absent')}, architecture {expected.get(k, 'absent')}; {fix}"
        )
    model.load_state_dict(weights)
    return LearnerPredictor(model, meta, name=name, device=device, checkpoint=path)


__all__ = ["LearnerPredictor", "load"]
