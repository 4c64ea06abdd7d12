"""toolkit.metrics against plain numpy / scipy computations written here, plus properties."""

import warnings

import numpy as np
import pytest
import xarray as xr
from scipy import stats
from scipy.spatial.distance import jensenshannon

from toolkit import metrics
from toolkit.dims import EPISODE, OUTCOME, POSITION, PREDICTOR, SCENARIO, Y_GRID

LOG2 = np.log(2.0)


def dirichlet_log_probs(rng, shape, num_outcomes, zero_fraction=0.0):
    """Random distributions over the last axis, some outcomes exactly 0 (never all)."""
    p = rng.dirichlet(np.ones(num_outcomes), size=shape)
    if zero_fraction:
        zero = rng.random(p.shape) < zero_fraction
        zero[..., 0] &= ~zero[..., 1:].all(-1)  # keep at least one outcome
        p = np.where(zero, 0.0, p)
        p /= p.sum(-1, keepdims=True)
    with np.errstate(divide="ignore"):
        return np.log(p)


def with_nans(rng, values, fraction):
    return np.where(rng.random(values.shape) < fraction, np.nan, values)


@pytest.fixture
def rng():
    return np.random.default_rng(20240611)


@pytest.fixture(autouse=True)
def no_runtime_warnings():
    """Empty slices and 0·log 0 are documented results, never warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        yield


# --------------------------------------------------------------------------- averages

SHAPES_AXES = [((50,), 0), ((40, 7), 0), ((3, 40, 5), 1), ((3, 40, 5), (0, 1)), ((6, 30), -1)]


@pytest.mark.parametrize("nan_fraction", [0.0, 0.3])
@pytest.mark.parametrize(("shape", "axis"), SHAPES_AXES)
def test_cross_entropy_matches_nanmean(rng, shape, axis, nan_fraction):
    log_score = with_nans(rng, np.log(rng.uniform(0.01, 1, shape)), nan_fraction)
    np.testing.assert_allclose(metrics.cross_entropy(log_score, axis), np.nanmean(-log_score, axis=axis))
    np.testing.assert_array_equal(
        metrics.num_defined(log_score, axis), np.count_nonzero(~np.isnan(log_score), axis=axis)
    )


@pytest.mark.parametrize(
    ("log_score", "expected"),
    [
        ([np.nan, np.nan], np.nan),  # nothing defined
        ([np.log(0.5), np.nan], LOG2),  # NaN ignored, not counted
        ([np.log(0.5), -np.inf], np.inf),  # probability 0 on the realised outcome
        ([np.log(0.25), np.log(0.5), np.log(1.0)], (np.log(4) + LOG2) / 3),
    ],
)
def test_cross_entropy_cases(log_score, expected):
    np.testing.assert_allclose(metrics.cross_entropy(np.array(log_score), 0), expected)


@pytest.mark.parametrize("nan_fraction", [0.0, 0.25])
@pytest.mark.parametrize(("shape", "axis"), SHAPES_AXES)
def test_excess_loss_is_paired_difference(rng, shape, axis, nan_fraction):
    log_score = with_nans(rng, np.log(rng.uniform(0.01, 1, shape)), nan_fraction)
    ref = with_nans(rng, np.log(rng.uniform(0.01, 1, shape)), nan_fraction)
    both = ~np.isnan(log_score) & ~np.isnan(ref)
    expected = np.nanmean(np.where(both, -log_score, np.nan), axis=axis) - np.nanmean(
        np.where(both, -ref, np.nan), axis=axis
    )
    np.testing.assert_allclose(metrics.excess_loss(log_score, ref, axis), expected)


def test_excess_loss_of_reference_is_zero_and_without_nan_a_plain_difference(rng):
    a, b = np.log(rng.uniform(0.01, 1, (2, 100, 4)))
    np.testing.assert_allclose(metrics.excess_loss(a, a, 0), 0.0, atol=1e-15)
    np.testing.assert_allclose(metrics.excess_loss(a, b, 0), (-a).mean(0) - (-b).mean(0))


# --------------------------------------------------------------------------- bootstrap


def naive_bootstrap(values, num_resamples, level, rng):
    """Resample the last axis index by index, one row of indices per resample."""
    n = values.shape[-1]
    index = rng.integers(0, n, size=(num_resamples, n))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(values[..., index], axis=-1)  # (..., R)
        return np.nanquantile(means, [(1 - level) / 2, (1 + level) / 2], axis=-1)


@pytest.mark.parametrize("chunk_bytes", [None, 4096])  # one chunk, and many
@pytest.mark.parametrize("level", [0.5, 0.95])
@pytest.mark.parametrize(("shape", "nan_fraction"), [((30,), 0.0), ((4, 25), 0.2), ((2, 3, 12), 0.5)])
def test_bootstrap_matches_index_resampling(monkeypatch, shape, nan_fraction, level, chunk_bytes):
    if chunk_bytes is not None:
        monkeypatch.setattr(metrics, "_BOOTSTRAP_CHUNK_BYTES", chunk_bytes)
    values = with_nans(np.random.default_rng(1), np.random.default_rng(2).exponential(size=shape), nan_fraction)
    estimate, low, high = metrics.bootstrap_interval(
        values, -1, num_resamples=300, level=level, rng=np.random.default_rng(7)
    )
    expected_low, expected_high = naive_bootstrap(values, 300, level, np.random.default_rng(7))
    np.testing.assert_allclose(low, expected_low, rtol=1e-12)
    np.testing.assert_allclose(high, expected_high, rtol=1e-12)
    np.testing.assert_allclose(estimate, np.nanmean(values, axis=-1))


@pytest.mark.parametrize("level", [0.8, 0.95])
def test_bootstrap_agrees_with_scipy_percentile_bootstrap(level):
    values = np.random.default_rng(3).gamma(2.0, size=400)
    _, low, high = metrics.bootstrap_interval(
        values, 0, num_resamples=20_000, level=level, rng=np.random.default_rng(4)
    )
    reference = stats.bootstrap(
        (values,), np.mean, n_resamples=20_000, confidence_level=level, method="percentile", rng=5
    ).confidence_interval
    standard_error = values.std() / np.sqrt(values.size)
    assert abs(low - reference.low) < 0.1 * standard_error  # Monte Carlo sd ~0.03 SE
    assert abs(high - reference.high) < 0.1 * standard_error


def test_bootstrap_contains_mean_is_deterministic_and_shrinks(rng):
    values = rng.normal(1.0, 2.0, size=(4000, 3))
    small = metrics.bootstrap_interval(values[:100], 0, rng=np.random.default_rng(0))
    again = metrics.bootstrap_interval(values[:100], 0, rng=np.random.default_rng(0))
    large = metrics.bootstrap_interval(values, 0, rng=np.random.default_rng(0))
    for a, b in zip(small, again):
        np.testing.assert_array_equal(a, b)
    for interval in (small, large):
        assert np.all(interval.low < interval.estimate) and np.all(interval.estimate < interval.high)
    assert np.all(large.high - large.low < 0.5 * (small.high - small.low))


def test_bootstrap_cell_does_not_depend_on_its_neighbours(rng):
    values = rng.normal(size=(8, 60))
    together = metrics.bootstrap_interval(values, -1, num_resamples=200, rng=np.random.default_rng(9))
    alone = metrics.bootstrap_interval(values[3], -1, num_resamples=200, rng=np.random.default_rng(9))
    for a, b in zip(together, alone):
        np.testing.assert_allclose(a[3], b, rtol=1e-12)


def test_bootstrap_axis_is_moved(rng):
    values = rng.normal(size=(5, 40, 3))
    moved = metrics.bootstrap_interval(values, 1, num_resamples=100, rng=np.random.default_rng(0))
    last = metrics.bootstrap_interval(np.moveaxis(values, 1, -1), -1, num_resamples=100, rng=np.random.default_rng(0))
    for a, b in zip(moved, last):
        assert a.shape == (5, 3)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([np.nan] * 5, (np.nan, np.nan, np.nan)),
        ([2.0] * 5, (2.0, 2.0, 2.0)),
        ([2.0, np.nan, 2.0, np.nan], (2.0, 2.0, 2.0)),
    ],
)
def test_bootstrap_degenerate_cases(values, expected):
    result = metrics.bootstrap_interval(np.array(values), 0, rng=np.random.default_rng(0))
    np.testing.assert_allclose(np.array(result, dtype=float), expected)


def test_bootstrap_infinite_values_are_infinite_not_nan():
    values = np.array([1.0, 2.0, 3.0, np.inf])
    estimate, low, high = metrics.bootstrap_interval(values, 0, rng=np.random.default_rng(0))
    assert estimate == np.inf and high == np.inf and 1.0 <= low < np.inf


@pytest.mark.parametrize(("kwargs", "match"), [({"level": 1.0}, "level"), ({"num_resamples": 0}, "num_resamples")])
def test_bootstrap_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        metrics.bootstrap_interval(np.ones(3), 0, rng=np.random.default_rng(0), **kwargs)


def test_cross_entropy_interval_is_bootstrap_of_negative_log_score(rng):
    log_score = with_nans(rng, np.log(rng.uniform(0.05, 1, (200, 4))), 0.1)
    estimate, low, high = metrics.cross_entropy_interval(log_score, 0, num_resamples=500, rng=np.random.default_rng(1))
    expected = metrics.bootstrap_interval(-log_score, 0, num_resamples=500, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(np.array([estimate, low, high]), np.array(expected))
    np.testing.assert_allclose(estimate, metrics.cross_entropy(log_score, 0))


# --------------------------------------------------------------------------- divergences

DIVERGENCE_SHAPES = [((5,), 2, -1), ((7, 3), 4, -1), ((2, 6), 3, 0), ((3, 4, 2), 10, 1)]


@pytest.mark.parametrize("zero_fraction", [0.0, 0.3])
@pytest.mark.parametrize(("shape", "num_outcomes", "axis"), DIVERGENCE_SHAPES)
def test_kl_matches_scipy_entropy(rng, shape, num_outcomes, axis, zero_fraction):
    log_p = np.moveaxis(dirichlet_log_probs(rng, shape, num_outcomes, zero_fraction), -1, axis)
    log_q = np.moveaxis(dirichlet_log_probs(rng, shape, num_outcomes), -1, axis)  # q > 0 everywhere
    expected = stats.entropy(np.exp(log_p), np.exp(log_q), axis=axis)
    np.testing.assert_allclose(metrics.kl_divergence(log_p, log_q, axis), expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(metrics.kl_divergence(log_p, log_p, axis), 0.0, atol=1e-15)
    assert np.all(metrics.kl_divergence(log_p, log_q, axis) >= 0)


@pytest.mark.parametrize(
    ("p", "q", "expected"),
    [
        ([0.5, 0.5, 0.0], [0.25, 0.25, 0.5], LOG2),  # p = 0 cell contributes 0
        ([0.5, 0.5, 0.0], [0.5, 0.5, 0.0], 0.0),  # 0 · log(0 / 0) = 0
        ([0.5, 0.5, 0.0], [1.0, 0.0, 0.0], np.inf),  # p > 0 where q = 0
        ([1.0, 0.0], [0.5, 0.5], LOG2),
        ([0.5, np.nan], [0.5, 0.5], np.nan),  # undefined p
        ([1.0, 0.0], [np.nan, np.nan], np.nan),  # undefined q, even where p = 0
    ],
)
def test_kl_edge_cases(p, q, expected):
    with np.errstate(divide="ignore"):
        result = metrics.kl_divergence(np.log(p), np.log(q))
    np.testing.assert_allclose(result, expected)


@pytest.mark.parametrize("zero_fraction", [0.0, 0.4])
@pytest.mark.parametrize(("shape", "num_outcomes", "axis"), DIVERGENCE_SHAPES)
def test_js_matches_scipy_and_is_symmetric_and_bounded(rng, shape, num_outcomes, axis, zero_fraction):
    log_p = np.moveaxis(dirichlet_log_probs(rng, shape, num_outcomes, zero_fraction), -1, axis)
    log_q = np.moveaxis(dirichlet_log_probs(rng, shape, num_outcomes, zero_fraction), -1, axis)
    js = metrics.js_divergence(log_p, log_q, axis)
    np.testing.assert_allclose(js, jensenshannon(np.exp(log_p), np.exp(log_q), axis=axis) ** 2, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(js, metrics.js_divergence(log_q, log_p, axis), rtol=1e-12, atol=1e-15)
    assert np.all((js >= -1e-15) & (js <= LOG2 + 1e-15))
    np.testing.assert_allclose(metrics.js_divergence(log_p, log_p, axis), 0.0, atol=1e-15)


@pytest.mark.parametrize(
    ("p", "q", "expected"),
    [
        ([1.0, 0.0], [0.0, 1.0], LOG2),  # disjoint supports: the bound
        ([0.5, 0.5, 0.0], [0.0, 0.0, 1.0], LOG2),
        ([0.3, 0.7], [0.3, 0.7], 0.0),
        ([0.3, np.nan], [0.3, 0.7], np.nan),
    ],
)
def test_js_edge_cases(p, q, expected):
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(metrics.js_divergence(np.log(p), np.log(q)), expected, atol=1e-15)


@pytest.mark.parametrize("zero_fraction", [0.0, 0.4])
@pytest.mark.parametrize(("shape", "num_outcomes", "axis"), DIVERGENCE_SHAPES)
def test_hellinger_matches_euclidean_formula(rng, shape, num_outcomes, axis, zero_fraction):
    log_p = np.moveaxis(dirichlet_log_probs(rng, shape, num_outcomes, zero_fraction), -1, axis)
    log_q = np.moveaxis(dirichlet_log_probs(rng, shape, num_outcomes, zero_fraction), -1, axis)
    expected = np.linalg.norm(np.sqrt(np.exp(log_p)) - np.sqrt(np.exp(log_q)), axis=axis) / np.sqrt(2)
    result = metrics.hellinger(log_p, log_q, axis)
    np.testing.assert_allclose(result, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(result, metrics.hellinger(log_q, log_p, axis))
    assert np.all((result >= 0) & (result <= 1))


@pytest.mark.parametrize(
    ("mean_p", "sd_p", "mean_q", "sd_q"),
    [(0.0, 1.0, 0.0, 1.0), (0.0, 1.0, 1.0, 2.0), (-1.0, 0.5, 0.5, 1.5), (2.0, 1.5, 0.0, 1.0)],
)
@pytest.mark.parametrize("spacing", ["uniform", "nonuniform"])
def test_grid_kl_matches_gaussian_closed_form(mean_p, sd_p, mean_q, sd_q, spacing):
    y_grid = np.linspace(-15, 15, 3001) if spacing == "uniform" else np.sinh(np.linspace(-3.4, 3.4, 3001))
    closed_form = np.log(sd_q / sd_p) + (sd_p**2 + (mean_p - mean_q) ** 2) / (2 * sd_q**2) - 0.5
    result = metrics.grid_kl_divergence(
        stats.norm.logpdf(y_grid, mean_p, sd_p), stats.norm.logpdf(y_grid, mean_q, sd_q), y_grid
    )
    np.testing.assert_allclose(result, closed_form, atol=1e-5)


def test_grid_kl_is_exact_kl_of_trapezoid_masses_after_renormalising(rng):
    y_grid = np.sort(rng.uniform(-3, 3, 40))
    log_p = rng.normal(size=(5, 40)) + 3.0  # unnormalised on purpose
    log_q = rng.normal(size=(5, 40)) - 2.0
    weights = np.trapezoid(np.eye(40), y_grid, axis=-1)  # ∫ f = Σ w_i f_i
    expected = stats.entropy(weights * np.exp(log_p), weights * np.exp(log_q), axis=-1)  # entropy normalises
    np.testing.assert_allclose(metrics.grid_kl_divergence(log_p, log_q, y_grid), expected, rtol=1e-10)
    np.testing.assert_allclose(
        metrics.grid_kl_divergence(log_p.T, log_q.T, y_grid, axis=0), expected, rtol=1e-10
    )
    np.testing.assert_allclose(metrics.grid_kl_divergence(log_p, log_p - 7.0, y_grid), 0.0, atol=1e-12)


@pytest.mark.parametrize(
    ("log_p", "log_q", "expected"),
    [
        ([0.0, 0.0, -np.inf], [0.0, 0.0, 0.0], None),  # p = 0 on a cell: finite
        ([0.0, 0.0, 0.0], [0.0, -np.inf, 0.0], np.inf),  # q = 0 where p > 0
        ([0.0, np.nan, 0.0], [0.0, 0.0, 0.0], np.nan),
        ([-np.inf] * 3, [0.0, 0.0, 0.0], np.nan),  # zero density everywhere: undefined
    ],
)
def test_grid_kl_edge_cases(log_p, log_q, expected):
    result = metrics.grid_kl_divergence(np.array(log_p), np.array(log_q), np.array([0.0, 1.0, 2.0]))
    if expected is None:
        assert np.isfinite(result) and result > 0
    else:
        np.testing.assert_allclose(result, expected)


@pytest.mark.parametrize("y_grid", [[0.0], [0.0, 2.0, 1.0], [[0.0, 1.0]]])
def test_grid_kl_rejects_bad_grid(y_grid):
    with pytest.raises(ValueError, match="y_grid"):
        metrics.grid_kl_divergence(np.zeros(len(y_grid)), np.zeros(len(y_grid)), np.array(y_grid))


# --------------------------------------------------------------------------- relative distance


@pytest.mark.parametrize(
    ("d_h_a", "d_h_b", "d_a_b", "expected"),
    [
        (0.0, 2.0, 2.0, -1.0),  # h = A
        (2.0, 0.0, 2.0, 1.0),  # h = B
        (1.0, 1.0, 2.0, 0.0),  # equidistant
        (3.0, 1.0, 2.0, 1.0),
        (0.5, 0.25, 0.0, np.nan),  # references agree
        (np.nan, 1.0, 2.0, np.nan),
    ],
)
def test_relative_distance_table(d_h_a, d_h_b, d_a_b, expected):
    np.testing.assert_allclose(metrics.relative_distance(d_h_a, d_h_b, d_a_b), expected)


@pytest.mark.parametrize("distance", [metrics.js_divergence, metrics.hellinger])
def test_relative_distance_endpoints_with_symmetric_divergences(rng, distance):
    log_a = dirichlet_log_probs(rng, (6,), 4)
    log_b = dirichlet_log_probs(rng, (6,), 4)
    d_a_b = distance(log_a, log_b)
    for log_h, endpoint in ((log_a, -1.0), (log_b, 1.0)):
        result = metrics.relative_distance(distance(log_h, log_a), distance(log_h, log_b), d_a_b)
        np.testing.assert_allclose(result, endpoint, rtol=1e-6)


def test_relative_distance_broadcasts(rng):
    d_h_a, d_h_b = rng.uniform(size=(2, 3, 4))
    d_a_b = rng.uniform(0.5, 1, size=4)
    np.testing.assert_allclose(metrics.relative_distance(d_h_a, d_h_b, d_a_b), (d_h_a - d_h_b) / d_a_b)


# --------------------------------------------------------------------------- Wilson, coverage, reliability


def textbook_wilson(k, n, level):
    z = stats.norm.ppf(1 - (1 - level) / 2)
    p = k / n
    center = (k + z**2 / 2) / (n + z**2)
    half = z * np.sqrt(n) / (n + z**2) * np.sqrt(p * (1 - p) + z**2 / (4 * n))
    return center - half, center + half


@pytest.mark.parametrize(
    ("k", "n", "level", "low", "high"),
    [
        (8, 10, 0.95, 0.4902, 0.9433),
        (0, 10, 0.95, 0.0, 0.2775),
        (10, 10, 0.95, 0.7225, 1.0),
        (5, 10, 0.95, 0.2366, 0.7634),
        (50, 100, 0.9, 0.4188, 0.5812),
    ],
)
def test_wilson_known_values(k, n, level, low, high):
    estimate, result_low, result_high = metrics.wilson_interval(k, n, level)
    np.testing.assert_allclose([estimate, result_low, result_high], [k / n, low, high], atol=5e-5)


def test_wilson_vectorised_matches_textbook(rng):
    trials = rng.integers(1, 500, size=(4, 6))
    successes = rng.integers(0, trials + 1)
    for level in (0.8, 0.95, 0.99):
        _, low, high = metrics.wilson_interval(successes, trials, level)
        expected_low, expected_high = textbook_wilson(successes, trials, level)
        np.testing.assert_allclose(low, np.clip(expected_low, 0, 1), atol=1e-12)
        np.testing.assert_allclose(high, np.clip(expected_high, 0, 1), atol=1e-12)
        assert np.all((low <= successes / trials) & (successes / trials <= high))


def test_wilson_no_trials_is_nan_and_bad_counts_raise():
    np.testing.assert_array_equal(np.array(metrics.wilson_interval(0, 0)), [np.nan] * 3)
    _, low, high = metrics.wilson_interval([0, 7], [7, 7])
    assert low[0] == 0.0 and high[1] == 1.0  # exact at the ends, not a rounding hair inside
    with pytest.raises(ValueError, match="successes"):
        metrics.wilson_interval(11, 10)


@pytest.mark.parametrize("nan_fraction", [0.0, 0.3])
@pytest.mark.parametrize(("shape", "axis"), [((200,), 0), ((100, 5), 0), ((4, 50), (0, 1))])
def test_coverage_matches_manual_count(rng, shape, axis, nan_fraction):
    y = with_nans(rng, rng.normal(size=shape), nan_fraction)
    lower = rng.normal(-1.0, 0.3, size=shape)
    upper = with_nans(rng, rng.normal(1.0, 0.3, size=shape), nan_fraction)
    defined = ~np.isnan(y) & ~np.isnan(upper)
    inside = defined & (y >= lower) & (y <= upper)
    covered, num = metrics.coverage_counts(y, lower, upper, axis)
    np.testing.assert_array_equal(covered, inside.sum(axis))
    np.testing.assert_array_equal(num, defined.sum(axis))
    np.testing.assert_allclose(metrics.coverage(y, lower, upper, axis), inside.sum(axis) / defined.sum(axis))


@pytest.mark.parametrize(
    ("y", "expected"),
    [([0.0, 1.0, 2.0, 3.0], 0.75), ([1.0, 2.0, np.nan], 1.0), ([np.nan, np.nan], np.nan)],  # bounds included
)
def test_coverage_cases(y, expected):
    np.testing.assert_allclose(metrics.coverage(np.array(y), 0.0, 2.0, 0), expected)


def manual_reliability(prob, event, edges):
    mean_predicted, observed, count = [], [], []
    for i, (left, right) in enumerate(zip(edges[:-1], edges[1:])):
        last = i == len(edges) - 2
        in_bin = (prob >= left) & ((prob <= right) if last else (prob < right))
        count.append(in_bin.sum())
        mean_predicted.append(prob[in_bin].mean() if in_bin.any() else np.nan)
        observed.append(event[in_bin].mean() if in_bin.any() else np.nan)
    return np.array(mean_predicted), np.array(observed), np.array(count)


@pytest.mark.parametrize("bins", [10, 4, [0.0, 0.1, 0.5, 0.9, 1.0]])
def test_reliability_matches_manual_binning(rng, bins):
    prob = rng.beta(0.5, 0.5, size=(50, 20))
    prob[0, :3] = [0.0, 1.0, 0.5]  # the end points and a bin edge
    event = rng.random(prob.shape) < prob
    edges = np.linspace(0, 1, bins + 1) if np.ndim(bins) == 0 else np.array(bins)
    result = metrics.reliability(prob, event, bins)
    for got, want in zip(result, manual_reliability(prob.ravel(), event.ravel(), edges)):
        np.testing.assert_allclose(got, want)
    assert result.count.sum() == prob.size


def test_reliability_ignores_nan_and_marks_empty_bins():
    prob = np.array([0.05, 0.05, np.nan, 0.95])
    event = np.array([0.0, 1.0, 1.0, np.nan])
    mean_predicted, observed, count = metrics.reliability(prob, event, bins=2)
    np.testing.assert_array_equal(count, [2, 0])
    np.testing.assert_allclose(mean_predicted, [0.05, np.nan])
    np.testing.assert_allclose(observed, [0.5, np.nan])


def test_reliability_rejects_probabilities_outside_unit_interval():
    with pytest.raises(ValueError, match="prob"):
        metrics.reliability([0.5, 1.5], [True, False])


# --------------------------------------------------------------------------- xarray wrappers

PREDICTORS, SCENARIOS = ["bayes", "gpt", "counts"], ["q=0.5", "q=0.9"]
COORDS = {PREDICTOR: PREDICTORS, SCENARIO: SCENARIOS, EPISODE: np.arange(30), POSITION: np.arange(1, 6)}


@pytest.fixture
def log_prob(rng):
    values = dirichlet_log_probs(rng, (3, 2, 30, 5), 3, zero_fraction=0.2)
    values[1, 0, :4, 3:] = np.nan  # padding after EOS at positions 4 and 5 of four episodes
    return xr.DataArray(
        values,
        dims=(PREDICTOR, SCENARIO, EPISODE, POSITION, OUTCOME),
        coords={**COORDS, OUTCOME: ["a", "b", "c"]},
        attrs={"units": "nats"},
    )


@pytest.fixture
def log_score(log_prob):
    return log_prob.isel({OUTCOME: 0}, drop=True).clip(min=-30.0)


def expected_array(values, template, drop, name):
    """A DataArray with `template`'s dims and coords minus `drop`, holding the numpy expectation."""
    kept = template.drop_vars(drop, errors="ignore").isel({d: 0 for d in drop}, drop=True)
    return xr.DataArray(values, dims=kept.dims, coords=kept.coords, name=name)


