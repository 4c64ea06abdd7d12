"""The training loop: determinism, resumption, loss, schedule, masking, config checks."""

import dataclasses

import numpy as np
import pytest
import torch

import learners
from learners import TrainConfig, lr_at, train
from learners.train import masked_cross_entropy
from toolkit import Prior
from toolkit.errors import CheckpointError, ConfigError


class Interrupting(Prior):
    """A prior whose sampler fails after ``after`` batches: a run killed mid-training.

    Everything but ``sample`` is the wrapped prior's (its instance attributes through ``__getattr__``).
    """

    def __init__(self, prior, after, exc=KeyboardInterrupt):
        self.prior, self.after, self.exc, self.calls = prior, after, exc, 0

    def __getattr__(self, name):
        return getattr(self.prior, name)

    def sample(self, key, num_episodes, length):
        if self.calls >= self.after:
            raise self.exc("simulated interruption")
        self.calls += 1
        return self.prior.sample(key, num_episodes, length)


def test_same_seed_same_weights(coin_prior, tiny_model, tiny_train):
    a = train(coin_prior, tiny_model, tiny_train, None, progress=False)
    b = train(coin_prior, tiny_model, tiny_train, None, progress=False)
    assert a.weights_sha256 == b.weights_sha256
    assert a.loss_log == b.loss_log
    c = train(coin_prior, tiny_model, dataclasses.replace(tiny_train, seed=1), None, progress=False)
    assert c.weights_sha256 != a.weights_sha256


def test_prefetch_thread_sees_the_same_batches(coin_prior, tiny_model, tiny_train):
    a = train(coin_prior, tiny_model, dataclasses.replace(tiny_train, prefetch=0), None, progress=False)
    b = train(coin_prior, tiny_model, dataclasses.replace(tiny_train, prefetch=3), None, progress=False)
    assert a.weights_sha256 == b.weights_sha256


def test_training_lowers_the_loss(coin_prior, tiny_model):
    cfg = TrainConfig(steps=60, batch_size=32, length=64, lr=1e-2, warmup_steps=5, log_every=10, device="cpu")
    result = train(coin_prior, tiny_model, cfg, None, progress=False)
    first, last = result.loss_log[0][1], result.loss_log[-1][1]
    assert first > 0.68  # about log 2 before learning anything
    assert last < first - 0.02
    assert result.steps == 60 and result.resumed_from == 0 and result.wall_time_s > 0


@pytest.mark.parametrize("stop_after", [5, 8, 11])
def test_resume_after_interruption_equals_an_uninterrupted_run(
    coin_prior, tiny_model, tiny_train, tmp_path, stop_after
):
    full = train(coin_prior, tiny_model, tiny_train, tmp_path / "full", progress=False)
    cfg = dataclasses.replace(tiny_train, prefetch=0)  # prefetch is a runtime setting: resuming may change it
    with pytest.raises(KeyboardInterrupt):
        train(Interrupting(coin_prior, stop_after), tiny_model, cfg, tmp_path / "cut", progress=False)
    saved = learners.checkpoint.checkpoint_steps(tmp_path / "cut")
    assert saved[-1] == stop_after // tiny_train.checkpoint_every * tiny_train.checkpoint_every
    resumed = train(coin_prior, tiny_model, tiny_train, tmp_path / "cut", progress=False)
    assert resumed.resumed_from == saved[-1]
    assert resumed.weights_sha256 == full.weights_sha256
    assert resumed.loss_log == full.loss_log
    for name, p in resumed.predictor.model.state_dict().items():
        torch.testing.assert_close(p, full.predictor.model.state_dict()[name], rtol=0, atol=0)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_sampler_errors_reach_the_training_loop(coin_prior, tiny_model, tiny_train, prefetch):
    cfg = dataclasses.replace(tiny_train, prefetch=prefetch)
    with pytest.raises(RuntimeError, match="simulated interruption"):
        train(Interrupting(coin_prior, 3, RuntimeError), tiny_model, cfg, None, progress=False)


