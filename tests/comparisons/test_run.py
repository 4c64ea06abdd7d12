"""End to end: ``python comparisons/run.py --profile tiny`` and what it writes, reproduces, reuses and resumes.

The session's subprocess run (``tiny_run`` in conftest.py) is shared; the
reproducibility check starts a second one; the runs that test the learner's
folder go through ``main()`` in-process, with the evaluation shrunk.
"""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import xarray as xr
from conftest import EVAL_SEED, TINY_ARGS, TINY_OVERRIDES, TRAIN_SEED, run_cli

import learners
from comparisons.config import load_config
from comparisons.plan import build_prior
from comparisons.run import main
from learners.checkpoint import checkpoint_paths, read_meta
from toolkit import Episodes
from toolkit.dims import OUTCOME, POSITION, PREDICTOR, SCENARIO
from toolkit.io import read_netcdf
from toolkit.results import open_results

TINY = load_config(None, list(TINY_OVERRIDES), "tiny")
# scenario names as the grid spells them: one grid key with one-element values prints bare, "q=0.5"
SCENARIOS = ["in_distribution", *(f"q={thetas[0]:g}" for thetas in TINY.scenarios["q"].grid["thetas"])]
PREDICTORS = TINY.evaluation.predictors
LENGTH, NUM_EPISODES = TINY.evaluation.length, TINY.evaluation.num_episodes
STEPS = TINY.learner.training["steps"]
# Same learner, a fraction of the evaluation: for runs that test the learner's folder, not the numbers.
SMALL_EVALUATION = (
    "--set", "evaluation.num_episodes=4",
    "--set", "scenarios.q.grid.thetas=[[0.5]]",
    "--set", 'evaluation.predictors=["frequency", "learner"]',
)
# What records when, where or how long rather than what: it differs between identical runs.
VOLATILE_ATTRS = ("created", "git_commit", "training_wall_time_s", "run_id")
VOLATILE_KEYS = ("wall_time_s", "checkpoint")  # inside the JSON attrs describing the learner


def _without_volatile(value):
    if isinstance(value, dict):
        return {k: _without_volatile(v) for k, v in value.items() if k not in VOLATILE_KEYS}
    return value


