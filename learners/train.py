"""Meta-training: a plain loop over fresh prior samples (no epochs, no dataset on disk, no trainer framework).

The batch for step s is ``prior.sample(jax.random.fold_in(key, s), ...)`` with
``key = jax.random.key(seed)`` (with ``train.num_shards = S > 1``: the
concatenation of S shards, shard j drawn from ``fold_in(fold_in(key, s), j)``),
so a run resumed from a checkpoint sees exactly the batches an uninterrupted
run would have seen, and on the CPU ends with the same weights, bit for bit.
A curriculum (Garg et al. 2022) draws the batches of the first steps from
easier priors, e.g. linear regression with x in a subspace of fewer
dimensions: stage i's prior until its step, then the prior itself.
AdamW with linear warmup and cosine decay (nanoGPT's ``train.py`` schedule),
gradient clipping; on CUDA also bf16 autocast, TF32, fused AdamW,
``torch.compile``, and a background thread that samples the prior ahead of the
optimiser and hands batches over by DLPack. Under ``torchrun`` the processes
share each step's shards and average gradients with DDP (`learners.distributed`).
"""

from __future__ import annotations

import inspect
import math
import queue
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import jax
import numpy as np
import torch
from tqdm.auto import tqdm

from toolkit.errors import CheckpointError, ConfigError, TrainingError
from toolkit.prior import Prior

from . import distributed
from .checkpoint import (
    checkpoint_paths,
    checkpoint_steps,
    jsonable,
    load_optimizer,
    load_weights,
    read_meta,
    save_checkpoint,
    weights_sha256,
)
from .config import ConfigDict
from .model import TransformerConfig, build_model, masked_cross_entropy
from .predictor import LearnerPredictor

Device = Literal["auto", "cpu", "cuda"]


# Largest seed both jax.random.key (int64) and torch.Generator accept.
SEED_MAX = 2**63 - 1
# Most optimiser steps a run may ask for: the papers' GPU budgets are below a million; 1e9 is a typo.
MAX_STEPS = 10**8

@dataclass(frozen=True)
class TrainConfig(ConfigDict):
    """How a learner is meta-trained; the defaults are tuned for the two-coin prior at length 64 on 2 CPU cores."""

    SECTION = "train"  # a class attribute (no annotation), not a field

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
    num_shards: int = 1  # each step's batch is this many separately seeded shards; the processes of a run divide it
    prefetch: int | None = None  # batches a sampler thread runs ahead; 0 = sample inline; None = 4 on CUDA, 0 on CPU
    compile: bool | None = None  # torch.compile the training step; None = on for CUDA, off on the CPU
    device: Device = "auto"  # "auto" = CUDA when available, else CPU
    eval_steps: tuple[int, ...] = ()  # keep a checkpoint at each of these steps in OUT/steps/ (the `step` dim)

    def __post_init__(self):
        self.require_positive("steps", "batch_size", "length", "checkpoint_every", "keep_checkpoints", "log_every")
        if self.steps > MAX_STEPS:
            raise ConfigError(f"train.steps = {self.steps} is above the {MAX_STEPS:,} this toolkit trains for; "
                              "give the number of optimiser steps (e.g. 10000)")
        if self.num_shards < 1 or self.batch_size % self.num_shards:
            raise ConfigError(
                f"train.num_shards ({self.num_shards}) must be a positive divisor of train.batch_size "
                f"({self.batch_size}): every shard holds batch_size / num_shards episodes"
            )
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
        self.require_finite("lr", "min_lr_ratio", "weight_decay", "beta1", "beta2", "grad_clip")
        if not 0 <= self.seed <= SEED_MAX:
            raise ConfigError(f"train.seed must lie in 0..{SEED_MAX} (2^63 - 1), got {self.seed}")
        if self.weight_decay < 0 or self.grad_clip < 0:
            raise ConfigError("train.weight_decay and train.grad_clip must be >= 0")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"train.device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        steps = list(self.eval_steps)
        if steps != sorted(set(steps)) or any(not 1 <= s <= self.steps for s in steps):
            raise ConfigError(
                f"train.eval_steps must be increasing steps within 1..train.steps = {self.steps}, got {steps}"
            )


