"""Self-describing, pickle-free checkpoints: safetensors for tensors, JSON for everything else.

A checkpoint at step s in ``out_dir`` is three files::

    step-000500.safetensors         model weights (float32)
    step-000500.optim.safetensors   AdamW state tensors (exp_avg, exp_avg_sq, step)
    step-000500.json                architecture, prior, training config, step, seed,
                                    loss log, wall time, sha256 of the weights

Each file is written to a temporary name and moved into place with
``os.replace``; the JSON goes last and is the commit marker, so a run killed
mid-write leaves the previous checkpoint intact. ``torch.load`` is never used:
loading a checkpoint cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, ValidationError
from safetensors.torch import load_file, save_file

from toolkit.errors import CheckpointError

FORMAT = "metabayes.learner/1"
_STEP_JSON = re.compile(r"^step-(\d+)\.json$")
_STEP_FILE = re.compile(r"^step-(\d+)\.(json|safetensors|optim\.safetensors)(\.tmp-\d+)?$")


def checkpoint_paths(out_dir: str | os.PathLike, step: int) -> dict[str, Path]:
    """The three files of the checkpoint at ``step``."""
    stem = Path(out_dir) / f"step-{step:06d}"
    return {
        "json": stem.with_name(stem.name + ".json"),
        "weights": stem.with_name(stem.name + ".safetensors"),
        "optimizer": stem.with_name(stem.name + ".optim.safetensors"),
    }


def checkpoint_steps(out_dir: str | os.PathLike) -> list[int]:
    """Steps of the committed checkpoints (those whose JSON exists) in ``out_dir``, ascending."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    return sorted(int(m.group(1)) for p in out_dir.iterdir() if (m := _STEP_JSON.match(p.name)))


def weights_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of the tensors, in name order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(
    out_dir: str | os.PathLike,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    meta: dict[str, Any],
    *,
    keep: int = 2,
) -> Path:
    """Write the checkpoint at ``step`` atomically, then delete all but the newest ``keep``.

    Returns the path of the JSON file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = checkpoint_paths(out_dir, step)
    weights = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    meta = {**meta, "format": FORMAT, "step": step, "weights_sha256": weights_sha256(weights)}
    meta["files"] = {"weights": paths["weights"].name}
    _atomic(paths["weights"], lambda tmp: save_file(weights, tmp, metadata={"format": FORMAT}))
    if optimizer is not None:
        tensors = _optimizer_tensors(optimizer)
        _atomic(paths["optimizer"], lambda tmp: save_file(tensors, tmp, metadata={"format": FORMAT}))
        meta["files"]["optimizer"] = paths["optimizer"].name
    text = json.dumps(meta, indent=1, allow_nan=True)
    _atomic(paths["json"], lambda tmp: Path(tmp).write_text(text))
    _prune(out_dir, keep)
    return paths["json"]


def read_meta(out_dir: str | os.PathLike, step: int | None = None) -> dict[str, Any] | None:
    """The JSON of the checkpoint at ``step`` (default: the newest), or None when there is none.

    Raises
    ------
    CheckpointError
        The JSON is unreadable or not a metabayes learner checkpoint.
    """
    steps = checkpoint_steps(out_dir)
    if not steps:
        return None
    step = steps[-1] if step is None else step
    path = checkpoint_paths(out_dir, step)["json"]
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at step {step} in {out_dir}; steps there: {steps}")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(
            f"checkpoint file {path} is corrupt ({type(exc).__name__}: {exc}); delete it to fall back to an "
            "earlier checkpoint, or delete the directory to retrain"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a metabayes learner checkpoint (expected format {FORMAT!r})")
    check_meta(meta, path)
    meta.setdefault("architecture", "CausalTransformer")  # checkpoints written before the registry held transformers
    return meta


_FILE_NAME = re.compile(r"^step-\d+\.(optim\.)?safetensors$")


def _file_name(name: str) -> str:
    """A checkpoint's tensor file: a plain name of this folder (``step-000500.safetensors``), no path."""
    if not _FILE_NAME.match(name):
        raise ValueError(f"{name!r} is not a checkpoint file of this folder (step-NNNNNN[.optim].safetensors)")
    return name


