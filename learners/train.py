"""Meta-training: a plain loop over fresh prior samples (no epochs, no dataset on disk, no trainer framework).

The batch for step s is ``prior.sample(jax.random.fold_in(key, s), ...)`` with
``key = jax.random.key(seed)``, so a run resumed from a checkpoint sees exactly
the batches an uninterrupted run would have seen, and on the CPU ends with the
same weights, bit for bit. AdamW with linear warmup and cosine decay
(nanoGPT's ``train.py`` schedule), gradient clipping; on CUDA also bf16
autocast, TF32, fused AdamW, and a background thread that samples the prior
ahead of the optimiser and hands batches over by DLPack.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from toolkit.errors import CheckpointError, ConfigError

from .checkpoint import (
    checkpoint_paths,
    jsonable,
    load_optimizer,
    load_weights,
    read_meta,
    save_checkpoint,
    weights_sha256,
)
from .model import TransformerConfig, _from_dict, build_model
from .predictor import LearnerPredictor

Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class TrainConfig:
    """How a learner is meta-trained; the defaults are tuned for the two-coin prior at length 64 on 2 CPU cores."""

    steps: int = 500  # optimiser steps, each on a fresh batch from the prior
    batch_size: int = 128  # episodes per step
    length: int = 64  # tokens per training episode (also the default model.block_size)
    lr: float = 3e-3  # peak learning rate, reached after warmup
    min_lr_ratio: float = 0.05  # the cosine decays to lr * min_lr_ratio at the last step
    warmup_steps: int = 50  # linear warmup from ~0 to lr
    weight_decay: float = 0.0  # AdamW decoupled decay on matrices (never on biases, gains)
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.99  # AdamW second-moment decay
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    seed: int = 0  # initial weights (torch.Generator) and training batches (jax.random.key)
    checkpoint_every: int = 100  # steps between checkpoints (one is always written at the end)
    keep_checkpoints: int = 2  # checkpoints kept on disk, newest first
    log_every: int = 25  # steps per loss-log entry (entries also close at checkpoints)
    prefetch: int | None = None  # batches a sampler thread runs ahead; 0 = sample inline; None = 4 on CUDA, 0 on CPU
    device: Device = "auto"  # "auto" = CUDA when available, else CPU

    def __post_init__(self):
        for name in ("steps", "batch_size", "length", "checkpoint_every", "keep_checkpoints", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.warmup_steps < 0:
            raise ConfigError(f"train.warmup_steps must be >= 0, got {self.warmup_steps!r}")
        if self.prefetch is not None and self.prefetch < 0:
            raise ConfigError(f"train.prefetch must be >= 0 (or None for automatic), got {self.prefetch!r}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr!r}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"train.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio!r}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError(f"train.beta1 and train.beta2 must lie in [0, 1), got {self.beta1}, {self.beta2}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("train.weight_decay and train.grad_clip must be >= 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"train.device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a plain dict (a TOML table, a checkpoint's JSON), validating names and types."""
        return _from_dict(cls, values, "train")


# Settings that change how a run executes but not what it computes: they may differ on resume.
# jax.random.fold_in data of the samples an architecture fits itself to before step 0: no step number reaches it.
PRIOR_FIT_STREAM = 2**31 - 1

RUNTIME_SETTINGS = ("checkpoint_every", "keep_checkpoints", "log_every", "prefetch", "device")


@dataclass
class TrainResult:
    """What `train` returns: the trained predictor and the run's record."""

    predictor: LearnerPredictor  # the learner, in eval mode, ready to predict
    loss_log: list[tuple[int, float]]  # (step, mean training loss since the previous entry)
    wall_time_s: float  # training wall time summed over every (resumed) session
    steps: int  # optimiser steps taken in total
    resumed_from: int  # step of the checkpoint this call resumed from; 0 when trained from scratch
    weights_sha256: str  # hash of the final weights (also in the checkpoint JSON)
    checkpoint: Path | None = None  # JSON of the final checkpoint; None when out_dir was None
    meta: dict[str, Any] = field(default_factory=dict, repr=False)  # the final checkpoint's JSON