# jax.random.fold_in data of the samples an architecture fits itself to before step 0: no step number reaches it.
PRIOR_FIT_STREAM = 2**31 - 1

# Settings that change how a run executes but not what it computes: they may differ on resume.
RUNTIME_SETTINGS = ("checkpoint_every", "keep_checkpoints", "log_every", "prefetch", "compile", "device")
# Training settings added after checkpoints were first written: a checkpoint without one ran with this value.
ADDED_SETTINGS = {"num_shards": 1, "eval_steps": []}
# The sub-folder of a learner's directory that keeps the checkpoints of train.eval_steps (never pruned).
EVAL_FOLDER = "steps"


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

    Each architecture config resolves itself (`learners.config.ArchitectureConfig.resolve`): the token
    configs take ``vocab_size`` from the prior and ``block_size`` from ``train_config.length``, the PFN
    ``x_dim`` and ``block_size``; a config of another data kind than the prior's is a `ConfigError`.
    """
    return model_config.resolve(prior, train_config)


def run_signature(prior, model_config: TransformerConfig, train_config: TrainConfig, curriculum=()) -> dict[str, Any]:
    """What a checkpoint must match to be resumed or reused: architecture, training config, prior (and curriculum)."""
    model_config = resolve_model_config(prior, model_config, train_config)
    train = {k: v for k, v in train_config.to_dict().items() if k not in RUNTIME_SETTINGS}
    signature = {"model": model_config.to_dict(), "train": train, "prior": prior.describe()}
    stages = check_curriculum(prior, curriculum, train_config)
    if stages:  # absent without one, so that checkpoints written before curricula existed still match
        signature["curriculum"] = [{"until": until, "prior": stage.describe()} for until, stage in stages]
    return jsonable(signature)


def check_curriculum(prior, curriculum, train_config: TrainConfig) -> list[tuple[int, Any]]:
    """``curriculum`` as a list of ``(until, prior)`` stages, checked against ``prior`` and the training config.

    Stage i's prior draws the batches of the steps before ``until_i`` not
    drawn by an earlier stage; ``until`` must increase and stay within
    ``train.steps``, and every stage's prior must produce the same kind of
    data as ``prior`` (same kind, outcomes and input dimension), since one
    model trains on all of them.
    """
    stages = list(curriculum or ())
    previous = 0
    for i, item in enumerate(stages):
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[1], Prior)):
            raise ConfigError(f"curriculum stage {i}: expected a pair (until, prior), got {item!r}")
        until, stage = item
        integer = isinstance(until, (int, np.integer)) and not isinstance(until, bool)
        if not (integer and previous < until <= train_config.steps):
            raise ConfigError(
                f"curriculum stage {i}: until = {until!r} must be an integer step after the previous stage's "
                f"({previous}) and at most train.steps = {train_config.steps}"
            )
        if _data_form(stage) != _data_form(prior):
            raise ConfigError(
                f"curriculum stage {i}: prior {stage.name!r} ({_data_form(stage, text=True)}) does not produce the "
                f"data of the trained prior {prior.name!r} ({_data_form(prior, text=True)}); a stage must change "
                "the prior's parameters, not the shape of its data"
            )
        previous = int(until)
    return [(int(until), stage) for until, stage in stages]


def _data_form(prior, *, text: bool = False):
    """What one model needs all its training data to share: kind, outcomes, input dimension (or their text)."""
    kind, outcomes, x_dim = prior.kind, tuple(prior.outcomes or ()), prior.x_dim
    return f"{kind}, outcomes {outcomes}, x_dim {x_dim}" if text else (kind, outcomes, x_dim)


def config_diff(meta: dict[str, Any], signature: dict[str, Any]) -> list[str]:
    """Human-readable differences ``"train.lr: checkpoint 0.001, requested 0.002"`` between a checkpoint and a run."""
    stored = {
        "model": meta.get("model", {}),
        "train": {k: v for k, v in {**ADDED_SETTINGS, **meta.get("train", {})}.items() if k not in RUNTIME_SETTINGS},
        "prior": meta.get("prior", {}),
    }
    if "curriculum" in meta:
        stored["curriculum"] = meta["curriculum"]
    return [
        f"{key}: checkpoint {a!r}, requested {b!r}"
        for key, a, b in _flat_diff(stored, signature)
    ]


def config_matches(
    out_dir, prior, model_config: TransformerConfig, train_config: TrainConfig, *, finished: bool = True, curriculum=()
) -> bool:
    """True when ``out_dir`` holds a checkpoint of this exact run (and, with ``finished``, its last step).

    The CLI uses it to reuse a trained learner instead of retraining. A corrupt
    checkpoint raises `CheckpointError` rather than returning False.
    """
    meta = read_meta(out_dir) if out_dir is not None and Path(out_dir).is_dir() else None
    if meta is None or config_diff(meta, run_signature(prior, model_config, train_config, curriculum)):
        return False
    return not finished or meta["step"] >= train_config.steps


def resumable_meta(out_dir, signature: dict[str, Any]) -> dict[str, Any] | None:
    """The newest checkpoint JSON in ``out_dir`` if it is of the run ``signature``; None without one.

    Raises
    ------
    CheckpointError
        A damaged checkpoint, or one of another configuration (naming the settings that differ).
    """
    meta = read_meta(out_dir) if out_dir is not None and Path(out_dir).is_dir() else None
    if meta is not None:
        diff = config_diff(meta, signature)
        if diff:
            raise CheckpointError(
                f"{out_dir} holds a checkpoint of another configuration ({'; '.join(diff)}); "
                f"pass another --out directory, or delete {out_dir} to retrain"
            )
    return meta


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of the optimiser step taken at ``step`` (0-based): linear warmup, then cosine decay."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / (config.warmup_steps + 1)
    min_lr = config.lr * config.min_lr_ratio
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))) * (config.lr - min_lr)


def pick_device(device: Device, local_rank: int = 0) -> torch.device:
    """The torch device for ``train.device``; under torchrun each process takes the GPU of its local rank."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device != "cuda":
        return torch.device(device)
    if local_rank >= torch.cuda.device_count():
        raise ConfigError(
            f"this process has local rank {local_rank} but the machine shows {torch.cuda.device_count()} CUDA "
            "device(s); launch at most one process per GPU (torchrun --nproc_per_node <number of GPUs>)"
        )
    return torch.device("cuda", local_rank)


