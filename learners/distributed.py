"""Data-parallel training over the processes ``torchrun`` launches: one process per GPU (or CPU slot).

    torchrun --standalone --nproc_per_node 8 -m comparisons.training --config comparisons/configs/NAME.toml \\
        --out results/NAME
    python comparisons/run.py --config comparisons/configs/NAME.toml --out results/NAME   # reuses the learner

(the entry point lives with the experiments, ``comparisons/training.py``: learners import only the toolkit).

Identical-data semantics: the batch of step s is ``train.num_shards`` shards,
shard j drawn from ``fold_in(fold_in(key, s), j)``, and rank r of W processes
draws the shards j ≡ r (mod W). The global batch therefore depends on the
step and the shard only, never on W: one process and W processes train on
the same data, their loss curves agree to float tolerance, and a run resumes
from its checkpoint under another world size. Gradients are averaged by
PyTorch's `DistributedDataParallel`; `train` scales each rank's loss so that
the average equals the gradient of the single-process loss even when masks
give ranks unequal token counts. Rank 0 alone writes checkpoints and draws
the progress bar; the others wait at a barrier.

The process group is created from torchrun's environment (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) with NCCL on
CUDA and gloo on the CPU, unless the caller created one already.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.distributed as dist

from toolkit.errors import ConfigError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0  # 0 .. size - 1; rank 0 writes checkpoints
    size: int = 1  # number of training processes (torchrun's WORLD_SIZE)
    local_rank: int = 0  # rank on this machine: the CUDA device index

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env(env: Mapping[str, str] | None = None) -> World:
    """The world torchrun describes in ``env`` (default ``os.environ``); one process when it describes none.

    An existing process group (created by the caller) takes precedence over the environment.
    """
    env = os.environ if env is None else env
    if dist.is_available() and dist.is_initialized():
        rank, size = dist.get_rank(), dist.get_world_size()
        return World(rank, size, _int_env(env, "LOCAL_RANK", rank))
    size = _int_env(env, "WORLD_SIZE", 1)
    rank = _int_env(env, "RANK", 0)
    local_rank = _int_env(env, "LOCAL_RANK", rank)
    if size < 1 or not 0 <= rank < size or local_rank < 0:
        raise ConfigError(
            f"inconsistent launch environment RANK={rank}, WORLD_SIZE={size}, LOCAL_RANK={local_rank}; "
            "launch with torchrun, or unset these variables for a single process"
        )
    return World(rank, size, local_rank)


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer; it is set by torchrun") from None


def shards_of(world: World, num_shards: int) -> list[int]:
    """The shards of each step that ``world.rank`` draws: j ≡ rank (mod size).

    Raises
    ------
    ConfigError
        ``num_shards`` is not a multiple of the number of processes.
    """
    if num_shards % world.size:
        raise ConfigError(
            f"train.num_shards ({num_shards}) must be a multiple of the number of training processes "
            f"({world.size}), so that every process draws as many shards; set train.num_shards to "
            f"{world.size} (or a multiple of it), or launch {num_shards} processes or a divisor of it"
        )
    return list(range(world.rank, num_shards, world.size))


def join(world: World, device: torch.device) -> None:
    """Join the process group of ``world``, creating it if this process has none yet.

    The group (NCCL on CUDA, gloo on the CPU, rendezvous from torchrun's
    environment) lives as long as the process and is destroyed at exit, so that
    every later `train` call in the process (several learners, one after the
    other) reuses it: creating a default group again after destroying one
    meets the old group's rendezvous keys in torchrun's store and can hang.
    A group the caller created is used as it is.
    """
    if not world.distributed or dist.is_initialized():
        return
    if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
        raise ConfigError(
            f"WORLD_SIZE={world.size} but MASTER_ADDR/MASTER_PORT are not set; launch with "
            "`torchrun --nproc_per_node N ...`, which sets them"
        )
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs = {"device_id": device} if device.type == "cuda" else {}
    dist.init_process_group(backend, rank=world.rank, world_size=world.size, **kwargs)
    atexit.register(_leave)


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World, device: torch.device) -> None:
    """Every process waits here for the others (no-op for one process)."""
    if world.distributed:
        dist.barrier(device_ids=[device.index]) if device.type == "cuda" else dist.barrier()


def all_reduce(tensor: torch.Tensor, world: World, op: str = "sum") -> torch.Tensor:
    """``tensor`` reduced over every process (``op`` = "sum", "min" or "max"), in place; unchanged for one process."""
    if world.distributed:
        dist.all_reduce(tensor, op={"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}[op])
    return tensor


__all__ = ["World", "world_from_env", "shards_of", "join", "barrier", "all_reduce"]
