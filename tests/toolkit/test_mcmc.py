"""The MCMC engine: NUTS against closed forms and enumeration, its InferenceData, diagnostics and flags.

Small budgets here (16 episodes, 300 draws per chain); the checks at the
issue's scale (>= 64 episodes) are marked slow, and `benchmarks/bayes_engines.py`
records them in `benchmarks/RESULTS.md`.
"""

import arviz as az
import jax
import matplotlib
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import xarray as xr
from scipy import stats

import priors
from toolkit import ModelError, Prior
from toolkit.bayes import bayes_predictor, engine_choice, select_engine
from toolkit.compare import compare
from toolkit.enumeration import enumeration_path
from toolkit.dims import EPISODE, OUTCOME, POSITION, SCENARIO
from toolkit.episodes import Episodes
from toolkit.mcmc import DIAGNOSTICS, default_positions, unconverged
from toolkit.summaries import metrics_dataset

matplotlib.use("Agg")

BUDGET = dict(num_warmup=300, num_samples=300, num_chains=4, progress=False)
LARGE = dict(num_warmup=500, num_samples=1000, num_chains=4, progress=False)


def beta_coin(length, y=None):
    """beta_bernoulli without its closed form: the engine must derive Bayes from the model."""
    p = numpyro.sample("p", dist.Beta(2.0, 3.0))
    with numpyro.plate("position", length):
        numpyro.sample("y", dist.Bernoulli(p), obs=y)


def ran_positions(idata: az.InferenceData) -> np.ndarray:
    return np.asarray(idata.posterior[POSITION].values)


def assert_within_mcse(idata: az.InferenceData, pred: xr.Dataset, exact: xr.Dataset, *, k=4.0, atol=1e-9):
    """|MCMC − exact| ≤ k Monte-Carlo standard errors (ArviZ) at every run cell and outcome."""
    positions = ran_positions(idata)
    episodes = idata.posterior[EPISODE].values
    got = np.exp(pred["log_prob"].sel({POSITION: positions}).isel({EPISODE: episodes}).values)
    want = np.exp(exact["log_prob"].sel({POSITION: positions}).isel({EPISODE: episodes}).values)
    mcse = az.mcse(idata, var_names=["predictive_prob"])["predictive_prob"]
    mcse = mcse.transpose(EPISODE, POSITION, OUTCOME).values
    assert np.all(np.isfinite(got))
    excess = np.abs(got - want) - (k * mcse + atol)
    assert excess.max() <= 0, f"worst |Δ| exceeds {k} MCSE by {excess.max():.3g} at {np.unravel_index(excess.argmax(), excess.shape)}"
    return np.abs(got - want) / np.maximum(mcse, 1e-300)


@pytest.fixture(scope="module")
def beta_run():
    prior = priors.get("beta_bernoulli", a=2.0, b=3.0)
    episodes = prior.sample(jax.random.key(3), 16, 8)
    mcmc = bayes_predictor(prior, engine="mcmc", name="bayes_mcmc", key=jax.random.key(4), **BUDGET)
    return prior, episodes, mcmc, mcmc.run(episodes)


def test_default_positions_are_context_lengths_0_1_2_4_and_the_last():
    assert default_positions(8) == (1, 2, 3, 5, 8)
    assert default_positions(64) == (1, 2, 3, 5, 9, 17, 33, 64)
    assert default_positions(1) == (1,)


def test_engine_is_chosen_from_the_model_alone():
    assert select_engine(priors.get("beta_bernoulli")) == "closed_form"
    coins = priors.get("coin_mixture")
    assert select_engine(coins) == "enumeration"
    assert bayes_predictor(coins).describe()["path"] == "cumulative"
    hmm = priors.get("hmm_mixture")
    engine, reason = engine_choice(hmm)
    assert engine == "enumeration" and enumeration_path(hmm) == "prefix" and "prefix masking" in reason
    engine, reason = engine_choice(Prior(beta_coin, kind="tokens", outcomes=("T", "H")))
    assert engine == "mcmc" and "'p' has no finite support" in reason
    engine, reason = engine_choice(coins, max_support=1)
    assert engine == "mcmc" and "max_support=1" in reason


