"""The background sampler: each step's batch exactly once, in order, as inline sampling draws it; errors, closing."""

import dataclasses
import threading
import time

import jax
import numpy as np
import pytest
import torch

from learners import TrainConfig
from learners.train import _Prefetcher, _to_torch, sample_arrays

CPU = torch.device("cpu")


class Recording:
    """A prior that records the key data of every ``sample`` call, optionally failing at one call or sleeping."""

    def __init__(self, prior, fail_at: int | None = None, delay: float = 0.0):
        self.prior, self.fail_at, self.delay = prior, fail_at, delay
        self.keys: list[tuple[int, ...]] = []
        self.lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.prior, name)

    def sample(self, key, num_episodes, length):
        with self.lock:
            call = len(self.keys)
            self.keys.append(tuple(np.asarray(jax.random.key_data(key)).ravel().tolist()))
        if self.fail_at is not None and call == self.fail_at:
            raise ValueError(f"sampler failure at call {call}")
        time.sleep(self.delay)
        return self.prior.sample(key, num_episodes, length)


@pytest.fixture
def cfg():
    return TrainConfig(steps=9, batch_size=8, length=6, warmup_steps=0, device="cpu")


def drain(prefetcher, start, stop):
    try:
        return [prefetcher.get(step) for step in range(start, stop)]
    finally:
        prefetcher.close()


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for name in x:
            if x[name] is None:
                assert y[name] is None
            else:
                torch.testing.assert_close(x[name], y[name], rtol=0, atol=0)


def step_key(seed, step, shard=None):
    key = jax.random.fold_in(jax.random.key(seed), step)
    if shard is not None:
        key = jax.random.fold_in(key, shard)
    return tuple(np.asarray(jax.random.key_data(key)).ravel().tolist())


@pytest.mark.parametrize("depth", [1, 3])
@pytest.mark.parametrize("start", [0, 4])
def test_background_queue_delivers_each_step_once_in_order_as_inline(coin_prior, cfg, depth, start):
    inline = drain(_Prefetcher(coin_prior, dataclasses.replace(cfg, prefetch=0), start, CPU), start, cfg.steps)
    recording = Recording(coin_prior)
    ahead = _Prefetcher(recording, dataclasses.replace(cfg, prefetch=depth), start, CPU)
    assert ahead.thread is not None
    background = drain(ahead, start, cfg.steps)
    assert_same_batches(inline, background)
    # one sample call per step, in step order: nothing duplicated, nothing dropped
    assert recording.keys == [step_key(cfg.seed, s) for s in range(start, cfg.steps)]


def test_single_shard_is_the_documented_batch(coin_prior, cfg):
    """num_shards = 1 keeps ``prior.sample(fold_in(key(seed), step), B, T)``, so earlier runs stay reproducible."""
    got = _Prefetcher(coin_prior, cfg, 0, CPU).batch(5)
    want = coin_prior.sample(jax.random.fold_in(jax.random.key(cfg.seed), 5), cfg.batch_size, cfg.length)
    np.testing.assert_array_equal(got["y"].numpy(), want.y)
    assert got["y"].dtype == torch.long and got["x"] is None and got["mask"] is None


def test_shards_concatenate_in_order_and_ranks_split_them(eos_prior, cfg):
    sharded = dataclasses.replace(cfg, num_shards=4)
    recording = Recording(eos_prior)
    whole = _Prefetcher(recording, sharded, 0, CPU).batch(3)
    assert recording.keys == [step_key(cfg.seed, 3, j) for j in range(4)]
    size = cfg.batch_size // 4
    for j in range(4):
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(cfg.seed), 3), j)
        part = eos_prior.sample(key, size, cfg.length)
        np.testing.assert_array_equal(whole["y"][j * size : (j + 1) * size].numpy(), part.y)
        np.testing.assert_array_equal(whole["mask"][j * size : (j + 1) * size].numpy(), part.mask)
    # rank r of 2 draws shards r, r + 2: together the ranks hold every shard once
    ranks = [_Prefetcher(eos_prior, sharded, 0, CPU, shards=(r, r + 2)).batch(3) for r in (0, 1)]
    for r, batch in enumerate(ranks):
        for i, j in enumerate((r, r + 2)):
            torch.testing.assert_close(batch["y"][i * size : (i + 1) * size], whole["y"][j * size : (j + 1) * size])
    assert not torch.equal(whole["y"], _Prefetcher(eos_prior, cfg, 0, CPU).batch(3)["y"])  # another stream than S = 1