def test_finished_run_is_reused_not_retrained(coin_prior, tiny_model, tiny_train, tmp_path):
    first = train(coin_prior, tiny_model, tiny_train, tmp_path, progress=False)
    again = train(Interrupting(coin_prior, 0), tiny_model, tiny_train, tmp_path, progress=False)  # samples nothing
    assert again.resumed_from == tiny_train.steps
    assert again.weights_sha256 == first.weights_sha256
    assert again.wall_time_s == pytest.approx(first.wall_time_s)


def test_checkpoints_keep_the_last_two(coin_prior, tiny_model, tiny_train, tmp_path):
    train(coin_prior, tiny_model, tiny_train, tmp_path, progress=False)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "step-000008.json",
        "step-000008.optim.safetensors",
        "step-000008.safetensors",
        "step-000012.json",
        "step-000012.optim.safetensors",
        "step-000012.safetensors",
    ]


def test_mismatched_config_names_the_keys_and_the_fix(coin_prior, tiny_model, tiny_train, tmp_path):
    train(coin_prior, tiny_model, tiny_train, tmp_path, progress=False)
    other = dataclasses.replace(tiny_train, lr=1e-2, batch_size=8)
    with pytest.raises(CheckpointError, match=r"train\.batch_size.*train\.lr.*another --out.*delete"):
        train(coin_prior, tiny_model, other, tmp_path, progress=False)
    wider = dataclasses.replace(tiny_model, n_embd=32)
    with pytest.raises(CheckpointError, match=r"model\.n_embd: checkpoint 16, requested 32"):
        train(coin_prior, wider, tiny_train, tmp_path, progress=False)
    import priors

    with pytest.raises(CheckpointError, match=r"prior\.params\.thetas"):
        train(priors.get("coin_mixture", thetas=(0.2, 0.8)), tiny_model, tiny_train, tmp_path, progress=False)


def test_runtime_settings_may_change_on_resume(coin_prior, tiny_model, tiny_train, tmp_path):
    train(coin_prior, tiny_model, tiny_train, tmp_path, progress=False)
    changed = dataclasses.replace(tiny_train, checkpoint_every=3, prefetch=0, log_every=5, keep_checkpoints=1)
    assert train(coin_prior, tiny_model, changed, tmp_path, progress=False).resumed_from == tiny_train.steps


def test_config_matches(coin_prior, tiny_model, tiny_train, tmp_path):
    assert not learners.config_matches(tmp_path, coin_prior, tiny_model, tiny_train)
    assert not learners.config_matches(tmp_path / "absent", coin_prior, tiny_model, tiny_train)
    longer = dataclasses.replace(tiny_train, steps=16)
    with pytest.raises(KeyboardInterrupt):
        train(Interrupting(coin_prior, 9), tiny_model, longer, tmp_path, progress=False)
    assert learners.config_matches(tmp_path, coin_prior, tiny_model, longer, finished=False)
    assert not learners.config_matches(tmp_path, coin_prior, tiny_model, longer)
    train(coin_prior, tiny_model, longer, tmp_path, progress=False)
    assert learners.config_matches(tmp_path, coin_prior, tiny_model, longer)
    assert not learners.config_matches(tmp_path, coin_prior, tiny_model, dataclasses.replace(longer, lr=1.0))


def test_masked_loss_ignores_padding():
    logits = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([[0, 1, 2, 1, 1], [2, 0, 0, 0, 0]])
    mask = torch.tensor([[True, True, True, False, False], [True, False, False, False, False]])
    per = -torch.log_softmax(logits, -1).gather(-1, y[..., None])[..., 0]
    torch.testing.assert_close(masked_cross_entropy(logits, y, mask), per[mask].mean())
    torch.testing.assert_close(masked_cross_entropy(logits, y, None), per.mean())


def test_eos_prior_trains_and_predicts_nan_on_padding(eos_prior, tiny_model, tiny_train):
    result = train(eos_prior, tiny_model, tiny_train, None, progress=False)
    import jax

    episodes = eos_prior.sample(jax.random.key(3), 32, 16)
    assert not episodes.mask.all()
    ds = result.predictor.predict(episodes)
    assert np.isnan(ds.log_score.values[~episodes.mask]).all()
    assert np.isfinite(ds.log_score.values[episodes.mask]).all()