def compiles(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether the training step is compiled: ``train.compile``, or by default on CUDA only."""
    return device.type == "cuda" if cfg.compile is None else bool(cfg.compile)


def batch_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor | None]) -> torch.Tensor:
    """The training loss of ``model`` on one batch ``{"y", "x", "mask"}``: ``model.training_loss(batch)``.

    The token learners' is `masked_cross_entropy` of their logits, the regression learner's the
    negative log density of the realised y. Either is a mean over the positions that hold data
    (``mask``, when there is one): data-parallel training relies on it to weight processes by their
    token counts.
    """
    return model.training_loss(batch)


class _Objective(torch.nn.Module):
    """`batch_loss` as a module's forward, so that DDP's gradient hooks and ``torch.compile`` see the whole loss."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor | None]) -> torch.Tensor:
        return batch_loss(self.model, batch)


def training_objective(model: torch.nn.Module, cfg: TrainConfig, device: torch.device, world=None):
    """``batch -> loss`` for training ``model``: wrapped in DDP across processes, then compiled when asked to.

    Checkpoints keep saving ``model`` itself, so their keys carry neither DDP's
    ``module.`` nor torch.compile's ``_orig_mod.`` prefix. DDP wraps before
    compiling so that TorchDynamo can split the graph at DDP's gradient buckets
    and overlap the all-reduce with the backward pass.
    """
    world = distributed.World() if world is None else world
    objective = _Objective(model)
    if world.distributed:
        ddp = torch.nn.parallel.DistributedDataParallel
        # buffers (rotary angles, buckets fitted to the prior) are the same on every process and never trained:
        # no need to broadcast them before every forward (torch >= 2.13 names the switch forward_sync_buffers)
        params = inspect.signature(ddp).parameters
        no_sync = "forward_sync_buffers" if "forward_sync_buffers" in params else "broadcast_buffers"
        objective = ddp(objective, device_ids=[device.index] if device.type == "cuda" else None, **{no_sync: False})
    if compiles(cfg, device):
        objective = torch.compile(objective)
    return objective


def train_step(objective, optimizer, model, batch, step: int, cfg: TrainConfig, autocast, world=None) -> torch.Tensor:
    """One optimiser step of ``model`` on this process's ``batch``; returns its share of the global mean loss.

    Summed over the processes and divided by their number, the shares are the
    mean loss over the global batch (one process: the loss itself). The tensor
    is detached and stays on the device (no host synchronisation).
    """
    world = distributed.World() if world is None else world
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, cfg)
    with autocast:
        loss = objective(batch)
    if world.distributed and batch["mask"] is not None:
        # DDP averages gradients over the W processes. A process's mean over its own n_r tokens has weight
        # n_r / N in the mean over all N tokens, so scaling it by W n_r / N makes the average the gradient of
        # the global mean (without masks every process holds the same number of tokens: the scale is 1).
        tokens = batch["mask"].sum().to(torch.float32)
        total = distributed.all_reduce(tokens.clone(), world)
        loss = loss * (tokens * world.size / total.clamp_min(1.0))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    return loss.detach()