def test_deterministic_under_a_seed(coin_prior, cfg):
    deep = dataclasses.replace(cfg, prefetch=2)
    a = drain(_Prefetcher(coin_prior, deep, 0, CPU), 0, cfg.steps)
    b = drain(_Prefetcher(coin_prior, deep, 0, CPU), 0, cfg.steps)
    assert_same_batches(a, b)
    c = drain(_Prefetcher(coin_prior, dataclasses.replace(deep, seed=1), 0, CPU), 0, cfg.steps)
    assert not all(torch.equal(x["y"], y["y"]) for x, y in zip(a, c))
    assert len({tuple(x["y"].flatten().tolist()) for x in a}) == cfg.steps  # each step a different batch


@pytest.mark.parametrize("depth", [0, 2])
def test_a_sampler_error_surfaces_at_its_step(coin_prior, cfg, depth):
    prefetcher = _Prefetcher(Recording(coin_prior, fail_at=3), dataclasses.replace(cfg, prefetch=depth), 0, CPU)
    try:
        for step in range(3):
            assert prefetcher.get(step)["y"].shape == (cfg.batch_size, cfg.length)
        with pytest.raises(ValueError, match="sampler failure at call 3"):
            prefetcher.get(3)
    finally:
        prefetcher.close()


def test_closing_mid_run_does_not_hang(coin_prior, cfg):
    long = dataclasses.replace(cfg, steps=10_000, prefetch=2)
    prefetcher = _Prefetcher(Recording(coin_prior, delay=0.01), long, 0, CPU)
    prefetcher.get(0)
    prefetcher.get(1)
    time.sleep(0.2)  # the queue is full and the thread waits to put the next batch
    t0 = time.perf_counter()
    prefetcher.close()
    assert time.perf_counter() - t0 < 5
    assert not prefetcher.thread.is_alive()
    while not prefetcher.queue.empty():  # what it had sampled before closing
        prefetcher.queue.get_nowait()
    with pytest.raises(RuntimeError, match="thread ended before the batch of step 5"):
        prefetcher.get(5)  # a closed sampler fails at once rather than waiting forever


def test_a_step_asked_out_of_order_is_an_error(coin_prior, cfg):
    prefetcher = _Prefetcher(coin_prior, dataclasses.replace(cfg, prefetch=2), 0, CPU)
    try:
        with pytest.raises(RuntimeError, match="produced the batch of step 0, the training loop expected 1"):
            prefetcher.get(1)
    finally:
        prefetcher.close()


def test_device_sampling_path_matches_prior_sample(eos_prior, coin_prior):
    """The path that keeps JAX arrays on the accelerator reproduces ``Prior.sample`` (checked with JAX on the CPU)."""
    key = jax.random.key(7)
    for prior in (coin_prior, eos_prior):
        host = sample_arrays(prior, key, 16, 12)
        device = sample_arrays(prior, key, 16, 12, on_device=True)
        assert isinstance(device["y"], jax.Array)
        for name in ("y", "x", "mask"):
            if host[name] is None:
                assert device[name] is None
            else:
                np.testing.assert_array_equal(np.asarray(device[name]), host[name])
                assert np.asarray(device[name]).dtype == host[name].dtype
        torch.testing.assert_close(_to_torch(device["y"], CPU), torch.from_numpy(host["y"]), rtol=0, atol=0)


def test_to_torch_never_aliases_a_read_only_buffer():
    array = np.arange(6.0).reshape(2, 3)
    array.flags.writeable = False
    tensor = _to_torch(array, CPU)
    tensor += 1  # would fail (or corrupt the sampler's buffer) if it aliased the read-only array
    np.testing.assert_array_equal(array, np.arange(6.0).reshape(2, 3))
    writable = np.zeros(3)
    assert _to_torch(writable, CPU).data_ptr() == writable.ctypes.data  # no copy on the CPU otherwise
