"""A user's own prior, in a file outside ``priors/``: through ``comparisons/run.py`` and through Python.

The snippets below are the README's "Define your own prior" section; the last
test checks that the README still shows them, so the documented steps are the
tested ones.
"""

import re
import sys
import textwrap

import arviz as az
import numpy as np
import pytest
from conftest import REPO, run_cli

from comparisons.run import main
from toolkit.dims import POSITION, SCENARIO
from toolkit.io import read_netcdf

MODEL_FILE = '''\
# my_prior.py
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist


def model(length, y=None):
    coin = numpyro.sample("coin", dist.Categorical(probs=jnp.array([0.5, 0.3, 0.2])))
    p_heads = jnp.array([0.2, 0.5, 0.9])[coin]
    with numpyro.plate("position", length):
        numpyro.sample("y", dist.Categorical(probs=jnp.stack([1 - p_heads, p_heads])), obs=y)
'''

CONFIG_FILE = '''\
# my_prior.toml
[prior]
name = "my_prior.py:model"
kind = "tokens"
outcomes = ["T", "H"]

[evaluation]
num_episodes = 200
length = 32
predictors = ["bayes", "frequency"]
'''

COMMAND = "python comparisons/run.py --config my_prior.toml --out results/my_prior"

PYTHON_SNIPPET = '''\
import jax
import toolkit
from toolkit.bayes import bayes_predictor
from my_prior import model

prior = toolkit.Prior(model, kind="tokens", outcomes=("T", "H"))
episodes = prior.sample(jax.random.key(0), num_episodes=4, length=16)
bayes = bayes_predictor(prior)
print(bayes.engine, bayes.predict(episodes)["log_prob"].shape)
'''

SMALL = ("--set", "evaluation.num_episodes=8", "--set", "evaluation.length=8",
         "--set", "evaluation.bootstrap_resamples=20", "--no-progress")


def _write(folder, config=CONFIG_FILE, model=MODEL_FILE):
    (folder / "my_prior.py").write_text(model)
    (folder / "my_prior.toml").write_text(config)


def test_a_bare_model_in_a_users_file_runs_end_to_end(tmp_path, monkeypatch):
    _write(tmp_path)
    monkeypatch.chdir(tmp_path)  # the user's folder: the config names the model file relative to it
    assert main([*COMMAND.split()[2:], *SMALL]) == 0  # the arguments after "python comparisons/run.py"
    out = tmp_path / "results" / "my_prior"
    ds = read_netcdf(out / "comparison.nc")
    assert list(ds["outcome"].values) == ["T", "H"]
    assert ds.attrs["inference_method"] == "enumeration"
    assert np.all(np.isfinite(ds["log_score"].sel(predictor="bayes").values))
    report = (out / "report.md").read_text()
    assert "my_prior.py:model" in report and "**bayes**: enumeration" in report


def test_the_same_prior_in_a_few_lines_of_python(tmp_path, monkeypatch, capsys):
    _write(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_prior", raising=False)
    exec(compile(PYTHON_SNIPPET, "readme_snippet", "exec"), {})
    assert capsys.readouterr().out.strip().endswith("enumeration (4, 16, 2)")


def test_a_wrong_user_model_fails_with_the_convention(tmp_path, monkeypatch, capsys):
    _write(tmp_path, model=MODEL_FILE.replace('"position"', '"time"'))
    monkeypatch.chdir(tmp_path)
    assert main([*COMMAND.split()[2:], *SMALL]) == 2
    err = capsys.readouterr().err
    assert "site 'y' is not inside numpyro.plate('position', length)" in err
    assert "Traceback" not in err


@pytest.mark.slow
def test_a_continuous_user_prior_runs_mcmc_and_saves_arviz_files(tmp_path):
    """No closed form, a continuous latent: "bayes" picks NUTS, writes mcmc/<scenario>.nc and diagnostics."""
    model = MODEL_FILE.replace(
        'coin = numpyro.sample("coin", dist.Categorical(probs=jnp.array([0.5, 0.3, 0.2])))\n'
        '    p_heads = jnp.array([0.2, 0.5, 0.9])[coin]',
        'p_heads = numpyro.sample("p_heads", dist.Beta(2.0, 2.0))',
    )
    _write(tmp_path, model=model)
    proc = run_cli(*COMMAND.split()[2:], "--set", "evaluation.num_episodes=4", "--set", "evaluation.length=4",
                   "--set", "evaluation.bootstrap_resamples=20", "--no-progress", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "results" / "my_prior"
    ds = read_netcdf(out / "comparison.nc")
    assert ds.attrs["inference_method"] == "mcmc"
    assert ds["r_hat"].dims == (SCENARIO, "episode", POSITION)
    idata = az.from_netcdf(str(out / "mcmc" / "in_distribution.nc"))
    assert {"posterior", "sample_stats", "log_likelihood"} <= set(idata.groups())
    assert len(az.summary(idata, var_names=["p_heads"])) == 4 * 4
    assert "MCMC cells are flagged" in (out / "report.md").read_text()


def test_the_readme_shows_the_tested_snippets():
    readme = REPO / "README.md"
    if not readme.is_file():
        pytest.skip("README.md is not written yet")
    text = readme.read_text(encoding="utf-8")
    match = re.search(r"^## Define your own prior\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert match, "README.md has no '## Define your own prior' section"
    blocks = [textwrap.dedent(b) for b in re.findall(r"```[a-z]*\n(.*?)```", match.group(1), flags=re.S)]
    for snippet in (MODEL_FILE, CONFIG_FILE, PYTHON_SNIPPET):
        assert snippet in blocks, f"README's section lacks the tested snippet:\n{snippet}"
    assert COMMAND in match.group(1)