@pytest.mark.parametrize(
    ("wrapper", "function", "dim"),
    [
        (metrics.xr_cross_entropy, metrics.cross_entropy, EPISODE),
        (metrics.xr_cross_entropy, metrics.cross_entropy, (EPISODE, POSITION)),
        (metrics.xr_num_defined, metrics.num_defined, EPISODE),
        (metrics.xr_num_defined, metrics.num_defined, POSITION),
    ],
)
def test_xr_averages_match_numpy(log_score, wrapper, function, dim):
    dims = [dim] if isinstance(dim, str) else list(dim)
    axis = tuple(log_score.get_axis_num(dims))
    result = wrapper(log_score, dim=dim)
    expected = expected_array(function(log_score.to_numpy(), axis), log_score, dims, result.name)
    xr.testing.assert_allclose(result, expected)
    assert result.name == wrapper.__name__.removeprefix("xr_")


def test_xr_excess_loss_broadcasts_reference_over_predictors(log_score):
    reference = log_score.sel({PREDICTOR: "bayes"})
    result = metrics.xr_excess_loss(log_score, reference)
    axis = log_score.get_axis_num(EPISODE)
    expected = metrics.excess_loss(log_score.to_numpy(), reference.to_numpy()[None], axis)
    xr.testing.assert_allclose(result, expected_array(expected, log_score, [EPISODE], "excess_loss"))
    np.testing.assert_allclose(result.sel({PREDICTOR: "bayes"}), 0.0, atol=1e-15)