def test_a_declared_grid_makes_a_continuous_latent_enumerable():
    """metadata={"grid": {site: values}}: the prior's density on the grid, normalised, stands for the latent."""
    grid = np.linspace(0.0005, 0.9995, 1000)
    prior = Prior(beta_coin, kind="tokens", outcomes=("0", "1"), metadata={"grid": {"p": grid}})
    bayes = bayes_predictor(prior)
    assert bayes.engine == "enumeration"
    episodes = priors.get("beta_bernoulli", a=2.0, b=3.0).sample(jax.random.key(8), 4, 8)
    exact = bayes_predictor(priors.get("beta_bernoulli", a=2.0, b=3.0)).predict(episodes)
    np.testing.assert_allclose(np.exp(bayes.predict(episodes)["log_prob"]), np.exp(exact["log_prob"]), atol=1e-5)


def test_mcmc_settings_are_checked():
    prior = Prior(beta_coin, kind="tokens", outcomes=("T", "H"))
    with pytest.raises(ModelError, match="unknown MCMC setting.*num_warmup"):
        bayes_predictor(prior, engine="mcmc", num_warmups=10)
    with pytest.raises(ModelError, match="at least 4 chains"):
        bayes_predictor(prior, engine="mcmc", num_chains=2)


def test_beta_bernoulli_mcmc_matches_the_closed_form_within_4_mcse(beta_run):
    prior, episodes, _, (pred, idata) = beta_run
    exact = bayes_predictor(prior).predict(episodes)
    assert_within_mcse(idata, pred, exact)


def test_mcse_is_arvizs_on_the_stored_draws_and_measures_the_error_from_exact(beta_run):
    prior, episodes, _, (pred, idata) = beta_run
    run = ran_positions(idata)
    want = az.mcse(idata, var_names=["predictive_prob"])["predictive_prob"].max(OUTCOME)
    np.testing.assert_allclose(pred["mcse"].sel({POSITION: run}), want.transpose(EPISODE, POSITION), rtol=1e-12)
    exact = bayes_predictor(prior).predict(episodes)
    error = np.abs(np.exp(pred["log_prob"]) - np.exp(exact["log_prob"])).max(OUTCOME).sel({POSITION: run})
    z = (error / pred["mcse"].sel({POSITION: run})).values
    assert np.median(z) < 2 and z.max() < 5  # the error is Monte-Carlo noise of the size the MCSE says


def test_cells_not_run_are_nan_and_diagnostics_sit_on_run_cells(beta_run):
    _, episodes, _, (pred, idata) = beta_run
    run = ran_positions(idata)
    assert tuple(run) == default_positions(episodes.length)
    skipped = [p for p in pred[POSITION].values if p not in run]
    assert np.all(np.isnan(pred["log_prob"].sel({POSITION: skipped}).values))
    for name in DIAGNOSTICS:
        assert pred[name].dims == (EPISODE, POSITION)
        assert np.all(np.isfinite(pred[name].sel({POSITION: run}).values)), name
        assert np.all(np.isnan(pred[name].sel({POSITION: skipped}).values)), name
    assert np.all(pred["divergences"].sel({POSITION: run}).values >= 0)


def test_inference_data_has_named_dims_and_works_with_arviz_as_saved(beta_run, tmp_path):
    _, episodes, mcmc, (pred, idata) = beta_run
    assert {"posterior", "sample_stats", "log_likelihood"} <= set(idata.groups())
    assert idata.posterior["p"].dims == ("chain", "draw", EPISODE, POSITION)
    assert idata.posterior.sizes["chain"] == 4 and idata.posterior.sizes["draw"] == 300
    assert idata.log_likelihood["y"].dims == ("chain", "draw", EPISODE, POSITION)
    assert idata.sample_stats["diverging"].dims == ("chain", "draw", EPISODE, POSITION)
    path = tmp_path / "in_distribution.nc"
    idata.to_netcdf(str(path))
    saved = az.from_netcdf(str(path))
    summary = az.summary(saved, var_names=["p"])
    assert len(summary) == episodes.num_episodes * len(ran_positions(idata))
    assert {"r_hat", "ess_bulk", "ess_tail"} <= set(summary.columns)
    axes = az.plot_rank(saved, var_names=["p"], coords={EPISODE: 0, POSITION: 3})
    assert axes is not None
    # the per-cell r_hat in the predictions is ArviZ's, maximised over the cell's variables
    r_hat = az.rhat(saved, var_names=["p"]).sel({EPISODE: 2, POSITION: 5})["p"].item()
    assert pred["r_hat"].sel({EPISODE: 2, POSITION: 5}).item() >= r_hat - 1e-12


