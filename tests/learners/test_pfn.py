"""The regression learner: bar-distribution head, PFN masking, training, checkpoints and predictions.

The bar distribution is checked against numerical quadrature of its own
density (total mass, CDF, moments) and its quantiles against its CDF; the
network against the rule that position t sees x_<=t and y_<t and nothing else.
"""

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import learners
import priors
from learners import PFNConfig, PFNTransformer, TrainConfig, TransformerConfig, train
from learners.checkpoint import checkpoint_steps, read_meta
from learners.model import SelfAttention, attend, build_model
from learners.pfn import BarDistribution, ContextAttention, pfn_attention_mask
from toolkit import Episodes, Predictor, dims
from toolkit.errors import ConfigError, DataError, ModelError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from pfn_query_keys import SquareMaskPFN, square_mask  # noqa: E402  (the network computed the old way)

K = 12  # buckets of the bar-distribution tests
LENGTH = 8
X_DIM = 2


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def regression_prior():
    return priors.get("linear_regression", d=X_DIM, sigma=0.3)


TINY_PFN = PFNConfig(n_layer=1, n_head=2, n_embd=16, num_buckets=16)
TINY_TRAIN = TrainConfig(
    steps=6, batch_size=8, length=LENGTH, lr=3e-3, warmup_steps=1, checkpoint_every=2, log_every=2, device="cpu"
)


@pytest.fixture
def tiny_pfn():
    return TINY_PFN


@pytest.fixture
def tiny_pfn_train():
    return TINY_TRAIN


@pytest.fixture(scope="module")
def bar():
    """Borders at quantiles of skewed samples, so bucket widths (and the two tail scales) differ."""
    head = BarDistribution(K).double()
    head.fit(np.random.default_rng(0).gamma(2.0, 1.0, 5000) - 2.0)
    return head


