"""The comparison Dataset's contract (DESIGN.md) and the metrics Dataset against plain numpy on the same arrays."""

import warnings

import jax
import numpy as np
import pytest
import xarray as xr

import priors
import toolkit
from toolkit.baselines import FrequencyPredictor
from toolkit.bayes import bayes_predictor
from toolkit.compare import compare
from toolkit.dims import EPISODE, OUTCOME, POSITION, PREDICTOR, SCENARIO
from toolkit.errors import ConfigError
from toolkit.oracles import BestMixturePredictor, OraclePredictor
from toolkit.scenario import Scenario, scenario_grid
from toolkit.summaries import evaluation_mask, metrics_dataset

NUM_EPISODES, LENGTH = 8, 5
PROMPTS = ["🌈🌈🦄", "🦄"]
PREDICTORS = ["bayes", "oracle", "best_mixture", "frequency", "silent"]
SCENARIOS = ["in_distribution", "q=0.5", "prompts"]


class Silent(toolkit.Predictor):
    """A scenario-bound predictor with no answer anywhere: ``bind`` returns None."""

    name = "silent"

    def bind(self, prior, scenario, episodes):
        return None

    def predict(self, episodes, *, y_grid=None):
        raise AssertionError("an unbound predictor must never be asked")


@pytest.fixture(scope="module")
def prior():
    return priors.get("coin_mixture")


@pytest.fixture(scope="module")
def ds(prior):
    scenarios = [
        Scenario.in_distribution(prior),
        *scenario_grid("q", "coin_mixture", params={"weights": [1.0]}, grid={"thetas": [[0.5]]}),
        Scenario.from_prompts("prompts", PROMPTS, prior.outcomes, description="two prompts"),
    ]
    predictors = {
        "bayes": bayes_predictor(prior),
        "oracle": OraclePredictor(),
        "best_mixture": BestMixturePredictor(),
        "frequency": FrequencyPredictor(prior.outcomes),
        "silent": Silent(),
    }
    return compare(prior, scenarios, predictors, num_episodes=NUM_EPISODES, length=LENGTH, key=jax.random.key(5))


@pytest.fixture(scope="module")
def metrics(ds):
    return metrics_dataset(ds, bootstrap_resamples=20, seed=0)


# --------------------------------------------------------------------------- the Dataset's contract


def test_dims_in_order(ds):
    assert ds["log_prob"].dims == (PREDICTOR, SCENARIO, EPISODE, POSITION, OUTCOME)
    assert ds["log_score"].dims == (PREDICTOR, SCENARIO, EPISODE, POSITION)
    for var in ("y", "prior_log_prob", "bayes_defined", "mask"):
        assert ds[var].dims == (SCENARIO, EPISODE, POSITION), var
    assert dict(ds.sizes) == {PREDICTOR: 5, SCENARIO: 3, EPISODE: NUM_EPISODES, POSITION: LENGTH, OUTCOME: 2}


def test_variables(ds):
    assert {"log_prob", "log_score", "y", "prior_log_prob", "bayes_defined"} <= set(ds.data_vars)
    assert ds["bayes_defined"].dtype == bool and ds["mask"].dtype == bool


def test_coordinates(ds):
    np.testing.assert_array_equal(ds[POSITION].values, np.arange(1, LENGTH + 1))
    assert list(ds[OUTCOME].values) == ["🌈", "🦄"]
    assert list(ds[PREDICTOR].values) == PREDICTORS
    assert list(ds[SCENARIO].values) == SCENARIOS
    assert list(ds["scenario_kind"].values) == ["in_distribution", "misspecified", "prompts"]
    assert ds["scenario_description"].values[2] == "two prompts"
    assert all(ds["scenario_description"].values)
    np.testing.assert_array_equal(ds["scenario_thetas"].values, [np.nan, 0.5, np.nan])
    for name in ("scenario_kind", "scenario_description", "scenario_thetas"):
        assert ds[name].dims == (SCENARIO,)


def test_provenance_attrs(ds, prior):
    attrs = ds.attrs
    assert {"created", "toolkit_version", "git_commit", "prior", "predictors", "num_episodes", "length", "key"} <= set(attrs)
    assert attrs["toolkit_version"] == toolkit.__version__
    assert attrs["prior"] == prior.describe()
    assert attrs["predictors"]["bayes"]["engine"] == "enumeration"
    assert (attrs["num_episodes"], attrs["length"]) == (NUM_EPISODES, LENGTH)