def resolve_model_config(prior, model_config, train_config: TrainConfig):
    """Fill what the architecture reads from the prior and the training length; check they agree.

    An architecture config with a ``resolve(prior, train_config)`` method (the
    regression `PFNConfig`) resolves itself; the token configs get
    ``vocab_size`` from the prior and ``block_size`` from ``train_config.length``.
    """
    if hasattr(model_config, "resolve"):
        return model_config.resolve(prior, train_config)
    if prior.kind != "tokens":
        raise ConfigError(
            f"prior {prior.name!r} is a {prior.kind} prior, but {type(model_config).__name__} is a token "
            "architecture; use the regression learner (learners.PFNConfig, [learner] type = \"pfn\")"
        )
    vocab = prior.num_outcomes if model_config.vocab_size is None else model_config.vocab_size
    if vocab != prior.num_outcomes:
        raise ConfigError(f"model.vocab_size is {vocab} but prior {prior.name!r} has {prior.num_outcomes} outcomes")
    block = train_config.length if model_config.block_size is None else model_config.block_size
    if block < train_config.length:
        raise ConfigError(
            f"train.length ({train_config.length}) is longer than model.block_size ({block}); "
            "raise model.block_size or shorten train.length"
        )
    return replace(model_config, vocab_size=vocab, block_size=block)


def run_signature(prior, model_config: TransformerConfig, train_config: TrainConfig) -> dict[str, Any]:
    """What a checkpoint must match to be resumed or reused: architecture, training config, prior."""
    model_config = resolve_model_config(prior, model_config, train_config)
    train = {k: v for k, v in train_config.to_dict().items() if k not in RUNTIME_SETTINGS}
    return jsonable({"model": model_config.to_dict(), "train": train, "prior": prior.describe()})


def config_diff(meta: dict[str, Any], signature: dict[str, Any]) -> list[str]:
    """Human-readable differences ``"train.lr: checkpoint 0.001, requested 0.002"`` between a checkpoint and a run."""
    stored = {
        "model": meta.get("model", {}),
        "train": {k: v for k, v in meta.get("train", {}).items() if k not in RUNTIME_SETTINGS},
        "prior": meta.get("prior", {}),
    }
    return [
        f"{key}: checkpoint {a!r}, requested {b!r}"
        for key, a, b in _flat_diff(stored, signature)
    ]


def config_matches(
    out_dir, prior, model_config: TransformerConfig, train_config: TrainConfig, *, finished: bool = True
) -> bool:
    """True when ``out_dir`` holds a checkpoint of this exact run (and, with ``finished``, its last step).

    The CLI uses it to reuse a trained learner instead of retraining. A corrupt
    checkpoint raises `CheckpointError` rather than returning False.
    """
    meta = read_meta(out_dir) if out_dir is not None and Path(out_dir).is_dir() else None
    if meta is None or config_diff(meta, run_signature(prior, model_config, train_config)):
        return False
    return not finished or meta["step"] >= train_config.steps


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of the optimiser step taken at ``step`` (0-based): linear warmup, then cosine decay."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / (config.warmup_steps + 1)
    min_lr = config.lr * config.min_lr_ratio
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))) * (config.lr - min_lr)


