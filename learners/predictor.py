"""A trained learner as a toolkit `Predictor`, and `load` to rebuild one from its checkpoint directory.

Token learners give next-token log-probabilities; a regression learner (an
architecture whose class says ``kind = "regression"``, the PFN) gives the log
density of the realised y, mean, variance, quantiles and, on request, the log
density on a y-grid, all computed in float64 from its bar distribution.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from toolkit.dims import QUANTILES
from toolkit.episodes import Episodes
from toolkit.errors import CheckpointError, DataError
from toolkit.predictive import regression_predictions, token_predictions

from .checkpoint import checkpoint_paths, load_weights, read_meta
from .model import CausalTransformer, TransformerConfig, architecture


class LearnerPredictor:
    """Predictions of a trained learner (any registered architecture), as the toolkit's prediction Dataset.

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
        model: CausalTransformer,
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
        self.kind = getattr(model, "kind", "tokens")  # "tokens" or "regression"
        if self.kind == "tokens":
            self.outcomes = tuple(meta.get("outcomes") or (str(v) for v in range(model.config.vocab_size)))
        else:
            self.outcomes = None

    @property
    def config(self) -> TransformerConfig:
        return self.model.config

    @torch.no_grad()
    def log_prob(self, y: np.ndarray) -> np.ndarray:
        """log p(y_t = v | y_<t) for every position and outcome.

        Parameters
        ----------
        y : np.ndarray of int, shape (episode, position)

        Returns
        -------
        np.ndarray of float64, shape (episode, position, outcome)
        """
        if self.kind != "tokens":
            raise DataError(
                "this learner predicts regression episodes; it has no token log-probabilities (use predict)"
            )
        y = np.asarray(y)
        num_episodes, length = y.shape
        self._check_length(length)
        # Padding after EOS may hold any value; it never reaches earlier positions, but must index the embedding.
        y = np.clip(y.astype(np.int64), 0, self.config.vocab_size - 1)
        out = np.empty((num_episodes, length, self.config.vocab_size), dtype=np.float64)
        for lo in range(0, num_episodes, self.batch_size):
            chunk = torch.from_numpy(y[lo : lo + self.batch_size]).to(self.device)  # (b, T)
            logits = self.model(chunk)  # (b, T, V)
            out[lo : lo + self.batch_size] = torch.log_softmax(logits.double(), dim=-1).cpu().numpy()
        return out

    def _check_length(self, length: int) -> None:
        """DataError naming the fix when episodes are longer than the learner's context."""
        if length > self.config.block_size:
            raise DataError(
                f"episodes of length {length} are longer than the learner's context of {self.config.block_size} "
                f"(its training length); evaluate at length <= {self.config.block_size} or retrain with "
                f"train.length >= {length}"
            )

    @torch.no_grad()
    def regression_outputs(
        self, x: np.ndarray, y: np.ndarray, *, y_grid: np.ndarray | None = None, levels=QUANTILES
    ) -> dict[str, np.ndarray]:
        """The regression learner's predictive at every position, in float64.

        Parameters
        ----------
        x : np.ndarray, shape (episode, position, feature)
        y : np.ndarray, shape (episode, position)
        y_grid : np.ndarray, shape (y_grid,), optional
        levels : sequence of float
            Quantile levels.

        Returns
        -------
        dict of np.ndarray
            ``log_score``, ``mean``, ``variance`` (episode, position),
            ``quantile_value`` (episode, position, quantile) and, with
            ``y_grid``, ``grid_log_density`` (episode, position, y_grid).
        """
        if self.kind != "regression":
            raise DataError("this learner predicts token sequences; it has no regression predictive (use predict)")
        x, y = np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.float64)
        num_episodes, length = y.shape
        self._check_length(length)
        if x.shape[-1] != self.config.x_dim:
            raise DataError(
                f"the episodes carry {x.shape[-1]} features x but the learner was trained on {self.config.x_dim}; "
                "evaluate it on episodes of its own prior's shape"
            )
        bar = self.model.bar
        grid = None if y_grid is None else torch.tensor(np.asarray(y_grid, np.float64), device=self.device)
        out = {
            "log_score": np.empty((num_episodes, length)),
            "mean": np.empty((num_episodes, length)),
            "variance": np.empty((num_episodes, length)),
            "quantile_value": np.empty((num_episodes, length, len(levels))),
        }
        if grid is not None:
            out["grid_log_density"] = np.empty((num_episodes, length, grid.numel()))
        for lo in range(0, num_episodes, self.batch_size):
            xb = torch.tensor(x[lo : lo + self.batch_size], device=self.device)  # (b, T, F), a copy
            yb = torch.tensor(y[lo : lo + self.batch_size], device=self.device)  # (b, T), float64
            logits = self.model(xb, yb).double()  # (b, T, K)
            chunk = slice(lo, lo + self.batch_size)
            out["log_score"][chunk] = bar.log_density(logits, yb).cpu().numpy()
            out["mean"][chunk] = bar.mean(logits).cpu().numpy()
            out["variance"][chunk] = bar.variance(logits).cpu().numpy()
            out["quantile_value"][chunk] = bar.icdf(logits, levels).cpu().numpy()
            if grid is not None:
                out["grid_log_density"][chunk] = bar.grid_log_density(logits, grid).cpu().numpy()
        return out

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
        if self.kind == "regression":
            if episodes.x is None:
                raise DataError(
                    "this learner predicts regression episodes (real y from inputs x); the episodes carry no x: "
                    "evaluate it on episodes of a regression prior"
                )
            out = self.regression_outputs(episodes.x, episodes.y, y_grid=y_grid)
            if episodes.mask is not None:
                out["log_score"] = np.where(episodes.mask, out["log_score"], np.nan)
            return regression_predictions(**out, y_grid=y_grid)
        if episodes.x is not None:
            raise DataError("this learner predicts token sequences; the episodes carry regression inputs x")
        episodes.check_tokens(self.config.vocab_size, labels=self.outcomes)
        return token_predictions(self.log_prob(episodes.y), episodes, self.outcomes)

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
        c = self.config
        shape = f"{c.n_layer} layers x {c.n_embd} wide"
        if getattr(c, "num_buckets", None) is not None:
            shape += f", {c.num_buckets} buckets"
        return (
            f"LearnerPredictor(name={self.name!r}, {shape}, "
            f"steps={self.meta.get('step')}, context={c.block_size})"
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
    # checkpoints written before the registry existed hold transformers
    config_cls, module_cls = architecture(meta.get("architecture", "CausalTransformer"))
    config = config_cls.from_dict(meta["model"])
    model = module_cls(config)
    try:
        model.load_state_dict(load_weights(out_dir, meta))
    except RuntimeError as exc:  # names or shapes that do not fit the recorded architecture
        raise CheckpointError(f"weights in {out_dir} do not fit the architecture in its JSON: {exc}") from None
    checkpoint = checkpoint_paths(out_dir, meta["step"])["json"]
    return LearnerPredictor(model, meta, name=name, device=device, checkpoint=checkpoint)


__all__ = ["LearnerPredictor", "load"]
