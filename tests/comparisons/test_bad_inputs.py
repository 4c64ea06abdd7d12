"""Bad input, as a user meets it: every case exits 2 with one line naming the problem and the fix.

Each case runs ``main()`` in-process on the tiny profile (a few also through a real
``python comparisons/run.py``) and must print one line on stderr starting ``error:``, nothing on
stdout, no traceback, and leave nothing behind (no output folder, no learner, no result file).
``{tmp}`` in an argument is the test's own folder; ``files`` are written there first.
"""

import json
import shutil
import subprocess
from dataclasses import dataclass, field

import pytest
from conftest import PYTHON, REPO, RUN_PY, TINY_ARGS, subprocess_env

from comparisons.run import main
from learners.checkpoint import checkpoint_paths, read_meta


@dataclass(frozen=True)
class Case:
    args: tuple  # after the tiny profile of the default config (a --config here replaces it)
    fragments: tuple  # all in the one error line
    files: dict = field(default_factory=dict)  # name -> text, written into {tmp} before the run
    checkpoint: str | None = None  # copy the trained tiny learner into {tmp}/run/learner and apply this edit


def S(*items):
    """``--set`` arguments."""
    return tuple(a for item in items for a in ("--set", item))


LINEAR = ("--config", "comparisons/configs/linear_regression.toml")
ANBN = ("--config", "comparisons/configs/anbn.toml")

BARE_MODEL = '''
import jax.numpy as jnp, numpyro, numpyro.distributions as dist

def model(length, y=None):
    p = numpyro.sample("p", dist.Beta(2.0, 2.0))
    with numpyro.plate("position", length):
        numpyro.sample("y", dist.Bernoulli(p), obs=y)
'''
USER = S('prior.name="{tmp}/user.py:model"', 'prior.kind="tokens"', "prior.params={}",
         'evaluation.predictors=["bayes"]')


def user(source: str, *extra, name="user.py:model"):
    args = tuple(a.replace("user.py:model", name) for a in USER)
    return {"args": args + extra, "files": {"user.py": source}}


