"""The two-coin phase-diagram analysis: its variables and dims on a tiny sweep, and its numbers against plain numpy.

The tiny sweep (two seeds x two architectures, one of them evaluated past its training length, one with
the checkpoint axis) runs its cells in-process, then combines them as ``comparisons/sweep.py`` would.
"""

import numpy as np
import pytest
import xarray as xr
from scipy.spatial.distance import jensenshannon

from conftest import run_sweep_in_process
from toolkit.dims import EPISODE, OUTCOME, PAIR, POSITION, PREDICTOR, SCENARIO, STEP
from toolkit.kinds import TOKENS
from toolkit.results import open_results
from toolkit.summaries import metrics_dataset

TINY = """
[base]
config = "comparisons/configs/coin_phase.toml"
profile = "tiny"

[sweep]
"learner.training.seed" = [0, 1]

[[sweep.zip]]
dim = { architecture = ["learned", "none"] }
"learner.model" = [{ n_layer = 1, n_head = 2, n_embd = 16 }, { n_layer = 1, n_head = 2, n_embd = 16, pos_encoding = "none", block_size = 32 }]
"learner.training.eval_steps" = [[5, 10], []]
"evaluation.length" = [16, 32]
"evaluation.report_positions" = [[1, 8, 16], [1, 8, 16, 32]]
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return run_sweep_in_process(tmp_path_factory.mktemp("coin_phase"), TINY)


def test_every_variable_has_its_dims(tiny):
    sweep, ds = tiny
    assert sweep.dims == ["seed", "architecture"] and list(ds["architecture"].values) == ["learned", "none"]
    assert ds["relative_distance"].dims == ("seed", "architecture", STEP, PREDICTOR, SCENARIO, POSITION)
    assert ds["excess_cross_entropy"].dims == ds["relative_distance"].dims
    assert ds["context_log_prior"].dims == ("seed", "architecture", STEP, SCENARIO, POSITION)
    assert list(ds[STEP].values) == [5, 10, 20]  # the budget axis: two checkpoints and the final learner
    assert ds["disagreement"].dims == (PAIR, SCENARIO, POSITION) and ds.sizes[PAIR] == 6  # 4 learners
    assert list(ds["same_architecture"].values) == [False, True, False, False, True, False]
    assert ds["disagreement_by_prior"].dims == ("pair_kind", "prior_bin")
    # the learned positions stop at the training length, the architecture without positions goes on
    final = ds["relative_distance"].isel({STEP: -1}).sel({PREDICTOR: "learner", SCENARIO: "q=0.5"})
    assert np.all(np.isnan(final.sel(architecture="learned", position=slice(17, 32))))
    assert np.isfinite(final.sel(architecture="none", position=32)).all()
    assert int(ds["training_length"].isel({STEP: -1}).max()) == 16
    report = (sweep.out / "report.md").read_text(encoding="utf-8")
    assert "## The two-coin phase diagram (q = 0.5)" in report and "**In-distribution bar**" in report
    for png in ("phase_relative_distance.png", "phase_disagreement.png", "phase_cross_entropy.png"):
        assert (sweep.out / "figures" / png).read_bytes()[:4] == b"\x89PNG"


def test_each_cells_numbers_are_those_of_its_own_run(tiny):
    sweep, ds = tiny
    for cell in sweep.cells:
        own = open_results(cell.folder)
        metrics, comparison = own["metrics"].to_dataset(), own["comparison"].to_dataset()
        at = dict(zip(sweep.dims, cell.index))
        got = ds.isel(at).isel({STEP: -1}) if STEP in metrics.dims else ds.isel(at).sel({STEP: 20})
        want = metrics.isel({STEP: -1}) if STEP in metrics.dims else metrics
        positions = want[POSITION].values
        np.testing.assert_allclose(got["excess_cross_entropy"].sel({POSITION: positions}).values,
                                   want["excess_cross_entropy"].values, rtol=0, atol=0)
        # excess cross-entropy = cross-entropy - H(q), H(q) the oracle's entropy, by hand
        p = np.exp(comparison["log_prob"].sel({PREDICTOR: "oracle"}).values)  # (scenario, episode, position, outcome)
        entropy = np.nanmean(-(p * np.log(p)).sum(-1), axis=1)
        np.testing.assert_allclose(want["excess_cross_entropy"].values, want["cross_entropy"].values - entropy[None],
                                   rtol=1e-12, atol=1e-12)
        # the context's log prior probability: log p(y_<t), 0 at t = 1, by the chain rule over Bayes' scores
        score = comparison["log_score"].sel({PREDICTOR: "bayes"}).values
        context = np.concatenate([np.zeros(score.shape[:2] + (1,)), np.cumsum(score, axis=-1)[..., :-1]], axis=-1)
        np.testing.assert_allclose(want["context_log_prior"].values, context.mean(axis=1), rtol=1e-10, atol=1e-10)


def test_disagreement_is_the_js_between_two_cells_learners(tiny):
    sweep, ds = tiny
    first, second = sweep.cells[0], sweep.cells[2]  # seed 0 and seed 1 of the learned positions
    a = open_results(first.folder)["comparison"].to_dataset()["log_prob"].sel({PREDICTOR: "learner"})
    b = open_results(second.folder)["comparison"].to_dataset()["log_prob"].sel({PREDICTOR: "learner"})
    pair = [p for p in ds[PAIR].values if str(ds["pair_first"].sel({PAIR: p}).values).startswith("seed=0, architecture=learned")
            and str(ds["pair_second"].sel({PAIR: p}).values).startswith("seed=1, architecture=learned")][0]
    got = ds["disagreement"].sel({PAIR: pair, SCENARIO: "q=0.5", POSITION: slice(1, 16)}).values
    pa, pb = np.exp(a.sel({SCENARIO: "q=0.5"}).values), np.exp(b.sel({SCENARIO: "q=0.5"}).values)
    want = (jensenshannon(pa, pb, axis=-1) ** 2).mean(axis=0)  # scipy's distance, squared: the divergence
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)
    assert bool(ds["same_architecture"].sel({PAIR: pair}))


def test_relative_distance_against_numpy_on_hand_made_predictives():
    """Three predictors with hand-made next-token probabilities: the learner's relative distance between Bayes
    (-1) and the mixture (+1) is (d(h, A) - d(h, B)) / d(A, B) with d the episode mean of sqrt(JS)."""
    rng = np.random.default_rng(3)
    episodes, length = 5, 4
    bayes, mixture = rng.uniform(0.1, 0.9, (episodes, length)), np.full((episodes, length), 0.5)
    learner = 0.7 * bayes + 0.3 * mixture
    probs = np.stack([bayes, mixture, learner])[..., None] * np.array([1.0, -1.0]) + np.array([0.0, 1.0])
    ds = xr.Dataset(
        {"log_prob": (("predictor", "scenario", "episode", "position", "outcome"), np.log(probs)[:, None]),
         "log_score": (("predictor", "scenario", "episode", "position"), np.log(probs[..., 0])[:, None]),
         "y": (("scenario", "episode", "position"), np.zeros((1, episodes, length)))},
        coords={PREDICTOR: ["bayes", "best_mixture", "learner"], SCENARIO: ["q"], EPISODE: np.arange(episodes),
                POSITION: np.arange(1, length + 1), OUTCOME: ["a", "b"]},
    )
    got = metrics_dataset(ds, kind=TOKENS, bootstrap_resamples=5)["relative_distance"].sel(
        {PREDICTOR: "learner", SCENARIO: "q"}).values
    d = lambda p, q: np.sqrt(jensenshannon(np.stack([p, 1 - p], -1), np.stack([q, 1 - q], -1), axis=-1) ** 2).mean(0)  # noqa: E731
    want = (d(learner, bayes) - d(learner, mixture)) / d(bayes, mixture)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert np.all((want > -1) & (want < 1))
