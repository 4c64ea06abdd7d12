"""The regression learner: a prior-data fitted network (PFN) with a bar-distribution head.

Follows Müller et al. 2022, "Transformers can do Bayesian inference"
(arXiv:2112.10510), with every position predicted in one pass as in
"Bayes' Power for explaining in-context learning generalizations"
(arXiv:2410.01565):

- Each position t gives two tokens: a *context* token
  ``c_t = enc_x(x_t) + enc_y(y_t)`` and a *query* token ``q_t = enc_x(x_t)``.
  A learned *empty* token leads the sequence ``[e, c_1 .. c_T, q_1 .. q_T]``.
- Context token t attends to e and the context tokens s <= t (each pair sees
  earlier pairs and itself); query t attends to e and the context tokens
  s < t, so it knows x_t and the pairs before t and nothing else. The first
  query sees e alone: its output is the prior predictive at x_1. Nothing
  attends to a query, so only e and the context tokens are keys and values
  (`ContextAttention`), and the last block computes the query rows alone:
  the same function as masked attention over all 2T + 1 tokens, a training
  step 0.89-0.98x the time on 2 cores (``benchmarks/pfn_query_keys.py``).
- No positional encoding: the causal mask among context tokens is what keeps
  position t from seeing y_t or later, and the only way order enters (a
  one-layer net sees the pairs before t as a set).
- The query outputs are logits over the buckets of a `BarDistribution`:
  buckets at quantiles of prior samples of y, uniform density inside each,
  half-normal tails beyond the outer borders so the density has full support
  (PFNs' ``FullSupportBarDistribution``).

Training minimises the negative log density of the realised y_t
(`PFNTransformer.training_loss`); predictions are computed in float64 from the
float32 logits (`learners.LearnerPredictor`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from toolkit.dims import QUANTILES
from toolkit.errors import ConfigError, DataError, ModelError

from .config import ArchitectureConfig, context_length
from .model import Architecture, Block, SelfAttention, attend, register_architecture

# The half-normal tail of an outer bucket puts this much of the bucket's mass within the bucket's width (PFNs' choice).
TAIL_MASS_IN_BUCKET = 0.5
# Prior y values drawn to place the bucket borders: at least this many, and at least 100 per bucket.
MIN_FIT_VALUES = 100_000
SQRT2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


@dataclass(frozen=True)
class PFNConfig(ArchitectureConfig):
    """Architecture of a `PFNTransformer`.

    The defaults are the CPU-sized learner of ``benchmarks/pfn_linear_regression.py`` (linear regression,
    d = 5); its measured accuracy against exact Bayes is in ``benchmarks/RESULTS.md``.
    """

    NAME = "pfn"
    KIND = "regression"
    DATA_FIELDS = ("x_dim", "block_size")

    x_dim: int | None = None  # regression features F of the prior; None = read from the prior
    block_size: int | None = None  # longest episode accepted; None = the training length
    n_layer: int = 6  # transformer blocks: on linear regression 6 beat 3 at a smaller budget (benchmarks/RESULTS.md)
    n_head: int = 4  # attention heads per block
    n_embd: int = 64  # residual stream width; a multiple of n_head
    mlp_ratio: int = 2  # MLP hidden width = mlp_ratio * n_embd (PFNs: 2)
    bias: bool = True  # biases in Linear layers and LayerNorms
    num_buckets: int = 1000  # bars of the output distribution, borders at quantiles of prior y (PFNs: 1000)

    def __post_init__(self):
        self.check_data_fields()
        self.require_positive("n_layer", "n_head", "n_embd", "mlp_ratio")
        if self.n_embd % self.n_head:
            raise ConfigError(f"model.n_embd ({self.n_embd}) must be a multiple of model.n_head ({self.n_head})")
        if self.num_buckets < 3:
            raise ConfigError(f"model.num_buckets must be at least 3 (two tails and one bar), got {self.num_buckets}")

    @property
    def output_width(self) -> int:
        return self.num_buckets

    def resolve(self, prior, train_config) -> PFNConfig:
        """Fill ``x_dim`` from the prior and ``block_size`` from the training length; check they agree."""
        self.check_kind(prior)
        x_dim = prior.x_dim if self.x_dim is None else self.x_dim
        if x_dim != prior.x_dim:
            raise ConfigError(f"model.x_dim is {x_dim} but prior {prior.name!r} has {prior.x_dim} features")
        block = context_length(self.block_size, train_config.length)
        return replace(self, x_dim=x_dim, block_size=block)


class BarDistribution(nn.Module):
    """A density on the real line from K logits: bars between quantile borders, half-normal outer tails.

    With borders ``b_0 < b_1 < ... < b_K`` and bucket probabilities
    ``p = softmax(logits)``, the density is ``p_k / (b_{k+1} - b_k)`` on an
    inner bucket ``[b_k, b_{k+1})``; the first bucket's mass spreads over
    ``(-inf, b_1)`` as a half-normal falling away from ``b_1``, the last
    bucket's over ``[b_{K-1}, inf)`` as one rising from ``b_{K-1}``, each with
    the scale that puts half its mass within the bucket's width (as PFNs'
    ``FullSupportBarDistribution``). The borders are a persistent buffer: they
    travel with the checkpoint.

    Every method takes logits of shape ``(..., K)`` and computes in their dtype
    (pass float64 logits for float64 answers).

    Parameters
    ----------
    num_buckets : int
        K, the number of bars. The borders start evenly spaced on [-1, 1];
        `fit` places them at quantiles of samples of y.
    """

    def __init__(self, num_buckets: int):
        super().__init__()
        self.num_buckets = int(num_buckets)
        self.register_buffer("borders", torch.linspace(-1.0, 1.0, self.num_buckets + 1))  # (K + 1,)

    @torch.no_grad()
    def fit(self, y: np.ndarray) -> None:
        """Place the borders at the quantiles ``0, 1/K, ..., 1`` of the values ``y`` (any shape)."""
        y = np.sort(np.asarray(y, dtype=np.float64).ravel())
        if y.size < self.num_buckets + 1 or not np.all(np.isfinite(y)):
            raise ModelError(
                f"placing {self.num_buckets} buckets needs at least {self.num_buckets + 1} finite samples of y, "
                f"got {y.size} ({np.count_nonzero(~np.isfinite(y))} not finite)"
            )
        borders = np.quantile(y, np.linspace(0.0, 1.0, self.num_buckets + 1))
        borders = torch.as_tensor(borders, dtype=self.borders.dtype)
        if not torch.all(borders[1:] > borders[:-1]):
            raise ModelError(
                f"the prior's y takes too few distinct values for {self.num_buckets} quantile buckets (some borders "
                "coincide); use fewer model.num_buckets, or a token learner if y is discrete"
            )
        self.borders.copy_(borders)

    # ------------------------------------------------------------------ pieces
    def _parts(self, dtype: torch.dtype):
        b = self.borders.to(dtype)  # (K + 1,)
        widths = b[1:] - b[:-1]  # (K,)
        scale = widths[[0, -1]] / (SQRT2 * torch.erfinv(torch.tensor(TAIL_MASS_IN_BUCKET, dtype=dtype)))  # (2,)
        return b, widths, scale

    def bucket(self, y: torch.Tensor) -> torch.Tensor:
        """Index of the bucket each y falls in, (...,) long; beyond the outer borders: the tail buckets."""
        inner = self.borders[1:-1].to(y.dtype).contiguous()  # (K - 1,): b_1 .. b_{K-1}
        return torch.searchsorted(inner, y.contiguous(), right=True)  # (...,) in [0, K - 1]

    def _log_density_in_bucket(self, y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """log of the density of bucket k at y, divided by the bucket's mass (the conditional log density)."""
        b, widths, scale = self._parts(y.dtype)
        K = self.num_buckets
        uniform = -torch.log(widths[k])  # (...,)
        left = _half_normal_log_pdf(b[1] - y, scale[0])
        right = _half_normal_log_pdf(y - b[K - 1], scale[1])
        return torch.where(k == 0, left, torch.where(k == K - 1, right, uniform))

    # ------------------------------------------------------------------ the distribution
    def log_density(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log p(y) for logits (..., K) and y (...,); returns (...,)."""
        y = y.to(logits.dtype)
        k = self.bucket(y)  # (...,)
        log_p = torch.log_softmax(logits, dim=-1).gather(-1, k.unsqueeze(-1)).squeeze(-1)  # (...,)
        return log_p + self._log_density_in_bucket(y, k)

    def grid_log_density(self, logits: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """log p at every grid point: logits (..., K), grid (G,); returns (..., G)."""
        grid = grid.to(logits.dtype)
        k = self.bucket(grid)  # (G,)
        log_p = torch.log_softmax(logits, dim=-1)[..., k]  # (..., G)
        return log_p + self._log_density_in_bucket(grid, k)

    def _bucket_moments(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of y within each bucket, both (K,)."""
        b, widths, scale = self._parts(dtype)
        K = self.num_buckets
        mean = (b[:-1] + b[1:]) / 2  # (K,)
        var = widths**2 / 12  # (K,)
        tail_var = scale**2 * (1 - 2 / math.pi)  # half-normal variance, (2,)
        left, right = b[1] - scale[0] * SQRT_2_OVER_PI, b[K - 1] + scale[1] * SQRT_2_OVER_PI  # half-normal means
        mean = torch.cat([left[None], mean[1:-1], right[None]])
        var = torch.cat([tail_var[:1], var[1:-1], tail_var[1:]])
        return mean, var

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        """E[y], (...,)."""
        m, _ = self._bucket_moments(logits.dtype)
        return torch.softmax(logits, dim=-1) @ m

    def variance(self, logits: torch.Tensor) -> torch.Tensor:
        """Var[y] by the law of total variance over buckets (no cancellation of large squares), (...,)."""
        m, v = self._bucket_moments(logits.dtype)
        p = torch.softmax(logits, dim=-1)  # (..., K)
        mean = p @ m  # (...,)
        return (p * (v + (m - mean.unsqueeze(-1)) ** 2)).sum(-1)

    def cdf(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """P(Y <= y) for logits (..., K) and y (...,); returns (...,)."""
        y = y.to(logits.dtype)
        b, widths, scale = self._parts(logits.dtype)
        K = self.num_buckets
        p = torch.softmax(logits, dim=-1)  # (..., K)
        below = torch.cumsum(p, dim=-1) - p  # (..., K): mass of the buckets before k
        k = self.bucket(y)
        p_k = p.gather(-1, k.unsqueeze(-1)).squeeze(-1)
        below_k = below.gather(-1, k.unsqueeze(-1)).squeeze(-1)
        inner = below_k + p_k * ((y - b[k]) / widths[k]).clamp(0, 1)
        left = p_k * torch.erfc((b[1] - y).clamp_min(0) / (SQRT2 * scale[0]))
        right = below_k + p_k * torch.erf((y - b[K - 1]).clamp_min(0) / (SQRT2 * scale[1]))
        return torch.where(k == 0, left, torch.where(k == K - 1, right, inner))

    def icdf(self, logits: torch.Tensor, levels) -> torch.Tensor:
        """Quantiles: y with P(Y <= y) = q for each level q in (0, 1); logits (..., K) -> (..., Q)."""
        b, widths, scale = self._parts(logits.dtype)
        K = self.num_buckets
        q = torch.as_tensor(levels, dtype=logits.dtype, device=logits.device)  # (Q,)
        if not torch.all((q > 0) & (q < 1)):
            raise DataError(f"quantile levels must lie strictly between 0 and 1, got {q.tolist()}")
        p = torch.softmax(logits, dim=-1)  # (..., K)
        above = torch.cumsum(p, dim=-1)  # (..., K): mass up to the end of bucket k
        q = q.expand(*p.shape[:-1], q.numel()).contiguous()  # (..., Q)
        k = torch.searchsorted(above.contiguous(), q, right=False).clamp(0, K - 1)  # first k with above_k >= q
        p_k = p.gather(-1, k)
        below_k = above.gather(-1, k) - p_k
        frac = ((q - below_k) / p_k).clamp(0, 1)  # share of bucket k's mass below the quantile
        inner = b[k] + frac * widths[k]
        # left tail: q = p_0 erfc(z / (√2 s)); right tail: q = below + p erf(z / (√2 s))
        left = b[1] - SQRT2 * scale[0] * torch.erfinv(1 - frac)
        right = b[K - 1] + SQRT2 * scale[1] * torch.erfinv(frac)
        return torch.where(k == 0, left, torch.where(k == K - 1, right, inner))

    def extra_repr(self) -> str:
        return f"num_buckets={self.num_buckets}"


def _half_normal_log_pdf(z: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log of the half-normal density with ``scale`` at z >= 0 (z < 0 is outside the tail: -inf)."""
    log_pdf = 0.5 * math.log(2 / math.pi) - torch.log(scale) - 0.5 * (z / scale) ** 2
    return torch.where(z >= 0, log_pdf, torch.full_like(log_pdf, -math.inf))


def pfn_attention_mask(length: int, device=None) -> torch.Tensor:
    """Who attends to whom: bool (2T + 1, T + 1), the tokens ``[e, c_1 .. c_T, q_1 .. q_T]`` (rows) over
    the keys ``[e, c_1 .. c_T]`` (columns).

    Everyone attends to the empty token e; context token t to context tokens
    s <= t; query t to context tokens s < t. Nothing attends to a query, so
    the queries are no keys: their keys and values are never computed.
    """
    T = length
    s = torch.arange(T, device=device)
    mask = torch.zeros(2 * T + 1, T + 1, dtype=torch.bool, device=device)
    mask[:, 0] = True
    mask[1 : T + 1, 1:] = s[None, :] <= s[:, None]  # context t -> context s <= t
    mask[T + 1 :, 1:] = s[None, :] < s[:, None]  # query t -> context s < t
    return mask


class ContextAttention(SelfAttention):
    """`SelfAttention` whose keys and values are the first tokens only, and whose queries the last.

    ``forward(x, mask)`` with ``mask`` (Q, K): keys and values come from ``x[:, :K]``,
    queries from ``x[:, -Q:]``, and the output has Q rows. The weights are those of
    `SelfAttention` (one ``c_attn`` for q, k and v), sliced instead of multiplied in full.
    """

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        (Q, K), hs = mask.shape, C // self.n_head
        w, b = self.c_attn.weight, self.c_attn.bias  # (3C, C), (3C,) or None
        q = F.linear(x[:, T - Q :], w[:C], None if b is None else b[:C])  # (B, Q, C)
        k, v = F.linear(x[:, :K], w[C:], None if b is None else b[C:]).split(C, dim=2)  # (B, K, C) each
        q, k, v = (t.view(B, -1, self.n_head, hs).transpose(1, 2) for t in (q, k, v))  # (B, H, ·, hs)
        y = attend(q, k, v, mask).transpose(1, 2).contiguous().view(B, Q, C)  # (B, Q, C)
        return self.c_proj(y)


class PFNBlock(Block):
    """`Block` around a `ContextAttention`: its output keeps only the rows the mask has queries for."""

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        a = self.attn(self.ln_1(x), mask)  # (B, Q, C)
        x = x[:, x.size(1) - a.size(1) :] + a  # (B, Q, C)
        return x + self.mlp(self.ln_2(x))


@register_architecture(PFNConfig)
class PFNTransformer(Architecture):
    """Regression PFN: the predictive density of y_t given x_t and the pairs before t, for every t at once.

    Built from a resolved `PFNConfig` and an optional ``generator`` (`learners.model.Architecture`).

    Examples
    --------
    >>> model = PFNTransformer(PFNConfig(x_dim=3, block_size=16, n_layer=1, n_embd=16, num_buckets=10))
    >>> model(torch.zeros(2, 16, 3), torch.zeros(2, 16)).shape
    torch.Size([2, 16, 10])
    """

    kind = "regression"
    target_dtype = torch.float32

    def __init__(self, config: PFNConfig, *, generator: torch.Generator | None = None):
        super().__init__(config)
        self.enc_x = nn.Linear(config.x_dim, config.n_embd, bias=config.bias)
        self.enc_y = nn.Linear(1, config.n_embd, bias=config.bias)
        self.empty = nn.Parameter(torch.zeros(config.n_embd))  # the token every query can fall back on
        # the blocks of the causal transformer, their attention masked by `pfn_attention_mask` instead
        attention = lambda: ContextAttention(config.n_embd, config.n_head, bias=config.bias)  # noqa: E731
        self.blocks = nn.ModuleList([PFNBlock(config, attention()) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.head = nn.Linear(config.n_embd, config.num_buckets, bias=config.bias)
        self.bar = BarDistribution(config.num_buckets)
        self.initialise(generator)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """GPT-2 initialisation, drawn from ``generator``; the empty token like a weight, N(0, 0.02)."""
        self.gpt2_init(generator, skip=("empty",))

    @torch.no_grad()
    def fit_to_prior(self, prior, key, train_config) -> None:
        """Place the bar borders at quantiles of y in fresh prior episodes of the training length."""
        length = train_config.length
        num_episodes = -(-max(MIN_FIT_VALUES, 100 * self.config.num_buckets) // length)
        self.bar.fit(np.asarray(prior.sample(key, num_episodes, length).y))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Bucket logits for every position.

        Parameters
        ----------
        x : torch.Tensor, shape (batch, position, feature)
        y : torch.Tensor, shape (batch, position)

        Returns
        -------
        torch.Tensor, shape (batch, position, num_buckets)
            Entry ``[:, t - 1]`` holds the logits of y_t given x_t and the pairs before t.
        """
        B, T, Fx = x.size()
        if T > self.config.block_size:
            raise DataError(
                f"episodes of length {T} are longer than the learner's context of {self.config.block_size}; "
                f"evaluate at length <= {self.config.block_size} or retrain with a longer training length"
            )
        if Fx != self.config.x_dim or y.shape != (B, T):
            raise DataError(
                f"the learner takes x of shape (batch, position, {self.config.x_dim}) and y of shape "
                f"(batch, position), got x {tuple(x.shape)} and y {tuple(y.shape)}"
            )
        dtype = self.enc_x.weight.dtype
        ex = self.enc_x(x.to(dtype))  # (B, T, C)
        context = ex + self.enc_y(y.to(dtype).unsqueeze(-1))  # (B, T, C)
        empty = self.empty.expand(B, 1, -1)  # (B, 1, C)
        h = torch.cat([empty, context, ex], dim=1)  # (B, 2T + 1, C): [e, c_1 .. c_T, q_1 .. q_T]
        mask = pfn_attention_mask(T, device=x.device)  # (2T + 1, T + 1)
        for block in self.blocks[:-1]:
            h = block(h, mask)  # (B, 2T + 1, C)
        h = self.blocks[-1](h, mask[T + 1 :])  # (B, T, C): nothing reads the last block's e and context rows
        return self.head(self.ln_f(h))  # (B, T, K): the query tokens

    def shape_text(self) -> str:
        return f"{super().shape_text()}, {self.config.num_buckets} buckets"

    def episode_arrays(self, episodes) -> dict[str, np.ndarray]:
        """x (float32) and y (float64) of ``episodes``; DataError unless x has the learner's features."""
        if episodes.x.shape[-1] != self.config.x_dim:
            raise DataError(
                f"the episodes carry {episodes.x.shape[-1]} features x but the learner was trained on "
                f"{self.config.x_dim}; evaluate it on episodes of its own prior's shape"
            )
        return {"x": np.asarray(episodes.x, dtype=np.float32), "y": np.asarray(episodes.y, dtype=np.float64)}

    @torch.no_grad()
    def predictive(self, batch: dict[str, torch.Tensor], *, y_grid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The bar distribution at every position, float64: ``log_score`` (the realised y), ``mean``,
        ``variance``, ``quantile_value`` at `toolkit.dims.QUANTILES`, ``pit`` (its CDF at the realised y) and,
        on ``y_grid``, ``grid_log_density``."""
        logits = self(batch["x"], batch["y"]).double()  # (b, T, K)
        bar = self.bar
        out = {
            "log_score": bar.log_density(logits, batch["y"]),
            "mean": bar.mean(logits),
            "variance": bar.variance(logits),
            "quantile_value": bar.icdf(logits, QUANTILES),
            "pit": bar.cdf(logits, batch["y"]),
        }
        if y_grid is not None:
            out["grid_log_density"] = bar.grid_log_density(logits, y_grid)
        return out

    def training_loss(self, batch: dict[str, torch.Tensor | None]) -> torch.Tensor:
        """Mean negative log density of the realised y over the positions that hold data."""
        logits = self(batch["x"], batch["y"]).float()  # (B, T, K)
        nll = -self.bar.log_density(logits, batch["y"].float())  # (B, T)
        mask = batch.get("mask")
        if mask is None:
            return nll.mean()
        mask = mask.to(nll.dtype)
        return (nll * mask).sum() / mask.sum().clamp_min(1.0)


__all__ = ["PFNConfig", "PFNTransformer", "BarDistribution", "pfn_attention_mask"]