CASES = {
    # ---------------------------------------------------------------- keys, types, values
    "unknown top-level key": Case(S("evaluaton.length=3"), ("config key evaluaton: is not a known key", "evaluation")),
    "unknown nested key": Case(S("evaluation.lenght=3"), ("evaluation.lenght: is not a known key", "length")),
    "unknown scenario key": Case(S('scenarios.s={kind="prompts", prompt=["🌈"]}'), ("scenarios.s.prompt", "prompts")),
    "zero length": Case(S("evaluation.length=0"), ("evaluation.length", "greater than 0")),
    "negative length": Case(S("evaluation.length=-1"), ("evaluation.length", "greater than 0")),
    "text for a number": Case(S("evaluation.num_episodes=abc"), ("evaluation.num_episodes", "integer", "'abc'")),
    "a fraction for a count": Case(S("evaluation.num_episodes=2.5"), ("evaluation.num_episodes", "integer")),
    "a list for a number": Case(S("evaluation.length=[3]"), ("evaluation.length", "integer")),
    "unknown predictor": Case(S('evaluation.predictors=["gpt"]'), ("unknown predictor 'gpt'", "bayes_mcmc")),
    "a predictor twice": Case(S('evaluation.predictors=["bayes", "bayes"]'), ("names a predictor twice",)),
    "unknown scenario kind": Case(S('scenarios.s={kind="random"}'), ("scenarios.s.kind", "'in_distribution'")),
    "misspecified without a source": Case(S('scenarios.s={kind="misspecified"}'), ("scenarios.s: a misspecified scenario needs `prior`",)),
    "an empty grid": Case(S("scenarios.q.grid={thetas=[]}"), ("scenarios.q.grid", "grid.thetas is empty")),
    "a coin outside [0, 1]": Case(S("scenarios.q.grid.thetas=[[1.5]]"), ("scenarios.q", "thetas", "[0, 1]", "1.5")),
    "unknown prior": Case(S("prior.name=nope"), ("prior: unknown prior 'nope'", "coin_mixture")),
    "unknown source prior": Case(S("scenarios.q.prior=nope"), ("scenarios.q: unknown prior 'nope'",)),
    "unknown prior parameter": Case(S("prior.params={thetaz=[0.5]}"), ("prior 'coin_mixture' takes no parameter 'thetaz'", "thetas")),
    "weights that do not sum to one": Case(S("prior.params={thetas=[0.2, 0.8], weights=[0.5, 0.7]}"), ("prior:", "weights")),
    "unknown profile": Case(("--profile", "huge"), ("profile 'huge' is not in coin_mixture.toml", "tiny")),
    "a --set without a value": Case(("--set", "evaluation.length"), ("KEY=VALUE",)),
    "a --set below a value": Case(S("evaluation.length.x=1"), ("length is a value, not a table",)),
    "no scenarios": Case(S("scenarios={}"), ("no scenarios",)),
    "a NaN parameter": Case(S("prior.params={thetas=[nan, 0.5]}"), ("config key prior.params.thetas.0: nan is not a finite number",)),
    "an infinite count": Case(S("evaluation.bootstrap_resamples=inf"), ("evaluation.bootstrap_resamples: inf is not a finite number",)),
    "a y-grid upside down": Case(S("evaluation.y_grid={low=1.0, high=0.0}"), ("evaluation.y_grid.high", "must exceed low")),
    "a one-point y-grid": Case(S("evaluation.num_y_grid=1"), ("evaluation.num_y_grid", "0 (no y-grid) or at least 2")),
    "a seed beyond 64 bits": Case(S("evaluation.seed=1180591620717411303424"), ("config key evaluation.seed", "less than or equal to")),
    "a negative seed": Case(S("evaluation.seed=-1"), ("config key evaluation.seed", "greater than or equal to 0")),
    "a training seed beyond 64 bits": Case(S("learner.training.seed=1180591620717411303424"), ("learner: train.seed must lie in 0..",)),
    "seeds twice": Case(S('learners.x={architecture="rnn", seeds=[0, 0]}'), ("learners.x.seeds", "distinct")),
    "no seeds": Case(S('learners.x={architecture="rnn", seeds=[]}'), ("learners.x.seeds", "non-empty")),
    "a learners key typo": Case(S('learners.x={architecture="rnn", seedz=[0]}'), ("learners.x.seedz: is not a known key", "seeds")),
    "no torch threads": Case(S("torch_threads=0"), ("torch_threads", "greater than 0")),
    "a prior kind that does not exist": Case(S('prior.kind="images"'), ("prior.kind", "'tokens'")),
    # ---------------------------------------------------------------- files and folders
    "a config file that does not exist": Case(("--config", "{tmp}/nope.toml"), ("does not exist; built-in configs:", "coin_mixture")),
    "a config that is a folder": Case(("--config", "{tmp}"), ("is a folder; name a TOML file",)),
    "a config that is not TOML": Case(("--config", "{tmp}/bad.toml"), ("bad.toml is not valid TOML",), files={"bad.toml": "[prior\nname = 1"}),
    "an output that is a file": Case(("--out", "{tmp}/results.txt"), ("results.txt is a file; name a folder",), files={"results.txt": "keep"}),
    "an output below a file": Case(("--out", "{tmp}/results.txt/run"), ("results.txt is a file, so no folder can be made below it",), files={"results.txt": "keep"}),
    "an output that cannot be written": Case(("--out", "/sys/metabayes-results"), ("cannot write into /sys", "choose another --out")),
    # ---------------------------------------------------------------- a user's own prior
    "a prior file that does not exist": Case(S('prior.name="{tmp}/missing.py:model"', "prior.params={}"), ("prior file", "missing.py does not exist")),
    "a prior file that raises on import": Case(**user("raise RuntimeError('broken on purpose')\n"), fragments=("importing", "RuntimeError: broken on purpose")),
    "a prior file that exits on import": Case(**user("import sys\nsys.exit(3)\n"), fragments=("importing", "SystemExit: 3")),
    "a prior file that interrupts its import": Case(**user("raise KeyboardInterrupt\n"), fragments=("importing", "KeyboardInterrupt")),
    "a prior file with a syntax error": Case(**user("def model(:\n"), fragments=("importing", "SyntaxError")),
    "a prior file without a model": Case(**user("x = 1\n", name="user.py"), fragments=("registers 0 priors and defines no `model`",)),
    "a prior name the file lacks": Case(**user(BARE_MODEL, name="user.py:mdl"), fragments=("has no attribute 'mdl'",)),
    "a bare model without its kind": Case(S('prior.name="{tmp}/user.py:model"', "prior.params={}"), ("is a bare model: give its kind",), files={"user.py": BARE_MODEL}),
    "a bare model given parameters": Case(S('prior.name="{tmp}/user.py:model"', 'prior.kind="tokens"', "prior.params={a=1}"), ("is a bare model and takes no parameters",), files={"user.py": BARE_MODEL}),
    "a model without the y keyword": Case(**user("def model(length):\n    pass\n"), fragments=("does not accept the keyword 'y'",)),
    "a model without a y site": Case(**user("import numpyro, numpyro.distributions as dist\n\ndef model(length, y=None):\n    numpyro.sample('z', dist.Normal(0, 1))\n"), fragments=("no sample site 'y'",)),
    "a y outside the position plate": Case(**user("import numpyro, numpyro.distributions as dist\n\ndef model(length, y=None):\n    numpyro.sample('y', dist.Bernoulli(0.5), obs=y)\n"), fragments=("site 'y' is not inside numpyro.plate('position', length)",)),
    "a real y declared as tokens": Case(**user("import numpyro, numpyro.distributions as dist\n\ndef model(length, y=None):\n    with numpyro.plate('position', length):\n        numpyro.sample('y', dist.Normal(0, 1), obs=y)\n"), fragments=("a tokens prior needs `outcomes=` labels or a 'y' distribution with finite support",)),
    "a real y declared as tokens, with labels": Case(**user("import numpyro, numpyro.distributions as dist\n\ndef model(length, y=None):\n    with numpyro.plate('position', length):\n        numpyro.sample('y', dist.Normal(0, 1), obs=y)\n", *S('prior.outcomes=["a", "b"]')), fragments=("kind='tokens' needs integer tokens",)),
    "invalid distribution parameters": Case(**user("import jax.numpy as jnp, numpyro, numpyro.distributions as dist\n\ndef model(length, y=None):\n    c = numpyro.sample('c', dist.Categorical(probs=jnp.array([0.5, 0.5])))\n    p = jnp.array([0.2, jnp.nan])[c]\n    with numpyro.plate('position', length):\n        numpyro.sample('y', dist.Categorical(probs=jnp.stack([1 - p, p])), obs=y)\n"), fragments=("invalid probs parameter", "user.py:7", "numpyro.sample('y'")),
    "outcome labels twice": Case(S('prior.name="{tmp}/user.py:model"', 'prior.kind="tokens"', "prior.params={}", 'prior.outcomes=["H", "H"]', 'evaluation.predictors=["bayes"]'), ("outcome labels must be distinct",), files={"user.py": BARE_MODEL}),
    "outcome labels of another count": Case(S('prior.name="{tmp}/user.py:model"', 'prior.kind="tokens"', "prior.params={}", 'prior.outcomes=["H", "T", "E"]', 'evaluation.predictors=["bayes"]'), ("declares 3 outcome labels",), files={"user.py": BARE_MODEL}),
    # ---------------------------------------------------------------- scenarios and prompts
    "a prompt with a non-outcome label": Case(S('scenarios.extra={kind="prompts", prompts=["🌈x"]}'), ("scenarios.extra", "'x'", "not an outcome")),
    "an empty prompt list": Case(S('scenarios.extra={kind="prompts", prompts=[]}'), ("scenarios.extra", "empty prompt list")),
    "a prompt token out of range": Case(S('scenarios.extra={kind="prompts", prompts=[[0, 5]]}'), ("scenarios.extra", "token outside 0..1")),
    "a prompt longer than the context": Case(S(f'scenarios.long={{kind="prompts", prompts=["{"🌈" * 16}"]}}'), ("scenarios.long: prompt", "(16 tokens", "context holds 16 positions")),
    "prompts for a regression prior": Case(LINEAR + S('scenarios.p={kind="prompts", prompts=[[0]]}'), ("scenarios.p: prompt scenarios need a tokens prior",)),
    "two scenarios of one name": Case(S('scenarios.q.grid={thetas=[[0.5], [0.5]]}'), ("scenario names must be unique",)),
    # ---------------------------------------------------------------- lengths, positions, memory
    "a length beyond the learner's context": Case(S("evaluation.length=1e9"), ("evaluation.length = 1000000000 is longer than the context of learner 'learner' (16", "learner.training.length >= 1000000000")),
    "a length beyond the context": Case(S("evaluation.length=32"), ("evaluation.length = 32", "context of learner 'learner' (16")),
    "a length beyond a [learners] learner's context": Case(S('learners.lstm={architecture="rnn", seeds=[0], training={length=8}}'), ("context of learner 'lstm-s0' (8", "learners.lstm.training.length >= 16")),
    "episodes that cannot fit in memory": Case(S("evaluation.num_episodes=1e9"), ("the comparison Dataset would take about", "TiB", "lower evaluation.num_episodes")),
    "a bootstrap that cannot fit in memory": Case(S("evaluation.bootstrap_resamples=1e12"), ("the bootstrap", "lower evaluation.bootstrap_resamples")),
    "a training batch that cannot fit in memory": Case(S("learner.training.batch_size=1e10"), ("a training batch of learner 'learner'", "learner.training.batch_size")),
    "a y-grid that cannot fit in memory": Case(LINEAR + S("evaluation.num_y_grid=1e9"), ("the comparison Dataset", "evaluation.num_y_grid")),
    "report positions beyond the length": Case(S("evaluation.report_positions=[1, 8, 64]"), ("evaluation.report_positions [64] lie outside 1..16",)),
    "report position zero": Case(S("evaluation.report_positions=[0, 4]"), ("evaluation.report_positions [0]",)),
    "MCMC positions beyond the length": Case(S('evaluation.predictors=["bayes", "bayes_mcmc"]', "evaluation.predictor_options.bayes_mcmc={positions=[2, 40]}"), ("evaluation.predictor_options.bayes_mcmc.positions [40] lie outside 1..16",)),
    # ---------------------------------------------------------------- predictors and their options
    "a regression baseline for tokens": Case(S('evaluation.predictors=["bayes", "ridge"]'), ("'ridge' predicts regression data, but prior 'coin_mixture' is a tokens prior", "its baselines are frequency")),
    "a token baseline for regression": Case(LINEAR + S('evaluation.predictors=["bayes", "frequency"]'), ("'frequency' predicts tokens data", "ridge, least_squares, knn, averaging")),
    "the best mixture for regression": Case(LINEAR + S('evaluation.predictors=["bayes", "best_mixture"]'), ("'best_mixture' predicts tokens data",)),
    "options for a predictor that does not run": Case(S("evaluation.predictor_options.knn={k=3}"), ("predictor_options.knn: predictor 'knn' is not in evaluation.predictors",)),
    "options for a predictor that takes none": Case(S("evaluation.predictor_options.bayes={max_support=10}"), ("predictor_options.bayes: predictor 'bayes' takes no options",)),
    "options for the learner": Case(S("evaluation.predictor_options.learner={batch_size=8}"), ("predictor_options.learner: predictor 'learner' takes no options",)),
    "options for a predictor nobody knows": Case(S("evaluation.predictor_options.gpt={a=1}"), ("predictor_options.gpt: predictor 'gpt' is not in evaluation.predictors",)),
    "an option the predictor does not take": Case(S("evaluation.predictor_options.frequency={beta=2.0}"), ("predictor_options.frequency:", "beta")),
    "an option of the wrong type": Case(S('evaluation.predictor_options.frequency={alpha="one"}'), ("predictor_options.frequency:",)),
    "a pseudo-count of zero": Case(S("evaluation.predictor_options.frequency={alpha=0.0}"), ("predictor_options.frequency: alpha must be positive",)),
    "a k of zero": Case(LINEAR + S("evaluation.predictor_options.knn={k=0}"), ("predictor_options.knn: knn needs a positive integer k",)),
    "a ridge without noise": Case(LINEAR + S("evaluation.predictor_options.ridge={sigma=0.0}"), ("predictor_options.ridge: ridge needs tau > 0 and sigma > 0",)),
    "an unknown MCMC setting": Case(S('evaluation.predictors=["bayes", "bayes_mcmc"]', "evaluation.predictor_options.bayes_mcmc={num_chain=4}"), ("predictor_options.bayes_mcmc: unknown MCMC setting(s) num_chain", "num_chains")),
    "an MCMC setting of the wrong type": Case(S('evaluation.predictors=["bayes", "bayes_mcmc"]', 'evaluation.predictor_options.bayes_mcmc={num_samples="many"}'), ("predictor_options.bayes_mcmc: num_samples: Input should be a valid integer",)),
    "too few chains": Case(S('evaluation.predictors=["bayes", "bayes_mcmc"]', "evaluation.predictor_options.bayes_mcmc={num_chains=2}"), ("at least 4 chains",)),
    "a negative MCMC seed": Case(S('evaluation.predictors=["bayes", "bayes_mcmc"]', "evaluation.predictor_options.bayes_mcmc={seed=-3}"), ("predictor_options.bayes_mcmc: seed must be an integer in 0..2^63 - 1",)),
    # ---------------------------------------------------------------- learners
    "a regression architecture for tokens": Case(S('learner.architecture="pfn"'), ("learner: prior 'coin_mixture' is a tokens prior, but PFNConfig is a regression architecture", 'architecture = "transformer" or "rnn"')),
    "a token architecture for regression": Case(LINEAR + S('learner.architecture="transformer"'), ("but TransformerConfig is a tokens architecture", 'architecture = "pfn"')),
    "an unknown architecture": Case(S('learner.architecture="mamba"'), ("learner: unknown architecture 'mamba'", "pfn, rnn, transformer")),
    "an unknown model setting": Case(S("learner.model.n_layers=2"), ("learner: unknown model setting(s) n_layers", "n_layer")),
    "a width that heads do not divide": Case(S("learner.model.n_embd=15"), ("model.n_embd (15) must be a multiple of model.n_head (2)",)),
    "rotary positions on an odd head size": Case(S('learner.model={n_layer=1, n_head=2, n_embd=6, pos_encoding="rotary"}'), ("rotary positions turn channel pairs",)),
    "an unknown positional encoding": Case(S('learner.model.pos_encoding="sinusoidal"'), ("learner:", "pos_encoding")),
    "a block size shorter than the training length": Case(S("learner.model.block_size=8"), ("learner: train.length (16) is longer than model.block_size (8)",)),
    "a vocabulary of another size": Case(S("learner.model.vocab_size=3"), ("model.vocab_size is 3 but prior 'coin_mixture' has 2 outcomes",)),
    "an unknown training setting": Case(S("learner.training.stepz=3"), ("learner: unknown train setting(s) stepz", "steps")),
    "steps beyond any budget": Case(S("learner.training.steps=1e9"), ("train.steps = 1000000000 is above the 100,000,000",)),
    "no steps": Case(S("learner.training.steps=0"), ("train.steps must be a positive integer",)),
    "a learning rate of zero": Case(S("learner.training.lr=0.0"), ("train.lr must be > 0",)),
    "a NaN weight decay": Case(S("learner.training.weight_decay=nan"), ("config key learner.training.weight_decay: nan is not a finite number",)),
    "an infinite gradient clip": Case(S("learner.training.grad_clip=inf"), ("config key learner.training.grad_clip: inf is not a finite number",)),
    "a negative weight decay": Case(S("learner.training.weight_decay=-0.1"), ("train.weight_decay and train.grad_clip must be >= 0",)),
    "a final learning rate above the peak": Case(S("learner.training.min_lr_ratio=2.0"), ("train.min_lr_ratio must lie in [0, 1]",)),
    "shards that do not divide the batch": Case(S("learner.training.num_shards=3"), ("train.num_shards (3) must be a positive divisor of train.batch_size (16)",)),
    "a GPU that is not there": Case(S('learner.training.device="cuda"'), ("learner: train.device is 'cuda' but no CUDA device is available",)),
    "curriculum stages out of order": Case(S("learner.curriculum=[{until=5}, {until=3}]"), ("learner.curriculum", "increasing `until`, got [5, 3]")),
    "a curriculum key typo": Case(S("learner.curriculum=[{until=5, param={}}]"), ("learner.curriculum.0.param: is not a known key", "until, prior, params")),
    "a curriculum past the training steps": Case(S("learner.curriculum=[{until=500}]"), ("learner: curriculum stage 0: until = 500", "train.steps = 30")),
    "a curriculum of an unknown prior": Case(S("learner.curriculum=[{until=3, prior='no_such_prior'}]"), ("learner.curriculum[0]: unknown prior 'no_such_prior'",)),
    "a curriculum of other data": Case(S("learner.curriculum=[{until=3, prior='linear_regression', params={}}]"), ("curriculum stage 0: prior 'linear_regression'", "does not produce the data")),
    # ---------------------------------------------------------------- analyses
    "an old [anbn] table": Case(S("anbn.max_prompt_length=3"), ("config key anbn: the [anbn] table is now [analysis.anbn]",)),
    "an old [completions] table": Case(S("completions.num=3"), ("config key completions: the [completions] table is now [analysis.completions]",)),
    "an unknown analysis": Case(S("analysis.nope={}"), ("config key analysis.nope: unknown analysis 'nope'; known analyses:", "anbn")),
    "an analysis setting typo": Case(S("analysis.completions.nums=3"), ("config key analysis.completions.nums: is not a known key", "num")),
    "an analysis setting out of range": Case(S("analysis.completions.num=0"), ("config key analysis.completions.num", "greater than 0")),
    "a NaN temperature": Case(S("analysis.completions.temperature=nan"), ("analysis.completions.temperature: nan is not a finite number",)),
    "completions of a regression run": Case(LINEAR + S("analysis.completions={}"), ("analysis.completions: completions continue token prompts",)),
    "completions without a learner": Case(S('evaluation.predictors=["bayes"]', "analysis.completions={}"), ("analysis.completions: there is no learner to sample completions from",)),
    "the aⁿbⁿ analysis on another prior": Case(S("analysis.anbn={}"), ("analysis.anbn: the aⁿbⁿ analysis needs the anbn prior",)),
    "the aⁿbⁿ analysis with one learner": Case(ANBN + S('learners={lstm={architecture="rnn", model={n_embd=8}, seeds=[0]}}'), ("analysis.anbn: the aⁿbⁿ analysis compares learners: it needs at least two",)),
    "an aⁿbⁿ prompt length of zero": Case(ANBN + S("analysis.anbn.max_prompt_length=0"), ("config key analysis.anbn.max_prompt_length", "greater than 0")),
    # ---------------------------------------------------------------- checkpoints found in the output folder
    "a checkpoint of another configuration": Case(S("learner.training.lr=0.001"), ("run/learner holds a checkpoint of another configuration", "train.lr: checkpoint 0.003, requested 0.001"), checkpoint="keep"),
    "a checkpoint JSON that is not JSON": Case((), ("is corrupt (JSONDecodeError",), checkpoint="text:{not json"),
    "a checkpoint JSON without files": Case((), ("step-000030.json: files: Field required", "delete it"), checkpoint="drop:files"),
    "a checkpoint step that is text": Case((), ("step-000030.json: step: Input should be a valid integer",), checkpoint='set:step="30"'),
    "a checkpoint loss log that is malformed": Case((), ("step-000030.json: loss_log.0",), checkpoint="set:loss_log=[[1]]"),
    "a checkpoint weights path outside its folder": Case((), ("files.weights", "'../../etc/passwd' is not a checkpoint file of this folder"), checkpoint='set:files={"weights": "../../etc/passwd"}'),
    "a checkpoint of another tool": Case((), ("is not a metabayes learner checkpoint",), checkpoint='set:format="other/1"'),
}
# What the real command line must show too (each interpreter start costs seconds: a few only).
SUBPROCESS = ["episodes that cannot fit in memory", "a prior file that exits on import"]