@pytest.fixture(scope="module")
def logits():
    return torch.randn(3, K, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2  # 3 distributions


def _quadrature(bar, logits, nodes_per_piece=32, tail_scales=40):
    """Gauss–Legendre nodes and weights on every piece where the density is smooth, and the density there.

    Each bar is one piece (the density is constant on it); each tail is cut into ``tail_scales`` pieces one
    half-normal scale wide, so the quadrature error is far below the tolerances checked.
    """
    b = bar.borders.double()
    widths = b[1:] - b[:-1]
    s = widths[[0, -1]] / (math.sqrt(2) * torch.erfinv(torch.tensor(0.5, dtype=torch.float64)))
    steps = torch.arange(tail_scales, 0, -1, dtype=torch.float64)
    edges = torch.cat([b[1] - steps * s[0], b[1:-1], b[-2] + steps.flip(0) * s[1]])
    u, v = (torch.as_tensor(a) for a in np.polynomial.legendre.leggauss(nodes_per_piece))  # on [-1, 1]
    lo, hi = edges[:-1, None], edges[1:, None]
    y = (lo + hi) / 2 + (hi - lo) / 2 * u  # (pieces, nodes)
    w = (hi - lo) / 2 * v
    y, w = y.reshape(-1), w.reshape(-1)
    return y, w, bar.grid_log_density(logits, y).exp()  # (N,), (N,), (..., N)


# --------------------------------------------------------------------------- the bar distribution


def test_density_integrates_to_one(bar, logits):
    y, w, density = _quadrature(bar, logits)
    np.testing.assert_allclose((density * w).sum(-1).numpy(), 1.0, rtol=0, atol=1e-12)


def test_mean_and_variance_match_numerical_moments(bar, logits):
    y, w, density = _quadrature(bar, logits)
    mean = (density * w * y).sum(-1)
    var = (density * w * (y - mean[:, None]) ** 2).sum(-1)
    np.testing.assert_allclose(bar.mean(logits).numpy(), mean.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(bar.variance(logits).numpy(), var.numpy(), rtol=1e-10)


def test_cdf_is_the_integral_of_the_density(bar, logits):
    y, w, density = _quadrature(bar, logits)
    at = torch.tensor([-3.0, -1.9, -1.0, 0.0, 0.7, 2.5, 6.0, 12.0], dtype=torch.float64)
    below = ((y[None, :] <= at[:, None]) * w).to(torch.float64)  # (8, N): weights of the nodes below each point
    want = density @ below.T  # (3, 8)
    got = bar.cdf(logits[:, None, :].expand(3, 8, K), at.expand(3, 8))
    # midpoint nodes resolve a point inside a segment to one node width
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=2e-3)
    assert torch.all(got[:, 1:] >= got[:, :-1])


@pytest.mark.parametrize("levels", [(1e-6, 0.001, 0.05, 0.25, 0.5, 0.75, 0.95, 0.999, 1 - 1e-6)])
def test_quantiles_invert_the_cdf(bar, logits, levels):
    q = bar.icdf(logits, levels)  # (3, Q)
    assert q.shape == (3, len(levels))
    assert torch.all(q[:, 1:] > q[:, :-1])
    back = bar.cdf(logits[:, None, :].expand(3, len(levels), K), q)
    np.testing.assert_allclose(back.numpy(), np.broadcast_to(levels, back.shape), rtol=1e-9, atol=1e-12)


def test_log_density_is_the_grid_density_at_the_same_points(bar, logits):
    y = torch.tensor([-9.0, -1.95, -0.5, 0.0, 1.3, 4.0, 30.0], dtype=torch.float64)
    grid = bar.grid_log_density(logits, y)  # (3, 7)
    pointwise = bar.log_density(logits[:, None, :].expand(3, 7, K), y.expand(3, 7))
    torch.testing.assert_close(pointwise, grid, rtol=0, atol=0)
    assert torch.all(torch.isfinite(grid))  # full support: finite far beyond the outer borders


def test_inner_buckets_are_uniform_and_tails_are_half_normal(bar):
    b = bar.borders
    logits = torch.zeros(1, K, dtype=torch.float64)  # every bucket holds 1 / K
    inner = torch.linspace(float(b[3]), float(b[4]), 5, dtype=torch.float64)[1:-1]
    expected = torch.full_like(inner, -math.log(K * float(b[4] - b[3])))
    torch.testing.assert_close(bar.grid_log_density(logits, inner)[0], expected)
    # the left tail puts half its bucket's mass within the bucket's width, as PFNs' FullSupportBarDistribution
    torch.testing.assert_close(bar.cdf(logits, b[:1])[0], torch.tensor(0.5 / K, dtype=torch.float64))
    torch.testing.assert_close(1 - bar.cdf(logits, b[-1:])[0], torch.tensor(0.5 / K, dtype=torch.float64))


def test_fit_places_borders_at_quantiles():
    y = np.random.default_rng(3).normal(size=10_001)
    head = BarDistribution(4)
    head.fit(y)
    np.testing.assert_allclose(head.borders.numpy(), np.quantile(y, [0, 0.25, 0.5, 0.75, 1]), rtol=1e-6)
    with pytest.raises(ModelError, match="too few distinct values"):
        BarDistribution(10).fit(np.repeat([0.0, 1.0, 2.0], 100))


# --------------------------------------------------------------------------- the network


def test_attention_mask():
    # tokens [e, c1, c2, c3, q1, q2, q3] over the keys [e, c1, c2, c3]: c_t sees e and c_<=t; q_t sees e and c_<t
    want = torch.tensor(
        [
            [1, 0, 0, 0],
            [1, 1, 0, 0],
            [1, 1, 1, 0],
            [1, 1, 1, 1],
            [1, 0, 0, 0],
            [1, 1, 0, 0],
            [1, 1, 1, 0],
        ],
        dtype=torch.bool,
    )
    torch.testing.assert_close(pfn_attention_mask(3), want)


@pytest.mark.parametrize("length", [1, 3, 20, 40])  # tokens 3 .. 41 explicit on the CPU, 81 through the kernel
def test_masked_attention_equals_numpy_softmax_attention(length):
    T, hs = 2 * length + 1, 8
    g = torch.Generator().manual_seed(length)
    q = torch.randn(2, T, hs, generator=g, dtype=torch.float64)
    k, v = torch.randn(2, 2, length + 1, hs, generator=g, dtype=torch.float64).unbind(0)  # keys: e and the context
    mask = pfn_attention_mask(length)
    got = attend(q[None], k[None], v[None], mask)[0].numpy()  # (H, T, hs)
    scores = q.numpy() @ k.numpy().transpose(0, 2, 1) / np.sqrt(hs)
    scores = np.where(mask.numpy(), scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    want = (weights / weights.sum(-1, keepdims=True)) @ v.numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_context_attention_equals_self_attention_over_every_token():
    g = torch.Generator().manual_seed(4)
    attn = ContextAttention(16, 2, bias=True).double()
    x = torch.randn(3, 2 * 5 + 1, 16, generator=g, dtype=torch.float64)
    mask = pfn_attention_mask(5)
    with torch.no_grad():
        want = SelfAttention.forward(attn, x, square_mask(5))  # every token's q, k and v
        torch.testing.assert_close(attn(x, mask), want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(attn(x, mask[6:]), want[:, 6:], rtol=1e-12, atol=1e-12)  # the queries' rows only


def test_network_equals_the_plain_transformer_with_the_square_mask(net):
    """Every block over all 2T + 1 tokens (`SelfAttention` with the square mask), the query rows read at the end."""
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(4, 10, 3, generator=g), torch.randn(4, 10, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(net(x, y), SquareMaskPFN.forward(net, x, y), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def net():
    config = PFNConfig(x_dim=3, block_size=10, n_layer=2, n_head=2, n_embd=16, num_buckets=8)
    return PFNTransformer(config, generator=torch.Generator().manual_seed(0)).eval()


@pytest.mark.parametrize("t", [0, 4, 9])  # 0-based index of the changed pair
def test_changing_y_t_or_later_leaves_positions_up_to_t_unchanged(net, t):
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(4, 10, 3, generator=g), torch.randn(4, 10, generator=g)
    changed = y.clone()
    changed[:, t:] += 5.0
    with torch.no_grad():
        a, b = net(x, y), net(x, changed)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=0)  # positions 1..t+1 predict y_1..y_t+1
    if t + 1 < 10:
        assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


@pytest.mark.parametrize("t", [0, 4, 9])
def test_changing_x_t_changes_position_t_and_later_only(net, t):
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(4, 10, 3, generator=g), torch.randn(4, 10, generator=g)
    changed = x.clone()
    changed[:, t] += 1.0
    with torch.no_grad():
        a, b = net(x, y), net(changed, y)
    torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=0)
    assert not torch.allclose(a[:, t], b[:, t])
    if t + 1 < 10:
        assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


def test_one_layer_sees_the_earlier_pairs_as_a_set():
    """No positional encoding: with one layer, permuting the pairs before t leaves position t unchanged.

    (Deeper nets see order only through the causal mask among context tokens.)
    """
    config = PFNConfig(x_dim=3, block_size=10, n_layer=1, n_head=2, n_embd=16, num_buckets=8)
    net = PFNTransformer(config).eval()
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(2, 10, 3, generator=g), torch.randn(2, 10, generator=g)
    perm = torch.tensor([3, 0, 5, 1, 4, 2, 6, 7, 8, 9])
    with torch.no_grad():
        a, b = net(x, y), net(x[:, perm], y[:, perm])
    torch.testing.assert_close(a[:, 6:], b[:, 6:], rtol=1e-5, atol=1e-5)


def test_weights_come_from_the_generator_alone(tiny_pfn):
    config = dataclasses.replace(tiny_pfn, x_dim=2, block_size=8)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        first = build_model(config, generator=torch.Generator().manual_seed(3)).state_dict()
        torch.manual_seed(2)
        second = build_model(config, generator=torch.Generator().manual_seed(3)).state_dict()
    for key in first:
        torch.testing.assert_close(first[key], second[key], rtol=0, atol=0)


def test_bad_shapes_are_data_errors(net):
    with pytest.raises(DataError, match="context of 10"):
        net(torch.zeros(1, 11, 3), torch.zeros(1, 11))
    with pytest.raises(DataError, match=r"\(batch, position, 3\)"):
        net(torch.zeros(1, 5, 2), torch.zeros(1, 5))


def test_training_loss_is_the_masked_mean_negative_log_density(net):
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(3, 10, 3, generator=g), torch.randn(3, 10, generator=g)
    mask = torch.arange(10)[None, :] < torch.tensor([[10], [4], [7]])
    with torch.no_grad():
        nll = -net.bar.log_density(net(x, y), y)
        torch.testing.assert_close(net.training_loss({"x": x, "y": y, "mask": None}), nll.mean())
        torch.testing.assert_close(net.training_loss({"x": x, "y": y, "mask": mask}), nll[mask].mean())


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(num_buckets=2), "num_buckets"),
        (dict(n_embd=10, n_head=4), "multiple"),
        (dict(x_dim=0), "x_dim"),
        (dict(n_layer=0), "n_layer"),
    ],
)
def test_bad_config_raises_config_error(kw, match):
    with pytest.raises(ConfigError, match=match):
        PFNConfig(**kw)


