"""Detection scores and the ROC AUC with its bootstrap, against brute force in plain numpy."""

import jax
import numpy as np
import pytest
import xarray as xr
from scipy import special, stats

import priors
from toolkit import detection
from toolkit.bayes import bayes_predictor


def brute_auc(neg, pos):
    neg, pos = neg[~np.isnan(neg)], pos[~np.isnan(pos)]
    return np.mean((pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None]))


def test_auc_is_the_pairwise_count_with_ties_and_nan(rng):
    neg = rng.integers(0, 5, size=(4, 30)).astype(float)
    pos = rng.integers(1, 6, size=(4, 25)).astype(float)
    neg[1, 3], pos[2, 0] = np.nan, np.nan
    neg[3, 0] = np.inf
    got = detection.auc(neg, pos, axis=1)
    np.testing.assert_allclose(got, [brute_auc(neg[i], pos[i]) for i in range(4)], rtol=1e-12)
    u = stats.mannwhitneyu(pos[0], neg[0]).statistic / (25 * 30)  # scipy's U agrees
    assert got[0] == pytest.approx(u)


def test_auc_interval_is_the_bootstrap_of_the_pairwise_count(rng):
    neg, pos = rng.normal(size=(3, 20)), rng.normal(0.7, size=(3, 15))
    out = detection.auc_interval(neg, pos, axis=1, num_resamples=50, level=0.9, rng=np.random.default_rng(5))
    stream = np.random.default_rng(5)
    i_neg, i_pos = stream.integers(0, 20, size=(50, 20)), stream.integers(0, 15, size=(50, 15))
    for b in range(3):
        resampled = [brute_auc(neg[b, i_neg[r]], pos[b, i_pos[r]]) for r in range(50)]
        assert out.estimate[b] == pytest.approx(brute_auc(neg[b], pos[b]))
        assert out.low[b] == pytest.approx(np.quantile(resampled, 0.05))
        assert out.high[b] == pytest.approx(np.quantile(resampled, 0.95))


def test_cumulative_surprise_and_standardize(rng):
    score = rng.normal(size=(5, 7))
    score[0, 2] = np.nan  # padding adds nothing
    s = detection.cumulative_surprise(score, axis=1)
    np.testing.assert_allclose(s, np.cumsum(-np.nan_to_num(score), axis=1))
    ref = rng.normal(size=(9, 7))
    z = detection.standardize(s, ref, axis=0)
    np.testing.assert_allclose(z, (s - ref.mean(0)) / ref.std(0, ddof=1))


def test_prequential_surprise_against_a_loop(rng):
    lp = np.log(rng.dirichlet(np.ones(3), size=(4, 6)))
    y = rng.integers(0, 3, size=(4, 6)).astype(float)
    y[1, 5] = np.nan  # padding
    got = detection.prequential_surprise(lp, y)
    for e in range(4):
        num = var = 0.0
        for t in range(6):
            if not np.isnan(y[e, t]):
                p = np.exp(lp[e, t])
                h = -(p * lp[e, t]).sum()
                num += -lp[e, t, int(y[e, t])] - h
                var += (p * lp[e, t] ** 2).sum() - h**2
            assert got[e, t] == pytest.approx(num / np.sqrt(var))


def test_prequential_surprise_is_a_martingale_on_the_prior_and_infinite_off_its_support():
    prior = priors.get("beta_bernoulli", a=2.0, b=2.0)
    episodes = prior.sample(jax.random.key(0), 4000, 16)
    lp = bayes_predictor(prior).predict(episodes)["log_prob"].values
    p = np.exp(lp)
    entropy = -(p * lp).sum(-1)
    variance = ((p * lp**2).sum(-1) - entropy**2).sum(1)
    z = detection.prequential_surprise(lp, episodes.y.astype(float))[:, -1]
    numerator = z * np.sqrt(variance)  # Σ_s (−log p_s(y_s) − H_s): mean 0 and variance E Σ_s V_s under the prior
    assert abs(numerator.mean()) < 3 * numerator.std() / np.sqrt(4000)
    assert numerator.var() == pytest.approx(variance.mean(), rel=0.1)
    impossible = np.array([[[0.0, -np.inf], [np.log(0.5), np.log(0.5)]]])  # y_1 = 1 has probability zero
    assert np.isposinf(detection.prequential_surprise(impossible, np.array([[1.0, 0.0]]))).all()


def test_pit_surprise_against_numpy(rng):
    u = rng.random((3, 8))
    u[0, 0] = np.nan
    got = detection.pit_surprise(u, axis=1)
    z2 = np.where(np.isnan(u), 0.0, special.ndtri(np.nan_to_num(u, nan=0.5)) ** 2 - 1)
    count = np.cumsum(~np.isnan(u), axis=1)
    want = np.where(count > 0, np.cumsum(z2, axis=1) / np.sqrt(2 * np.maximum(count, 1)), np.nan)
    np.testing.assert_allclose(got, want)


def test_xr_auc_interval_keeps_the_other_dims(rng):
    neg = xr.DataArray(rng.normal(size=(2, 30, 4)), dims=("detector", "episode", "position"))
    pos = xr.DataArray(rng.normal(1.0, size=(2, 20, 4)), dims=("detector", "episode", "position"))
    out = detection.xr_auc_interval(neg, pos, "episode", num_resamples=20, rng=rng)
    assert out["estimate"].dims == ("detector", "position")
    np.testing.assert_allclose(out["estimate"].values[1, 2], brute_auc(neg.values[1, :, 2], pos.values[1, :, 2]))