def stable(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` without the attributes that legitimately differ between two identical runs."""
    out = ds.copy()
    out.attrs = {k: v for k, v in ds.attrs.items() if k not in VOLATILE_ATTRS}
    for name in ("learner", "predictors"):
        out.attrs[name] = _without_volatile(json.loads(out.attrs[name]))
    return out


@pytest.fixture(scope="module")
def comparison(tiny_run):
    return read_netcdf(tiny_run.out / "comparison.nc")


# --------------------------------------------------------------------------- what one run writes


def test_tiny_run_writes_every_output(tiny_run):
    out = tiny_run.out
    for name in ("comparison.nc", "metrics.nc", "report.md"):
        assert (out / name).is_file(), name
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert figures == ["cross_entropy.png", "detection_auc.png", "mixture_weight.png", "predictions.png",
                       "reliability.png"]
    for png in (out / "figures").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = read_meta(out / "learner")
    assert meta["step"] == STEPS and meta["finished"]
    assert not list(out.rglob(".*.tmp*")), "temporary files left behind"
    assert "Traceback" not in tiny_run.stderr
    assert f"wrote {out}/" in tiny_run.stdout


def test_open_results_reads_the_run(tiny_run):
    tree = open_results(tiny_run.out)
    assert {"comparison", "metrics"} <= set(tree.children)
    ds = tree["comparison"].to_dataset()
    assert list(ds[PREDICTOR].values) == PREDICTORS
    assert list(ds[SCENARIO].values) == SCENARIOS
    assert ds["log_prob"].dims == (PREDICTOR, SCENARIO, "episode", POSITION, OUTCOME)
    assert ds.sizes["episode"] == NUM_EPISODES and ds.sizes[POSITION] == LENGTH
    assert ds["bayes_defined"].dtype == bool
    metrics = tree["metrics"].to_dataset()
    assert metrics["cross_entropy"].dims == (PREDICTOR, SCENARIO, POSITION)
    assert np.isfinite(metrics["cross_entropy"].sel({PREDICTOR: ["bayes", "learner", "frequency"]})).all()


def test_provenance_of_the_run(comparison, tiny_run):
    attrs = comparison.attrs
    assert attrs["inference_method"] == "enumeration"
    assert attrs["training_steps"] == STEPS
    assert attrs["checkpoint_sha256"] == read_meta(tiny_run.out / "learner")["weights_sha256"]
    config = json.loads(attrs["config"])
    assert config["evaluation"]["seed"] == EVAL_SEED
    assert config["learner"]["training"]["seed"] == TRAIN_SEED
    assert json.loads(attrs["prior"])["name"] == "coin_mixture"
    assert json.loads(attrs["learner"])["steps"] == STEPS


def test_stored_learner_predictions_are_the_saved_learners(comparison, tiny_run):
    """The learner column holds what `learners.load(DIR/learner)` predicts on the stored episodes."""
    learner = learners.load(tiny_run.out / "learner")
    for scenario in ("in_distribution", "q=0.1"):
        y = comparison["y"].sel({SCENARIO: scenario}).values.astype(np.int64)
        expected = learner.predict(Episodes(y=y))["log_prob"].values
        stored = comparison["log_prob"].sel({PREDICTOR: "learner", SCENARIO: scenario}).values
        np.testing.assert_allclose(stored, expected, rtol=0, atol=1e-6)


def test_report_holds_the_answer_and_cross_entropy_tables(tiny_run):
    report = (tiny_run.out / "report.md").read_text(encoding="utf-8")
    metrics = read_netcdf(tiny_run.out / "metrics.nc")
    assert "## Answer" in report
    answer = report.split("## Answer", 1)[1].split("\n## ", 1)[0]
    for scenario in SCENARIOS:
        assert f"**{scenario}**" in answer
        assert f"### {scenario}" in report
    # without configured report positions: 1, 8, 32, 64 up to the run's length, and the length, each a column
    assert TINY.evaluation.report_positions is None
    positions = sorted({t for t in (1, 8, 32, 64) if t <= LENGTH} | {LENGTH})
    assert positions, "the tiny profile should tabulate at least one position"
    header = "| predictor | " + " | ".join(f"CE t={t}" for t in positions) + " | CE mean | KL(bayes‖·) mean |"
    assert report.count(header) == len(SCENARIOS)
    scenario = SCENARIOS[-1]
    section = report.split(f"### {scenario}\n", 1)[1].split("###", 1)[0]
    for name in PREDICTORS:
        ce = metrics["cross_entropy"].sel({PREDICTOR: name, SCENARIO: scenario})
        row = f"| {name} | " + " | ".join(f"{float(ce.sel({POSITION: t})):.4f}" for t in positions) + " |"
        assert row in section, row
    assert "![cross-entropy](figures/cross_entropy.png)" in report


# --------------------------------------------------------------------------- reproduce, reuse, resume


def test_same_seed_same_comparison(tiny_run, tmp_path):
    """A second tiny run into another folder (training included) gives the same numbers.

    In a subprocess, like the first: torch's thread count (which other tests may set for this process)
    changes the float reductions of training, so only two fresh interpreters are strictly comparable.
    """
    proc = run_cli(*TINY_ARGS, "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "reusing" not in proc.stdout
    first = read_netcdf(tiny_run.out / "comparison.nc")
    second = read_netcdf(tmp_path / "comparison.nc")
    xr.testing.assert_identical(stable(second), stable(first))
    xr.testing.assert_identical(
        read_netcdf(tmp_path / "metrics.nc").drop_attrs(), read_netcdf(tiny_run.out / "metrics.nc").drop_attrs()
    )


def test_rerun_into_the_same_folder_reuses_the_learner(tiny_run, tmp_path, capsys):
    out = tmp_path / "rerun"
    shutil.copytree(tiny_run.out, out)
    before = {p.name: p.read_bytes() for p in (out / "learner").iterdir()}
    assert main([*TINY_ARGS, *SMALL_EVALUATION, "--out", str(out)]) == 0
    assert f"reusing the trained learner in {out / 'learner'}" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in (out / "learner").iterdir()} == before
    ds = read_netcdf(out / "comparison.nc")
    assert list(ds[SCENARIO].values) == ["in_distribution", "q=0.5"] and ds.sizes["episode"] == 4
    assert ds.attrs["checkpoint_sha256"] == read_meta(tiny_run.out / "learner")["weights_sha256"]


def test_interrupted_training_resumes_from_its_checkpoint(tmp_path, capsys):
    """A learner folder whose newest checkpoint is mid-training: the run continues from it.

    Simulated cheaply: train with checkpoints every third of the steps, then delete the last one, as if
    the run had been killed before finishing. Training is deterministic on the CPU (batches are keyed by
    step), so the resumed learner must end with the uninterrupted run's weights; the wall time carried
    over from the mid-training checkpoint shows it resumed rather than started again.
    """
    prior = build_prior(TINY)
    model_config = learners.TransformerConfig.from_dict(TINY.learner.model)
    every = max(1, STEPS // 3)  # checkpoint_every is a runtime setting: the CLI's run still matches
    train_config = dataclasses.replace(learners.TrainConfig.from_dict(TINY.learner.training), checkpoint_every=every)
    directory = tmp_path / "learner"
    full = learners.train(prior, model_config, train_config, directory, progress=False)
    assert full.steps == STEPS
    for path in checkpoint_paths(directory, STEPS).values():
        path.unlink()
    mid = read_meta(directory)
    assert 0 < mid["step"] < STEPS and not mid["finished"]
    marker = 1000.0
    mid["wall_time_s"] = marker
    checkpoint_paths(directory, mid["step"])["json"].write_text(json.dumps(mid))

    assert main([*TINY_ARGS, *SMALL_EVALUATION, "--out", str(tmp_path)]) == 0
    assert "reusing" not in capsys.readouterr().out
    final = read_meta(directory)
    assert final["step"] == STEPS and final["finished"]
    assert final["weights_sha256"] == full.weights_sha256
    assert final["wall_time_s"] >= marker
    assert final["loss_log"][: len(mid["loss_log"])] == mid["loss_log"]
    assert read_netcdf(tmp_path / "comparison.nc").attrs["checkpoint_sha256"] == full.weights_sha256