def test_learning_rate_schedule():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    lrs = np.array([lr_at(s, cfg) for s in range(100)])
    assert np.all(np.diff(lrs[:11]) > 0) and lrs[0] < 0.2  # linear warmup
    assert lrs[10] == pytest.approx(1.0)
    assert np.all(np.diff(lrs[10:]) <= 0)  # cosine decay
    assert lrs[-1] == pytest.approx(0.1, abs=1e-3)


@pytest.mark.parametrize(
    "kw, match",
    [(dict(steps=0), "train.steps"), (dict(lr=0.0), "train.lr"), (dict(device="tpu"), "train.device")],
)
def test_bad_train_config_raises_config_error(kw, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**kw)


def test_training_length_longer_than_context_is_refused(coin_prior, tiny_model, tiny_train):
    short = dataclasses.replace(tiny_model, block_size=8)
    with pytest.raises(ConfigError, match=r"train.length \(16\).*block_size \(8\)"):
        train(coin_prior, short, tiny_train, None, progress=False)


def test_regression_priors_are_refused_clearly(tiny_model, tiny_train):
    class Regression:
        kind, name = "regression", "linear"

    with pytest.raises(ConfigError, match="regression"):
        train(Regression(), tiny_model, tiny_train, None, progress=False)


def test_cuda_request_without_cuda_is_a_config_error(coin_prior, tiny_model, tiny_train):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ConfigError, match="no CUDA device"):
        train(coin_prior, tiny_model, dataclasses.replace(tiny_train, device="cuda"), None, progress=False)


# ---------------------------------------------------------------- curriculum
def test_curriculum_stages_draw_the_first_batches(coin_prior, tiny_train):
    import jax
    import priors
    from learners.train import _Prefetcher, sample_arrays

    easy, easier = priors.get("coin_mixture", thetas=(0.1, 0.9)), priors.get("coin_mixture", thetas=(0.01, 0.99))
    batches = _Prefetcher(coin_prior, tiny_train, 0, torch.device("cpu"), stages=[(2, easier), (5, easy)])
    key = jax.random.key(tiny_train.seed)
    for step, source in [(0, easier), (1, easier), (2, easy), (4, easy), (5, coin_prior), (11, coin_prior)]:
        want = sample_arrays(source, jax.random.fold_in(key, step), tiny_train.batch_size, tiny_train.length)
        np.testing.assert_array_equal(batches.get(step)["y"].numpy(), np.asarray(want["y"]))
    batches.close()


def test_curriculum_changes_the_run_and_is_part_of_its_signature(coin_prior, tiny_model, tiny_train, tmp_path):
    import priors

    easy = priors.get("coin_mixture", thetas=(0.01, 0.99))
    plain = train(coin_prior, tiny_model, tiny_train, None, progress=False)
    staged = train(coin_prior, tiny_model, tiny_train, tmp_path, progress=False, curriculum=[(6, easy)])
    assert staged.weights_sha256 != plain.weights_sha256
    assert staged.meta["curriculum"] == [{"until": 6, "prior": easy.describe()}]
    assert learners.config_matches(tmp_path, coin_prior, tiny_model, tiny_train, curriculum=[(6, easy)])
    assert not learners.config_matches(tmp_path, coin_prior, tiny_model, tiny_train)
    assert not learners.config_matches(tmp_path, coin_prior, tiny_model, tiny_train, curriculum=[(5, easy)])
    with pytest.raises(CheckpointError, match=r"curriculum: checkpoint .*requested '\(absent\)'"):
        train(coin_prior, tiny_model, tiny_train, tmp_path, progress=False)


def test_resume_inside_a_curriculum_equals_an_uninterrupted_run(coin_prior, tiny_model, tiny_train, tmp_path):
    import priors

    stages = [(6, priors.get("coin_mixture", thetas=(0.01, 0.99)))]
    full = train(coin_prior, tiny_model, tiny_train, None, progress=False, curriculum=stages)
    cut_stages = [(6, Interrupting(stages[0][1], 5))]  # killed at step 5, after the checkpoint of step 4
    with pytest.raises(KeyboardInterrupt):
        train(coin_prior, tiny_model, tiny_train, tmp_path, progress=False, curriculum=cut_stages)
    resumed = train(coin_prior, tiny_model, tiny_train, tmp_path, progress=False, curriculum=stages)
    assert resumed.resumed_from == 4
    assert resumed.weights_sha256 == full.weights_sha256


