"""Every registered prior against the prior convention (sbibm ``tests/tasks/test_task_interface.py``).

One module parametrised over ``priors.available()``: a new file in ``priors/``
is tested here without a new test. Budgets are tiny (8 episodes x 8
positions); priors whose Bayes engine is MCMC skip the Bayes checks, which
live with the MCMC engine's own tests (exact vs MCMC).
"""

import json

import jax
import numpy as np
import pytest

import priors
from toolkit import Prior
from toolkit.bayes import ENGINES, bayes_predictor, select_engine
from toolkit.dims import EPISODE, OUTCOME, POSITION
from toolkit.enumeration import latent_grid

NUM_EPISODES, LENGTH = 8, 8
LARGE_SUPPORT = 10**5  # enumerated latent values above which the Bayes checks here are left to the prior's own tests
NAMES = priors.available()


@pytest.fixture(scope="module", params=NAMES)
def case(request):
    """(name, prior, episodes) for one registered prior with its default parameters."""
    prior = priors.get(request.param)
    episodes = prior.sample(jax.random.key(0), NUM_EPISODES, LENGTH)
    return request.param, prior, episodes


@pytest.fixture(scope="module")
def bayes_case(case):
    """The Bayes reference's predictions for ``case``, or a skip for MCMC-only priors."""
    name, prior, episodes = case
    engine = select_engine(prior)
    if engine == "mcmc":
        pytest.skip(f"{name}: Bayes by MCMC; exact-vs-MCMC checks live in the MCMC engine's tests")
    if engine == "enumeration" and (size := latent_grid(prior, allow_local=True).size) > LARGE_SUPPORT:
        pytest.skip(f"{name}: {size} latents cost minutes on a covering y-grid; the same factory's exact Bayes is "
                    "checked on small grids against numpy in tests/priors/test_grid_priors.py")
    bayes = bayes_predictor(prior)
    pred = bayes.predict(episodes)
    if prior.kind == "regression":
        pred = bayes.predict(episodes, y_grid=covering_grid(pred))
    return name, prior, episodes, bayes, pred


def covering_grid(pred, width=12.0, per_sd=8, most=20_001):
    """A y-grid spanning every cell's mean ± ``width`` sd, fine enough for the narrowest cell."""
    mean, sd = pred["mean"].values, np.sqrt(pred["variance"].values)
    lo, hi = np.nanmin(mean - width * sd), np.nanmax(mean + width * sd)
    return np.linspace(lo, hi, int(min(most, (hi - lo) / np.nanmin(sd) * per_sd + 1)))


def test_registry_lists_at_least_the_first_two_priors():
    assert {"coin_mixture", "beta_bernoulli"} <= set(NAMES)
    assert NAMES == sorted(NAMES)


def test_get_returns_a_prior_named_after_its_registry_entry(case):
    name, prior, _ = case
    assert isinstance(prior, Prior)
    assert prior.name == name
    assert prior.kind in ("tokens", "regression")


def test_sample_shapes_and_dtypes(case):
    _, prior, episodes = case
    assert episodes.y.shape == (NUM_EPISODES, LENGTH)
    if prior.kind == "tokens":
        assert np.issubdtype(episodes.y.dtype, np.integer)
        assert episodes.x is None
        assert prior.num_outcomes == len(prior.outcomes) >= 2
    else:
        assert np.issubdtype(episodes.y.dtype, np.floating)
        assert prior.x_dim >= 1
        assert episodes.x is not None
        assert episodes.x.shape == (NUM_EPISODES, LENGTH, prior.x_dim)
        assert np.issubdtype(episodes.x.dtype, np.floating)
    if episodes.mask is not None:
        assert episodes.mask.shape == episodes.y.shape and episodes.mask.dtype == bool


def test_samples_are_finite_and_tokens_in_range(case):
    _, prior, episodes = case
    assert np.all(np.isfinite(episodes.y))
    if episodes.x is not None:
        assert np.all(np.isfinite(episodes.x))
    if prior.kind == "tokens":
        assert episodes.y.min() >= 0 and episodes.y.max() < prior.num_outcomes
        episodes.check_tokens(prior.num_outcomes)  # the toolkit's own check agrees


def test_sample_is_deterministic_for_a_key_and_varies_across_keys(case):
    _, prior, episodes = case
    again = prior.sample(jax.random.key(0), NUM_EPISODES, LENGTH)
    np.testing.assert_array_equal(again.y, episodes.y)
    if episodes.x is not None:
        np.testing.assert_array_equal(again.x, episodes.x)
    for site, value in episodes.latents.items():
        np.testing.assert_array_equal(again.latents[site], value)
    other = prior.sample(jax.random.key(1), NUM_EPISODES, LENGTH)
    assert not np.array_equal(other.y, episodes.y)


def test_latents_are_the_global_sites_and_lead_with_the_episode_dim(case):
    _, prior, episodes = case
    assert set(episodes.latents) == set(prior.latent_sites())
    for site, value in episodes.latents.items():
        assert value.shape[0] == NUM_EPISODES, site
        assert np.all(np.isfinite(value)), site


def test_describe_is_json_serialisable(case):
    name, prior, _ = case
    described = json.loads(json.dumps(prior.describe()))
    assert described["name"] == name
    assert described["kind"] == prior.kind
    assert isinstance(described["params"], dict)


def test_select_engine_names_an_engine(case):
    _, prior, _ = case
    engine = select_engine(prior)
    assert engine in ENGINES and engine != "auto"
    if prior.exact_predictive is not None:
        assert engine == "closed_form"


def test_bayes_reports_the_engine_it_ran(bayes_case):
    _, prior, _, bayes, _ = bayes_case
    assert bayes.engine == select_engine(prior)


def test_bayes_predictive_normalises(bayes_case):
    _, prior, _, _, pred = bayes_case
    defined = pred["bayes_defined"].values
    if prior.kind == "tokens":
        assert pred["log_prob"].dims == (EPISODE, POSITION, OUTCOME)
        assert pred["log_prob"].shape == (NUM_EPISODES, LENGTH, prior.num_outcomes)
        total = np.exp(pred["log_prob"]).sum(OUTCOME).values
        np.testing.assert_allclose(total[defined], 1.0, atol=1e-9)
    else:
        density = np.exp(pred["grid_log_density"].values[defined])
        mass = np.trapezoid(density, pred["y_grid"].values, axis=-1)
        np.testing.assert_allclose(mass, 1.0, atol=1e-3)
        assert np.all(pred["variance"].values[defined] > 0)
        assert np.all(np.diff(pred["quantile_value"].values[defined], axis=-1) >= 0)


def test_bayes_defines_every_position_of_in_distribution_data(bayes_case):
    """Data the prior produced has positive probability under it, so Bayes is defined and finite there."""
    _, prior, episodes, _, pred = bayes_case
    # padding after an EOS has no realised outcome, so its log_score is NaN
    data = np.ones(episodes.y.shape, bool) if episodes.mask is None else episodes.mask
    assert pred["bayes_defined"].values.all()
    assert np.all(np.isfinite(pred["log_score"].values[data]))
    assert np.all(np.isnan(pred["log_score"].values[~data]))
    assert np.all(np.isfinite(pred["prior_log_prob"].values))
    if prior.kind == "tokens":
        realised = np.take_along_axis(pred["log_prob"].values, episodes.y[..., None], axis=-1)[..., 0]
        np.testing.assert_allclose(pred["log_score"].values[data], realised[data], rtol=0, atol=1e-12)
        # log p(y_<=t) is a running sum of log-probabilities: never increases
        assert np.all(np.diff(pred["prior_log_prob"].values, axis=1) <= 1e-12)