@pytest.mark.parametrize(
    ("wrapper", "function"),
    [
        (metrics.xr_kl_divergence, metrics.kl_divergence),
        (metrics.xr_js_divergence, metrics.js_divergence),
        (metrics.xr_hellinger, metrics.hellinger),
    ],
)
def test_xr_divergences_match_numpy(log_prob, wrapper, function):
    reference = log_prob.sel({PREDICTOR: "bayes"})
    result = wrapper(reference, log_prob)  # divergence of Bayes to every predictor
    expected = function(reference.to_numpy()[None], log_prob.to_numpy(), axis=-1)
    assert result.dims == (SCENARIO, EPISODE, POSITION, PREDICTOR)  # xarray: dims in order of appearance
    result = result.transpose(PREDICTOR, ...)
    xr.testing.assert_allclose(result, expected_array(expected, log_prob, [OUTCOME], result.name))
    padding = result.sel({PREDICTOR: "gpt", SCENARIO: "q=0.5"}).isel({EPISODE: slice(0, 4), POSITION: slice(3, None)})
    assert np.isnan(padding).all() and np.isnan(result).sum() == padding.size
    assert result.attrs == {}  # a divergence is not a log-probability: attrs are not inherited


def test_xr_divergence_of_two_selected_predictors(log_prob):
    result = metrics.xr_js_divergence(log_prob.sel({PREDICTOR: "bayes"}), log_prob.sel({PREDICTOR: "counts"}))
    expected = metrics.js_divergence(log_prob.to_numpy()[0], log_prob.to_numpy()[2])
    assert PREDICTOR not in result.coords  # the two labels conflict and are dropped
    xr.testing.assert_allclose(
        result, expected_array(expected, log_prob.isel({PREDICTOR: 0}, drop=True), [OUTCOME], "js_divergence")
    )


