"""Shared test setup: the CPU for JAX and torch, explicit seeds, one tiny end-to-end run per session.

The CPU is forced before anything imports JAX or torch: exact engines are
checked to 1e-9 in float64, and results must not depend on which machine runs
the suite. ``METABAYES_TEST_CUDA=1`` leaves CUDA visible to torch so that tests
marked ``requires_cuda`` run (JAX stays on the CPU either way); without it,
they are skipped.
"""

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# Before any import of jax or torch, here or in a test module.
USE_CUDA = os.environ.get("METABAYES_TEST_CUDA") == "1"
if not USE_CUDA:
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

REPO = Path(__file__).resolve().parent.parent
# pytest puts this folder (tests/) on sys.path to import this file; its subfolders tests/toolkit,
# tests/priors, ... would then shadow the real packages as empty namespace packages.
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

PYTHON = sys.executable
RUN_PY = REPO / "comparisons" / "run.py"

# Every seed a test relies on, in one place.
EVAL_SEED = 1  # evaluation episodes of the tiny run
TRAIN_SEED = 0  # learner weights and training batches of the tiny run
NUMPY_SEED = 20240611

# The tiny end-to-end run: the config's own `tiny` profile, seeds spelled out.
TINY_OVERRIDES = (f"evaluation.seed={EVAL_SEED}", f"learner.training.seed={TRAIN_SEED}")
TINY_ARGS = ("--profile", "tiny", *(arg for item in TINY_OVERRIDES for arg in ("--set", item)), "--no-progress")


# --------------------------------------------------------------------------- devices


@lru_cache(maxsize=1)
def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


requires_cuda = pytest.mark.requires_cuda  # the marker is registered in pyproject.toml


def pytest_runtest_setup(item):
    if item.get_closest_marker("requires_cuda") and not cuda_available():
        reason = "needs a CUDA device" + ("" if USE_CUDA else " and METABAYES_TEST_CUDA=1")
        pytest.skip(reason)


def pytest_configure(config):
    """Keep JAX's compiled programs on disk (in pytest's cache folder) for every process of the suite.

    Most of the suite's time is XLA compiling the same small programs again: in each xdist worker, in each
    ``run.py`` subprocess, and in every session. The cache is keyed by the program, the compile options
    and the jax/jaxlib versions, so a hit is the same executable; results do not depend on it. Runs before
    collection, so before any test module imports JAX; subprocesses inherit it through the environment.
    Set ``JAX_COMPILATION_CACHE_DIR`` yourself to put it elsewhere.
    """
    if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
        cache = getattr(config, "cache", None)  # None under -p no:cacheprovider: no disk cache then
        if cache is not None:
            os.environ["JAX_COMPILATION_CACHE_DIR"] = str(cache.mkdir("jax-compilation-cache"))
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # default 1 s: would skip them all


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Under plain ``-n N`` send each module's tests to one worker, so a module's fixtures are built once.

    The default ``--dist load`` spreads a module over every worker, and each worker would then build the
    module's expensive fixtures (jitted engines, comparison Datasets) again. An explicit other ``--dist`` wins.
    """
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    return LoadScopeScheduling(config, log)


# --------------------------------------------------------------------------- seeds


@pytest.fixture
def rng():
    return np.random.default_rng(NUMPY_SEED)


@pytest.fixture
def key():
    import jax

    return jax.random.key(0)


# --------------------------------------------------------------------------- the CLI


def subprocess_env() -> dict:
    """The test process's environment (CPU forced) for a child `python comparisons/run.py`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


def run_cli(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    """``python comparisons/run.py ARGS`` with the venv's python, output captured as text."""
    return subprocess.run(
        [PYTHON, str(RUN_PY), *map(str, args)],
        cwd=cwd or REPO, env=subprocess_env(), capture_output=True, text=True, timeout=timeout,
    )


@dataclass(frozen=True)
class CliRun:
    out: Path
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> CliRun:
    """``python comparisons/run.py --profile tiny`` run once per session, shared by every end-to-end test.

    Under xdist the workers share one run: the first to take the lock runs it, the others read its record.
    """
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    out, record = root / "tiny_run", root / "tiny_run.json"
    with FileLock(str(root / "tiny_run.lock")):
        if not record.is_file():
            proc = run_cli(*TINY_ARGS, "--out", out)
            record.write_text(json.dumps({"returncode": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}))
    done = json.loads(record.read_text())
    run = CliRun(out, done["returncode"], done["stdout"], done["stderr"])
    assert run.returncode == 0, f"the tiny run failed:\n{run.stderr[-4000:]}"
    return run


def run_sweep_in_process(folder: Path, text: str):
    """Write the sweep file ``text`` into ``folder``, run its cells here (as a worker would) and combine them as
    ``comparisons/sweep.py`` does; returns the sweep and its ``sweep.nc`` Dataset."""
    from comparisons.run import run
    from comparisons.sweep import combine, load_sweep, write_sweep
    from toolkit.results import open_results

    (folder / "sweep.toml").write_text(text)
    sweep = load_sweep(folder / "sweep.toml", out=folder / "out")
    for cell in sweep.cells:
        run(cell.config, cell.folder, progress=False)
    write_sweep(sweep, combine(sweep), wall_time_s=0.0)
    return sweep, open_results(folder / "out")["sweep"].to_dataset()
