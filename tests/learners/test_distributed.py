"""Data-parallel training: 2 processes (torchrun, gloo on the CPU) train like 1 with the same global batch.

The 2-process runs are launched as ``python -m torch.distributed.run --nproc_per_node 2 <this file> ...``;
the ``__main__`` block at the bottom is what each process runs.
"""

import contextlib
import dataclasses
import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import learners  # noqa: E402
from learners import TrainConfig, TransformerConfig, train  # noqa: E402
from learners.checkpoint import checkpoint_paths, checkpoint_steps, load_weights, read_meta  # noqa: E402
from learners.distributed import World, shards_of, world_from_env  # noqa: E402
from toolkit.errors import ConfigError  # noqa: E402

# aⁿbⁿ then EOS: masks give the two processes different token counts, so the loss weighting is exercised
PRIOR = ("anbn", {"q": 0.5, "max_length": 16})
MODEL = TransformerConfig(n_layer=1, n_head=2, n_embd=16)
CONFIG = TrainConfig(
    steps=12, batch_size=16, length=16, lr=3e-3, warmup_steps=2, num_shards=2,
    checkpoint_every=4, keep_checkpoints=3, log_every=2, device="cpu",
)
RTOL = 1e-5  # float32 sums in another order: the curves agree to rounding, not bit for bit


def prior():
    import priors

    return priors.get(PRIOR[0], **PRIOR[1])


# --------------------------------------------------------------------------- without processes


def test_world_from_torchrun_environment():
    assert world_from_env({}) == World(0, 1, 0)
    assert world_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == World(3, 4, 1)
    with pytest.raises(ConfigError, match="RANK=4, WORLD_SIZE=4"):
        world_from_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(ConfigError, match="WORLD_SIZE='two' is not an integer"):
        world_from_env({"WORLD_SIZE": "two"})


def test_each_rank_draws_every_sizeth_shard():
    assert shards_of(World(0, 1), 4) == [0, 1, 2, 3]
    assert [shards_of(World(r, 2), 4) for r in range(2)] == [[0, 2], [1, 3]]
    assert [shards_of(World(r, 4), 4) for r in range(4)] == [[0], [1], [2], [3]]
    with pytest.raises(ConfigError, match=r"train.num_shards \(2\) must be a multiple of .* processes \(4\)"):
        shards_of(World(1, 4), 2)


def test_shards_must_divide_the_batch():
    with pytest.raises(ConfigError, match=r"num_shards \(3\) must be a positive divisor of train.batch_size \(16\)"):
        dataclasses.replace(CONFIG, num_shards=3)


def test_a_world_that_does_not_divide_the_shards_fails_before_training(monkeypatch, coin_prior):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match=r"train.num_shards \(1\) must be a multiple"):
        train(coin_prior, MODEL, dataclasses.replace(CONFIG, num_shards=1), None, progress=False)


def test_checkpoints_from_before_num_shards_still_match(coin_prior, tmp_path):
    """A checkpoint written before ``num_shards`` existed ran with one shard: it is reused, not refused."""
    cfg = dataclasses.replace(CONFIG, num_shards=1, steps=2, checkpoint_every=2)
    train(coin_prior, MODEL, cfg, tmp_path, progress=False)
    path = checkpoint_paths(tmp_path, 2)["json"]
    meta = json.loads(path.read_text())
    del meta["train"]["num_shards"]
    path.write_text(json.dumps(meta))
    assert learners.config_matches(tmp_path, coin_prior, MODEL, cfg)
    assert not learners.config_matches(tmp_path, coin_prior, MODEL, dataclasses.replace(cfg, num_shards=2))


# --------------------------------------------------------------------------- 2 processes against 1


def torchrun(*args, nproc=2, timeout=240):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           __file__, *map(str, args)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


def without_last_checkpoint(src: Path, dst: Path) -> Path:
    """A copy of ``src`` as a run interrupted after its second-newest checkpoint would have left it."""
    shutil.copytree(src, dst)
    for path in checkpoint_paths(dst, checkpoint_steps(dst)[-1]).values():
        path.unlink()
    return dst


def assert_same_curve(got, want):
    assert [s for s, _ in got] == [s for s, _ in want]
    torch.testing.assert_close(torch.tensor([v for _, v in got]), torch.tensor([v for _, v in want]), rtol=RTOL, atol=0)


def assert_same_weights(dir_a: Path, dir_b: Path):
    a, b = load_weights(dir_a, read_meta(dir_a)), load_weights(dir_b, read_meta(dir_b))
    assert a.keys() == b.keys()
    for name in a:
        # AdamW divides by sqrt(v): where a gradient is ~0, rounding-level differences move a weight by a visible
        # fraction of one step's lr (3e-3); 1 % of it bounds them
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=0.01 * CONFIG.lr)