def test_xr_wrappers_refuse_misaligned_coords(log_prob):
    relabelled = log_prob.assign_coords({OUTCOME: ["a", "c", "b"]})
    with pytest.raises(ValueError):
        metrics.xr_kl_divergence(log_prob, relabelled)


def test_xr_grid_kl_uses_the_grid_coordinate(rng):
    y_grid = np.sort(rng.uniform(-4, 4, 60))
    log_p = xr.DataArray(
        rng.normal(size=(2, 4, 60)), dims=(SCENARIO, POSITION, Y_GRID), coords={SCENARIO: SCENARIOS, Y_GRID: y_grid}
    )
    log_q = log_p + rng.normal(scale=0.3, size=60)
    result = metrics.xr_grid_kl_divergence(log_p, log_q)
    expected = metrics.grid_kl_divergence(log_p.to_numpy(), log_q.to_numpy(), y_grid)
    xr.testing.assert_allclose(result, expected_array(expected, log_p, [Y_GRID], "grid_kl_divergence"))
    with pytest.raises(ValueError, match="coordinate"):
        metrics.xr_grid_kl_divergence(log_p.drop_vars(Y_GRID), log_q.drop_vars(Y_GRID))


def test_xr_relative_distance_matches_numpy(log_prob):
    a, b = log_prob.sel({PREDICTOR: "bayes"}), log_prob.sel({PREDICTOR: "counts"})
    d_h_a, d_h_b, d_a_b = (metrics.xr_js_divergence(*pair) for pair in ((log_prob, a), (log_prob, b), (a, b)))
    result = metrics.xr_relative_distance(d_h_a, d_h_b, d_a_b)
    expected = metrics.relative_distance(d_h_a.to_numpy(), d_h_b.to_numpy(), d_a_b.to_numpy()[None])
    xr.testing.assert_allclose(result, expected_array(expected, log_prob, [OUTCOME], "relative_distance"))
    assert np.array_equal(np.isnan(result.sel({PREDICTOR: "bayes"})), d_a_b == 0)  # references agree: NaN
    np.testing.assert_allclose(result.sel({PREDICTOR: "bayes"}).where(d_a_b > 0, -1.0), -1.0, rtol=1e-10)
    np.testing.assert_allclose(result.sel({PREDICTOR: "counts"}).where(d_a_b > 0, 1.0), 1.0, rtol=1e-10)


