"""Ranks, PIT values, the ECDF uniformity test and the expected calibration error, against plain numpy and scipy."""

import numpy as np
import pytest
import xarray as xr
from scipy import stats

from toolkit import calibration
from toolkit.metrics import reliability


def test_fractional_rank_counts_the_draws_below(rng):
    draws = rng.normal(size=(50, 30))
    truth = rng.normal(size=50)
    u = calibration.fractional_rank(draws, truth, axis=1, rng=rng)
    below = (draws < truth[:, None]).sum(axis=1)
    np.testing.assert_array_equal(np.floor(u * 31), below)  # no ties: the cell is the count below


def test_fractional_rank_breaks_ties_inside_the_tied_block(rng):
    draws = rng.integers(0, 3, size=(400, 9)).astype(float)
    truth = rng.integers(0, 3, size=400).astype(float)
    u = calibration.fractional_rank(draws, truth, axis=1, rng=rng)
    rank = np.floor(u * 10)
    below = (draws < truth[:, None]).sum(1)
    ties = (draws == truth[:, None]).sum(1)
    assert np.all((rank >= below) & (rank <= below + ties))
    # exchangeable discrete values: randomised ranks are uniform (a strict count below would not be)
    exchangeable = rng.integers(0, 3, size=(2000, 10)).astype(float)
    u = calibration.fractional_rank(exchangeable[:, 1:], exchangeable[:, 0], axis=1, rng=rng)
    assert calibration.uniformity_test(u).pvalue > 0.01
    strict = ((exchangeable[:, 1:] < exchangeable[:, :1]).sum(1) + rng.random(2000)) / 10
    assert calibration.uniformity_test(strict).pvalue < 1e-6


def test_fractional_rank_is_nan_where_a_value_is():
    u = calibration.fractional_rank(np.array([[0.0, np.nan], [0.0, 1.0]]), np.array([0.5, np.nan]), axis=1,
                                    rng=np.random.default_rng(0))
    assert np.isnan(u).all()


def test_randomized_pit_matches_the_cumulative_table(rng):
    prob = rng.dirichlet(np.ones(4), size=(6, 5))
    y = rng.integers(0, 4, size=(6, 5))
    u = calibration.randomized_pit(np.log(prob), y, axis=-1, rng=np.random.default_rng(3))
    v = np.random.default_rng(3).random((6, 5))
    below = np.array([[prob[i, j, : y[i, j]].sum() for j in range(5)] for i in range(6)])
    at = np.take_along_axis(prob, y[..., None], -1)[..., 0]
    np.testing.assert_allclose(u, below + v * at, atol=1e-15)


def test_randomized_pit_of_the_true_distribution_is_uniform(rng):
    prob = np.array([0.2, 0.5, 0.3])
    y = rng.choice(3, p=prob, size=3000)
    u = calibration.randomized_pit(np.log(np.broadcast_to(prob, (3000, 3))), y, rng=rng)
    assert calibration.uniformity_test(u).pvalue > 0.01
    wrong = calibration.randomized_pit(np.log(np.broadcast_to([0.3, 0.4, 0.3], (3000, 3))), y, rng=rng)
    assert calibration.uniformity_test(wrong).pvalue < 0.01


@pytest.mark.parametrize("n", [21, 60, 301])
def test_one_point_test_is_scipys_binomial_test(rng, n):
    u = rng.random(n) ** 1.2
    count = int((u <= 0.5).sum())
    got = calibration.uniformity_test(u, num_points=2).pvalue  # one point, z = 1/2: the two-sided binomial test
    np.testing.assert_allclose(got, stats.binomtest(count, n, 0.5).pvalue, rtol=1e-9)


def gamma_statistic(u, points):
    """Säilynoja et al.'s γ in plain numpy and scipy."""
    n = len(u)
    counts = np.array([(u <= z).sum() for z in points])
    return 2 * min(min(stats.binom.cdf(c, n, z), stats.binom.sf(c - 1, n, z)) for c, z in zip(counts, points))


def test_exact_pvalue_matches_a_monte_carlo_null(rng):
    n, points = 40, calibration.ecdf_points(40, 10)
    u = rng.random(n) ** 1.3
    test = calibration.uniformity_test(u, num_points=10)
    np.testing.assert_allclose(test.statistic, gamma_statistic(u, points), rtol=1e-12)
    null = np.array([gamma_statistic(rng.random(n), points) for _ in range(4000)])
    mc = np.mean(null <= test.statistic)
    assert abs(test.pvalue - mc) < 4 * np.sqrt(mc * (1 - mc) / 4000) + 1e-3


def test_the_test_holds_its_level_and_agrees_with_arviz_band(rng):
    n = 60
    points = calibration.ecdf_points(n)
    low, high = calibration.uniform_ecdf_band(n, points, level=0.95)
    samples = [rng.random(n) ** rng.choice([1.0, 1.6]) for _ in range(300)]
    pvalues = calibration.uniformity_test(np.stack(samples)).pvalue
    outside = [np.any((d < low - 1e-12) | (d > high + 1e-12)) for d in
               (calibration.ecdf_difference(s, points) for s in samples)]
    null = calibration.uniformity_test(rng.random((400, n))).pvalue
    assert 0.02 < np.mean(null < 0.05) < 0.09  # the level holds (γ is discrete: a little conservative)
    assert np.mean((pvalues < 0.05) == np.asarray(outside)) > 0.95  # ArviZ's optimised band is the same test


def test_ecdf_difference_is_the_ecdf_minus_the_diagonal(rng):
    u = rng.random((3, 25))
    u[0, 4] = np.nan
    points = np.array([0.1, 0.5, 0.9])
    got = calibration.ecdf_difference(u, points)
    for i in range(3):
        row = u[i][~np.isnan(u[i])]
        np.testing.assert_allclose(got[i], [(row <= z).mean() - z for z in points])


def test_expected_calibration_error_against_manual_bins(rng):
    prob = rng.random(500)
    event = rng.random(500) < prob ** 1.5
    edges = np.linspace(0, 1, 11)
    index = np.clip(np.searchsorted(edges, prob, side="right") - 1, 0, 9)
    want = sum(np.sum(index == b) * abs(prob[index == b].mean() - event[index == b].mean())
               for b in range(10) if np.any(index == b)) / 500
    assert calibration.expected_calibration_error(prob, event) == pytest.approx(want, rel=1e-12)


def test_xr_wrappers_match_the_numpy_layer(rng):
    u = xr.DataArray(rng.random((2, 3, 40)), dims=("predictor", "scenario", "episode"))
    got = calibration.xr_uniformity_test(u, "episode")
    want = calibration.uniformity_test(u.values)
    np.testing.assert_allclose(got["pvalue"].values, want.pvalue)
    prob = xr.DataArray(rng.random((2, 50, 3)), dims=("predictor", "episode", "outcome"))
    event = xr.DataArray(rng.random((50, 3)) < 0.5, dims=("episode", "outcome"))
    table = calibration.xr_reliability(prob, event, ("episode", "outcome"), bins=5)
    for i in range(2):
        r = reliability(prob.values[i], event.values, 5)
        np.testing.assert_allclose(table["count"].values[i], r.count)
        np.testing.assert_allclose(table["ece"].values[i], calibration.expected_calibration_error(prob.values[i], event.values, 5))
