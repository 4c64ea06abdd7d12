"""Every Bayes' Power / regression experiment config end to end at its ``tiny`` profile, and the regression CLI's errors."""

import numpy as np
import pytest

from comparisons.config import CONFIG_DIR, load_config
from comparisons.plan import build_prior
from comparisons.run import main
from toolkit.dims import PREDICTOR, SCENARIO
from toolkit.io import read_netcdf
from toolkit.kinds import REGRESSION


def _is_regression_experiment(path) -> bool:
    cfg = load_config(path, [], "tiny")
    predictors = cfg.evaluation.predictors
    if predictors is not None and "learner" not in predictors:
        return False  # sbc_* configs check the Bayes engines alone (tests/comparisons/analyses/test_sbc_analysis.py)
    return build_prior(cfg).data_kind is REGRESSION


# chosen by the prior's data kind, so a new regression config is tested without editing this file
REGRESSION_CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.toml") if _is_regression_experiment(p))


def test_every_regression_config_has_cpu_paper_and_tiny_profiles():
    assert REGRESSION_CONFIGS, "no regression configs found"
    for name in REGRESSION_CONFIGS:
        for profile in ("cpu", "paper", "tiny"):
            cfg = load_config(CONFIG_DIR / f"{name}.toml", [], profile)
            assert cfg.learner.architecture in (None, "pfn"), name


@pytest.fixture(scope="module", params=REGRESSION_CONFIGS)
def tiny_regression_run(request, tmp_path_factory):
    name = request.param
    out = tmp_path_factory.mktemp(name)
    code = main(["--config", str(CONFIG_DIR / f"{name}.toml"), "--profile", "tiny", "--out", str(out), "--no-progress"])
    assert code == 0, f"the tiny {name} run failed"
    return name, out


def test_tiny_run_writes_the_regression_contract(tiny_regression_run):
    name, out = tiny_regression_run
    for path in ("comparison.nc", "metrics.nc", "report.md", "figures/squared_error.png", "learner"):
        assert (out / path).exists(), f"{name}: {path} missing"
    ds = read_netcdf(out / "comparison.nc")
    metrics = read_netcdf(out / "metrics.nc")
    for var in ("x", "y", "log_score", "mean", "variance", "quantile_value", "grid_log_density", "prior_log_prob"):
        assert var in ds, f"{name}: {var} missing from comparison.nc"
    for var in ("cross_entropy", "squared_error", "squared_error_to_reference", "coverage_90", "kl_from_reference"):
        assert var in metrics, f"{name}: {var} missing from metrics.nc"
    inside = ds.sel({SCENARIO: "in_distribution"})
    for predictor in ("bayes", "learner"):
        cell = inside.sel({PREDICTOR: predictor})
        assert np.isfinite(cell["log_score"]).all() and np.isfinite(cell["mean"]).all(), f"{name}: {predictor}"
        # quantiles are ordered and the median sits inside the central interval
        q = cell["quantile_value"].values
        assert np.all(np.diff(q, axis=-1) >= -1e-9), f"{name}: {predictor} quantiles out of order"
    # Bayes agrees with itself: its squared error to the reference is exactly zero
    assert float(metrics["squared_error_to_reference_mean"].sel({PREDICTOR: "bayes"}).max()) == 0.0


def test_tiny_linear_regression_reports_pit_calibration(tiny_regression_run):
    name, out = tiny_regression_run
    if name != "linear_regression":
        pytest.skip("the PIT calibration analysis is configured for linear_regression")
    ds = read_netcdf(out / "comparison.nc")
    metrics = read_netcdf(out / "metrics.nc")
    for predictor in ("bayes", "ridge", "oracle", "learner"):
        cell = ds.sel({PREDICTOR: predictor})
        pit, y, q = cell["pit"].values, cell["y"].values, cell["quantile_value"]
        assert np.all((pit >= 0) & (pit <= 1)), predictor
        for level in (0.05, 0.5, 0.95):  # F(y) <= q exactly when y <= F^-1(q)
            below = y <= q.sel(quantile=level).values
            assert np.mean(below == (pit <= level + 1e-9)) > 0.999, (predictor, level)
    assert {"pit_pvalue", "pit_pvalue_pooled"} <= set(metrics.data_vars)
    tested = metrics["pit_pvalue"].dropna(PREDICTOR, how="all")[PREDICTOR].values
    assert list(tested) == ["bayes", "learner"]  # by default the learners and Bayes
    assert "## Calibration: PIT of the predictive" in (out / "report.md").read_text()
    assert (out / "figures" / "pit_ecdf.png").exists()