def test_xr_cross_entropy_interval_matches_numpy(log_score):
    result = metrics.xr_cross_entropy_interval(log_score, num_resamples=200, level=0.9, rng=np.random.default_rng(3))
    axis = log_score.get_axis_num(EPISODE)
    expected = metrics.cross_entropy_interval(
        log_score.to_numpy(), axis, num_resamples=200, level=0.9, rng=np.random.default_rng(3)
    )
    for name, values in zip(metrics.Interval._fields, expected):
        xr.testing.assert_allclose(result[name], expected_array(values, log_score, [EPISODE], name))
    xr.testing.assert_equal(result["num_defined"], metrics.xr_num_defined(log_score))
    assert result.attrs == {"level": 0.9, "num_resamples": 200}
    assert (result.low <= result.estimate).all() and (result.estimate <= result.high).all()


def test_xr_wilson_interval_matches_numpy(rng):
    trials = xr.DataArray(rng.integers(1, 100, size=(2, 5)), dims=(SCENARIO, POSITION), coords={SCENARIO: SCENARIOS})
    successes = (trials * rng.uniform(size=(2, 5))).round()
    result = metrics.xr_wilson_interval(successes, trials, level=0.9)
    expected = metrics.wilson_interval(successes.to_numpy(), trials.to_numpy(), 0.9)
    for name, values in zip(metrics.Interval._fields, expected):
        xr.testing.assert_allclose(result[name], expected_array(values, trials, [], name))


