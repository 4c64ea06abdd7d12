"""A trained learner as a toolkit `Predictor`, and `load` to rebuild one from its checkpoint directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from toolkit.episodes import Episodes
from toolkit.errors import CheckpointError, DataError
from toolkit.predictive import token_predictions

from .checkpoint import checkpoint_paths, load_weights, read_meta
from .model import CausalTransformer, TransformerConfig, architecture


class LearnerPredictor:
    """Next-token predictions of a trained learner (any registered architecture), as the toolkit's prediction Dataset.

    Parameters
    ----------
    model : CausalTransformer or RecurrentLM
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
        self.outcomes = tuple(meta.get("outcomes") or (str(v) for v in range(model.config.vocab_size)))

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
        y = np.asarray(y)
        num_episodes, length = y.shape
        if length > self.config.block_size:
            raise DataError(
                f"episodes of length {length} are longer than the learner's context of {self.config.block_size} "
                f"(its training length); evaluate at length <= {self.config.block_size} or retrain with "
                f"train.length >= {length}"
            )
        # Padding after EOS may hold any value; it never reaches earlier positions, but must index the embedding.
        y = np.clip(y.astype(np.int64), 0, self.config.vocab_size - 1)
        out = np.empty((num_episodes, length, self.config.vocab_size), dtype=np.float64)
        for lo in range(0, num_episodes, self.batch_size):
            chunk = torch.from_numpy(y[lo : lo + self.batch_size]).to(self.device)  # (b, T)
            logits = self.model(chunk)  # (b, T, V)
            out[lo : lo + self.batch_size] = torch.log_softmax(logits.double(), dim=-1).cpu().numpy()
        return out

    def predict(self, episodes: Episodes, *, y_grid: np.ndarray | None = None) -> xr.Dataset:
        """Per-position predictive distributions: ``log_prob (episode, position, outcome)``, ``log_score``.

        Parameters
        ----------
        episodes : Episodes
            Token episodes, ``y`` of shape (episode, position) with position
            count at most the learner's context. Masked positions get NaN.
        y_grid : None
            Unused (regression only); accepted for the `Predictor` protocol.
        """
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
        return (
            f"LearnerPredictor(name={self.name!r}, {c.n_layer} layers x {c.n_embd} wide, "
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
