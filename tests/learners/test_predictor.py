"""LearnerPredictor: the toolkit prediction Dataset, batching, provenance, input checks."""

import json

import jax
import numpy as np
import pytest
import xarray as xr

from learners import LearnerPredictor, train
from toolkit import Episodes, Predictor, dims
from toolkit.errors import DataError


@pytest.fixture(scope="module")
def learner():
    import priors
    from learners import TrainConfig, TransformerConfig

    cfg = TrainConfig(steps=4, batch_size=8, length=16, warmup_steps=1, device="cpu")
    result = train(priors.get("coin_mixture"), TransformerConfig(n_layer=1, n_embd=16), cfg, None, progress=False)
    return result.predictor


def test_is_a_toolkit_predictor(learner):
    assert isinstance(learner, Predictor)
    assert learner.name == "learner"


@pytest.mark.parametrize("num_episodes, length", [(1, 1), (7, 16), (33, 9)])
def test_dims_and_variables(learner, num_episodes, length):
    episodes = Episodes(y=np.random.default_rng(0).integers(0, 2, (num_episodes, length)))
    ds = learner.predict(episodes)
    assert set(ds.data_vars) == {"log_prob", "log_score"}
    assert ds.log_prob.dims == (dims.EPISODE, dims.POSITION, dims.OUTCOME)
    assert ds.log_score.dims == (dims.EPISODE, dims.POSITION)
    assert ds.log_prob.dtype == np.float64
    np.testing.assert_array_equal(ds[dims.POSITION].values, np.arange(1, length + 1))
    assert list(ds[dims.OUTCOME].values) == ["🌈", "🦄"]
    np.testing.assert_allclose(np.exp(ds.log_prob).sum(dims.OUTCOME), 1.0, rtol=1e-12)
    expected = np.take_along_axis(ds.log_prob.values, episodes.y[..., None], axis=-1)[..., 0]
    xr.testing.assert_allclose(ds.log_score, xr.DataArray(expected, dims=ds.log_score.dims, coords=ds.log_score.coords))


def test_batching_does_not_change_predictions(learner):
    y = np.random.default_rng(1).integers(0, 2, (50, 16))
    whole = learner.log_prob(y)
    small = LearnerPredictor(learner.model, learner.meta, batch_size=7).log_prob(y)
    np.testing.assert_allclose(small, whole, rtol=1e-6, atol=1e-7)


def test_predictions_depend_only_on_the_past(learner):
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, (10, 16))
    y2 = y.copy()
    y2[:, 6:] = 1 - y2[:, 6:]
    a, b = learner.log_prob(y), learner.log_prob(y2)
    np.testing.assert_array_equal(a[:, :7], b[:, :7])


def test_too_long_episodes_name_both_lengths(learner):
    with pytest.raises(DataError, match=r"length 17.*context of 16"):
        learner.predict(Episodes(y=np.zeros((2, 17), dtype=int)))


def test_out_of_vocabulary_tokens_are_data_errors(learner):
    with pytest.raises(DataError, match="outside the vocabulary"):
        learner.predict(Episodes(y=np.full((1, 4), 2)))


def test_describe_is_json_safe_provenance(learner):
    info = learner.describe()
    assert json.loads(json.dumps(info)) == info
    assert info["architecture"] == "CausalTransformer"
    assert info["model"]["n_embd"] == 16 and info["train"]["steps"] == 4 and info["steps"] == 4
    assert info["prior"]["name"] == "coin_mixture"
    assert len(info["weights_sha256"]) == 64 and info["wall_time_s"] > 0


def test_name_can_be_set():
    import priors
    from learners import TrainConfig, TransformerConfig

    cfg = TrainConfig(steps=1, batch_size=2, length=4, device="cpu")
    result = train(priors.get("coin_mixture"), TransformerConfig(n_layer=1, n_embd=8), cfg, None, progress=False)
    named = LearnerPredictor(result.predictor.model, result.meta, name="gpt")
    assert named.name == "gpt" and named.describe()["name"] == "gpt"
    episodes = priors.get("coin_mixture").sample(jax.random.key(0), 2, 4)
    xr.testing.assert_identical(named.predict(episodes), result.predictor.predict(episodes))
