"""The task-diversity analysis: its numbers against plain numpy, its sweep reading on a constructed sweep, and a
tiny sweep of the urn setting end to end (cells in-process, combined as ``comparisons/sweep.py`` would)."""

from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr
from scipy.spatial.distance import jensenshannon

from conftest import run_sweep_in_process
from comparisons.analyses.task_diversity import TaskDiversity, first_lasting, mixture_fit, pooled_r
from toolkit.dims import EPISODE, FEATURE, OUTCOME, POSITION, PREDICTOR, SCENARIO, STEP
from toolkit.errors import ConfigError
from toolkit.kinds import REGRESSION, TOKENS
from toolkit.results import open_results

MEM, GEN, LEARNER = "bayes", "dirichlet", "learner"
SCENARIOS = ["in_distribution", "fresh_tasks"]


def fake_run(kind, generalising):
    plan = SimpleNamespace(kind=kind, predictor_names=[MEM, generalising, LEARNER], learners={LEARNER: None},
                           scenarios=[SimpleNamespace(name=s) for s in SCENARIOS])
    return SimpleNamespace(plan=plan)


# --------------------------------------------------------------------------- numpy pieces


def test_mixture_fit_is_least_squares_in_0_1_with_pearson_r(rng):
    a, b = rng.random(500), rng.random(500)
    h = 0.3 * a + 0.7 * b + 0.05 * rng.standard_normal(500)
    w, r, moments = mixture_fit(h, a, b)
    want = np.linalg.lstsq((a - b)[:, None], h - b, rcond=None)[0][0]
    assert w == pytest.approx(want, abs=1e-12) and abs(w - 0.3) < 0.05
    assert r == pytest.approx(np.corrcoef(h, w * a + (1 - w) * b)[0, 1], abs=1e-12)
    assert moments[0] == 500
    assert mixture_fit(1.5 * a - 0.5 * b, a, b)[0] == 1.0  # beyond the memorising end: clipped
    assert mixture_fit(-0.2 * a + 1.2 * b, a, b)[0] == 0.0
    assert np.isnan(mixture_fit(h, a, a)[0])  # references that agree leave nothing to weigh
    with_nan = h.copy()
    with_nan[:10] = np.nan
    assert mixture_fit(with_nan, a, b)[2][0] == 490  # undefined cells are left out


def test_pooled_r_of_summed_moments_is_r_over_every_prediction(rng):
    parts = [(rng.random(200), rng.random(200), rng.random(200)) for _ in range(3)]
    fits = [mixture_fit(*p) for p in parts]
    h = np.concatenate([p[0] for p in parts])
    f = np.concatenate([w * p[1] + (1 - w) * p[2] for (w, _, _), p in zip(fits, parts)])
    assert float(pooled_r(np.sum([m for _, _, m in fits], axis=0))) == pytest.approx(np.corrcoef(h, f)[0, 1], abs=1e-10)


@pytest.mark.parametrize("flags, want", [([0, 0, 1, 1], 30), ([1, 0, 1, 1], 30), ([1, 1, 1, 1], 10),
                                         ([1, 1, 1, 0], np.nan), ([0, 0, 0, 0], np.nan)])
def test_first_lasting_is_the_step_from_which_on_the_flag_holds(flags, want):
    got = first_lasting(np.array(flags, bool), np.array([10, 20, 30, 40]))
    assert (np.isnan(got) and np.isnan(want)) or got == want


# --------------------------------------------------------------------------- one run


def token_dataset(rng, episodes=30, positions=6, outcomes=3):
    def normalised(shape):
        p = rng.random(shape) + 0.05
        return p / p.sum(-1, keepdims=True)

    mem, gen = normalised((2, episodes, positions, outcomes)), normalised((2, episodes, positions, outcomes))
    learner = 0.25 * mem + 0.75 * gen
    probs = np.stack([mem, gen, learner])
    dims = (PREDICTOR, SCENARIO, EPISODE, POSITION, OUTCOME)
    ds = xr.Dataset({"log_prob": (dims, np.log(probs)),
                     "y": ((SCENARIO, EPISODE, POSITION), rng.integers(0, outcomes, (2, episodes, positions))),
                     "bayes_defined": ((SCENARIO, EPISODE, POSITION), np.ones((2, episodes, positions), bool))},
                    coords={PREDICTOR: [MEM, GEN, LEARNER], SCENARIO: SCENARIOS, POSITION: np.arange(1, positions + 1)})
    return ds, probs


