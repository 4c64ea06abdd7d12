"""The plan: every check that spans parts fails in the run's first second, as one line with exit code 2.

Each bad input runs ``main()`` in-process (a few through a real ``python comparisons/run.py``), and
must leave nothing behind: no output folder, no learner trained.
"""

import subprocess

import numpy as np
import pytest
from conftest import PYTHON, REPO, RUN_PY, TINY_ARGS, subprocess_env

from comparisons.config import load_config
from comparisons.plan import build_plan, check_memory, estimated_sizes
from comparisons.run import main
from toolkit.errors import ConfigError

ANBN = ("--config", "comparisons/configs/anbn.toml", "--profile", "tiny")
LINEAR = ("--config", "comparisons/configs/linear_regression.toml", "--profile", "tiny")

# name: (arguments after the tiny profile, fragments of the one error line)
BAD_INPUTS = {
    "length beyond the learner's context": (
        ["--set", "evaluation.length=1e9"],
        ["evaluation.length = 1000000000 is longer than the context of learner 'learner' (16",
         "learner.training.length >= 1000000000"]),
    "length beyond the context at the default config": (
        ["--set", "evaluation.length=32"], ["evaluation.length = 32", "context of learner 'learner' (16"]),
    "episodes that cannot fit in memory": (
        ["--set", "evaluation.num_episodes=1e9"],
        ["the comparison Dataset would take about", "TiB", "of this machine's memory); lower evaluation.num_episodes"]),
    "bootstrap that cannot fit in memory": (
        ["--set", "evaluation.bootstrap_resamples=1e12"], ["the bootstrap", "lower evaluation.bootstrap_resamples"]),
    "training batch that cannot fit in memory": (
        ["--set", "learner.training.batch_size=1e10"], ["a training batch of learner 'learner'", "learner.training.batch_size"]),
    "seed beyond 64 bits": (
        ["--set", "evaluation.seed=1180591620717411303424"], ["config key evaluation.seed", "less than or equal to"]),
    "negative seed": (["--set", "evaluation.seed=-1"], ["config key evaluation.seed", "greater than or equal to 0"]),
    "training seed beyond 64 bits": (
        ["--set", "learner.training.seed=1180591620717411303424"], ["learner: train.seed must lie in 0..", "2^63 - 1"]),
    "report positions beyond the length": (
        ["--set", "evaluation.report_positions=[1, 8, 64]"], ["evaluation.report_positions [64] lie outside 1..16"]),
    "report position 0": (["--set", "evaluation.report_positions=[0, 4]"], ["evaluation.report_positions [0]"]),
    "MCMC positions beyond the length": (
        ["--set", 'evaluation.predictors=["bayes", "bayes_mcmc"]',
         "--set", "evaluation.predictor_options.bayes_mcmc={positions=[2, 40]}"],
        ["evaluation.predictor_options.bayes_mcmc.positions [40] lie outside 1..16"]),
    "a regression baseline for a tokens prior": (
        ["--set", 'evaluation.predictors=["bayes", "ridge"]'],
        ["evaluation.predictors: 'ridge' predicts regression data, but prior 'coin_mixture' is a tokens prior",
         "its baselines are frequency"]),
    "options for a predictor that does not run": (
        ["--set", "evaluation.predictor_options.knn={k=3}"],
        ["evaluation.predictor_options.knn: predictor 'knn' is not in evaluation.predictors; remove the table"]),
    "options for a predictor that takes none": (
        ["--set", "evaluation.predictor_options.bayes={max_support=10}"],
        ["evaluation.predictor_options.bayes: predictor 'bayes' takes no options"]),
    "an option the predictor does not take": (
        ["--set", "evaluation.predictor_options.frequency={beta=2.0}"],
        ["evaluation.predictor_options.frequency:", "beta"]),
    "a wrong-kind architecture": (
        ["--set", 'learner.architecture="pfn"'],
        ["learner: prior 'coin_mixture' is a tokens prior, but PFNConfig is a regression architecture",
         'architecture = "transformer" or "rnn"']),
    "an unknown architecture": (
        ["--set", 'learner.architecture="mamba"'], ["learner: unknown architecture 'mamba'", "pfn, rnn, transformer"]),
    "a predictor named twice": (
        ["--set", 'evaluation.predictors=["bayes", "bayes"]'], ["evaluation.predictors", "names a predictor twice"]),
    "curriculum past the training steps": (
        ["--set", "learner.curriculum=[{until=500}]"], ["learner: curriculum stage 0: until = 500", "train.steps = 30"]),
    "a block size shorter than the training length": (
        ["--set", "learner.model.block_size=8"], ["learner: train.length (16) is longer than model.block_size (8)"]),
    "prompts longer than the learner's context": (
        ["--set", f'scenarios.long={{kind="prompts", prompts=["{"🌈" * 16}"]}}'],
        ["scenarios.long: prompt", "(16 tokens", "context holds 16 positions"]),
    "a [completions] table left at the top level": (
        ["--set", "completions.num=3"], ["config key completions: the [completions] table is now [analysis.completions]"]),
    "completions without prompts to continue in a regression run": (
        ["--config", "comparisons/configs/linear_regression.toml", "--set", "analysis.completions={}"],
        ["analysis.completions: completions continue token prompts; a regression prior has none"]),
    "the aⁿbⁿ analysis on another prior": (
        ["--set", "analysis.anbn={}"], ["analysis.anbn: the aⁿbⁿ analysis needs the anbn prior", "'coin_mixture'"]),
    "a NaN weight decay": (
        ["--set", "learner.training.weight_decay=nan"], ["learner: train.weight_decay must be a finite number"]),
    "an infinite gradient clip": (
        ["--set", "learner.training.grad_clip=inf"], ["learner: train.grad_clip must be a finite number"]),
}
# What the real command line must show too (each interpreter start costs seconds: a few only).
SUBPROCESS = ["episodes that cannot fit in memory", "seed beyond 64 bits", "length beyond the learner's context"]