def test_unconverged_flags_each_threshold():
    ds = xr.Dataset(
        {
            "r_hat": ("cell", [1.0, 1.02, 1.0, 1.0, np.nan]),
            "ess_bulk": ("cell", [1000.0, 1000.0, 399.0, 1000.0, np.nan]),
            "divergences": ("cell", [0.0, 0.0, 0.0, 1.0, np.nan]),
        }
    )
    np.testing.assert_array_equal(unconverged(ds).values, [False, True, True, True, False])


def test_coin_mixture_without_continuous_latents_is_exact():
    """No continuous latent: the engine's draws are exact, so it matches enumeration to float precision."""
    prior = priors.get("coin_mixture")
    episodes = prior.sample(jax.random.key(5), 8, 8)
    mcmc = bayes_predictor(prior, engine="mcmc", **BUDGET)
    pred, idata = mcmc.run(episodes)
    assert_within_mcse(idata, pred, bayes_predictor(prior).predict(episodes), k=0.0, atol=1e-9)
    z = idata.posterior["z"]
    assert z.dims == ("chain", "draw", EPISODE, POSITION) and set(np.unique(z.values)) <= {0, 1}
    assert not unconverged(pred).any()


@pytest.mark.slow
def test_hmm_mixture_mcmc_sums_the_hidden_states_out_exactly():
    prior = priors.get("hmm_mixture")
    episodes = prior.sample(jax.random.key(6), 4, 6)
    mcmc = bayes_predictor(prior, engine="mcmc", num_warmup=10, num_samples=20, progress=False)
    pred, idata = mcmc.run(episodes)
    assert_within_mcse(idata, pred, bayes_predictor(prior).predict(episodes), k=0.0, atol=1e-9)


def test_zero_probability_context_leaves_nan():
    """Coins that always (θ = 1) or never (θ = 0) show 🌈: after seeing both, Bayes is undefined."""
    prior = priors.get("coin_mixture", thetas=(0.0, 1.0))
    mcmc = bayes_predictor(prior, engine="mcmc", num_warmup=10, num_samples=10, progress=False, positions=(2, 3),
                           max_episodes=2)
    pred, idata = mcmc.run(Episodes(y=np.array([[0, 1, 0], [0, 0, 0], [0, 0, 0]])))
    np.testing.assert_allclose(np.exp(pred["log_prob"].values[0, 1]), [1.0, 0.0], atol=1e-12)
    assert np.all(np.isnan(pred["log_prob"].values[0, 2]))
    np.testing.assert_allclose(np.exp(pred["log_prob"].values[1, 1:]), [[1.0, 0.0], [1.0, 0.0]], atol=1e-12)
    assert np.all(np.isnan(pred["log_prob"].values[2]))  # beyond max_episodes: not run
    assert idata.posterior.sizes[EPISODE] == 2


def test_compare_keeps_diagnostics_per_cell_and_metrics_carry_the_flag(beta_run):
    prior, _, mcmc, _ = beta_run
    inference_data = {}
    ds = compare(
        prior,
        {"fair": priors.get("coin_mixture", thetas=(0.5,), weights=(1.0,))},
        {"bayes": bayes_predictor(prior), "bayes_mcmc": mcmc},
        num_episodes=16, length=8, key=jax.random.key(7), inference_data=inference_data,
    )
    assert set(inference_data) == {"fair"}
    for name in DIAGNOSTICS:
        assert ds[name].dims == (SCENARIO, EPISODE, POSITION)
    metrics = metrics_dataset(ds, bootstrap_resamples=20)
    flagged = unconverged(ds).sum(EPISODE)
    np.testing.assert_array_equal(metrics["mcmc_flagged"].values, flagged.values)
    assert metrics["mcmc_cells"].sel({SCENARIO: "fair", POSITION: 8}).item() == 16
    assert metrics.attrs["mcmc_predictors"] == ["bayes_mcmc"]

    from comparisons.report import cross_entropy_table, mcmc_section

    section = "\n".join(mcmc_section(ds, metrics))
    assert "**bayes**: closed_form" in section and "**bayes_mcmc**: mcmc" in section
    assert "r_hat > 1.01, ess_bulk < 400" in section
    table = cross_entropy_table(ds, metrics, "fair", [1, 8])
    row = next(line for line in table.splitlines() if line.startswith("| bayes_mcmc"))
    assert ("⚠" in row) == bool(flagged.sel({POSITION: [1, 8]}).sum() > 0)