def test_token_metrics_against_scipy(rng):
    ds, probs = token_dataset(rng)
    out = TaskDiversity().metrics(ds, xr.Dataset(), fake_run(TOKENS, GEN))
    js = lambda p, q: jensenshannon(p, q, axis=-1)  # noqa: E731 - natural log: sqrt(JS) in nats
    for name, ref in (("distance_to_memorising", 0), ("distance_to_generalising", 1)):
        want = js(probs, probs[ref][None]).mean(axis=2)  # (predictor, scenario, position)
        np.testing.assert_allclose(out[name].transpose(PREDICTOR, SCENARIO, POSITION).values, want, atol=1e-7)
    np.testing.assert_allclose(out["references_distance"].values, js(probs[0], probs[1]).mean(axis=1), atol=1e-7)
    rd = out["task_relative_distance"].sel({PREDICTOR: [MEM, GEN]})
    np.testing.assert_allclose(rd.sel({PREDICTOR: MEM}), -1.0, atol=1e-6)
    np.testing.assert_allclose(rd.sel({PREDICTOR: GEN}), 1.0, atol=1e-6)
    # the learner is the mixture 0.25 mem + 0.75 gen of probabilities: the fit finds it exactly
    np.testing.assert_allclose(out["mixture_weight"].values, [1.0, 0.0, 0.25], atol=1e-12)
    np.testing.assert_allclose(out["mixture_fit_r"].values, 1.0, atol=1e-12)
    assert out["mixture_fit_moments"].dims == (PREDICTOR, "fit_moment")
    assert float(out["mixture_fit_moments"].sel({PREDICTOR: LEARNER, "fit_moment": "n"})) == probs[2].size


def test_regression_metrics_against_numpy(rng):
    episodes, positions, d = 40, 5, 3
    mem, gen = rng.standard_normal((2, episodes, positions)), rng.standard_normal((2, episodes, positions))
    means = np.stack([mem, gen, 0.6 * mem + 0.4 * gen])
    ds = xr.Dataset({"mean": ((PREDICTOR, SCENARIO, EPISODE, POSITION), means),
                     "y": ((SCENARIO, EPISODE, POSITION), rng.standard_normal((2, episodes, positions))),
                     "x": ((SCENARIO, EPISODE, POSITION, FEATURE), rng.standard_normal((2, episodes, positions, d)))},
                    coords={PREDICTOR: [MEM, "ridge", LEARNER], SCENARIO: SCENARIOS, POSITION: np.arange(1, positions + 1)})
    out = TaskDiversity().metrics(ds, xr.Dataset(), fake_run(REGRESSION, "ridge"))
    rms = np.sqrt(((mem - gen) ** 2).mean(axis=1) / d)  # (scenario, position)
    np.testing.assert_allclose(out["references_distance"].values, rms, rtol=1e-12)
    learner = out.sel({PREDICTOR: LEARNER})
    np.testing.assert_allclose(learner["distance_to_memorising"].values, 0.4 * rms, rtol=1e-12)
    np.testing.assert_allclose(learner["distance_to_generalising"].values, 0.6 * rms, rtol=1e-12)
    np.testing.assert_allclose(learner["task_relative_distance"].values, -0.2, atol=1e-12)
    np.testing.assert_allclose(learner["task_relative_distance_mean"].values, -0.2, atol=1e-12)
    assert float(learner["mixture_weight"]) == pytest.approx(0.6, abs=1e-12)


def test_check_names_what_is_missing():
    analysis = TaskDiversity()
    plan = fake_run(TOKENS, GEN).plan
    analysis.check(plan)
    with pytest.raises(ConfigError, match="needs dirichlet in evaluation.predictors"):
        analysis.check(SimpleNamespace(**{**vars(plan), "predictor_names": [MEM, LEARNER]}))
    with pytest.raises(ConfigError, match="analysis.task_diversity.fresh: no scenario 'fresh_tasks'"):
        analysis.check(SimpleNamespace(**{**vars(plan), "scenarios": plan.scenarios[:1]}))


# --------------------------------------------------------------------------- the sweep, constructed


def constructed_sweep(tmp_path):
    """A sweep.nc-like Dataset over M x 2 seeds x 3 steps with known relative distances and weights."""
    sizes, seeds, steps = [1, 4, 16, 64], [0, 1], [10, 100, 1000]
    # final relative distance on fresh tasks, (M, seed): seed 0 generalises from M = 16, seed 1 from M = 4
    final = np.array([[-0.9, -0.8], [-0.5, 0.1], [0.2, 0.4], [0.7, 0.8]])
    shape = (len(sizes), len(seeds), len(steps), 3, 2)  # (M, seed, step, predictor, scenario)
    d_gen = np.ones(shape)
    d_mem = np.ones(shape)
    d_mem[:, :, -1, 2, 1] = (1 + final) / (1 - final)  # (d_mem - d_gen) / d_ab with d_ab = d_mem + d_gen here
    d_ab = d_mem + d_gen
    rd = (d_mem - d_gen) / d_ab
    w = np.zeros((len(sizes), len(seeds), len(steps), 3))
    w[0, :, :, 2] = [0.2, 0.9, 1.0]  # M = 1 memorises from step 100 on
    w[1, 0, :, 2] = [0.6, 0.4, 0.7]  # M = 4, seed 0: from step 1000 on
    moments = np.zeros((len(sizes), len(seeds), len(steps), 3, 6))
    moments[..., :] = [10, 5, 5, 3, 3, 3]  # every fit: r = (10*3 - 25) / (10*3 - 25) = 1
    dims = ("pool_size", "seed", STEP, PREDICTOR, SCENARIO)
    ds = xr.Dataset({"distance_to_memorising_mean": (dims, d_mem), "distance_to_generalising_mean": (dims, d_gen),
                     "references_distance_mean": (dims, d_ab), "task_relative_distance_mean": (dims, rd),
                     "mixture_weight": (dims[:-1], w), "mixture_fit_r": (dims[:-1], np.ones(w.shape)),
                     "mixture_fit_moments": (dims[:-1] + ("fit_moment",), moments)},
                    coords={"pool_size": sizes, "seed": seeds, STEP: steps, PREDICTOR: [MEM, GEN, LEARNER],
                            SCENARIO: SCENARIOS})
    ds["references_distance_mean"] = ds["references_distance_mean"].isel({PREDICTOR: 0}, drop=True)
    sweep = SimpleNamespace(dims=["pool_size", "seed"], out=tmp_path)
    return ds, sweep