@pytest.mark.parametrize(
    "stages, match",
    [
        (lambda p, q: [(6, q), (6, q)], r"stage 1: until = 6 must be an integer step after the previous stage's \(6\)"),
        (lambda p, q: [(13, q)], r"at most train.steps = 12"),
        (lambda p, q: [(0, q)], r"stage 0: until = 0"),
        (lambda p, q: [(2.5, q)], r"until = 2.5 must be an integer"),
        (lambda p, q: [q], r"expected a pair \(until, prior\)"),
        (lambda p, q: [(4, p), (8, "coin")], r"stage 1: expected a pair"),
        (lambda p, q: [(4, __import__("priors").get("dirichlet_categorical"))], r"does not produce the data"),
    ],
)
def test_bad_curriculum_is_a_config_error(coin_prior, tiny_model, tiny_train, stages, match):
    import priors

    easy = priors.get("coin_mixture", thetas=(0.01, 0.99))
    with pytest.raises(ConfigError, match=match):
        train(coin_prior, tiny_model, tiny_train, None, progress=False, curriculum=stages(coin_prior, easy))


def test_regression_curriculum_must_keep_the_input_dimension():
    import priors

    prior = priors.get("linear_regression", d=3)
    cfg = TrainConfig(steps=4, batch_size=4, length=5, device="cpu")
    learners.check_curriculum(prior, [(2, priors.get("linear_regression", d=3, x_subspace=1))], cfg)  # same x
    with pytest.raises(ConfigError, match=r"x_dim 2\).*x_dim 3\)"):
        learners.check_curriculum(prior, [(2, priors.get("linear_regression", d=2))], cfg)


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(coin_prior, tiny_model, tiny_train, tmp_path,
                                                                              monkeypatch):
    """From step 7 the loss is NaN (as a diverging run's would be): training stops at the next loss-log entry,
    naming the steps, and no checkpoint after the last good one (step 4) is written."""
    import importlib

    from learners.checkpoint import checkpoint_steps, read_meta
    from toolkit.errors import TrainingError

    train_module = importlib.import_module("learners.train")  # the module; learners.train is the function
    real = train_module.train_step

    def diverging(objective, optimizer, model, batch, step, *args, **kwargs):
        loss = real(objective, optimizer, model, batch, step, *args, **kwargs)
        return loss * float("nan") if step >= 6 else loss

    monkeypatch.setattr(train_module, "train_step", diverging)
    with pytest.raises(TrainingError, match=r"training diverged at steps 7-8: the mean training loss is nan; "
                                            r"the last good checkpoint \(step 4\) stays in .*lower learner.training.lr"):
        train(coin_prior, tiny_model, tiny_train, tmp_path, progress=False)
    assert checkpoint_steps(tmp_path) == [4]
    assert all(np.isfinite(v) for _, v in read_meta(tmp_path)["loss_log"])


def test_non_finite_weights_are_caught_even_with_a_finite_loss(coin_prior, tiny_model, tiny_train):
    from learners.train import check_finite_training
    from toolkit.errors import TrainingError

    model = learners.build_model(tiny_model.resolve(coin_prior, tiny_train))
    check_finite_training(0.5, model, 1, 2, None)
    with torch.no_grad():
        next(model.parameters())[0] = float("inf")
    with pytest.raises(TrainingError, match="a weight is not finite; no checkpoint was written"):
        check_finite_training(0.5, model, 1, 2, None)


def test_settings_that_mean_nothing_are_refused():
    with pytest.raises(ConfigError, match="train.weight_decay must be a finite number, got nan"):
        TrainConfig(weight_decay=float("nan"))
    with pytest.raises(ConfigError, match="train.grad_clip must be a finite number, got inf"):
        TrainConfig(grad_clip=float("inf"))
    with pytest.raises(ConfigError, match="train.steps = 1000000000 is above"):
        TrainConfig(steps=10**9)
    with pytest.raises(ConfigError, match="train.seed must lie in 0..9223372036854775807"):
        TrainConfig(seed=2**63)
