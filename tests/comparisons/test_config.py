"""Experiment configs: TOML + profile + ``--set`` overrides, validated; CLI errors are one line with exit code 2."""

import subprocess

import pytest
from conftest import PYTHON, REPO, RUN_PY, subprocess_env

import priors
from comparisons.config import DEFAULT_CONFIG, RunConfig, load_config, parse_override, validate
from comparisons.plan import build_curriculum, build_prior
from comparisons.run import main
from toolkit.errors import ConfigError, MetabayesError

# --------------------------------------------------------------------------- loading


def test_default_config_is_the_two_coin_experiment():
    cfg = load_config()
    assert isinstance(cfg, RunConfig)
    assert cfg.prior.name == "coin_mixture"
    assert cfg.prior.params["thetas"] == pytest.approx([1 / 3, 2 / 3])
    kinds = {name: sc.kind for name, sc in cfg.scenarios.items()}
    assert kinds["in_distribution"] == "in_distribution" and "misspecified" in kinds.values()
    assert {"bayes", "oracle", "best_mixture", "learner"} <= set(cfg.evaluation.predictors)
    assert load_config(DEFAULT_CONFIG) == cfg


def test_tiny_profile_shrinks_the_budgets_and_keeps_the_rest():
    default, tiny = load_config(), load_config(profile="tiny")
    assert tiny.evaluation.num_episodes < default.evaluation.num_episodes
    assert tiny.evaluation.length <= default.evaluation.length
    assert tiny.learner.training["steps"] <= 100
    # what the profile does not name comes from the file
    assert tiny.scenarios == default.scenarios
    assert tiny.prior == default.prior
    assert (tiny.evaluation.seed, tiny.evaluation.predictors) == (default.evaluation.seed, default.evaluation.predictors)


def test_overrides_are_typed_toml_values():
    cfg = load_config(
        overrides=[
            "evaluation.length=32",
            "scenarios.q.grid.thetas=[[0.5], [0.2]]",
            "prior.name=beta_bernoulli",
            "prior.params={a = 2.0, b = 1.0}",
            "learner.training.steps=5",
        ],
        profile="tiny",
    )
    assert cfg.evaluation.length == 32 and isinstance(cfg.evaluation.length, int)
    assert cfg.scenarios["q"].grid == {"thetas": [[0.5], [0.2]]}
    assert cfg.prior.name == "beta_bernoulli" and cfg.prior.params == {"a": 2.0, "b": 1.0}
    assert cfg.learner.training["steps"] == 5 and cfg.learner.training["batch_size"] == 16


@pytest.mark.parametrize(
    "item, path, value",
    [
        ("a.b=3", ["a", "b"], 3),
        ("a=0.5", ["a"], 0.5),
        ("a=[[0.5]]", ["a"], [[0.5]]),
        ("a=true", ["a"], True),
        ("a=word", ["a"], "word"),
        ('a="quoted word"', ["a"], "quoted word"),
        (" a.b =x=y", ["a", "b"], "x=y"),
    ],
)
def test_parse_override(item, path, value):
    assert parse_override(item) == (path, value)


@pytest.mark.parametrize("item", ["evaluation.length", "=3"])
def test_parse_override_needs_key_equals_value(item):
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override(item)


VALIDATION_CASES = {
    "unknown top-level key": ({"evaluaton": {}}, r"config key evaluaton: is not a known key; allowed here: prior, scenarios"),
    "unknown nested key": ({"evaluation": {"lenght": 3}}, r"evaluation.lenght: is not a known key; allowed here: .*length"),
    "unknown scenario key": (
        {"scenarios": {"s": {"kind": "prompts", "prompt": ["ab"]}}},
        r"scenarios.s.prompt: is not a known key; allowed here: .*prompts",
    ),
    "zero length": ({"evaluation": {"length": 0}}, r"evaluation.length: .*greater than 0 \(got 0\)"),
    "wrong type": ({"evaluation": {"num_episodes": "many"}}, r"evaluation.num_episodes: .*integer"),
    "unknown predictor": (
        {"evaluation": {"predictors": ["bayes", "gpt"]}}, r"evaluation.predictors: .*item 1: unknown predictor 'gpt'.*learner"
    ),
    "unknown scenario kind": ({"scenarios": {"s": {"kind": "random"}}}, r"scenarios.s.kind: .*'in_distribution'"),
    "empty grid": (
        {"scenarios": {"q": {"kind": "misspecified", "prior": "coin_mixture", "grid": {"thetas": []}}}},
        r"scenarios.q.grid: .*grid.thetas is empty",
    ),
    "curriculum out of order": (
        {"learner": {"curriculum": [{"until": 5}, {"until": 3}]}},
        r"learner.curriculum: .*increasing `until`, got \[5, 3\]",
    ),
    "curriculum stage key": (
        {"learner": {"curriculum": [{"until": 5, "param": {}}]}},
        r"learner.curriculum.0.param: is not a known key; allowed here: until, prior, params",
    ),
}


@pytest.mark.parametrize("tree, match", VALIDATION_CASES.values(), ids=VALIDATION_CASES.keys())
def test_validation_names_the_key(tree, match):
    with pytest.raises(ConfigError, match=match):
        validate(tree)


