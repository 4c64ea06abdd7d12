"""The detection and calibration analyses of the default two-coin config, on the session's tiny run."""

import numpy as np
import pytest
from conftest import TINY_ARGS

from comparisons.run import main
from toolkit.calibration import expected_calibration_error
from toolkit.dims import DETECTOR, EPISODE, OUTCOME, POSITION, PREDICTOR, SCENARIO
from toolkit.io import read_netcdf


@pytest.fixture(scope="module")
def results(tiny_run):
    return (read_netcdf(tiny_run.out / "comparison.nc"), read_netcdf(tiny_run.out / "metrics.nc"),
            (tiny_run.out / "report.md").read_text(encoding="utf-8"), tiny_run)


def brute_auc(neg, pos):
    neg, pos = neg[~np.isnan(neg)], pos[~np.isnan(pos)]
    return np.mean((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None]))


def test_detection_auc_is_the_pairwise_count_of_the_stored_scores(results):
    ds, metrics, report, run = results
    assert ds["detection_z"].dims == (DETECTOR, SCENARIO, EPISODE, POSITION)  # per episode: comparison.nc
    assert list(metrics[DETECTOR].values) == ["learner", "bayes"] and "detection_z" not in metrics
    assert list(metrics["detection_method"].values) == ["surprise", "posterior_predictive"]
    auc = metrics["detection_auc"]
    assert np.isnan(auc.sel({SCENARIO: "in_distribution"})).all()
    z = abs(ds["detection_z"])
    for detector in ("learner", "bayes"):
        for t in (4, 16):
            want = brute_auc(z.sel({DETECTOR: detector, SCENARIO: "in_distribution", POSITION: t}).values,
                             z.sel({DETECTOR: detector, SCENARIO: "q=0.5", POSITION: t}).values)
            got = auc.sel({DETECTOR: detector, SCENARIO: "q=0.5", POSITION: t})
            assert float(got) == pytest.approx(want)
    defined = auc.notnull()
    assert bool(((metrics["detection_auc_low"] <= auc + 1e-12) & (auc <= metrics["detection_auc_high"] + 1e-12))
                .where(defined, True).all())
    assert "## Can the context tell that the data are off the prior?" in report
    assert "**Detection of q=0.5** (ROC AUC against in-distribution): t=8:" in run.stdout
    assert (run.out / "figures" / "detection_auc.png").exists()


def test_the_learners_score_is_its_surprise_standardised_on_in_distribution_episodes(results):
    ds, metrics, _, _ = results
    surprise = -ds["log_score"].sel({PREDICTOR: "learner"}).cumsum(POSITION)
    ref = surprise.sel({SCENARIO: "in_distribution"})
    want = (surprise - ref.mean(EPISODE)) / ref.std(EPISODE, ddof=1)
    np.testing.assert_allclose(ds["detection_z"].sel({DETECTOR: "learner"}).transpose(*want.dims), want, rtol=1e-9)


def test_the_ece_of_each_predictor_is_recomputed_from_the_comparison(results):
    ds, metrics, report, run = results
    for predictor, scenario in (("learner", "in_distribution"), ("bayes", "q=0.5")):
        cell = ds.sel({PREDICTOR: predictor, SCENARIO: scenario})
        prob = np.exp(cell["log_prob"].values)  # (episode, position, outcome)
        event = cell["y"].values[..., None] == np.arange(ds.sizes[OUTCOME])
        want = expected_calibration_error(prob, event)
        assert float(metrics["ece"].sel({PREDICTOR: predictor, SCENARIO: scenario})) == pytest.approx(want)
    assert metrics["reliability_count"].sel({PREDICTOR: "learner", SCENARIO: "in_distribution"}).sum() == (
        2 * ds.sizes[EPISODE] * ds.sizes[POSITION])
    assert "## Calibration: reliability of the next-token probabilities" in report
    assert (run.out / "figures" / "reliability.png").exists()


@pytest.mark.parametrize(("override", "message"), [
    ('analysis.detection.detectors=["gpt"]', "analysis.detection.detectors ['gpt'] are not among the predictors"),
    ("analysis.detection.positions=[99]", "analysis.detection.positions [99] lie outside 1..16"),
])
def test_a_detection_setting_that_cannot_work_stops_the_run_first(tmp_path, capsys, override, message):
    assert main([*TINY_ARGS, "--set", override, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "x" / "learner").exists()
