"""The CUDA path: bf16 autocast, fused AdamW, torch.compile, the sampler thread's copy stream, DLPack, NCCL DDP.

Every test needs a GPU (run with ``METABAYES_TEST_CUDA=1``); on a machine without one they are skipped.
"""

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import torch

from learners import TrainConfig, TransformerConfig, train
from learners.checkpoint import checkpoint_paths, load_weights, read_meta
from learners.train import _Prefetcher, _to_torch, compiles, sample_arrays

pytestmark = pytest.mark.requires_cuda

REPO = Path(__file__).resolve().parents[2]
MODEL = TransformerConfig(n_layer=2, n_head=2, n_embd=32)
CONFIG = TrainConfig(steps=40, batch_size=32, length=32, lr=1e-2, warmup_steps=5, log_every=10, checkpoint_every=20)


def jax_gpu() -> bool:
    try:
        return bool(jax.devices("gpu"))
    except RuntimeError:
        return False


def test_cuda_defaults_compile_and_prefetch():
    cuda = torch.device("cuda", 0)
    assert compiles(TrainConfig(), cuda) and not compiles(TrainConfig(), torch.device("cpu"))
    assert not compiles(TrainConfig(compile=False), cuda)


def test_training_on_cuda_follows_the_cpu_curve_and_saves_plain_float32_weights(coin_prior, tmp_path):
    gpu = train(coin_prior, MODEL, dataclasses.replace(CONFIG, device="cuda"), tmp_path / "gpu", progress=False)
    cpu = train(coin_prior, MODEL, dataclasses.replace(CONFIG, device="cpu"), None, progress=False)
    meta = read_meta(tmp_path / "gpu")
    assert meta["device"].startswith("cuda") and meta["runtime"]["compile"] is None  # None: on by default on CUDA
    weights = load_weights(tmp_path / "gpu", meta)
    assert weights.keys() == cpu.predictor.model.state_dict().keys()  # no _orig_mod. / module. prefixes
    assert all(w.dtype == torch.float32 for w in weights.values())  # autocast leaves the master weights in fp32
    # the same batches; bf16 matmuls and TF32 move the curve by rounding only
    got, want = np.array([v for _, v in gpu.loss_log]), np.array([v for _, v in cpu.loss_log])
    np.testing.assert_allclose(got, want, rtol=0.03)
    assert got[-1] < got[0] - 0.01


def test_an_eager_checkpoint_resumes_compiled(coin_prior, tmp_path):
    """compile is a runtime setting: an eager run's checkpoint resumes compiled, on the same curve."""
    cfg = dataclasses.replace(CONFIG, device="cuda", compile=False)
    full = train(coin_prior, MODEL, cfg, tmp_path / "full", progress=False)
    shutil.copytree(tmp_path / "full", tmp_path / "cut")
    for path in checkpoint_paths(tmp_path / "cut", CONFIG.steps).values():
        path.unlink()
    resumed = train(coin_prior, MODEL, dataclasses.replace(cfg, compile=True), tmp_path / "cut", progress=False)
    assert resumed.resumed_from == CONFIG.checkpoint_every
    assert resumed.loss_log[:2] == full.loss_log[:2]  # from the checkpoint
    np.testing.assert_allclose([v for _, v in resumed.loss_log], [v for _, v in full.loss_log], rtol=0.02)


@pytest.mark.parametrize("prior_name", ["coin_prior", "eos_prior"])
def test_sampler_thread_copy_stream_delivers_the_inline_batches(request, prior_name):
    prior = request.getfixturevalue(prior_name)
    cuda = torch.device("cuda", 0)
    cfg = dataclasses.replace(CONFIG, steps=12, device="cuda")
    inline = _Prefetcher(prior, dataclasses.replace(cfg, prefetch=0), 0, cuda)
    ahead = _Prefetcher(prior, dataclasses.replace(cfg, prefetch=3), 0, cuda)
    assert ahead.copy_stream is not None
    try:
        for step in range(cfg.steps):
            a, b = inline.get(step), ahead.get(step)
            for name in a:
                if a[name] is None:
                    assert b[name] is None
                else:
                    assert b[name].device == cuda
                    torch.testing.assert_close(b[name], a[name], rtol=0, atol=0)
    finally:
        inline.close()
        ahead.close()


def test_host_arrays_reach_the_gpu_through_pinned_memory():
    array = np.arange(12, dtype=np.int64).reshape(3, 4)
    tensor = _to_torch(array, torch.device("cuda", 0))
    torch.cuda.synchronize()
    assert tensor.is_cuda
    np.testing.assert_array_equal(tensor.cpu().numpy(), array)


@pytest.mark.skipif(not jax_gpu(), reason="JAX sees no GPU (the suite forces JAX_PLATFORMS=cpu)")
def test_jax_gpu_arrays_go_device_to_device(eos_prior):
    cuda = torch.device("cuda", 0)
    arrays = sample_arrays(eos_prior, jax.random.key(0), 16, 12, on_device=True)
    assert next(iter(arrays["y"].devices())).platform == "gpu"
    tensor = _to_torch(arrays["y"], cuda)
    assert tensor.is_cuda
    assert tensor.data_ptr() == arrays["y"].unsafe_buffer_pointer()  # the same memory: no copy anywhere
    host = sample_arrays(eos_prior, jax.random.key(0), 16, 12)
    np.testing.assert_array_equal(tensor.cpu().numpy(), host["y"])


@pytest.mark.slow
def test_gpu_preset_reaches_the_utilisation_targets():
    """8 layers x 512 wide, context 256, batch 256, bf16: >= 35 % model-FLOP utilisation, GPU busy >= 95 %."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import train_throughput as tt

    prior, model_cfg, cfg = tt.learner_setup(None, [], "gpu", "cuda")
    cfg = dataclasses.replace(cfg, steps=400)
    device = torch.device("cuda", 0)
    peak, _ = tt.matmul_peak(device)
    got = tt.measure(prior, model_cfg, cfg, device, steps=50, warmup=15, busy=True)
    assert got["model_flops"] / peak >= 0.35, got
    assert got["gpu_busy"] >= 0.95, got


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL data parallelism needs 2 GPUs")
def test_two_gpus_train_like_one(tmp_path):
    script = REPO / "tests" / "learners" / "test_distributed.py"
    env = {**os.environ, "PYTHONPATH": str(REPO), "METABAYES_DDP_DEVICE": "cuda"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
         str(tmp_path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    import json

    import test_distributed as td  # noqa: E402 - the same configuration as the CPU test

    one = train(td.prior(), td.MODEL, dataclasses.replace(td.CONFIG, device="cuda"), None, progress=False)
    ranks = [json.loads((tmp_path / f"two-rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    np.testing.assert_allclose([v for _, v in ranks[0]["loss_log"]], [v for _, v in one.loss_log], rtol=0.03)