def test_the_suite_holds_at_least_90_distinct_bad_inputs():
    assert len(CASES) >= 90
    assert len({(c.args, tuple(sorted(c.files.items())), c.checkpoint) for c in CASES.values()}) == len(CASES)


@pytest.fixture(scope="module")
def trained_learner(tmp_path_factory):
    """The tiny profile's learner, trained once: the checkpoint cases copy and damage it."""
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main([*TINY_ARGS, "--set", "evaluation.num_episodes=2", "--set", 'evaluation.predictors=["learner"]',
                 "--out", str(out)]) == 0
    return out / "learner"


def damage(learner, case: Case, tmp):
    target = tmp / "run" / "learner"
    shutil.copytree(learner, target)
    path = checkpoint_paths(target, read_meta(target)["step"])["json"]
    action, _, spec = case.checkpoint.partition(":")
    if action == "text":
        path.write_text(spec)
    elif action in ("drop", "set"):
        meta = json.loads(path.read_text())
        if action == "drop":
            del meta[spec]
        else:
            key, _, value = spec.partition("=")
            meta[key] = json.loads(value)
        path.write_text(json.dumps(meta))


def arguments(case: Case, tmp) -> list[str]:
    args = [a.replace("{tmp}", str(tmp)) for a in case.args]
    config = []
    if "--config" in args:
        i = args.index("--config")
        config, args = args[i:i + 2], args[:i] + args[i + 2:]
    if "--out" not in args:
        args += ["--out", str(tmp / "run")]
    return [*config, *TINY_ARGS, *args]


