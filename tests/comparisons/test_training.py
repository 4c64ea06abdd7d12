"""The torchrun entry point of an experiment's learners (``-m comparisons.training``), then the evaluation reusing them."""

import os
import subprocess
import sys

from conftest import REPO, TINY_ARGS, subprocess_env

from comparisons.run import main
from learners.checkpoint import read_meta


def test_torchrun_trains_the_learners_that_run_py_then_reuses(tmp_path, capsys):
    out = tmp_path / "run"
    shards = ("--set", "learner.training.num_shards=2")  # each of the 2 processes draws one shard per step
    env = subprocess_env()
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "comparisons.training",
         *TINY_ARGS, *shards, "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "trained on 2 process(es); evaluate with: python comparisons/run.py" in proc.stdout
    meta = read_meta(out / "learner")
    assert meta["finished"] and meta["world_size"] == 2
    assert not (out / "comparison.nc").exists()  # training only
    assert main([*TINY_ARGS, *shards, "--set", "evaluation.num_episodes=4", "--out", str(out)]) == 0
    assert f"reusing the trained learner in {out / 'learner'}" in capsys.readouterr().out
    assert (out / "comparison.nc").is_file()


def test_the_entry_point_reports_config_errors_on_one_line(tmp_path, capsys):
    from comparisons.training import main as train_main

    assert train_main(["--set", "evaluation.length=0", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: config key evaluation.length")
    assert os.listdir(tmp_path) == []