def test_set_below_a_value_is_refused():
    with pytest.raises(ConfigError, match="length is a value, not a table"):
        load_config(overrides=["evaluation.length.x=1"])


def test_unknown_profile_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="profile .huge. is not in coin_mixture.toml; profiles there: .*tiny"):
        load_config(profile="huge")
    with pytest.raises(ConfigError, match="does not exist; built-in configs: .*coin_mixture"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[prior\nname = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_config_is_frozen():
    cfg = load_config()
    with pytest.raises(Exception):
        cfg.evaluation.length = 3


def test_in_process_main_reports_config_errors_on_one_line(tmp_path, capsys):
    assert main(["--set", "evaluation.length=0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: config key evaluation.length")


# --------------------------------------------------------------------------- the CLI, as a user runs it

CLI_CASES = {
    "unknown key": (["--set", "evaluation.foo=1"], ["evaluation.foo", "not a known key", "num_episodes"]),
    "negative length": (["--set", "evaluation.length=-1"], ["evaluation.length", "greater than 0"]),
    "q outside [0, 1]": (["--set", "scenarios.q.grid.thetas=[[1.5]]"], ["scenarios.q", "thetas", "[0, 1]", "1.5"]),
    "wrong type": (["--set", "evaluation.num_episodes=abc"], ["evaluation.num_episodes", "integer", "'abc'"]),
    "unknown prior": (["--set", "prior.name=nope"], ["prior: unknown prior 'nope'", *priors.available()]),
    "unknown q prior": (["--set", "scenarios.q.prior=nope"], ["scenarios.q: unknown prior 'nope'", "coin_mixture"]),
    "unknown profile": (["--profile", "huge"], ["profile 'huge'", "tiny"]),
    "malformed --set": (["--set", "evaluation.length"], ["KEY=VALUE"]),
}
# Each interpreter start costs seconds of imports: these run as real subprocesses, the rest in-process.
SUBPROCESS_CASES = ["unknown key", "q outside [0, 1]", "unknown prior"]


def check_one_line_error(name, returncode, stdout, stderr):
    assert "Traceback" not in stderr, stderr
    assert returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: ")
    for fragment in CLI_CASES[name][1]:
        assert fragment in lines[0]
    assert stdout == ""


@pytest.mark.parametrize("name", CLI_CASES)
def test_main_error_is_one_line_naming_the_key_with_exit_code_2(tmp_path, capsys, name):
    returncode = main([*CLI_CASES[name][0], "--out", str(tmp_path), "--no-progress"])
    out, err = capsys.readouterr()
    check_one_line_error(name, returncode, out, err)


@pytest.fixture(scope="module")
def cli_errors(tmp_path_factory):
    """``python comparisons/run.py`` for each subprocess case, all started at once, then collected."""
    out = tmp_path_factory.mktemp("cli_errors")
    procs = {
        name: subprocess.Popen(
            [PYTHON, str(RUN_PY), *CLI_CASES[name][0], "--out", str(out / str(i)), "--no-progress"],
            cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for i, name in enumerate(SUBPROCESS_CASES)
    }
    results = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        results[name] = (proc.returncode, stdout, stderr)
    return results


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_cli_error_is_one_line_naming_the_key_with_exit_code_2(cli_errors, name):
    returncode, stdout, stderr = cli_errors[name]
    check_one_line_error(name, returncode, stdout, stderr)


def test_mcmc_settings_reach_the_engine_from_the_config():
    from comparisons.predictors import build_predictor

    cfg = load_config(None, ["evaluation.predictor_options.bayes_mcmc={num_chains=6, num_samples=50, seed=3}"])
    prior = build_prior(cfg)
    mcmc = build_predictor("bayes_mcmc", prior, cfg.evaluation.predictor_options, progress=False)
    assert mcmc.describe()["num_chains"] == 6 and mcmc.describe()["num_samples"] == 50
    bad = load_config(None, ["evaluation.predictor_options.bayes_mcmc={num_chain=2}"])
    with pytest.raises(MetabayesError, match="predictor_options.bayes_mcmc.*num_chain"):
        build_predictor("bayes_mcmc", prior, bad.evaluation.predictor_options, progress=False)


def test_an_empty_scenario_table_is_a_config_error():
    with pytest.raises(ConfigError, match="no scenarios"):
        load_config(None, ["scenarios={}"])


def test_curriculum_stages_are_priors_over_the_experiment_prior():
    cfg = load_config(None, [
        "prior.params={thetas=[0.25, 0.75], weights=[0.5, 0.5]}",
        "learner.curriculum=[{until=3, params={thetas=[0.05, 0.95]}}, {until=6, prior='beta_bernoulli', params={a=2.0}}]",
    ])
    (u1, first), (u2, second) = build_curriculum(cfg, cfg.learner.curriculum, "learner")
    assert (u1, u2) == (3, 6)
    assert first.name == "coin_mixture" and first.params["weights"] == [0.5, 0.5]  # [prior] params kept
    assert list(first.params["thetas"]) == [0.05, 0.95]
    assert second.name == "beta_bernoulli" and second.params["a"] == 2.0
    bad = load_config(None, ["learner.curriculum=[{until=3, prior='no_such_prior'}]"])
    with pytest.raises(MetabayesError, match=r"learner.curriculum\[0\].*no_such_prior"):
        build_curriculum(bad, bad.learner.curriculum, "learner")