def snapshot(tmp):
    return sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if "__pycache__" not in p.parts)


def check_one_line(code: int, out: str, err: str, fragments) -> None:
    assert "Traceback" not in err, err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert out == "", out


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_line_with_exit_code_2_and_leaves_nothing(name, tmp_path, capsys, request):
    case = CASES[name]
    for file, text in case.files.items():
        (tmp_path / file).write_text(text)
    if case.checkpoint:
        damage(request.getfixturevalue("trained_learner"), case, tmp_path)
        capsys.readouterr()  # what training the learner printed is not this case's output
    before = snapshot(tmp_path)
    code = main(arguments(case, tmp_path))
    captured = capsys.readouterr()
    check_one_line(code, captured.out, captured.err, [f.replace("{tmp}", str(tmp_path)) for f in case.fragments])
    assert snapshot(tmp_path) == before, "a run refused before it starts leaves no files"


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """The `SUBPROCESS` cases through ``python comparisons/run.py``, started together."""
    procs = {}
    for name in SUBPROCESS:
        tmp = tmp_path_factory.mktemp("cli")
        for file, text in CASES[name].files.items():
            (tmp / file).write_text(text)
        procs[name] = subprocess.Popen([PYTHON, str(RUN_PY), *arguments(CASES[name], tmp)], cwd=REPO,
                                       env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return {name: (proc.wait(timeout=180), *proc.communicate()) for name, proc in procs.items()}


@pytest.mark.parametrize("name", SUBPROCESS)
def test_bad_input_through_the_command_line(cli_runs, name):
    code, out, err = cli_runs[name]
    check_one_line(code, out, err, CASES[name].fragments)


def test_a_missing_out_permission_is_named(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("comparisons.plan.os.access", lambda path, mode: False)
    code = main([*TINY_ARGS, "--out", str(tmp_path / "run")])
    captured = capsys.readouterr()
    check_one_line(code, captured.out, captured.err, [f"cannot write into {tmp_path}", "no write permission"])