def pick_device(device: Device) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def masked_cross_entropy(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean next-token loss over the positions that hold data.

    logits (B, T, V), y (B, T), mask (B, T) bool or None.
    """
    loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")  # (B*T,)
    if mask is None:
        return loss.mean()
    mask = mask.flatten().to(loss.dtype)  # (B*T,)
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


def batch_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor | None]) -> torch.Tensor:
    """The training loss of ``model`` on one batch ``{"y", "x", "mask"}``.

    An architecture with a ``training_loss(batch)`` method (the regression
    learner: negative log density of the realised y) computes its own; the
    token learners get `masked_cross_entropy` of their logits.
    """
    own = getattr(model, "training_loss", None)
    if own is not None:
        return own(batch)
    return masked_cross_entropy(model(batch["y"]), batch["y"], batch["mask"])


def train(
    prior,
    model_config: TransformerConfig | None = None,
    train_config: TrainConfig | None = None,
    out_dir=None,
    *,
    progress: bool = True,
) -> TrainResult:
    """Meta-train a learner on fresh samples from ``prior``, resuming from ``out_dir``.

    Parameters
    ----------
    prior : toolkit.Prior
        The prior; its ``sample`` draws every training batch.
    model_config : TransformerConfig, RNNConfig or another registered architecture's config, optional
        Architecture, chosen by the config's type (default `TransformerConfig()`); what it reads from
        the prior (``vocab_size``, ``block_size``) is filled by `resolve_model_config`.
    train_config : TrainConfig, optional
        Optimisation settings (default `TrainConfig()`).
    out_dir : path, optional
        Checkpoint directory. When it holds a checkpoint of the same
        configuration, training resumes from the newest one (a finished run
        returns at once); ``None`` trains without checkpoints.
    progress : bool
        Show a tqdm bar with the loss and steps/s.

    Returns
    -------
    TrainResult
        ``.predictor`` (a `LearnerPredictor`), ``.loss_log``, ``.wall_time_s``,
        ``.steps``, ``.resumed_from``, ``.weights_sha256``, ``.checkpoint``.

    Raises
    ------
    CheckpointError
        ``out_dir`` holds a checkpoint of another configuration (the message
        names the differing settings), or a corrupt one (it names the file).

    Examples
    --------
    >>> import priors                                                 # doctest: +SKIP
    >>> result = train(priors.get("coin_mixture"), out_dir="runs/coin")  # doctest: +SKIP
    >>> result.predictor.predict(episodes)                            # doctest: +SKIP
    """
    session_start = time.perf_counter()
    model_config = TransformerConfig() if model_config is None else model_config
    train_config = TrainConfig() if train_config is None else train_config
    cfg = train_config
    model_config = resolve_model_config(prior, model_config, cfg)
    signature = run_signature(prior, model_config, cfg)
    device = pick_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls for the float32 parts outside autocast
        torch.backends.cudnn.allow_tf32 = True

    model = build_model(model_config, generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    optimizer = _make_optimizer(model, cfg, device)
    start, loss_log, wall_before = 0, [], 0.0
    meta = read_meta(out_dir) if out_dir is not None else None
    if meta is not None:
        diff = config_diff(meta, signature)
        if diff:
            raise CheckpointError(
                f"{out_dir} holds a checkpoint of another configuration ({'; '.join(diff)}); "
                f"pass another --out directory, or delete {out_dir} to retrain"
            )
        model.load_state_dict(load_weights(out_dir, meta))  # buffers fitted to the prior come back too
        if meta["step"] < cfg.steps:
            load_optimizer(out_dir, meta, optimizer)
        start, wall_before = int(meta["step"]), float(meta.get("wall_time_s", 0.0))
        loss_log = [(int(s), float(v)) for s, v in meta.get("loss_log", [])]
    elif hasattr(model, "fit_to_prior"):  # e.g. the bar head's buckets at quantiles of prior samples
        model.fit_to_prior(prior, jax.random.fold_in(jax.random.key(cfg.seed), PRIOR_FIT_STREAM), cfg)
    resumed_from = start

    def record(step: int) -> dict[str, Any]:
        return {
            "architecture": type(model).__name__,
            **signature,
            "outcomes": list(prior.outcomes or ()),
            "seed": cfg.seed,
            "steps": cfg.steps,
            "finished": step >= cfg.steps,
            "loss_log": loss_log,
            "wall_time_s": wall_before + time.perf_counter() - session_start,
            "num_parameters": model.num_parameters(),
            "device": str(device),
            "runtime": {k: getattr(cfg, k) for k in RUNTIME_SETTINGS},
            "torch_version": torch.__version__,
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    checkpoint = None
    if start < cfg.steps:
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
        batches = _Prefetcher(prior, cfg, start, device)
        bar = tqdm(total=cfg.steps, initial=start, disable=not progress, unit="step", desc="train", leave=False)
        loss_sum, loss_count = torch.zeros((), device=device), 0
        model.train()
        try:
            for step in range(start, cfg.steps):
                batch = batches.get(step)  # {"y": (B, T), "x": (B, T, F) or None, "mask": (B, T) or None}
                for group in optimizer.param_groups:
                    group["lr"] = lr_at(step, cfg)
                with autocast:
                    loss = batch_loss(model, batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                loss_sum += loss.detach()
                loss_count += 1
                done = step + 1
                at_checkpoint = out_dir is not None and (done % cfg.checkpoint_every == 0 or done == cfg.steps)
                if done % cfg.log_every == 0 or at_checkpoint or done == cfg.steps:
                    loss_log.append((done, loss_sum.item() / loss_count))
                    loss_sum, loss_count = torch.zeros((), device=device), 0
                    bar.set_postfix(loss=f"{loss_log[-1][1]:.4f}", refresh=False)
                if at_checkpoint:
                    keep = cfg.keep_checkpoints
                    checkpoint = save_checkpoint(out_dir, done, model, optimizer, record(done), keep=keep)
                bar.update(1)
        finally:
            batches.close()
            bar.close()
        meta = jsonable({**record(cfg.steps), "step": cfg.steps, "weights_sha256": weights_sha256(model.state_dict())})
    elif out_dir is not None:
        checkpoint = checkpoint_paths(out_dir, start)["json"]
    if checkpoint is not None:
        meta = read_meta(out_dir)
    model.eval()
    predictor = LearnerPredictor(model.to("cpu"), meta, checkpoint=checkpoint)
    return TrainResult(
        predictor=predictor,
        loss_log=[tuple(e) for e in meta["loss_log"]],
        wall_time_s=float(meta["wall_time_s"]),
        steps=int(meta["step"]),
        resumed_from=resumed_from,
        weights_sha256=meta["weights_sha256"],
        checkpoint=checkpoint,
        meta=meta,
    )


def _make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]  # matrices and embeddings
    no_decay = [p for p in model.parameters() if p.dim() < 2]  # biases and LayerNorm gains
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=lr_at(0, cfg), betas=(cfg.beta1, cfg.beta2), **fused)


class _Prefetcher:
    """Samples the batches of steps ``start, start + 1, ...`` in a background thread, ``cfg.prefetch`` ahead.

    With a depth of 0 it samples in the caller's thread. Errors in the sampler
    are re-raised by `get`, at the step whose batch failed.
    """

    def __init__(self, prior, cfg: TrainConfig, start: int, device: torch.device):
        self.prior, self.cfg, self.device = prior, cfg, device
        self.key = jax.random.key(cfg.seed)
        # On CUDA the thread keeps the accelerator fed. On the CPU there is nothing idle to feed: the thread
        # competes with torch's threads for the same cores, and measured no faster on 2 cores.
        depth = cfg.prefetch if cfg.prefetch is not None else (4 if device.type == "cuda" else 0)
        self.queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self.stop = threading.Event()
        self.thread = None
        if depth > 0:
            self.thread = threading.Thread(target=self._run, args=(start,), name="prior-sampler", daemon=True)
            self.thread.start()

    def batch(self, step: int) -> dict[str, torch.Tensor | None]:
        episodes = self.prior.sample(jax.random.fold_in(self.key, step), self.cfg.batch_size, self.cfg.length)
        y = _to_torch(episodes.y, self.device)  # (B, T)
        y = y.long() if self.prior.kind == "tokens" else y.float()
        x = None if episodes.x is None else _to_torch(episodes.x, self.device).float()  # (B, T, F)
        mask = None if episodes.mask is None else _to_torch(episodes.mask, self.device).bool()  # (B, T)
        return {"y": y, "x": x, "mask": mask}

    def _run(self, start: int) -> None:
        step = start
        while not self.stop.is_set() and step < self.cfg.steps:
            try:
                item = (step, self.batch(step))
            except BaseException as exc:  # noqa: BLE001 - handed to the training thread
                item = (step, exc)
            while not self.stop.is_set():
                try:
                    self.queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item[1], BaseException):
                return
            step += 1

    def get(self, step: int) -> dict[str, torch.Tensor | None]:
        if self.thread is None:
            return self.batch(step)
        got, item = self.queue.get()
        if isinstance(item, BaseException):
            raise item
        assert got == step, f"sampler produced step {got}, loop expected {step}"
        return item

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=10)


def _to_torch(array, device: torch.device) -> torch.Tensor:
    """Hand a sampled array to torch: zero-copy DLPack on GPU (pinned, async copy), ``from_numpy`` on CPU."""
    if device.type != "cuda":
        return torch.from_numpy(np.asarray(array))
    tensor = torch.from_dlpack(array)  # a JAX array or a numpy array, without a copy
    if tensor.device.type == "cpu":
        tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)


def _flat_diff(a: Any, b: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in a:
                out.append((name, "(absent)", b[key]))
            elif key not in b:
                out.append((name, a[key], "(absent)"))
            else:
                out.extend(_flat_diff(a[key], b[key], name))
        return out
    return [] if a == b else [(prefix, a, b)]


__all__ = [
    "TrainConfig",
    "TrainResult",
    "train",
    "config_matches",
    "config_diff",
    "run_signature",
    "resolve_model_config",
    "lr_at",
    "masked_cross_entropy",
    "batch_loss",
    "RUNTIME_SETTINGS",
]