def test_bind_returning_none_leaves_nan(ds):
    assert ds["log_prob"].sel({PREDICTOR: "silent"}).isnull().all()
    assert ds["log_score"].sel({PREDICTOR: "silent"}).isnull().all()
    # the oracle has no source for prompts: NaN there, numbers elsewhere
    assert ds["log_prob"].sel({PREDICTOR: "oracle", SCENARIO: "prompts"}).isnull().all()
    assert ds["log_prob"].sel({PREDICTOR: "oracle", SCENARIO: "q=0.5"}).notnull().all()


def test_scenario_level_variables_come_from_bayes(ds, prior):
    sub = ds.sel({SCENARIO: "in_distribution"})
    pred = bayes_predictor(prior).predict(toolkit.Episodes(y=sub["y"].values.astype(int)))
    np.testing.assert_allclose(sub["prior_log_prob"].values, pred["prior_log_prob"].values, rtol=1e-12)
    assert sub["bayes_defined"].all()


def test_prompts_sit_in_the_first_positions_with_a_mask(ds):
    sub = ds.sel({SCENARIO: "prompts"})
    np.testing.assert_array_equal(sub["y"].values[0, :3], [0, 0, 1])
    np.testing.assert_array_equal(sub["mask"].values[:2], [[1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    assert not sub["mask"].values[2:].any()  # only two prompts: the other episodes are padding
    # sampled scenarios hold data everywhere, beside a scenario with a mask
    assert ds["mask"].sel({SCENARIO: ["in_distribution", "q=0.5"]}).all()


def test_scenario_grid_names_and_params():
    one = scenario_grid("q", "coin_mixture", params={"weights": [1.0]}, grid={"thetas": [[0.5], [0.25]]})
    assert [s.name for s in one] == ["q=0.5", "q=0.25"]
    assert [s.params for s in one] == [{"thetas": 0.5}, {"thetas": 0.25}]
    assert all(s.kind == "misspecified" and s.source.name == "coin_mixture" for s in one)
    two = scenario_grid("bb", "beta_bernoulli", grid={"a": [1.0, 2.0], "b": [3.0]})
    assert [s.name for s in two] == ["bb[a=1,b=3]", "bb[a=2,b=3]"]
    (single,) = scenario_grid("q", "coin_mixture", params={"thetas": [0.3], "weights": [1.0]})
    assert single.name == "q"


def test_scenario_names_must_be_unique(prior):
    scenarios = [Scenario.in_distribution(prior, "same"), Scenario.in_distribution(prior, "same")]
    with pytest.raises(ConfigError, match="unique"):
        compare(prior, scenarios, {}, num_episodes=1, length=1, key=jax.random.key(0))


def test_same_seed_same_values_other_seed_other_values(prior):
    q = priors.get("coin_mixture", thetas=(0.5,), weights=(1.0,))
    scenarios = {"in_distribution": Scenario.in_distribution(prior), "q=0.5": q}  # a bare Prior is a q

    def run(seed):
        predictors = {"bayes": bayes_predictor(prior), "frequency": FrequencyPredictor(prior.outcomes)}
        out = compare(prior, scenarios, predictors, num_episodes=4, length=4, key=jax.random.key(seed))
        return out.drop_attrs(deep=False).assign_attrs(
            {k: v for k, v in out.attrs.items() if k not in ("created", "git_commit")}
        )

    first, again, other = run(11), run(11), run(12)
    assert list(first[SCENARIO].values) == ["in_distribution", "q=0.5"]
    xr.testing.assert_identical(first, again)
    assert not np.array_equal(first["y"].values, other["y"].values)


# --------------------------------------------------------------------------- metrics against numpy


def expected_valid():
    """Evaluated cells, written out: everything sampled; each prompt's tokens and its next position."""
    valid = np.ones((len(SCENARIOS), NUM_EPISODES, LENGTH), bool)
    valid[2] = False
    for e, prompt in enumerate(PROMPTS):
        valid[2, e, : len(prompt) + 1] = True
    return valid


def nanmean(values, axis):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are NaN, as in the toolkit
        return np.nanmean(values, axis=axis)


def like(metrics, name, values):
    return xr.DataArray(values, dims=metrics[name].dims, coords=metrics[name].coords)


def kl(log_p, log_q):
    with np.errstate(invalid="ignore"):
        return np.sum(np.exp(log_p) * (log_p - log_q), axis=-1)


def js_distance(log_p, log_q):
    p, q = np.exp(log_p), np.exp(log_q)
    m = (p + q) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        js = 0.5 * np.sum(p * np.log(p / m), axis=-1) + 0.5 * np.sum(q * np.log(q / m), axis=-1)
    return np.sqrt(np.maximum(js, 0.0))


def test_evaluation_mask_keeps_each_prompts_next_token_position(ds):
    mask = evaluation_mask(ds)
    assert mask.dims == (SCENARIO, EPISODE, POSITION)
    np.testing.assert_array_equal(mask.values, expected_valid())


def test_metrics_dims(metrics):
    for name in ("cross_entropy", "cross_entropy_low", "cross_entropy_high", "kl_from_reference", "excess_loss",
                 "relative_distance"):
        assert metrics[name].dims == (PREDICTOR, SCENARIO, POSITION), name
    assert metrics["cross_entropy_mean"].dims == (PREDICTOR, SCENARIO)


def test_cross_entropy_against_numpy(ds, metrics):
    score = np.where(ds["mask"].values[None], ds["log_score"].values, np.nan)  # (P, S, E, T)
    expected = like(metrics, "cross_entropy", nanmean(-score, axis=2))
    xr.testing.assert_allclose(metrics["cross_entropy"], expected, rtol=1e-12)
    assert np.isfinite(metrics["cross_entropy"].sel({PREDICTOR: "bayes", SCENARIO: "in_distribution"})).all()
    low, high = metrics["cross_entropy_low"], metrics["cross_entropy_high"]
    assert bool(((low <= metrics["cross_entropy"] + 1e-12) | low.isnull()).all())
    assert bool(((metrics["cross_entropy"] <= high + 1e-12) | high.isnull()).all())


def test_kl_from_bayes_against_numpy(ds, metrics):
    log_prob = ds["log_prob"].values
    cell = kl(log_prob[0][None], log_prob)  # KL(bayes ‖ predictor) per (P, S, E, T)
    cell = np.where(expected_valid()[None], cell, np.nan)
    expected = like(metrics, "kl_from_reference", nanmean(cell, axis=2))
    xr.testing.assert_allclose(metrics["kl_from_reference"], expected, rtol=1e-10, atol=1e-14)
    bayes_kl = metrics["kl_from_reference"].sel({PREDICTOR: "bayes"})
    np.testing.assert_allclose(bayes_kl.sel({SCENARIO: ["in_distribution", "q=0.5"]}), 0.0, atol=1e-14)
    # a prompt's next-token prediction counts: the short prompt's at position 2 is the only one there
    assert np.isfinite(metrics["kl_from_reference"].sel({PREDICTOR: "frequency", SCENARIO: "prompts", POSITION: 2}))


def test_excess_loss_against_numpy(ds, metrics):
    score = np.where(ds["mask"].values[None], ds["log_score"].values, np.nan)
    both = ~np.isnan(score) & ~np.isnan(score[0])[None]
    mine = np.where(both, -score, np.nan)
    ref = np.where(both, -np.broadcast_to(score[0], score.shape), np.nan)
    expected = like(metrics, "excess_loss", nanmean(mine, axis=2) - nanmean(ref, axis=2))
    xr.testing.assert_allclose(metrics["excess_loss"], expected, rtol=1e-10, atol=1e-14)


def test_relative_distance_against_numpy(ds, metrics):
    log_prob = ds["log_prob"].values
    bayes, mixture = log_prob[0], log_prob[PREDICTORS.index("best_mixture")]
    valid = expected_valid()

    def mean_distance(a, b):
        return nanmean(np.where(valid, js_distance(a, b), np.nan), axis=-2)  # over episodes

    d_h_a = mean_distance(log_prob, bayes[None])
    d_h_b = mean_distance(log_prob, mixture[None])
    d_a_b = mean_distance(bayes, mixture)[None]
    with np.errstate(invalid="ignore", divide="ignore"):
        rd = np.where(d_a_b == 0, np.nan, (d_h_a - d_h_b) / d_a_b)
    # Where Bayes and the mixture agree up to rounding (q=0.5 at t=1: both say 1/2), d(A,B) is ~1e-9 of
    # noise and the ratio is noise too: compare the cells where the references really differ.
    apart = np.broadcast_to(d_a_b > 1e-6, rd.shape)
    assert apart.sum() > rd.size // 2
    got = metrics["relative_distance"].where(like(metrics, "relative_distance", apart))
    expected = like(metrics, "relative_distance", np.where(apart, rd, np.nan))
    # sqrt turns the ~1e-17 rounding of a JS that is 0 (two predictors agreeing in one episode) into ~1e-9
    xr.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    distance = like(metrics, "js_distance_to_reference", d_h_a)
    xr.testing.assert_allclose(metrics["js_distance_to_reference"], distance, rtol=0, atol=1e-8)
    defined = metrics["relative_distance"].sel({SCENARIO: "in_distribution", POSITION: slice(2, None)})
    np.testing.assert_allclose(defined.sel({PREDICTOR: "bayes"}), -1.0, atol=1e-12)
    np.testing.assert_allclose(defined.sel({PREDICTOR: "best_mixture"}), 1.0, atol=1e-12)
