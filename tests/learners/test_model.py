"""CausalTransformer: shapes, causality, BOS, positional encodings, config validation."""

import pytest
import torch

from learners import CausalTransformer, TransformerConfig
from toolkit.errors import ConfigError, DataError

CASES = [
    dict(n_layer=1, n_head=1, n_embd=8, pos_encoding="learned"),
    dict(n_layer=2, n_head=2, n_embd=16, pos_encoding="learned"),
    dict(n_layer=2, n_head=4, n_embd=16, pos_encoding="none"),
]


def make(vocab=3, block=12, **kw):
    return CausalTransformer(TransformerConfig(vocab_size=vocab, block_size=block, **kw)).eval()


@pytest.mark.parametrize("kw", CASES)
@pytest.mark.parametrize("length", [1, 7, 12])
def test_logits_shape(kw, length):
    model = make(**kw)
    y = torch.randint(0, 3, (5, length), generator=torch.Generator().manual_seed(0))
    assert model(y).shape == (5, length, 3)


@pytest.mark.parametrize("kw", CASES)
@pytest.mark.parametrize("t", [0, 3, 11])
def test_changing_y_t_never_changes_positions_up_to_t(kw, t):
    """Position t (1-based) predicts y_t from y_<t: flipping y_t (0-based index t) leaves logits[:, :t+1] alone."""
    model = make(**kw)
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 3, (4, 12), generator=g)
    y2 = y.clone()
    y2[:, t:] = (y[:, t:] + 1 + torch.randint(0, 2, y[:, t:].shape, generator=g)) % 3  # every later token changes
    with torch.no_grad():
        a, b = model(y), model(y2)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=0)
    if t + 1 < 12:
        assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


def test_first_position_is_the_same_for_every_sequence():
    model = make()
    y = torch.randint(0, 3, (6, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        logits = model(y)
    torch.testing.assert_close(logits[:, 0], logits[:1, 0].expand(6, -1))


def test_input_vocabulary_has_bos_output_does_not():
    model = make(vocab=4)
    assert model.wte.num_embeddings == 5
    assert model.lm_head.out_features == 4


def test_no_position_embedding_when_none():
    assert make(pos_encoding="none").wpe is None
    assert make(pos_encoding="learned").wpe.num_embeddings == 12


def test_generator_fixes_initial_weights():
    cfg = TransformerConfig(vocab_size=2, block_size=8, n_layer=1, n_embd=8, n_head=2)
    a = CausalTransformer(cfg, generator=torch.Generator().manual_seed(7)).state_dict()
    b = CausalTransformer(cfg, generator=torch.Generator().manual_seed(7)).state_dict()
    c = CausalTransformer(cfg, generator=torch.Generator().manual_seed(8)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_too_long_input_names_both_lengths():
    with pytest.raises(DataError, match=r"length 13.*context of 12"):
        make()(torch.zeros(1, 13, dtype=torch.long))


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(n_embd=10, n_head=4), "multiple of model.n_head"),
        (dict(n_layer=0), "n_layer"),
        (dict(pos_encoding="sinusoidal"), "pos_encoding"),
        (dict(vocab_size=1), "vocab_size"),
    ],
)
def test_bad_config_raises_config_error(kw, match):
    with pytest.raises(ConfigError, match=match):
        TransformerConfig(**kw)


def test_from_dict_validates_names_and_types():
    assert TransformerConfig.from_dict({"n_layer": "3"}).n_layer == 3
    with pytest.raises(ConfigError, match="unknown model setting.*n_layers"):
        TransformerConfig.from_dict({"n_layers": 3})
    with pytest.raises(ConfigError, match="model.n_embd"):
        TransformerConfig.from_dict({"n_embd": "wide"})
    with pytest.raises(ConfigError, match="pos_encoding"):
        TransformerConfig.from_dict({"pos_encoding": "sinusoidal"})


def test_unresolved_config_is_refused():
    with pytest.raises(ConfigError, match="vocab_size and model.block_size"):
        CausalTransformer(TransformerConfig())