def test_config_round_trips_through_a_dict():
    config = PFNConfig(x_dim=4, block_size=32, num_buckets=50)
    assert PFNConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown model setting"):
        PFNConfig.from_dict({"vocab_size": 2})


# --------------------------------------------------------------------------- training and checkpoints


def test_token_priors_are_refused_clearly(coin_prior, tiny_pfn, tiny_pfn_train):
    with pytest.raises(ConfigError, match=r"tokens prior.*TransformerConfig"):
        train(coin_prior, tiny_pfn, tiny_pfn_train, None, progress=False)


def test_token_architecture_on_a_regression_prior_names_the_pfn(regression_prior, tiny_pfn_train):
    with pytest.raises(ConfigError, match="PFNConfig"):
        train(regression_prior, TransformerConfig(n_layer=1, n_embd=16), tiny_pfn_train, None, progress=False)


def test_resolve_reads_the_prior_and_the_training_length(regression_prior, tiny_pfn, tiny_pfn_train):
    resolved = tiny_pfn.resolve(regression_prior, tiny_pfn_train)
    assert (resolved.x_dim, resolved.block_size) == (X_DIM, LENGTH)
    with pytest.raises(ConfigError, match="x_dim is 3"):
        dataclasses.replace(tiny_pfn, x_dim=3).resolve(regression_prior, tiny_pfn_train)
    with pytest.raises(ConfigError, match="block_size"):
        dataclasses.replace(tiny_pfn, block_size=4).resolve(regression_prior, tiny_pfn_train)