def test_sweep_reads_m_star_transition_steps_and_pooled_r(tmp_path):
    ds, sweep = constructed_sweep(tmp_path)
    analysis = TaskDiversity()
    out = analysis.sweep(ds, sweep)
    assert out["transition_pool_size"].dims == ("seed",)
    np.testing.assert_array_equal(out["transition_pool_size"].values, [16, 4])
    assert float(out["transition_pool_size_mean"]) == 16  # mean over seeds at M = 4: d_mem (1/3 + 11/9) / 2 < d_gen = 1
    step = out["transition_step"].transpose("pool_size", "seed").values
    np.testing.assert_array_equal(step[0], [100, 100])
    assert step[1, 0] == 1000 and np.isnan(step[1, 1]) and np.isnan(step[2:]).all()
    assert float(out["mixture_fit_r_pooled"]) == pytest.approx(1.0)
    figures = analysis.sweep_figures(out, sweep, tmp_path / "figures")
    assert len(figures) == 3
    for path in figures.values():
        assert (tmp_path / path).read_bytes()[:4] == b"\x89PNG"
    report = analysis.sweep_report_section(out, sweep)
    assert "## Task diversity: memorising or generalising, against M (fresh_tasks" in report
    assert "| 4 |" in report and "1000, –" in report
    answer = " ".join(analysis.sweep_answer(out, sweep))
    assert "**M*** " in answer and "16 from the mean distances; per seed: 16, 4" in answer


def test_a_sweep_without_the_m_axis_is_left_alone(tmp_path):
    ds, sweep = constructed_sweep(tmp_path)
    sweep = SimpleNamespace(dims=["seed"], out=tmp_path)
    analysis = TaskDiversity()
    assert analysis.sweep(ds, sweep) is ds and analysis.sweep_figures(ds, sweep, tmp_path) == {}
    assert "no `pool_size` axis" in analysis.sweep_report_section(ds, sweep)


# --------------------------------------------------------------------------- a tiny sweep, end to end

TINY = """
[base]
config = "comparisons/configs/task_diversity_urns.toml"
profile = "tiny"

[sweep]
"prior.params.pool_size" = [1, 16]
"learner.training.seed" = [0]
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return run_sweep_in_process(tmp_path_factory.mktemp("task_diversity"), TINY)


def test_tiny_sweep_has_every_variable_on_its_dims(tiny):
    sweep, ds = tiny
    assert ds["task_relative_distance"].dims == ("pool_size", "seed", STEP, PREDICTOR, SCENARIO, POSITION)
    assert ds["references_distance"].dims == ("pool_size", "seed", STEP, SCENARIO, POSITION)
    assert ds["mixture_weight"].dims == ("pool_size", "seed", STEP, PREDICTOR)
    assert list(ds[STEP].values) == [5, 10, 20]
    assert ds["transition_pool_size"].dims == ("seed",) and "mixture_fit_r_pooled" in ds
    # the references placed on their own ends, at every checkpoint of every cell
    np.testing.assert_allclose(ds["mixture_weight"].sel({PREDICTOR: [MEM, GEN]}).values, [1.0, 0.0] * np.ones((2, 1, 3, 2)))
    np.testing.assert_allclose(ds["task_relative_distance_mean"].sel({PREDICTOR: MEM}), -1.0, atol=1e-6)
    report = (sweep.out / "report.md").read_text(encoding="utf-8")
    assert "## Task diversity: memorising or generalising" in report and "**M***" in report
    for png in ("task_diversity_relative_distance.png", "task_diversity_distances.png",
                "task_diversity_mixture_weight.png"):
        assert (sweep.out / "figures" / png).read_bytes()[:4] == b"\x89PNG"


def test_tiny_sweep_cells_hold_their_own_runs_numbers(tiny):
    sweep, ds = tiny
    for cell in sweep.cells:
        own = open_results(cell.folder)["metrics"].to_dataset()
        got = ds.isel(dict(zip(sweep.dims, cell.index)))
        for name in ("mixture_weight", "mixture_fit_r", "task_relative_distance_mean"):
            np.testing.assert_array_equal(got[name].values, own[name].values)
