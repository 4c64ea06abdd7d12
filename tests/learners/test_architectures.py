"""The learner architectures beside the learned-position transformer: rotary positions and the LSTM / GRU.

Each must keep the `CausalTransformer` contract (position t sees only y_<t,
weights from the generator alone, sequences past the context refused) and go
through `learners.train` and `learners.load` unchanged: checkpoints name their
architecture, so a reloaded learner is the one that was trained.
"""

import json

import jax
import numpy as np
import pytest
import torch

import learners
from learners.checkpoint import read_meta
from learners.model import CausalTransformer, Rotary, TransformerConfig, build_model
from learners.rnn import RNNConfig
from toolkit.errors import ConfigError, DataError

LENGTH = 16  # as in conftest.py

MODELS = {
    "rotary": TransformerConfig(vocab_size=3, block_size=LENGTH, n_layer=1, n_head=2, n_embd=16, pos_encoding="rotary"),
    "none": TransformerConfig(vocab_size=3, block_size=LENGTH, n_layer=1, n_head=2, n_embd=16, pos_encoding="none"),
    "lstm": RNNConfig(vocab_size=3, block_size=LENGTH, cell="lstm", n_embd=16),
    "gru": RNNConfig(vocab_size=3, block_size=LENGTH, cell="gru", n_layer=2, n_embd=8),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_position_t_sees_only_earlier_tokens(name):
    model = build_model(MODELS[name], generator=torch.Generator().manual_seed(0)).eval()
    y = torch.randint(0, 3, (4, LENGTH), generator=torch.Generator().manual_seed(1))
    changed = y.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 3
    with torch.no_grad():
        a, b = model(y), model(changed)
    assert a.shape == (4, LENGTH, 3)
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=0)  # positions 1..6 predict y_1..y_6 from y_<6
    assert not torch.allclose(a[:, 6:], b[:, 6:])


@pytest.mark.parametrize("name", list(MODELS))
def test_weights_come_from_the_generator_alone(name):
    with torch.random.fork_rng():  # whatever the global RNG holds, the weights are the same
        torch.manual_seed(1)
        first = build_model(MODELS[name], generator=torch.Generator().manual_seed(3)).state_dict()
        torch.manual_seed(2)
        second = build_model(MODELS[name], generator=torch.Generator().manual_seed(3)).state_dict()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)


@pytest.mark.parametrize("name", list(MODELS))
def test_sequences_past_the_context_are_refused(name):
    model = build_model(MODELS[name])
    with pytest.raises(DataError, match=f"context of {LENGTH}"):
        model(torch.zeros(1, LENGTH + 1, dtype=torch.long))


def test_rotary_scores_depend_on_the_offset_only():
    rotary = Rotary(head_size=8, block_size=32)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    rq = rotary(q.expand(1, 1, 32, 8).contiguous())  # q at every position
    rk = rotary(k.expand(1, 1, 32, 8).contiguous())
    scores = rq[0, 0] @ rk[0, 0].T  # (32, 32): query at m, key at n
    for offset in (0, 3, 17):
        diagonal = torch.diagonal(scores, -offset)
        torch.testing.assert_close(diagonal, diagonal[:1].expand_as(diagonal), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1).expand(1, 1, 32), rtol=1e-6, atol=1e-6)


def test_rotary_keeps_the_checkpoint_format_of_the_other_transformers():
    """Rotary angles are buffers outside the state dict: weights and their hash look like any transformer's."""
    rotary = CausalTransformer(MODELS["rotary"])
    none = CausalTransformer(MODELS["none"])
    assert rotary.state_dict().keys() == none.state_dict().keys()


@pytest.mark.parametrize(
    "values, match",
    [
        ({"pos_encoding": "sinusoidal"}, "'learned', 'none' or 'rotary'"),
        ({"pos_encoding": "rotary", "n_head": 2, "n_embd": 6}, "even"),
    ],
)
def test_bad_transformer_settings(values, match):
    with pytest.raises(ConfigError, match=match):
        TransformerConfig.from_dict(values)


def test_bad_rnn_settings():
    with pytest.raises(ConfigError, match="'lstm' or 'gru'"):
        RNNConfig.from_dict({"cell": "rnn"})
    with pytest.raises(ConfigError, match="unknown model setting"):
        RNNConfig.from_dict({"n_head": 2})


@pytest.mark.parametrize("name", ["rotary", "lstm"])
def test_train_checkpoint_and_load_round_trip(name, coin_prior, tiny_train, tmp_path):
    config = MODELS[name]
    config = type(config).from_dict({k: v for k, v in config.to_dict().items() if k not in ("vocab_size", "block_size")})
    result = learners.train(coin_prior, config, tiny_train, tmp_path, progress=False)
    meta = read_meta(tmp_path)
    expected = "RecurrentLM" if isinstance(config, RNNConfig) else "CausalTransformer"
    assert meta["architecture"] == expected
    assert json.loads(json.dumps(meta["model"]))["block_size"] == LENGTH
    assert learners.config_matches(tmp_path, coin_prior, config, tiny_train, finished=True)
    loaded = learners.load(tmp_path)
    assert type(loaded.model).__name__ == expected
    y = coin_prior.sample(jax.random.key(4), 8, LENGTH).y
    np.testing.assert_allclose(loaded.log_prob(y), result.predictor.log_prob(y), rtol=0, atol=1e-7)
    assert result.loss_log[-1][1] < result.loss_log[0][1] + 0.05  # it trained, or at least did not diverge
