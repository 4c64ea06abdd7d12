"""The data kinds: what differs between token and regression data, asked of one object each."""

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import xarray as xr

import priors
import toolkit
from toolkit.compare import compare
from toolkit.dims import OUTCOME, PREDICTOR, Y_GRID
from toolkit.errors import ConfigError, DataError, ModelError, UnknownNameError
from toolkit.kinds import REGRESSION, TOKENS, get_kind, kind_of


def test_each_kind_is_one_object_found_by_name():
    assert get_kind("tokens") is TOKENS and get_kind("regression") is REGRESSION
    assert get_kind(TOKENS) is TOKENS
    with pytest.raises(UnknownNameError, match="unknown data kind 'images'; known data kinds: regression, tokens"):
        get_kind("images")


def test_model_arguments():
    assert TOKENS.model_kwargs(y=[1]) == {"y": [1]}
    assert REGRESSION.model_kwargs(y=[1.0], x=[[0.0]]) == {"x": [[0.0]], "y": [1.0]}
    assert REGRESSION.model_kwargs() == {"x": None, "y": None}


def test_priors_carry_their_kind():
    coin, line = priors.get("coin_mixture"), priors.get("linear_regression", d=2)
    assert coin.data_kind is TOKENS and line.data_kind is REGRESSION
    assert (coin.outcomes, coin.x_dim) == (("🌈", "🦄"), None) and (line.outcomes, line.x_dim) == (None, 2)
    assert coin.sample(jax.random.key(0), 3, 4).y.dtype == np.int64
    assert line.sample(jax.random.key(0), 3, 4).y.dtype == np.float64


def test_defaults_name_registered_things():
    from comparisons.analyses import available_analyses
    from comparisons.predictors import available_predictors
    from learners import architectures_for

    for kind in (TOKENS, REGRESSION):
        assert set(kind.default_predictors) <= set(available_predictors())
        assert set(kind.baselines) <= set(kind.default_predictors)
        assert kind.default_analysis in available_analyses()
        assert architectures_for(kind.name)[0] == kind.default_architecture


def coin_model(length, y=None):
    with numpyro.plate("position", length):
        numpyro.sample("y", dist.Bernoulli(0.5), obs=y)


def test_outcome_labels_must_be_distinct():
    with pytest.raises(ModelError, match=r"outcome labels must be distinct, got \['H', 'H'\]"):
        toolkit.Prior(coin_model, kind="tokens", outcomes=("H", "H"))


def test_episodes_of_the_wrong_kind_are_refused():
    x = np.zeros((2, 3, 1))
    with pytest.raises(DataError, match="carry regression inputs x; token episodes hold y alone"):
        TOKENS.check_episodes(toolkit.Episodes(y=np.zeros((2, 3), int), x=x), outcomes=("0", "1"))
    with pytest.raises(DataError, match="outside the vocabulary"):
        TOKENS.check_episodes(toolkit.Episodes(y=np.full((2, 3), 2)), outcomes=("0", "1"))
    with pytest.raises(DataError, match="carry no x"):
        REGRESSION.check_episodes(toolkit.Episodes(y=np.zeros((2, 3))))


def test_predictions_follow_each_kinds_layout():
    episodes = toolkit.Episodes(y=np.array([[0, 1, 1]]))
    log_prob = np.log(np.full((1, 3, 2), 0.5))
    ds = TOKENS.predictions({"log_prob": log_prob}, episodes, outcomes=("a", "b"))
    assert set(TOKENS.prediction_variables) <= set(ds.data_vars) and list(ds[OUTCOME].values) == ["a", "b"]
    real = toolkit.Episodes(y=np.zeros((1, 3)), x=np.zeros((1, 3, 1)))
    grid = np.linspace(-3, 3, 7)
    cdf = np.broadcast_to(np.linspace(0, 1, 7), (1, 3, 7))
    out = {"log_score": np.zeros((1, 3)), "mean": np.zeros((1, 3)), "variance": np.ones((1, 3)),
           "grid_log_density": np.zeros((1, 3, 7)), "grid_cdf": cdf}
    ds = REGRESSION.predictions(out, real, y_grid=grid)
    assert set(REGRESSION.prediction_variables) <= set(ds.data_vars)
    np.testing.assert_allclose(ds["quantile_value"].values[0, 0], np.interp(toolkit.dims.QUANTILES, cdf[0, 0], grid))
    assert "grid_log_density" not in REGRESSION.predictions(out, real, y_grid=None)


def test_kl_runs_over_each_kinds_distribution_dim():
    p, q = np.array([0.2, 0.8]), np.array([0.5, 0.5])
    a = xr.DataArray(np.log(p), dims=(OUTCOME,))
    b = xr.DataArray(np.log(q), dims=(OUTCOME,))
    np.testing.assert_allclose(TOKENS.divergence(a, b).item(), np.sum(p * np.log(p / q)), rtol=1e-12)
    assert TOKENS.distribution == ("log_prob", OUTCOME) and REGRESSION.distribution == ("grid_log_density", Y_GRID)


def test_the_kind_of_a_comparison_dataset_comes_from_its_prior(key):
    prior = priors.get("coin_mixture")
    ds = compare(prior, {"q": priors.get("coin_mixture", thetas=(0.5,), weights=(1.0,))},
                 {"bayes": toolkit.bayes_predictor(prior)}, num_episodes=2, length=3, key=key)
    assert kind_of(ds) is TOKENS
    with pytest.raises(DataError, match="records no prior kind"):
        kind_of(xr.Dataset())


class NotAPredictor:
    name = "duck"

    def predict(self, episodes, *, y_grid=None):
        raise AssertionError("never called")


class NoLogProb(toolkit.Predictor):
    def predict(self, episodes, *, y_grid=None):
        return xr.Dataset()


def test_compare_takes_predictors_of_the_priors_kind_and_checks_what_they_return(key):
    prior = priors.get("coin_mixture")
    scenarios = [toolkit.Scenario.in_distribution(prior)]
    run = lambda predictors: compare(prior, scenarios, predictors, num_episodes=2, length=3, key=key)  # noqa: E731
    with pytest.raises(ConfigError, match="predictor 'duck' is a NotAPredictor; a predictor subclasses toolkit.Predictor"):
        run({"duck": NotAPredictor()})
    with pytest.raises(ConfigError, match="predictor 'ridge' predicts regression data, but prior 'coin_mixture'"):
        run({"ridge": toolkit.RidgePredictor()})
    with pytest.raises(DataError, match="predictor 'empty' returned no log_prob, log_score"):
        run({"empty": NoLogProb()})
    assert list(run({"bayes": toolkit.bayes_predictor(prior)})[PREDICTOR].values) == ["bayes"]