def train(
    prior,
    model_config: TransformerConfig | None = None,
    train_config: TrainConfig | None = None,
    out_dir=None,
    *,
    progress: bool = True,
    curriculum=(),
) -> TrainResult:
    """Meta-train a learner on fresh samples from ``prior``, resuming from ``out_dir``.

    Launched by ``torchrun`` with several processes, it trains one model with
    DDP: each process draws its own shards of every step's batch
    (`learners.distributed`), rank 0 writes the checkpoints, and every process
    returns the same result.

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
        returns at once), whatever the number of processes that wrote it;
        ``None`` trains without checkpoints. Every process must see it.
    progress : bool
        Show a tqdm bar with the loss and steps/s (rank 0 only).
    curriculum : sequence of (int, toolkit.Prior), optional
        Stages ``(until, prior_i)`` with increasing ``until``: the batches of
        steps before ``until`` come from ``prior_i`` (the first stage that
        has not ended), the rest from ``prior``. Every stage must produce the
        same kind of data as ``prior``; the architecture (bar buckets, vocab)
        is fitted to ``prior`` alone. Part of the run's signature.

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
    ConfigError
        ``train.num_shards`` is not a multiple of the number of processes, or a
        curriculum stage is out of order or produces other data than ``prior``.

    Examples
    --------
    >>> import priors                                                 # doctest: +SKIP
    >>> result = train(priors.get("coin_mixture"), out_dir="runs/coin")  # doctest: +SKIP
    >>> result.predictor.predict(episodes)                            # doctest: +SKIP
    """
    session_start = time.perf_counter()
    model_config = TransformerConfig() if model_config is None else model_config
    cfg = TrainConfig() if train_config is None else train_config
    model_config = resolve_model_config(prior, model_config, cfg)
    world = distributed.world_from_env()
    shards = distributed.shards_of(world, cfg.num_shards)
    device = pick_device(cfg.device, world.local_rank)
    distributed.join(world, device)
    signature = run_signature(prior, model_config, cfg, curriculum)
    stages = check_curriculum(prior, curriculum, cfg)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True  # TF32 matmuls for the float32 parts outside autocast
        torch.backends.cudnn.allow_tf32 = True

    model = build_model(model_config, generator=torch.Generator().manual_seed(cfg.seed)).to(device)
    optimizer = _make_optimizer(model, cfg, device)
    start, loss_log, wall_before = 0, [], 0.0
    meta = resumable_meta(out_dir, signature)
    if meta is not None:
        model.load_state_dict(load_weights(out_dir, meta))  # buffers fitted to the prior come back too
        if meta["step"] < cfg.steps:
            load_optimizer(out_dir, meta, optimizer)
        start, wall_before = int(meta["step"]), float(meta.get("wall_time_s", 0.0))
        loss_log = [(int(s), float(v)) for s, v in meta.get("loss_log", [])]
    else:  # e.g. the bar head's buckets at quantiles of prior samples; most architectures fit nothing
        model.fit_to_prior(prior, jax.random.fold_in(jax.random.key(cfg.seed), PRIOR_FIT_STREAM), cfg)
    if world.distributed:
        lowest = distributed.all_reduce(torch.tensor(start, device=device), world, "min").item()
        highest = distributed.all_reduce(torch.tensor(start, device=device), world, "max").item()
        if lowest != highest:
            raise CheckpointError(
                f"the training processes found different checkpoints in {out_dir} (steps {lowest} to {highest}); "
                "every process must see the same out_dir, e.g. on a shared filesystem"
            )
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
            "world_size": world.size,
            "runtime": {k: getattr(cfg, k) for k in RUNTIME_SETTINGS},
            "torch_version": torch.__version__,
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }

    checkpoint = None
    if start < cfg.steps:
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()
        objective = training_objective(model, cfg, device, world)
        batches = _Prefetcher(prior, cfg, start, device, shards, stages=stages, y_dtype=model.target_dtype)
        show = progress and world.is_main
        bar = tqdm(total=cfg.steps, initial=start, disable=not show, unit="step", desc="train", leave=False)
        loss_sum, loss_count = torch.zeros((), device=device), 0
        eval_steps = set(cfg.eval_steps)
        model.train()
        try:
            for step in range(start, cfg.steps):
                batch = batches.get(step)  # {"y": (b, T), "x": (b, T, F) or None, "mask": (b, T) or None}
                loss_sum += train_step(objective, optimizer, model, batch, step, cfg, autocast, world)
                loss_count += 1
                done = step + 1
                at_checkpoint = out_dir is not None and (done % cfg.checkpoint_every == 0 or done == cfg.steps)
                at_eval = out_dir is not None and done in eval_steps
                if done % cfg.log_every == 0 or at_checkpoint or at_eval or done == cfg.steps:
                    total = distributed.all_reduce(loss_sum, world)  # each process's shares of the global mean
                    mean = total.item() / (loss_count * world.size)
                    check_finite_training(mean, model, done - loss_count + 1, done, out_dir)
                    loss_log.append((done, mean))
                    loss_sum, loss_count = torch.zeros((), device=device), 0
                    bar.set_postfix(loss=f"{mean:.4f}", refresh=False)
                if at_eval and world.is_main:  # weights only, kept for evaluating the learner at this step
                    save_checkpoint(Path(out_dir) / EVAL_FOLDER, done, model, None, record(done), keep=len(eval_steps))
                if at_checkpoint:
                    if world.is_main:
                        keep = cfg.keep_checkpoints
                        checkpoint = save_checkpoint(out_dir, done, model, optimizer, record(done), keep=keep)
                    distributed.barrier(world, device)
                bar.update(1)
        finally:
            batches.close()
            bar.close()
        meta = jsonable({**record(cfg.steps), "step": cfg.steps, "weights_sha256": weights_sha256(model.state_dict())})
        if out_dir is not None and not world.is_main:
            checkpoint = checkpoint_paths(out_dir, cfg.steps)["json"]  # written by rank 0; meta is this process's own
    elif out_dir is not None:
        checkpoint = checkpoint_paths(out_dir, start)["json"]
    if checkpoint is not None and (world.is_main or start >= cfg.steps):
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