def test_xr_coverage_matches_numpy(rng):
    dims, coords = (SCENARIO, EPISODE, POSITION), {SCENARIO: SCENARIOS, EPISODE: np.arange(40)}
    y = xr.DataArray(with_nans(rng, rng.normal(size=(2, 40, 3)), 0.1), dims=dims, coords=coords)
    lower, upper = (xr.DataArray(rng.normal(c, 0.2, size=(2, 40, 3)), dims=dims, coords=coords) for c in (-1, 1))
    result = metrics.xr_coverage(y, lower, upper)
    expected = metrics.coverage(y.to_numpy(), lower.to_numpy(), upper.to_numpy(), 1)
    xr.testing.assert_allclose(result, expected_array(expected, y, [EPISODE], "coverage"))


def test_xr_wrappers_reduce_to_scalars():
    log_score = xr.DataArray(np.log([0.5, 0.25, np.nan]), dims=EPISODE)
    xr.testing.assert_allclose(metrics.xr_cross_entropy(log_score), xr.DataArray(1.5 * LOG2, name="cross_entropy"))
    interval = metrics.xr_cross_entropy_interval(log_score, rng=np.random.default_rng(0))
    assert interval.estimate.dims == () and int(interval.num_defined) == 2


def test_all_is_exported():
    assert sorted(metrics.__all__) == sorted(set(metrics.__all__))
    for name in metrics.__all__:
        assert hasattr(metrics, name)