class _Files(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weights: Annotated[str, AfterValidator(_file_name)]
    optimizer: Annotated[str, AfterValidator(_file_name)] | None = None


class _Meta(BaseModel):
    """What a checkpoint's JSON must hold (other keys are kept as written: provenance)."""

    model_config = ConfigDict(extra="allow")
    format: str
    architecture: str = "CausalTransformer"  # checkpoints written before the registry existed hold transformers
    model: dict[str, Any]
    train: dict[str, Any]
    prior: dict[str, Any]
    step: StrictInt = Field(ge=0)
    weights_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    files: _Files
    loss_log: list[tuple[StrictInt, float]] = []
    wall_time_s: float = Field(0.0, ge=0)
    outcomes: list[str] = []


def check_meta(meta: dict[str, Any], path: Path) -> None:
    """CheckpointError naming the file, the key and the fix unless ``meta`` is a well-formed checkpoint JSON."""
    try:
        _Meta.model_validate(meta)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise CheckpointError(
            f"checkpoint file {path}: {key}: {err['msg']}; the JSON is damaged or was edited: delete it (and its "
            f".safetensors) to fall back to an earlier checkpoint, or delete {path.parent} to retrain"
        ) from None


def load_weights(out_dir: str | os.PathLike, meta: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model weights of the checkpoint described by ``meta``, checked against its sha256."""
    path = Path(out_dir) / meta["files"]["weights"]
    tensors = _load_tensors(path)
    if weights_sha256(tensors) != meta["weights_sha256"]:
        raise CheckpointError(
            f"checkpoint file {path} does not match the sha256 recorded in its JSON; it is corrupt, "
            "delete it (and its .json) to fall back to an earlier checkpoint"
        )
    return tensors


def load_optimizer(out_dir: str | os.PathLike, meta: dict[str, Any], optimizer: torch.optim.Optimizer) -> None:
    """Restore the AdamW state tensors saved with the checkpoint described by ``meta``."""
    name = meta.get("files", {}).get("optimizer")
    if name is None:
        raise CheckpointError(f"the checkpoint at step {meta['step']} in {out_dir} has no optimizer state to resume")
    path = Path(out_dir) / name
    tensors = _load_tensors(path)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        index, field = key.split(".", 1)
        state.setdefault(int(index), {})[field] = value
    try:
        optimizer.load_state_dict({"state": state, "param_groups": optimizer.state_dict()["param_groups"]})
    except (ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"optimizer state in {path} does not fit the model: {exc}") from None


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing; delete the directory to retrain")
    try:
        return load_file(path)
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error type for every corruption
        raise CheckpointError(
            f"checkpoint file {path} is corrupt ({exc}); delete it and its .json to fall back to an earlier "
            "checkpoint, or delete the directory to retrain"
        ) from None


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    tensors = {}
    for index, fields in optimizer.state_dict()["state"].items():
        for field, value in fields.items():
            value = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{index}.{field}"] = value.detach().to("cpu").contiguous()
    return tensors


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        write(str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # safetensors writes 0600; results directories are meant to be shared
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _prune(out_dir: Path, keep: int) -> None:
    """Delete checkpoint files older than the newest ``keep`` committed steps (and stray temporaries)."""
    kept = set(checkpoint_steps(out_dir)[-max(keep, 1) :])
    for p in out_dir.iterdir():
        m = _STEP_FILE.match(p.name)
        if m and (int(m.group(1)) not in kept or m.group(3)) and int(m.group(1)) <= max(kept):
            p.unlink(missing_ok=True)


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (tuples become lists, numpy scalars and arrays become lists/numbers)."""
    return json.loads(json.dumps(value, default=lambda v: np.asarray(v).tolist()))


__all__ = [
    "FORMAT",
    "checkpoint_paths",
    "checkpoint_steps",
    "weights_sha256",
    "save_checkpoint",
    "read_meta",
    "load_weights",
    "load_optimizer",
    "jsonable",
    "check_meta",
]