def test_regression_with_local_discrete_latents_is_refused():
    def switching(length, x=None, y=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0))
        with numpyro.plate("position", length):
            x = numpyro.sample("x", dist.Normal(0.0, 1.0), obs=x)
            s = numpyro.sample("s", dist.Bernoulli(0.5))
            numpyro.sample("y", dist.Normal(w * x * s, 1.0), obs=y)

    with pytest.raises(ModelError, match=r"local discrete latents \['s'\] out only for tokens"):
        bayes_predictor(Prior(switching, kind="regression"), engine="mcmc")


# ---------------------------------------------------------------------------- the scale


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, params",
    [("beta_bernoulli", {"a": 2.0, "b": 3.0}), ("dirichlet_categorical", {"num_outcomes": 3, "alpha": 0.7}),
     ("coin_mixture", {})],
)
def test_mcmc_matches_exact_within_4_mcse_on_64_episodes(name, params):
    prior = priors.get(name, **params)
    episodes = prior.sample(jax.random.key(11), 64, 16)
    mcmc = bayes_predictor(prior, engine="mcmc", key=jax.random.key(12), **LARGE)
    pred, idata = mcmc.run(episodes)
    ratio = assert_within_mcse(idata, pred, bayes_predictor(prior).predict(episodes))
    assert ratio.shape[:2] == (64, len(default_positions(16)))


@pytest.mark.slow
def test_regression_mcmc_matches_the_conjugate_predictive():
    """y_t = w x_t + ε, w ~ N(0, 1), ε ~ N(0, 0.5²): the predictive is Normal in closed form."""
    sigma = 0.5

    def linear(length, x=None, y=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0))
        with numpyro.plate("position", length):
            x = numpyro.sample("x", dist.Normal(0.0, 1.0), obs=x)
            numpyro.sample("y", dist.Normal(w * x, sigma), obs=y)

    prior = Prior(linear, kind="regression")
    episodes = prior.sample(jax.random.key(13), 16, 6)
    grid = np.linspace(-12, 12, 481)
    mcmc = bayes_predictor(prior, engine="mcmc", key=jax.random.key(14), **BUDGET)
    pred, idata = mcmc.run(episodes, y_grid=grid)
    positions = ran_positions(idata)
    x, y = episodes.x[..., 0], episodes.y
    for t in positions - 1:
        precision = 1.0 + (x[:, :t] ** 2).sum(1) / sigma**2
        mean_w = (x[:, :t] * y[:, :t]).sum(1) / sigma**2 / precision
        mean, sd = mean_w * x[:, t], np.sqrt(x[:, t] ** 2 / precision + sigma**2)
        got = pred.sel({POSITION: t + 1})
        mcse = az.mcse(idata, var_names=["predictive_mean"])["predictive_mean"].sel({POSITION: t + 1})
        assert np.all(np.abs(got["mean"].values - mean) <= 4 * mcse.values + 1e-9)
        np.testing.assert_allclose(got["mcse"].values, mcse.values, rtol=1e-12)  # real y: the predictive mean's
        # the PIT: the mean over draws of F(y_t | w_s), a CDF value, within Monte-Carlo error of the exact one
        np.testing.assert_allclose(got["pit"].values, stats.norm.cdf(y[:, t], mean, sd), atol=0.05)
        np.testing.assert_allclose(got["variance"].values, sd**2, rtol=0.15)
        # the density of the realised y_t: the mean over draws of p(y_t | w_s), within 4 of its MCSE
        density = np.exp(idata.log_likelihood["y"].sel({POSITION: t + 1}))
        density_mcse = az.mcse(xr.Dataset({"density": density}))["density"].values
        want = stats.norm.pdf(y[:, t], mean, sd)
        assert np.all(np.abs(np.exp(got["log_score"].values) - want) <= 4 * density_mcse + 1e-12)
        assert np.all(np.diff(got["quantile_value"].values, axis=-1) > 0)
        mass = np.trapezoid(np.exp(got["grid_log_density"].values), grid, axis=-1)
        np.testing.assert_allclose(mass, 1.0, atol=1e-3)
