"""Model validation: each broken convention fails before anything runs, naming the site and quoting the convention."""

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.contrib.control_flow import scan

import priors
from toolkit import ModelError, Prior
from toolkit.bayes import bayes_predictor
from toolkit.validation import CONVENTION, validate_prior

PLATE = "numpyro.plate('position', length)"


def coin(length, y=None):
    p = numpyro.sample("p", dist.Beta(2.0, 2.0))
    with numpyro.plate("position", length):
        numpyro.sample("y", dist.Bernoulli(p), obs=y)


def no_y(length, y=None):
    p = numpyro.sample("p", dist.Beta(2.0, 2.0))
    with numpyro.plate("position", length):
        numpyro.sample("obs", dist.Bernoulli(p), obs=y)


def y_outside_plate(length, y=None):
    p = numpyro.sample("p", dist.Beta(2.0, 2.0))
    numpyro.sample("y", dist.Bernoulli(p).expand([length]).to_event(1), obs=y)


def y_two_per_position(length, y=None):
    p = numpyro.sample("p", dist.Beta(2.0, 2.0))
    with numpyro.plate("position", length):
        numpyro.sample("y", dist.Bernoulli(p).expand([length, 2]).to_event(1), obs=y)


def real_y(length, y=None):
    m = numpyro.sample("m", dist.Normal(0.0, 1.0))
    with numpyro.plate("position", length):
        numpyro.sample("y", dist.Normal(m, 1.0), obs=y)


def regression(length, x=None, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0))
    with numpyro.plate("position", length):
        x = numpyro.sample("x", dist.Normal(0.0, 1.0), obs=x)
        numpyro.sample("y", dist.Normal(w * x, 1.0), obs=y)


def regression_without_x(length, x=None, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0))
    with numpyro.plate("position", length):
        numpyro.sample("y", dist.Normal(w, 1.0), obs=y)


def regression_x_outside_plate(length, x=None, y=None):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0))
    x = numpyro.sample("x", dist.Normal(jnp.zeros(length), 1.0).to_event(1), obs=x)
    with numpyro.plate("position", length):
        numpyro.sample("y", dist.Normal(w * x, 1.0), obs=y)


def infinite_factor(length, y=None):
    p = numpyro.sample("p", dist.Beta(2.0, 2.0))
    numpyro.factor("penalty", -jnp.inf)
    with numpyro.plate("position", length):
        numpyro.sample("y", dist.Bernoulli(p), obs=y)


def nan_factor(length, y=None):
    numpyro.factor("weird", jnp.nan)
    with numpyro.plate("position", length):
        numpyro.sample("y", dist.Bernoulli(0.5), obs=y)


def coin_with_x(length, x=None, y=None):
    p = numpyro.sample("p", dist.Beta(2.0, 2.0))
    with numpyro.plate("position", length):
        numpyro.sample("x", dist.Normal(0.0, 1.0), obs=x)
        numpyro.sample("y", dist.Bernoulli(p), obs=y)


def invalid_parameter(length, y=None):
    numpyro.sample("s", dist.Normal(0.0, -1.0))
    with numpyro.plate("position", length):
        numpyro.sample("y", dist.Bernoulli(0.5), obs=y)


def markov_chain(length, y=None):
    """Tokens emitted by scan: y_t depends on y_{t-1} directly (no plate, by design)."""
    stay = numpyro.sample("stay", dist.Beta(2.0, 2.0))

    def step(prev, y_t):
        probs = jnp.where(prev == 0, jnp.stack([stay, 1 - stay]), jnp.stack([1 - stay, stay]))
        y_t = numpyro.sample("y", dist.Categorical(probs=probs), obs=y_t)
        return y_t, y_t

    scan(step, 0, y, length=length)


@pytest.mark.parametrize(
    "model, kind, site, words",
    [
        (no_y, "tokens", "'y'", ["no sample site 'y'", "its sample sites: obs, p"]),
        (y_outside_plate, "tokens", "'y'", ["not inside", PLATE]),
        (y_two_per_position, "tokens", "'y'", ["shape", "one integer token per position"]),
        (real_y, "tokens", "'y'", ["kind='tokens'", "Normal", "float64"]),
        (coin_with_x, "regression", "'y'", ["kind='regression'", "Bernoulli", "real y"]),
        (regression_without_x, "regression", "'x'", ["needs an 'x' sample site"]),
        (regression_x_outside_plate, "regression", "'x'", ["not inside", PLATE]),
    ],
)
def test_structural_errors_name_the_site_and_quote_the_convention(model, kind, site, words):
    with pytest.raises(ModelError) as info:
        Prior(model, kind=kind, outcomes=("0", "1") if kind == "tokens" else None)
    message = str(info.value)
    assert site in message
    for word in words:
        assert word in message
    if "kind=" not in words[0]:
        assert CONVENTION in message


def test_a_model_that_fails_to_run_is_a_model_error():
    with pytest.raises(ModelError, match=r"calling the model failed \(ValueError: Normal distribution got invalid scale"):
        Prior(invalid_parameter, kind="tokens", outcomes=("0", "1"))
    with pytest.raises(ModelError, match=r"a regression model takes `x=None`"):
        Prior(coin, kind="regression")


def test_outcome_labels_must_match_the_support():
    with pytest.raises(ModelError, match=r"site 'y' has 2 outcomes .* 3 outcome labels"):
        Prior(coin, kind="tokens", outcomes=("a", "b", "c"))


@pytest.mark.parametrize("model, site", [(infinite_factor, "penalty"), (nan_factor, "weird")])
def test_a_non_finite_log_density_fails_before_anything_runs(model, site):
    prior = Prior(model, kind="tokens", outcomes=("0", "1"))  # structure is fine
    with pytest.raises(ModelError, match=rf"site '{site}' has log-density (-inf|nan) on the model's own sample"):
        bayes_predictor(prior)
    with pytest.raises(ModelError, match=rf"site '{site}'"):
        validate_prior(prior)


def test_valid_models_pass_and_report_their_sites():
    table = validate_prior(Prior(coin, kind="tokens", outcomes=("T", "H")))
    assert table["y"].in_position_plate and not table["p"].in_position_plate
    table = validate_prior(Prior(regression, kind="regression"))
    assert table["x"].in_position_plate


def test_scan_models_follow_the_convention_with_local_latents():
    """An HMM's states (scan) are local latents; a Markov chain in y alone has none."""
    hmm = priors.get("hmm_mixture")
    table = validate_prior(hmm)
    assert table["y"].in_scan and table["h"].in_scan
    assert set(hmm.latent_sites()) == {"hmm"} and set(hmm.local_latent_sites()) == {"h"}
    chain = Prior(markov_chain, kind="tokens", outcomes=("a", "b"))
    assert set(chain.latent_sites()) == {"stay"} and not chain.local_latent_sites()