# --------------------------------------------------------------------------- squared error


def test_squared_error_matches_plain_numpy(rng):
    pred = with_nans(rng, rng.normal(size=(30, 4)), 0.1)
    target = rng.normal(size=(30, 4))
    expected = [np.mean([(p - t) ** 2 / 5 for p, t in zip(pred[:, j], target[:, j]) if not np.isnan(p)]) for j in range(4)]
    np.testing.assert_allclose(metrics.squared_error(pred, target, 0, scale=5.0), expected, rtol=1e-12)
    assert np.isnan(metrics.squared_error(np.full(3, np.nan), np.zeros(3), 0))


def test_xr_squared_error_matches_numpy(rng):
    dims, coords = (SCENARIO, EPISODE, POSITION), {SCENARIO: SCENARIOS, EPISODE: np.arange(40)}
    pred = xr.DataArray(with_nans(rng, rng.normal(size=(2, 40, 3)), 0.1), dims=dims, coords=coords)
    target = xr.DataArray(rng.normal(size=(2, 40, 3)), dims=dims, coords=coords)
    result = metrics.xr_squared_error(pred, target, scale=3.0)
    expected = metrics.squared_error(pred.to_numpy(), target.to_numpy(), 1, scale=3.0)
    xr.testing.assert_allclose(result, expected_array(expected, pred, [EPISODE], "squared_error"))