def check_finite_training(mean_loss: float, model: torch.nn.Module, first: int, last: int, out_dir) -> None:
    """`TrainingError` when the mean loss of steps ``first..last`` or any weight is NaN or infinite.

    Checked at every loss-log entry, which every checkpoint has, so no checkpoint holds a diverged
    model: the last one written before stays the run's last good state.
    """
    bad = not math.isfinite(mean_loss)
    if not bad:
        bad = not all(bool(torch.isfinite(p).all()) for p in model.parameters())
        what = "a weight is not finite"
    else:
        what = f"the mean training loss is {mean_loss}"
    if bad:
        steps = checkpoint_steps(out_dir) if out_dir is not None else []
        kept = f"the last good checkpoint (step {steps[-1]}) stays in {out_dir}" if steps else "no checkpoint was written"
        raise TrainingError(
            f"training diverged at steps {first}-{last}: {what}; {kept}; lower learner.training.lr, raise "
            "warmup_steps or set grad_clip, then retrain into a fresh folder"
        )


def _make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.dim() >= 2]  # matrices and embeddings
    no_decay = [p for p in model.parameters() if p.dim() < 2]  # biases and LayerNorm gains
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=lr_at(0, cfg), betas=(cfg.beta1, cfg.beta2), **fused)


def sample_arrays(prior, key, num_episodes: int, length: int, *, on_device: bool = False) -> dict[str, Any]:
    """``prior.sample`` as ``{"y", "x", "mask"}`` arrays (``x``, ``mask`` may be None).

    With ``on_device`` the arrays stay JAX arrays where JAX computed them (the
    GPU, for a DLPack hand-off without host copies); this needs a plain
    `toolkit.Prior`, whose ``sample`` it reproduces without ``jax.device_get``.
    Otherwise they are ``prior.sample``'s host arrays.
    """
    if not on_device:
        episodes = prior.sample(key, num_episodes, length)
        return {"y": episodes.y, "x": episodes.x, "mask": episodes.mask}
    import jax.numpy as jnp

    out = _prior_sampler(prior, int(length))(jax.random.split(key, int(num_episodes)))
    y = out["y"].astype(prior.data_kind.y_dtype)  # (B, T)
    mask = None
    if prior.eos is not None:  # as in Prior.sample: data up to and including the first EOS
        hit = (y == prior.eos).astype(jnp.int32)
        mask = (jnp.cumsum(hit, axis=1) - hit) == 0  # (B, T)
    return {"y": y, "x": out.get("x"), "mask": mask}