def check_one_line(code: int, err: str, fragments) -> None:
    assert "Traceback" not in err, err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def args_for(extra: list[str]) -> list[str]:
    """The tiny profile of the default config, or of the config ``extra`` names."""
    if "--config" in extra:
        i = extra.index("--config")
        return [extra[i], extra[i + 1], *TINY_ARGS, *extra[:i], *extra[i + 2:]]
    return [*TINY_ARGS, *extra]


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(tmp_path, capsys, name):
    extra, fragments = BAD_INPUTS[name]
    out = tmp_path / "run"
    code = main([*args_for(extra), "--out", str(out)])
    captured = capsys.readouterr()
    check_one_line(code, captured.err, fragments)
    assert captured.out == ""
    assert not out.exists(), "a run that fails its plan must not create its output folder"
    assert list(tmp_path.iterdir()) == [], "nothing may be left behind"


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """The `SUBPROCESS` cases through ``python comparisons/run.py``, started together."""
    root = tmp_path_factory.mktemp("plan_cli")
    procs = {
        name: subprocess.Popen([PYTHON, str(RUN_PY), *args_for(BAD_INPUTS[name][0]), "--out", str(root / str(i))],
                               cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i, name in enumerate(SUBPROCESS)
    }
    return {name: (proc.wait(timeout=180), *proc.communicate()) for name, proc in procs.items()}


@pytest.mark.parametrize("name", SUBPROCESS)
def test_bad_input_through_the_command_line(cli_runs, name):
    code, out, err = cli_runs[name]
    check_one_line(code, err, BAD_INPUTS[name][1])
    assert out == ""


def test_out_naming_a_file(tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    check_one_line(main([*TINY_ARGS, "--out", str(target)]), capsys.readouterr().err,
                   [f"--out {target} is a file; name a folder"])
    assert target.read_text() == "keep me"


def test_out_below_a_file(tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("")
    check_one_line(main([*TINY_ARGS, "--out", str(target / "run")]), capsys.readouterr().err,
                   [f"{target} is a file, so no folder can be made below it"])


def test_out_where_nothing_can_be_written(capsys):
    # /sys refuses new entries even to root, for whom permission bits do not count
    check_one_line(main([*TINY_ARGS, "--out", "/sys/metabayes-results"]), capsys.readouterr().err,
                   ["--out /sys/metabayes-results: cannot write into /sys", "choose another --out"])


def test_out_without_write_permission(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("comparisons.plan.os.access", lambda path, mode: False)
    check_one_line(main([*TINY_ARGS, "--out", str(tmp_path / "run")]), capsys.readouterr().err,
                   [f"cannot write into {tmp_path}", "no write permission"])


def test_config_naming_a_folder(tmp_path, capsys):
    check_one_line(main(["--config", str(tmp_path), "--out", str(tmp_path / "run")]), capsys.readouterr().err,
                   [f"--config {tmp_path} is a folder; name a TOML file"])


def test_the_anbn_analysis_needs_two_learners(tmp_path, capsys):
    one = 'learners={lstm={architecture="rnn", model={n_embd=8}, seeds=[0]}}'
    code = main([*ANBN, "--set", one, "--no-progress", "--out", str(tmp_path / "run")])
    check_one_line(code, capsys.readouterr().err, ["analysis.anbn: the aⁿbⁿ analysis compares learners: it needs at least two"])


def test_a_plan_holds_every_part_resolved_before_training(tmp_path):
    cfg = load_config(None, ['learners.lstm={architecture="rnn", model={n_embd=8}, seeds=[0, 1]}'], "tiny")
    plan = build_plan(cfg, tmp_path / "run", progress=False)
    assert list(plan.learners) == ["learner", "lstm-s0", "lstm-s1"]
    assert plan.predictor_names == ["bayes", "oracle", "best_mixture", "frequency", "learner", "lstm-s0", "lstm-s1"]
    assert set(plan.predictors) == {"bayes", "oracle", "best_mixture", "frequency"}  # learners are trained later
    assert all(lp.context == 16 for lp in plan.learners.values())
    assert plan.learners["lstm-s1"].train.seed == 1 and plan.learners["lstm-s1"].directory == tmp_path / "run/learners/lstm-s1"
    assert [a.name for a in plan.analyses] == ["tokens"]
    assert plan.report_positions == [1, 8, 16]
    assert plan.y_grid is None
    assert not (tmp_path / "run").exists()


def test_a_regression_plan_takes_the_kinds_defaults(tmp_path):
    cfg = load_config("comparisons/configs/linear_regression.toml", [], "tiny")
    cfg = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"predictors": None})})
    plan = build_plan(cfg, tmp_path / "run", progress=False)
    assert plan.predictor_names == ["bayes", "oracle", "ridge", "least_squares", "knn", "averaging", "learner"]
    assert plan.learners["learner"].architecture == "pfn"
    assert [a.name for a in plan.analyses] == ["regression"]
    assert plan.y_grid.shape == (41,) and np.all(np.diff(plan.y_grid) > 0)


def test_memory_estimates_count_the_arrays_they_name(tmp_path):
    cfg = load_config(None, ["evaluation.num_episodes=10", "evaluation.bootstrap_resamples=7"], "tiny")
    plan = build_plan(cfg, tmp_path / "run", progress=False)
    sizes = estimated_sizes(plan)
    # 6 scenarios x 10 episodes x 16 positions, 5 predictors x (2 outcomes + the log score) + 8 scenario-level values
    assert sizes["the comparison Dataset"][0] == 8 * 6 * 10 * 16 * (5 * 3 + 8)
    assert sizes["the bootstrap of the cross-entropy"][0] == 8 * 7 * 5 * 6 * 16
    with pytest.raises(ConfigError, match=r"the comparison Dataset would take about 172.5 KiB, more than 40.0 KiB \(50% of this machine's memory\); lower evaluation.num_episodes"):
        check_memory(plan, available=80 * 1024)
    check_memory(plan, available=10 * 2**20)