def test_two_processes_train_like_one_and_resume_across_world_sizes(tmp_path):
    one = train(prior(), MODEL, CONFIG, tmp_path / "one", progress=False)
    assert read_meta(tmp_path / "one")["world_size"] == 1
    without_last_checkpoint(tmp_path / "one", tmp_path / "one_cut")

    # in 2 processes: a fresh run, and the 1-process run resumed from step 8
    torchrun(tmp_path)

    ranks = [json.loads((tmp_path / f"two-rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["loss_log"] == ranks[1]["loss_log"]  # the logged loss is all-reduced
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]  # DDP keeps the replicas identical
    assert ranks[0]["checkpoint"] == ranks[1]["checkpoint"]
    assert read_meta(tmp_path / "two")["world_size"] == 2  # written by rank 0
    assert read_meta(tmp_path / "two")["weights_sha256"] == ranks[0]["weights_sha256"]
    assert_same_curve(ranks[0]["loss_log"], one.loss_log)
    assert_same_weights(tmp_path / "two", tmp_path / "one")

    resumed_in_two = json.loads((tmp_path / "one_cut-rank0.json").read_text())
    assert resumed_in_two["resumed_from"] == 8
    assert_same_curve(resumed_in_two["loss_log"], one.loss_log)
    assert_same_weights(tmp_path / "one_cut", tmp_path / "one")

    # the 2-process run resumed from step 8 in 1 process
    without_last_checkpoint(tmp_path / "two", tmp_path / "two_cut")
    resumed_in_one = train(prior(), MODEL, CONFIG, tmp_path / "two_cut", progress=False)
    assert resumed_in_one.resumed_from == 8
    assert_same_curve(resumed_in_one.loss_log, one.loss_log)
    assert_same_weights(tmp_path / "two_cut", tmp_path / "one")


class GradientsOnly:
    """Stands in for AdamW in `train_step`: keeps the gradients, never moves the weights."""

    def __init__(self, model):
        self.model, self.param_groups = model, [{}]

    def zero_grad(self, set_to_none=True):
        self.model.zero_grad(set_to_none=set_to_none)

    def step(self):
        pass


def test_train_step_weights_processes_by_their_tokens(monkeypatch):
    """Two processes with unequal masked token counts: DDP's average of their scaled losses' gradients is the
    gradient of the one-process loss on the whole batch; the plain average of per-process means is not."""
    import learners.distributed as distributed_module
    from learners.train import _Prefetcher, batch_loss, resolve_model_config, train_step

    cpu, cfg = torch.device("cpu"), dataclasses.replace(CONFIG, grad_clip=0.0)
    local = [_Prefetcher(prior(), cfg, 0, cpu, shards=(r,)).batch(0) for r in (0, 1)]
    whole = _Prefetcher(prior(), cfg, 0, cpu).batch(0)
    counts = [b["mask"].sum().float() for b in local]
    assert counts[0] != counts[1]
    resolved = resolve_model_config(prior(), MODEL, cfg)

    def gradients(batch, world):
        model = learners.build_model(resolved, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():  # away from the uniform initial predictions, where every token weighs the same
            for p in model.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.3)
        objective = functools.partial(batch_loss, model)
        share = train_step(objective, GradientsOnly(model), model, batch, 0, cfg, contextlib.nullcontext(), world)
        return share, torch.cat([p.grad.flatten() for p in model.parameters()])

    want_loss, want = gradients(whole, World())
    monkeypatch.setattr(distributed_module, "all_reduce", lambda t, world, op="sum": sum(counts).clone())
    shares, grads = zip(*(gradients(b, World(r, 2)) for r, b in enumerate(local)))
    torch.testing.assert_close(sum(shares) / 2, want_loss, rtol=1e-6, atol=0)  # what the loss log reports
    torch.testing.assert_close(sum(grads) / 2, want, rtol=1e-5, atol=1e-7)  # what DDP's average gives
    monkeypatch.undo()
    plain = [gradients(b, World())[1] for b in local]  # each process's own mean, averaged unweighted
    assert (sum(plain) / 2 - want).abs().max() > 100 * 1e-5 * want.abs().max()


@pytest.mark.slow
def test_compiled_training_matches_eager_and_saves_plain_keys(coin_prior, tmp_path):
    """``train.compile`` changes how the step runs, not what it computes, nor the checkpoint's keys."""
    cfg = dataclasses.replace(CONFIG, num_shards=1, steps=6, checkpoint_every=6)
    eager = train(coin_prior, MODEL, cfg, tmp_path / "eager", progress=False)
    compiled = train(coin_prior, MODEL, dataclasses.replace(cfg, compile=True), tmp_path / "compiled", progress=False)
    assert_same_curve(compiled.loss_log, eager.loss_log)
    weights = load_weights(tmp_path / "compiled", read_meta(tmp_path / "compiled"))
    assert weights.keys() == eager.predictor.model.state_dict().keys()
    assert not any("_orig_mod" in k or k.startswith("module.") for k in weights)
    assert_same_weights(tmp_path / "compiled", tmp_path / "eager")


# --------------------------------------------------------------------------- what each process runs


def _worker(out: Path) -> None:
    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    cfg = dataclasses.replace(CONFIG, device=os.environ.get("METABAYES_DDP_DEVICE", "cpu"))  # test_cuda: NCCL
    for name in ("two", "one_cut"):
        result = train(prior(), MODEL, cfg, out / name, progress=False)
        record = {
            "loss_log": result.loss_log,
            "weights_sha256": result.weights_sha256,
            "resumed_from": result.resumed_from,
            "checkpoint": str(result.checkpoint),
        }
        (out / f"{name}-rank{rank}.json").write_text(json.dumps(record))


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