def _samples_on_device(prior, device: torch.device) -> bool:
    """True when JAX samples on a GPU, torch trains on one, and ``prior`` is a plain `toolkit.Prior`."""
    return device.type == "cuda" and jax.default_backend() == "gpu" and type(prior).sample is Prior.sample


def _prior_sampler(prior, length: int):
    from toolkit.prior import _sampler

    return _sampler(prior, length)


class _Prefetcher:
    """This process's part of the batches of steps ``start, start + 1, ...``, sampled ``cfg.prefetch`` ahead.

    The batch of step s is its ``shards`` of the step's ``cfg.num_shards``,
    shard j drawn from ``fold_in(fold_in(key, s), j)`` and concatenated in
    order; a single shard is ``prior.sample(fold_in(key, s), ...)`` itself
    (``prior`` being the curriculum stage's prior while one lasts). With
    a depth of 0 it samples in the caller's thread, otherwise in a background
    thread that also copies the batch to CUDA on its own stream, so that the
    copy overlaps the previous step. Errors in the sampler are re-raised by
    `get`, at the step whose batch failed.
    """

    def __init__(self, prior, cfg: TrainConfig, start: int, device: torch.device, shards=None, *, stages=(),
                 y_dtype: torch.dtype = torch.long):
        self.prior, self.cfg, self.device, self.y_dtype = prior, cfg, device, y_dtype
        self.stages = list(stages)  # (until, prior) with increasing until: the curriculum
        self.shards = tuple(range(cfg.num_shards) if shards is None else shards)  # default: all, one process
        self.key = jax.random.key(cfg.seed)
        self.on_device = all(_samples_on_device(p, device) for p in [prior] + [p for _, p in self.stages])
        # under torchrun, process r samples on GPU r as JAX numbers them (when JAX sees them all), next to its model
        gpus = jax.devices() if self.on_device else []
        self.jax_device = gpus[device.index] if device.index is not None and device.index < len(gpus) else None
        # On CUDA the thread keeps the accelerator fed. On the CPU there is nothing idle to feed: the thread
        # competes with torch's threads for the same cores, and measured no faster on 2 cores.
        depth = cfg.prefetch if cfg.prefetch is not None else (4 if device.type == "cuda" else 0)
        self.queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self.stop = threading.Event()
        self.copy_stream = torch.cuda.Stream(device) if device.type == "cuda" and depth > 0 else None
        self.thread = None
        if depth > 0:
            self.thread = threading.Thread(target=self._run, args=(start,), name="prior-sampler", daemon=True)
            self.thread.start()

    def arrays(self, step: int) -> dict[str, Any]:
        """This process's shards of the batch of ``step``, concatenated: ``{"y", "x", "mask"}`` arrays."""
        if self.jax_device is not None:
            with jax.default_device(self.jax_device):  # thread-local: entered in the thread that samples
                return self._arrays(step)
        return self._arrays(step)

    def prior_at(self, step: int):
        """The prior that draws the batch of ``step``: the first curriculum stage not yet over, else the prior."""
        return next((stage for until, stage in self.stages if step < until), self.prior)

    def _arrays(self, step: int) -> dict[str, Any]:
        cfg, step_key, prior = self.cfg, jax.random.fold_in(self.key, step), self.prior_at(step)
        if cfg.num_shards == 1:
            return sample_arrays(prior, step_key, cfg.batch_size, cfg.length, on_device=self.on_device)
        size = cfg.batch_size // cfg.num_shards
        parts = [
            sample_arrays(prior, jax.random.fold_in(step_key, j), size, cfg.length, on_device=self.on_device)
            for j in self.shards
        ]
        return {name: _concatenate([part[name] for part in parts]) for name in ("y", "x", "mask")}

    def batch(self, step: int) -> dict[str, torch.Tensor | None]:
        arrays = self.arrays(step)
        y = _to_torch(arrays["y"], self.device).to(self.y_dtype)  # (b, T): tokens long, real y float32
        x = None if arrays["x"] is None else _to_torch(arrays["x"], self.device).float()  # (b, T, F)
        mask = None if arrays["mask"] is None else _to_torch(arrays["mask"], self.device).bool()  # (b, T)
        return {"y": y, "x": x, "mask": mask}

    def _produce(self, step: int):
        if self.copy_stream is None:
            return self.batch(step), None
        with torch.cuda.stream(self.copy_stream):
            batch = self.batch(step)
            ready = torch.cuda.Event()
            ready.record(self.copy_stream)
        return batch, ready

    def _run(self, start: int) -> None:
        step = start
        while not self.stop.is_set() and step < self.cfg.steps:
            try:
                item = (step, self._produce(step))
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
        """The batch of ``step``; steps must be asked for in order, each once."""
        if self.thread is None:
            return self.batch(step)
        got, item = self._next(step)
        if isinstance(item, BaseException):
            raise item
        if got != step:
            raise RuntimeError(f"the prior sampler produced the batch of step {got}, the training loop expected {step}")
        batch, ready = item
        if ready is not None:  # the copy ran on the sampler's stream: order it before this step's kernels
            stream = torch.cuda.current_stream(self.device)
            stream.wait_event(ready)
            for tensor in batch.values():
                if tensor is not None:
                    tensor.record_stream(stream)
        return batch

    def _next(self, step: int):
        while True:
            try:
                return self.queue.get(timeout=0.5)
            except queue.Empty:
                if self.thread.is_alive():
                    continue
                try:  # the thread may have put its last item just before ending
                    return self.queue.get_nowait()
                except queue.Empty:
                    raise RuntimeError(
                        f"the prior-sampler thread ended before the batch of step {step} (closed, or past "
                        f"train.steps = {self.cfg.steps})"
                    ) from None

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=10)