def test_linear_regression_learner_trains_on_its_curriculum(tmp_path, capsys):
    import json

    out = tmp_path / "lr"
    args = ["--config", str(CONFIG_DIR / "linear_regression.toml"), "--profile", "tiny", "--out", str(out),
            "--no-progress", "--set", 'evaluation.predictors=["bayes", "learner"]',
            "--set", "scenarios={}", "--set", 'scenarios.in_distribution.kind="in_distribution"']
    assert main(args) == 0
    meta = json.loads(max((out / "learner").glob("step-*.json")).read_text())
    assert [(s["until"], s["prior"]["params"]["x_subspace"]) for s in meta["curriculum"]] == [(5, 1), (10, 3)]
    capsys.readouterr()
    assert main(args) == 0  # the same curriculum: the finished learner is reused
    assert "reusing the trained learner" in capsys.readouterr().out
    assert main(args + ["--set", "learner.curriculum=[]"]) == 2  # another curriculum: not that checkpoint's run
    assert "curriculum: checkpoint" in capsys.readouterr().err


def test_ridge_is_bayes_for_linear_regression(tmp_path):
    out = tmp_path / "lr"
    args = ["--config", str(CONFIG_DIR / "linear_regression.toml"), "--profile", "tiny", "--out", str(out),
            "--no-progress", "--set", 'evaluation.predictors=["bayes", "ridge", "oracle", "least_squares"]',
            "--set", "scenarios={}", "--set", 'scenarios.in_distribution.kind="in_distribution"']
    assert main(args) == 0
    ds = read_netcdf(out / "comparison.nc").sel({SCENARIO: "in_distribution"})
    for var in ("mean", "variance", "log_score"):
        np.testing.assert_allclose(ds[var].sel({PREDICTOR: "ridge"}), ds[var].sel({PREDICTOR: "bayes"}), rtol=1e-9, atol=1e-12)
    # the oracle knows w: its squared error is the noise variance sigma^2 / d on average
    metrics = read_netcdf(out / "metrics.nc").sel({SCENARIO: "in_distribution"})
    oracle = float(metrics["squared_error_mean"].sel({PREDICTOR: "oracle"}))
    assert 0.2 * 0.01 / 5 < oracle < 5 * 0.01 / 5
    # least squares has no predictive density: NaN scores, finite means
    ls = ds.sel({PREDICTOR: "least_squares"})
    assert np.isnan(ls["log_score"]).all() and np.isfinite(ls["mean"]).all()


def test_counting_config_runs_its_all_ones_prompt(tmp_path):
    out = tmp_path / "counting"
    for profile in ("cpu", "paper"):
        load_config(CONFIG_DIR / "counting.toml", [], profile)
    assert main(["--config", str(CONFIG_DIR / "counting.toml"), "--profile", "tiny", "--out", str(out), "--no-progress"]) == 0
    ds = read_netcdf(out / "comparison.nc").sel({SCENARIO: "all_ones"}).isel(episode=0)
    # after k ones Bayes over the 101-point grid puts more and more mass on y = 1
    p_one = np.exp(ds["log_prob"].sel({PREDICTOR: "bayes"}).sel(outcome="1").values[:8])
    assert np.all(np.diff(p_one) > 0) and abs(p_one[0] - 0.5) < 1e-12


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ('evaluation.predictors=["bayes", "frequency"]', "frequency"),
        ('learner.architecture="transformer"',
         "learner: prior 'linear_regression' is a regression prior, but TransformerConfig is a tokens architecture; "
         'use one that learns regression data (learners.PFNConfig; in a config, [learner] architecture = "pfn")'),
        ("learner.curriculum=[{until=2, params={d=3}}]", "learner: curriculum stage 0: prior 'linear_regression'"),
        ("learner.curriculum=[{until=50}]", "at most train.steps = 20"),
    ],
)
def test_regression_config_errors_name_the_fix(tmp_path, capsys, override, message):
    args = ["--config", str(CONFIG_DIR / "linear_regression.toml"), "--profile", "tiny", "--out", str(tmp_path / "x"),
            "--no-progress", "--set", override]
    assert main(args) == 2
    assert message in capsys.readouterr().err