@pytest.fixture(scope="module")
def trained(regression_prior, tmp_path_factory):
    out = tmp_path_factory.mktemp("pfn")
    return out, train(regression_prior, TINY_PFN, TINY_TRAIN, out, progress=False)


@pytest.fixture(scope="module")
def episodes(regression_prior):
    import jax

    return regression_prior.sample(jax.random.key(7), 5, LENGTH)


def test_borders_sit_at_quantiles_of_prior_y_and_travel_with_the_checkpoint(trained, regression_prior):
    out, result = trained
    borders = result.predictor.model.bar.borders
    assert borders.shape == (17,) and torch.all(borders[1:] > borders[:-1])
    # prior y is symmetric about 0 with scale ~ sqrt(2): the median border sits near 0, the outer ones far out
    assert abs(float(borders[8])) < 0.1 and float(borders[0]) < -3 and float(borders[-1]) > 3
    loaded = learners.load(out)
    torch.testing.assert_close(loaded.model.bar.borders, borders, rtol=0, atol=0)
    assert read_meta(out)["architecture"] == "PFNTransformer"


def test_loaded_learner_predicts_identically(trained, episodes):
    out, result = trained
    grid = np.linspace(-4, 4, 9)
    a = result.predictor.predict(episodes, y_grid=grid)
    b = learners.load(out).predict(episodes, y_grid=grid)
    for name in a.data_vars:
        np.testing.assert_array_equal(a[name].values, b[name].values)


class Interrupting:
    """A prior whose sampler fails after ``after`` calls (the border fit is the first): a run killed mid-training."""

    def __init__(self, prior, after):
        self.prior, self.after, self.calls = prior, after, 0

    def __getattr__(self, name):
        return getattr(self.prior, name)

    def sample(self, key, num_episodes, length):
        if self.calls >= self.after:
            raise KeyboardInterrupt("simulated interruption")
        self.calls += 1
        return self.prior.sample(key, num_episodes, length)


def test_resume_after_interruption_equals_an_uninterrupted_run(trained, regression_prior, tiny_pfn, tiny_pfn_train,
                                                               tmp_path):
    _, full = trained  # the same model and training configs
    cfg = dataclasses.replace(tiny_pfn_train, prefetch=0)
    with pytest.raises(KeyboardInterrupt):
        train(Interrupting(regression_prior, 1 + 3), tiny_pfn, cfg, tmp_path, progress=False)  # fit + 3 batches
    assert checkpoint_steps(tmp_path)[-1] == 2
    resumed = train(regression_prior, tiny_pfn, tiny_pfn_train, tmp_path, progress=False)
    assert resumed.resumed_from == 2
    assert resumed.weights_sha256 == full.weights_sha256
    assert resumed.loss_log == full.loss_log
    torch.testing.assert_close(resumed.predictor.model.bar.borders, full.predictor.model.bar.borders, rtol=0, atol=0)


@pytest.mark.slow
def test_compiled_training_follows_the_eager_curve(trained, regression_prior, tiny_pfn, tiny_pfn_train, tmp_path):
    """``train.compile`` (the linear-regression cpu profile) fuses the explicit masked attention; same numbers."""
    _, eager = trained
    compiled = train(regression_prior, tiny_pfn, dataclasses.replace(tiny_pfn_train, compile=True), tmp_path,
                     progress=False)
    assert [s for s, _ in compiled.loss_log] == [s for s, _ in eager.loss_log]
    torch.testing.assert_close(torch.tensor([v for _, v in compiled.loss_log]),
                               torch.tensor([v for _, v in eager.loss_log]), rtol=1e-5, atol=0)
    got, want = compiled.predictor.model.state_dict(), eager.predictor.model.state_dict()
    assert got.keys() == want.keys()
    for name in want:  # AdamW's first steps move a weight by about lr wherever its gradient is not ~0
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=0.01 * tiny_pfn_train.lr)