def _concatenate(parts: list):
    """Shards joined along the episode axis (None when the arrays are absent)."""
    if parts[0] is None:
        return None
    if isinstance(parts[0], jax.Array):
        return jax.numpy.concatenate(parts, axis=0)
    return np.concatenate(parts, axis=0)


def _to_torch(array, device: torch.device) -> torch.Tensor:
    """Hand a sampled array to torch without needless copies.

    A JAX array on a GPU goes to a CUDA device by DLPack, device to device (no
    copy at all when both are the same GPU). A host array is wrapped by
    ``from_numpy`` for the CPU, or pinned and copied asynchronously to CUDA.
    """
    if isinstance(array, jax.Array):
        if device.type == "cuda" and next(iter(array.devices())).platform == "gpu":
            return torch.from_dlpack(array).to(device, non_blocking=True)
        array = np.asarray(array)  # JAX on the CPU: a view of its buffer
    if not array.flags.writeable:  # torch tensors are writable: wrap a copy rather than a read-only buffer
        array = array.copy()
    tensor = torch.from_numpy(array)
    if device.type != "cuda":
        return tensor
    return tensor.pin_memory().to(device, non_blocking=True)


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
    "check_curriculum",
    "resolve_model_config",
    "lr_at",
    "masked_cross_entropy",
    "batch_loss",
    "training_objective",
    "train_step",
    "sample_arrays",
    "RUNTIME_SETTINGS",
    "SEED_MAX",
    "MAX_STEPS",
    "EVAL_FOLDER",
    "check_finite_training",
    "resumable_meta",
    "pick_device",
]
