"""The metrics of ``benchmarks/peer_pfns.py`` (and ``pfn_linear_regression.evaluate``) against closed forms.

pfns itself is optional (the ``peer`` extra): only the smoke run at the end needs it.
"""

import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import peer_pfns  # noqa: E402
import priors  # noqa: E402
import toolkit  # noqa: E402
from pfn_linear_regression import evaluate  # noqa: E402

NUM_EPISODES = 2048


@pytest.fixture(scope="module")
def setting():
    prior = priors.get("linear_regression", d=peer_pfns.D, sigma=peer_pfns.SIGMA)
    return prior, toolkit.bayes_predictor(prior)


def test_bayes_against_itself_has_no_gap_and_covers_ninety_percent(setting):
    prior, bayes = setting
    ev = evaluate(bayes, bayes, prior, d=peer_pfns.D, num_episodes=NUM_EPISODES, key=jax.random.key(1))
    summary = peer_pfns.gap_summary(ev)
    assert summary["gap"] == 0.0 and summary["mean_sq"] == 0.0
    # the closed form is calibrated: 90 % of 2048 x 11 realised y, give or take three standard errors
    assert abs(summary["coverage90"] - 0.9) < 3 * np.sqrt(0.09 / (NUM_EPISODES * len(ev["coverage90"])))


def test_coverage_and_gap_match_plain_numpy(setting):
    """A Gaussian predictive with Bayes' mean and a wider variance, scored by hand and by evaluate."""
    prior, bayes = setting
    key = jax.random.key(3)
    episodes = prior.sample(key, 256, 2 * peer_pfns.D + 1)
    want = bayes.predict(episodes)
    mean, sd = want["mean"].values, 2.0 * np.sqrt(want["variance"].values)

    class Wide:
        def predict(self, _episodes):
            out = want.copy()
            out["log_score"] = (out["mean"].dims, stats.norm.logpdf(episodes.y, mean, sd))
            levels = out["quantile"].values
            out["quantile_value"] = (out["quantile_value"].dims,
                                     mean[..., None] + sd[..., None] * stats.norm.ppf(levels))
            return out

    ev = evaluate(Wide(), bayes, prior, d=peer_pfns.D, num_episodes=256, key=key)
    y = episodes.y
    inside = (y >= mean - 1.6448536 * sd) & (y <= mean + 1.6448536 * sd)
    np.testing.assert_allclose(ev["coverage90"], inside.mean(0))
    gap = stats.norm.logpdf(y, mean, sd / 2) - stats.norm.logpdf(y, mean, sd)
    np.testing.assert_allclose(ev["nll_excess"], gap.mean(0), rtol=1e-6)
    np.testing.assert_allclose(ev["mean_sq"], 0.0)


def test_snapshot_times_are_log_spaced():
    times = peer_pfns.snapshot_times(300.0, 5, first=3.0)
    np.testing.assert_allclose(times, [3.0, 9.486833, 30.0, 94.86833, 300.0], rtol=1e-6)


def test_tiny_pfns_run_predicts_every_position(setting):
    pytest.importorskip("pfns")
    prior, bayes = setting
    run = peer_pfns.train_pfns(prior, steps=peer_pfns.PFNS_STEPS_PER_EPOCH, seed=0, lr=1e-3)
    assert run.steps == peer_pfns.PFNS_STEPS_PER_EPOCH and run.targets > 0
    wall, step, predictor = run.snapshots[-1]
    episodes = prior.sample(jax.random.key(1), 8, 11)
    out = predictor.predict(episodes)
    assert out["log_score"].shape == (8, 11) and np.isfinite(out["log_score"].values).all()
    q = out["quantile_value"].values
    assert (np.diff(q, axis=-1) >= 0).all()
    ev = evaluate(predictor, bayes, prior, d=peer_pfns.D, num_episodes=16, key=jax.random.key(2))
    assert np.isfinite(peer_pfns.gap_summary(ev)["gap"])