def test_prediction_dataset(trained, episodes):
    _, result = trained
    learner = result.predictor
    assert isinstance(learner, Predictor) and learner.kind == "regression" and learner.outcomes is None
    grid = np.linspace(-6, 6, 241)
    ds = learner.predict(episodes, y_grid=grid)
    assert set(ds.data_vars) == {"log_score", "mean", "variance", "quantile_value", "grid_log_density", "pit"}
    assert np.all((ds.pit >= 0) & (ds.pit <= 1))
    assert ds.quantile_value.dims == (dims.EPISODE, dims.POSITION, dims.QUANTILE)
    assert ds.grid_log_density.dims == (dims.EPISODE, dims.POSITION, dims.Y_GRID)
    np.testing.assert_array_equal(ds[dims.QUANTILE].values, dims.QUANTILES)
    np.testing.assert_array_equal(ds[dims.POSITION].values, np.arange(1, LENGTH + 1))
    assert all(ds[v].dtype == np.float64 for v in ds.data_vars)
    assert np.all(ds.variance > 0) and np.all(np.diff(ds.quantile_value, axis=-1) > 0)
    # the log score is the density at the realised y; the grid density integrates to ~1 over a wide grid
    with torch.no_grad():
        logits = learner.model(torch.tensor(episodes.x, dtype=torch.float32), torch.tensor(episodes.y)).double()
    want = learner.model.bar.log_density(logits, torch.tensor(episodes.y, dtype=torch.float64))
    np.testing.assert_allclose(ds.log_score.values, want.detach().numpy(), rtol=1e-12)
    wide = np.linspace(-200, 200, 8001)  # the outer buckets' half-normal tails reach far
    mass = np.trapezoid(np.exp(learner.predict(episodes, y_grid=wide).grid_log_density.values), wide, axis=-1)
    np.testing.assert_allclose(mass, 1.0, atol=0.01)
    # without a grid: no grid variable, the rest unchanged
    plain = learner.predict(episodes)
    assert "grid_log_density" not in plain
    np.testing.assert_array_equal(plain["mean"].values, ds["mean"].values)


def test_batching_does_not_change_predictions(trained, episodes):
    _, result = trained
    learner = result.predictor
    small = learners.LearnerPredictor(learner.model, learner.meta, batch_size=2)
    a, b = learner.predict(episodes), small.predict(episodes)
    for name in a.data_vars:
        np.testing.assert_allclose(b[name].values, a[name].values, rtol=1e-6, atol=1e-7)


def test_masked_positions_get_no_score(trained, episodes):
    _, result = trained
    mask = np.ones(episodes.y.shape, bool)
    mask[:, 5:] = False
    ds = result.predictor.predict(Episodes(y=episodes.y, x=episodes.x, mask=mask))
    assert np.all(np.isnan(ds.log_score.values[:, 5:])) and np.all(np.isfinite(ds.log_score.values[:, :5]))
    assert np.all(np.isfinite(ds["mean"].values))


def test_wrong_episodes_are_data_errors(trained, episodes):
    _, result = trained
    learner = result.predictor
    with pytest.raises(DataError, match="carry no x"):
        learner.predict(Episodes(y=np.zeros((2, 4), dtype=np.int64)))
    with pytest.raises(DataError, match="3 features"):
        learner.predict(Episodes(y=episodes.y, x=np.concatenate([episodes.x, episodes.x[..., :1]], axis=-1)))
    with pytest.raises(DataError, match=f"context of {LENGTH}"):
        long = np.zeros((1, LENGTH + 1))
        learner.predict(Episodes(y=long, x=np.zeros((1, LENGTH + 1, X_DIM))))
    with pytest.raises(DataError, match="no token log-probabilities"):
        learner.log_prob(np.zeros((1, 3), dtype=np.int64))


def test_describe_and_repr(trained):
    _, result = trained
    learner = result.predictor
    info = learner.describe()
    assert info["architecture"] == "PFNTransformer" and info["model"]["num_buckets"] == 16
    assert "16 buckets" in repr(learner) and "context=8" in repr(learner)
