"""The plan: every part built and resolved before anything trains, and its memory estimates.

What the plan refuses, and how, is the bad-input suite's (test_bad_inputs.py).
"""

import numpy as np
import pytest

from comparisons.config import load_config
from comparisons.plan import build_plan, check_memory, estimated_sizes
from toolkit.errors import ConfigError


def test_a_plan_holds_every_part_resolved_before_training(tmp_path):
    cfg = load_config(None, ['learners.lstm={architecture="rnn", model={n_embd=8}, seeds=[0, 1]}'], "tiny")
    plan = build_plan(cfg, tmp_path / "run", progress=False)
    assert list(plan.learners) == ["learner", "lstm-s0", "lstm-s1"]
    assert plan.predictor_names == ["bayes", "oracle", "best_mixture", "frequency", "learner", "lstm-s0", "lstm-s1"]
    assert set(plan.predictors) == {"bayes", "oracle", "best_mixture", "frequency"}  # learners are trained later
    assert all(lp.context == 16 for lp in plan.learners.values())
    assert plan.learners["lstm-s1"].train.seed == 1 and plan.learners["lstm-s1"].directory == tmp_path / "run/learners/lstm-s1"
    # the kind's default analysis first, then the config's [analysis.*] tables in their `after` order
    assert [a.name for a in plan.analyses] == ["tokens", "detection", "calibration"]
    assert plan.report_positions == [1, 8, 16]
    assert plan.y_grid is None
    assert not (tmp_path / "run").exists()


def test_a_regression_plan_takes_the_kinds_defaults(tmp_path):
    cfg = load_config("comparisons/configs/linear_regression.toml", [], "tiny")
    cfg = cfg.model_copy(update={"evaluation": cfg.evaluation.model_copy(update={"predictors": None})})
    plan = build_plan(cfg, tmp_path / "run", progress=False)
    assert plan.predictor_names == ["bayes", "oracle", "ridge", "least_squares", "knn", "averaging", "learner"]
    assert plan.learners["learner"].architecture == "pfn"
    assert [a.name for a in plan.analyses] == ["regression", "calibration"]
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
