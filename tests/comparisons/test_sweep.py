"""Sweeps: reading a sweep file, the cells and their keys, the combined cube, bad sweep files, and a real Dask
cluster (a scheduler and two workers on 127.0.0.1) that loses a worker mid-cell.

The cells are minimal runs (one scenario, Bayes and a 10-step learner) so the cluster tests take seconds a cell.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, subprocess_env

from comparisons.sweep import combine, load_sweep, main
from toolkit.errors import ConfigError
from toolkit.results import open_results

SWEEP_PY = REPO / "comparisons" / "sweep.py"

BASE = """
[base]
profile = "tiny"
config = "comparisons/configs/coin_mixture.toml"
set = { "evaluation.num_episodes" = 8, "evaluation.length" = 8, "scenarios" = { in_distribution = { kind = "in_distribution" } }, "evaluation.predictors" = ["bayes", "learner"], "learner.training.steps" = 10, "learner.training.length" = 8, "learner.training.batch_size" = 8, "analysis" = {}, "torch_threads" = 1 }
"""


def sweep_file(folder: Path, axes: str, base: str = BASE) -> Path:
    path = folder / "sweep.toml"
    path.write_text(base + "\n[sweep]\n" + axes)
    return path


# --------------------------------------------------------------------------- reading


def test_axes_make_a_product_and_zip_groups_move_together(tmp_path):
    path = sweep_file(tmp_path, '"learner.training.seed" = [0, 1, 2]\n'
                                '[[sweep.zip]]\n"learner.model.n_embd" = [8, 16]\n"learner.model.n_head" = [1, 2]\n')
    sweep = load_sweep(path, out=tmp_path / "out")
    assert sweep.dims == ["seed", "n_embd"] and [len(a) for a in sweep.axes] == [3, 2]
    assert len(sweep.cells) == 6
    assert sweep.cells[1].overrides == {"learner.training.seed": 0, "learner.model.n_embd": 16, "learner.model.n_head": 2}
    assert sweep.cells[1].config.learner.model["n_head"] == 2 and sweep.cells[1].config.learner.training["seed"] == 0
    assert len({c.key for c in sweep.cells}) == 6
    assert all(c.folder == tmp_path / "out" / "cells" / c.key for c in sweep.cells)
    # the key is the resolved config's: the same cell from another sweep file lands in the same folder
    other = load_sweep(sweep_file(tmp_path, '"learner.model.n_embd" = [16]\n"learner.model.n_head" = [2]\n'
                                            '"learner.training.seed" = [0]\n'), out=tmp_path / "out")
    assert other.cells[0].key == sweep.cells[1].key


def test_a_zip_group_can_name_its_dim_and_label_its_points(tmp_path):
    path = sweep_file(tmp_path, '[[sweep.zip]]\ndim = { architecture = ["learned", "lstm"] }\n'
                                '"learner.architecture" = ["transformer", "rnn"]\n'
                                '"learner.model" = [{ n_layer = 1, n_embd = 8 }, { cell = "lstm", n_embd = 8 }]\n')
    sweep = load_sweep(path, out=tmp_path / "out")
    assert sweep.dims == ["architecture"] and [sweep.axes[0].label(i) for i in range(2)] == ["learned", "lstm"]
    assert [c.config.learner.architecture for c in sweep.cells] == ["transformer", "rnn"]
    for axes, fragment in [
        ('[[sweep.zip]]\n"learner.architecture" = ["transformer", "transformer"]\n"learner.model" = [{n_embd = 8}, '
         '{n_embd = 16}]\n', "the first key's values repeat, so they cannot label the dim"),
        ('[[sweep.zip]]\ndim = { a = ["x"] }\n"learner.training.seed" = [0, 1]\n', "need as many values each"),
        ('[[sweep.zip]]\ndim = "a"\n"learner.training.seed" = [0, 1]\n', "name the group's dim and label its points"),
    ]:
        with pytest.raises(ConfigError, match=fragment):
            load_sweep(sweep_file(tmp_path, axes))


def test_local_workers_share_the_cores():
    from comparisons.sweep import worker_environment

    cores = os.cpu_count() or 1
    env = worker_environment(cores)
    assert env["OMP_NUM_THREADS"] == "1" and "intra_op_parallelism_threads=1" in env["XLA_FLAGS"]
    assert worker_environment(1)["OMP_NUM_THREADS"] == str(cores)



def _worker_settings():
    import dask

    return (os.environ.get("MALLOC_TRIM_THRESHOLD_"), dask.config.get("distributed.worker.profile.enabled"),
            os.environ.get("OMP_NUM_THREADS"))


def test_local_workers_take_the_settings_of_dask_yaml():
    """The local cluster's workers start without Dask's malloc trim threshold and its profiler, as the file says."""
    import dask
    import distributed  # noqa: F401 - loads distributed's defaults into dask.config

    from comparisons.sweep import _client, worker_config

    assert worker_config() == {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                               "distributed.worker.profile.enabled": False}
    assert dask.config.get("distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_") is not None  # Dask's own
    client, cluster = _client(None, 1)
    try:
        assert client.submit(_worker_settings, pure=False).result() == (None, False, str(os.cpu_count() or 1))
    finally:
        client.close()
        cluster.close()

BAD_SWEEPS = {
    "an unknown key of the sweep file": ('"learner.training.seed" = [0]\n[extra]\na = 1\n', "sweep key extra: is not a known key"),
    "an empty axis": ('"learner.training.seed" = []\n', "sweep key sweep.learner.training.seed: the axis is empty"),
    "an axis that is not a list": ('"learner.training.seed" = 3\n', "an axis is a list of values, got 3"),
    "values of mixed types": ('"learner.training.seed" = [0, "one"]\n', "values are of different types"),
    "values of the wrong type": ('"learner.training.steps" = ["ten"]\n', "learner.training.steps: values ['ten'] are not of the setting's type (number"),
    "an unknown training setting": ('"learner.training.stepz" = [1, 2]\n', "learner.training has no setting 'stepz'; known:"),
    "an unknown model setting": ('"learner.model.width" = [8]\n', "learner.model has no setting 'width'"),
    "an unknown config key": ('"evaluation.lenght" = [8]\n', "config key evaluation.lenght: is not a known key"),
    "a value the schema refuses": ('"evaluation.num_episodes" = [0, 8]\n', "config key evaluation.num_episodes: Input should be greater than 0"),
    "a value twice": ('"learner.training.seed" = [1, 1]\n', "a value appears twice"),
    "zip keys of other lengths": ('[[sweep.zip]]\n"learner.training.seed" = [0, 1]\n"learner.model.n_embd" = [8]\n', "need as many values each"),
    "no axes": ("", "sweep key sweep: no axes"),
}


@pytest.mark.parametrize("name", BAD_SWEEPS)
def test_a_bad_sweep_file_is_one_line_exit_2_before_anything_runs(tmp_path, capsys, name):
    axes, fragment = BAD_SWEEPS[name]
    code = main(["--config", str(sweep_file(tmp_path, axes)), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("error: ") and fragment in err, err
    assert not (tmp_path / "out").exists()


def test_bad_bases_are_named(tmp_path):
    for base, fragment in [
        ('[base]\nconfig = "nope.toml"\n', "base.config: config file nope.toml does not exist"),
        ('[base]\n', "give exactly one of base.config"),
        ('[base]\nconfig = "comparisons/configs/coin_mixture.toml"\nprofile = "huge"\n', "'huge' is not a profile"),
    ]:
        with pytest.raises(ConfigError, match=fragment):
            load_sweep(sweep_file(tmp_path, '"learner.training.seed" = [0]\n', base))
    with pytest.raises(ConfigError, match="sweep file .* does not exist; built-in sweeps: .*coin_training"):
        load_sweep(tmp_path / "missing.toml")


def test_dry_run_lists_the_cells_and_where_each_goes(tmp_path, capsys):
    path = sweep_file(tmp_path, '"learner.training.seed" = [0, 1]\n')
    assert main(["--config", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == f"2 cells (2 to run) into {tmp_path / 'out'}/cells/"
    assert all("to run  seed=" in line for line in out[:2])
    assert not (tmp_path / "out").exists()


def test_set_reaches_quoted_axis_keys(tmp_path):
    path = sweep_file(tmp_path, '"learner.training.seed" = [0, 1]\n')
    sweep = load_sweep(path, ['sweep."learner.training.seed"=[4, 5, 6]'])
    assert [c.config.learner.training["seed"] for c in sweep.cells] == [4, 5, 6]


# --------------------------------------------------------------------------- the combined cube


def test_combine_puts_every_cell_on_its_axes_and_a_failed_one_as_nan(tmp_path):
    from comparisons.run import run

    path = sweep_file(tmp_path, '"learner.training.seed" = [0, 1]\n"evaluation.seed" = [1, 2]\n')
    sweep = load_sweep(path, out=tmp_path / "out")
    assert sweep.dims == ["learner.training.seed", "evaluation.seed"]  # "seed" twice: the whole keys name them
    for cell in sweep.cells[:3]:  # the fourth never ran
        run(cell.config, cell.folder, progress=False)
    ds = combine(sweep, {sweep.cells[3].key: {"status": "failed", "error": "boom", "key": sweep.cells[3].key}})
    seed, eval_seed = sweep.dims
    assert ds["cross_entropy"].dims[:2] == (seed, eval_seed)
    assert list(ds[seed].values) == [0, 1] and list(ds[eval_seed].values) == [1, 2]
    assert ds[seed].attrs["sweep_key"] == "learner.training.seed"
    for cell in sweep.cells[:3]:
        want = open_results(cell.folder)["metrics"].to_dataset()["cross_entropy"]
        at = {seed: cell.index[0], eval_seed: cell.index[1]}
        np.testing.assert_array_equal(ds["cross_entropy"].isel(at).values, want.values)
        assert ds["cell_status"].isel(at).item() == "reused" and ds["cell_key"].isel(at).item() == cell.key
        assert ds["cell_wall_time_s"].isel(at).item() > 0
    last = {seed: 1, eval_seed: 1}
    assert np.all(np.isnan(ds["cross_entropy"].isel(last).values))
    assert ds["cell_status"].isel(last).item() == "failed" and ds["cell_error"].isel(last).item() == "boom"
    assert ds.attrs["num_failed"] == 1


# --------------------------------------------------------------------------- a real cluster


@pytest.fixture
def cluster(tmp_path):
    """``dask scheduler`` and two ``dask worker`` processes on 127.0.0.1; yields (address, worker processes)."""
    env = subprocess_env()
    scheduler_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", "0", "--no-dashboard", "--scheduler-file", str(scheduler_file)],
                              env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    deadline = time.time() + 60
    while not scheduler_file.exists() and time.time() < deadline:
        time.sleep(0.2)
    address = json.loads(scheduler_file.read_text())["address"]
    workers = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                                 "--nworkers", "1", "--no-dashboard", "--name", f"w{i}", "--local-directory",
                                 str(tmp_path / f"w{i}"), "--no-nanny"],
                                env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for i in range(2)]
    procs += workers
    try:
        yield address, workers
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


def test_a_sweep_on_a_cluster_survives_a_killed_worker(tmp_path, cluster):
    """Three cells on two workers; one worker is killed while both run a cell. Every cell ends up in sweep.nc
    exactly once, done, with the numbers and learner weights of the same cells run without interruption."""
    from comparisons.run import run

    address, workers = cluster
    path = sweep_file(tmp_path, '"learner.training.seed" = [0, 1, 2]\n')
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(SWEEP_PY), "--config", str(path), "--scheduler", address,
                             "--no-progress", "--out", str(out)],
                            cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(list(out.glob("cells/*/cell.json"))) < 2 and time.time() < deadline:  # both workers have a cell
        time.sleep(0.05)
    time.sleep(1.0)
    os.kill(workers[0].pid, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    ds = open_results(out)["sweep"].to_dataset()
    assert list(ds["seed"].values) == [0, 1, 2]
    assert list(ds["cell_status"].values) == ["done"] * 3
    assert sorted(p.name for p in (out / "cells").iterdir()) == sorted(ds["cell_key"].values)
    for key in ds["cell_key"].values:  # one result set per cell
        assert len(list((out / "cells" / key / ".results").iterdir())) == 1
    for cell in load_sweep(path, out=tmp_path / "uninterrupted").cells:  # the same cells, in one go each
        result = run(cell.config, cell.folder, progress=False)
        got = ds.isel(seed=cell.index[0])
        for name in ("cross_entropy", "kl_from_reference", "excess_loss"):
            np.testing.assert_array_equal(got[name].values, result["metrics"][name].values)
        assert str(got["checkpoint_sha256"].values) == result["dataset"].attrs["checkpoint_sha256"]


def test_a_failing_cell_fails_alone_and_the_exit_code_counts_it(tmp_path, capsys):
    path = sweep_file(tmp_path, '"evaluation.length" = [8, 16]\n')  # 16 > the learner's context of 8: its plan fails
    out = tmp_path / "out"
    code = main(["--config", str(path), "--out", str(out), "--workers", "1", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 101, captured.err
    ds = open_results(out)["sweep"].to_dataset()
    assert list(ds["cell_status"].values) == ["done", "failed"]
    error = str(ds["cell_error"].sel(length=16).values)
    assert "evaluation.length = 16 is longer than the context of learner 'learner' (8" in error
    assert np.isnan(ds["cross_entropy_mean"].sel(length=16)).all() and np.isfinite(
        ds["cross_entropy_mean"].sel(length=8, predictor="bayes")).all()
    assert (out / "cells" / str(ds["cell_key"].sel(length=16).values) / "error.txt").read_text().startswith(error)
    assert "## Failed cells" in (out / "report.md").read_text()
    # a rerun recomputes nothing: the finished cell is reused, the failed one tried again
    start = time.perf_counter()
    code = main(["--config", str(path), "--out", str(out), "--workers", "1", "--no-progress"])
    assert code == 101 and "1 reused, 1 failed" in capsys.readouterr().out
    assert time.perf_counter() - start < 60


def test_a_finished_sweep_keeps_its_combine_until_a_cell_or_an_analysis_changes(tmp_path, capsys):
    """A rerun with every cell finished starts no cluster and, when nothing it is made of changed, keeps
    sweep.nc and the report; another analysis setting, a cell run again, or --recombine writes them anew."""
    from tests.conftest import run_sweep_in_process

    text = BASE + '\n[sweep]\n"learner.training.seed" = [0, 1]\n'
    sweep, ds = run_sweep_in_process(tmp_path, text)
    args = ["--config", str(tmp_path / "sweep.toml"), "--out", str(tmp_path / "out"), "--no-progress"]

    def rerun(*extra):
        assert main([*args, *extra]) == 0
        out = capsys.readouterr().out
        assert "0 run, 2 reused, 0 failed" in out
        return open_results(tmp_path / "out").attrs["run_id"], out

    first, out = rerun()
    assert first == ds.attrs["run_id"]
    assert "kept (up to date with its cells" in out and "cross_entropy_mean" in out  # the report's answer, again
    assert rerun("--recombine")[0] != first
    third = rerun()[0]
    changed, _ = rerun("--set", 'analysis.sweep.metric="kl_from_reference_mean"')
    assert changed != third
    from comparisons.run import run

    run(sweep.cells[0].config, sweep.cells[0].folder, progress=False)  # a new run of a cell: a new combine
    assert rerun("--set", 'analysis.sweep.metric="kl_from_reference_mean"')[0] != changed
