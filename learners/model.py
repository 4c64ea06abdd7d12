"""A small causal transformer for token sequences: next-token logits at every position in one pass.

Follows nanoGPT's ``model.py`` (Karpathy, https://github.com/karpathy/nanoGPT):
pre-norm blocks, causal ``F.scaled_dot_product_attention``, learned absolute
positions, GPT-2 initialisation. Two changes for meta-learning a prior:

- A BOS token is prepended, so the input vocabulary has ``vocab_size + 1``
  entries and the head has ``vocab_size`` logits. Inputs
  ``[BOS, y_1, ..., y_{T-1}]`` give the logits for ``y_1, ..., y_T``: position
  t predicts y_t from y_<t, the first one from nothing at all (the prior
  predictive).
- No dropout: training draws fresh prior samples every step, so there is
  nothing to overfit, and training stays deterministic for a seed without
  touching torch's global random state.

Positions are learned absolute embeddings, none at all (causal masking alone
breaks the symmetry: NoPE, Kazemnejad et al. 2023, arXiv:2305.19466), or
rotary (RoPE, Su et al. 2021, arXiv:2104.09864: each query and key channel
pair is rotated by an angle proportional to its position, so attention scores
depend on relative offsets only). How positions are encoded is one of the
inductive biases that decide how a learner extrapolates where training says
nothing (``comparisons/configs/anbn.toml``).

Architectures register here (`register_architecture`), so training builds
any of them from its config and a checkpoint names the one it holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from toolkit.errors import ConfigError, DataError, UnknownNameError

from .config import ArchitectureConfig, TokenModelConfig, context_length

PositionalEncoding = Literal["learned", "none", "rotary"]
ROPE_BASE = 10_000.0  # rotary angles: position t turns channel pair i by t / ROPE_BASE^(2i / head_size)


@dataclass(frozen=True)
class TransformerConfig(TokenModelConfig):
    """Architecture of a `CausalTransformer`; the defaults are the tuned coin-mixture learner.

    ``vocab_size`` and ``block_size`` (`TokenModelConfig`) come first.
    """

    NAME = "transformer"

    n_layer: int = 2  # transformer blocks
    n_head: int = 2  # attention heads per block
    n_embd: int = 64  # residual stream width; a multiple of n_head
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * n_embd
    bias: bool = True  # biases in Linear layers and LayerNorms
    pos_encoding: PositionalEncoding = "learned"  # "learned" absolute, "rotary" (relative), or "none" (causal mask only)

    def __post_init__(self):
        super().__post_init__()
        self.require_positive("n_layer", "n_head", "n_embd", "mlp_ratio")
        if self.n_embd % self.n_head:
            raise ConfigError(f"model.n_embd ({self.n_embd}) must be a multiple of model.n_head ({self.n_head})")
        if self.pos_encoding not in ("learned", "none", "rotary"):
            raise ConfigError(f"model.pos_encoding must be 'learned', 'none' or 'rotary', got {self.pos_encoding!r}")
        if self.pos_encoding == "rotary" and (self.n_embd // self.n_head) % 2:
            raise ConfigError(
                f"rotary positions turn channel pairs, so the head size n_embd / n_head must be even, got "
                f"{self.n_embd} / {self.n_head} = {self.n_embd // self.n_head}"
            )


ModelConfig = TransformerConfig


class Rotary(nn.Module):
    """Rotary position embedding: turns channel pairs (2i, 2i + 1) of queries and keys by t · θ_i.

    The angles are buffers outside the state dict (``persistent=False``): they follow from the config,
    and checkpoints stay the same set of weights as for any other transformer.
    """

    def __init__(self, head_size: int, block_size: int, base: float = ROPE_BASE):
        super().__init__()
        inv_freq = base ** -(torch.arange(0, head_size, 2, dtype=torch.float64) / head_size)  # (hs/2,)
        angles = torch.arange(block_size, dtype=torch.float64)[:, None] * inv_freq[None]  # (T, hs/2)
        self.register_buffer("cos", angles.cos().float(), persistent=False)
        self.register_buffer("sin", angles.sin().float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.size(-2)
        cos, sin = self.cos[:T].to(x.dtype), self.sin[:T].to(x.dtype)  # (T, hs/2)
        even, odd = x[..., 0::2], x[..., 1::2]  # (B, H, T, hs/2) each
        return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)  # (B, H, T, hs)


def bos_shifted(y: torch.Tensor, bos: int, block_size: int) -> torch.Tensor:
    """Inputs ``[BOS, y_1 .. y_{T-1}]`` whose outputs predict ``y_1 .. y_T``; rejects sequences past the context.

    Shared by every autoregressive learner so position t never sees y_t.
    """
    B, T = y.size()
    if T > block_size:
        raise DataError(
            f"sequences of length {T} are longer than the learner's context of {block_size}; "
            f"evaluate at length <= {block_size} or retrain with a longer training length"
        )
    start = torch.full((B, 1), bos, dtype=y.dtype, device=y.device)
    return torch.cat([start, y[:, :-1]], dim=1)  # (B, T)


# Longest context whose masked attention runs as explicit softmax(q kᵀ / √hs) v on the CPU (see `attend`).
# Measured (benchmarks/train_throughput.py --attention kernel, the PFN on 2 cores): at 23 tokens a training step
# takes 0.84x the kernel's time eager and 0.64x compiled; at 41 tokens (eager) the same; at 101, 1.3 to 1.5x.
EXPLICIT_MASKED_ATTENTION_MAX_T = 48


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax attention of queries ``q`` (B, H, Tq, hs) over keys ``k`` and values ``v`` (B, H, Tk, hs).

    ``mask`` (Tq, Tk) bool, True where the query may attend to the key; None is causal (Tq = Tk). Usually
    ``F.scaled_dot_product_attention``. A custom mask on the CPU at short contexts (the PFN's context /
    query pattern, T <= `EXPLICIT_MASKED_ATTENTION_MAX_T`) is computed explicitly instead: torch's CPU
    flash kernel with a mask is slower there, and ``torch.compile`` fuses the explicit form's masking
    and softmax; at longer contexts the kernel is faster (`benchmarks/train_throughput.py --config
    comparisons/configs/linear_regression.toml --attention kernel` measures the kernel instead). Every
    query must be allowed at least one key.
    """
    T = q.size(-2)
    if mask is None or q.device.type != "cpu" or T > EXPLICIT_MASKED_ATTENTION_MAX_T:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
    scores = (q @ k.transpose(-2, -1)) * (q.size(-1) ** -0.5)  # (B, H, Tq, Tk)
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v  # (B, H, Tq, hs)


class SelfAttention(nn.Module):
    """Multi-head self-attention: q, k, v from one matmul, `attend` (softmax attention), a projection.

    Causal unless ``forward`` gets a boolean ``mask`` (True: the query may attend to the key), which
    replaces the causal one (the PFN's context / query pattern). ``rotary`` turns queries and keys by
    their positions first.
    """

    def __init__(self, n_embd: int, n_head: int, *, bias: bool, rotary: Rotary | None = None):
        super().__init__()
        self.n_head = n_head
        self.rotary = rotary
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, C = x.size()  # batch, time, channels
        hs = C // self.n_head
        q, k, v = (t.view(B, T, self.n_head, hs).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))  # (B,H,T,hs)
        if self.rotary is not None:
            q, k = self.rotary(q), self.rotary(k)  # (B, H, T, hs): positions enter the scores as offsets
        y = attend(q, k, v, mask)  # (B, H, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C): heads side by side again
        return self.c_proj(y)  # (B, T, C)


class CausalSelfAttention(SelfAttention):
    """The causal transformer's attention, with rotary positions when the config asks for them."""

    def __init__(self, config: TransformerConfig):
        head_size = config.n_embd // config.n_head
        rotary = Rotary(head_size, config.block_size) if config.pos_encoding == "rotary" else None
        super().__init__(config.n_embd, config.n_head, bias=config.bias, rotary=rotary)


class MLP(nn.Module):
    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.mlp_ratio * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.mlp_ratio * config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x)))  # (B, T, C)


class Block(nn.Module):
    """Pre-norm block: x + attn(ln(x), mask), then x + mlp(ln(x)); ``attn`` defaults to `CausalSelfAttention`."""

    def __init__(self, config, attn: SelfAttention | None = None):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config) if attn is None else attn
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), mask)  # (B, T, C)
        x = x + self.mlp(self.ln_2(x))  # (B, T, C)
        return x


def masked_cross_entropy(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean next-token loss over the positions that hold data.

    logits (B, T, V), y (B, T), mask (B, T) bool or None.
    """
    loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")  # (B*T,)
    if mask is None:
        return loss.mean()
    mask = mask.flatten().to(loss.dtype)  # (B*T,)
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


class Architecture(nn.Module):
    """What every learner architecture shares; the hooks training and prediction call all have defaults.

    A subclass is built as ``cls(config, generator=None)`` from a resolved config of its own
    (``resolve(prior, train_config)`` fills what it reads from the prior) and a ``torch.Generator``
    that draws the initial weights (default: one seeded with 0; the global RNG is never used). It
    builds its layers after ``super().__init__(config)`` (which checks the config is resolved and
    keeps it) and ends with ``self.initialise(generator)``.

    - ``kind``: the data kind it learns (`toolkit.kinds`); ``target_dtype``: the dtype of y in its batches.
    - `reset_parameters`: draw the initial weights from a ``torch.Generator`` (never the global RNG).
    - `fit_to_prior`: fit what depends on the prior before step 0 (the PFN's bar buckets); nothing here.
    - `training_loss`: the mean loss over a batch's positions that hold data; here next-token cross-entropy.
    - `episode_arrays` and `predictive`: the arrays it reads from `Episodes`, and its float64 predictive
      on one batch of them (`learners.LearnerPredictor` batches and labels it); here next-token tables.
    """

    kind: ClassVar[str] = "tokens"
    target_dtype: ClassVar[torch.dtype] = torch.long

    def __init__(self, config: ArchitectureConfig):
        super().__init__()
        if not config.resolved:
            raise ConfigError(
                f"{type(self).__name__} needs model.{' and model.'.join(config.DATA_FIELDS)} set "
                f"({type(config).__name__}.resolve(prior, train_config) fills them)"
            )
        self.config = config

    def initialise(self, generator: torch.Generator | None) -> None:
        """Draw the initial weights from ``generator`` (default: one seeded with 0)."""
        self.reset_parameters(generator if generator is not None else torch.Generator().manual_seed(0))

    def reset_parameters(self, generator: torch.Generator) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def gpt2_init(self, generator: torch.Generator, *, skip: tuple[str, ...] = ()) -> None:
        """GPT-2 initialisation: N(0, 0.02), residual projections scaled by depth, zero biases, unit gains."""
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 1 and name not in skip:  # LayerNorm gains
                nn.init.ones_(p)
            else:
                std = residual_std if name.endswith("c_proj.weight") else 0.02
                nn.init.normal_(p, mean=0.0, std=std, generator=generator)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def fit_to_prior(self, prior, key, train_config) -> None:
        """Fit what the architecture takes from prior samples before training; nothing by default."""

    def shape_text(self) -> str:
        """The architecture's size in words, for reprs and reports."""
        return f"{self.config.n_layer} layers x {self.config.n_embd} wide"

    def episode_arrays(self, episodes) -> dict[str, np.ndarray]:
        """What `predictive` reads from ``episodes``: the tokens (padding clipped into the vocabulary)."""
        # Padding after EOS may hold any value; it never reaches earlier positions, but must index the embedding.
        return {"y": np.clip(episodes.y.astype(np.int64), 0, self.config.vocab_size - 1)}

    @torch.no_grad()
    def predictive(self, batch: dict[str, torch.Tensor], *, y_grid: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The float64 predictive of one batch of `episode_arrays`: ``log_prob`` (B, T, V) of the next token."""
        return {"log_prob": torch.log_softmax(self(batch["y"]).double(), dim=-1)}

    def training_loss(self, batch: dict[str, torch.Tensor | None]) -> torch.Tensor:
        """Mean next-token cross-entropy over the positions that hold data (``batch["mask"]``)."""
        return masked_cross_entropy(self(batch["y"]), batch["y"], batch["mask"])


class TokenArchitecture(Architecture):
    """A next-token model: inputs ``[BOS, y_1, ..., y_{T-1}]`` give the logits of ``y_1, ..., y_T``.

    The BOS shift is shared by every token learner so that position t never sees y_t; a subclass
    maps the embedded inputs to logits (`next_token_logits`).
    """

    def __init__(self, config: TokenModelConfig):
        super().__init__(config)
        self.bos = config.vocab_size  # the extra input token
        self.wte = nn.Embedding(config.vocab_size + 1, config.n_embd)  # V outcomes + BOS

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Logits for every position.

        Parameters
        ----------
        y : torch.LongTensor, shape (batch, position)
            Outcomes ``y_1..y_T`` in ``[0, V)``.

        Returns
        -------
        torch.Tensor, shape (batch, position, V)
            Entry ``[:, t - 1]`` holds the logits of ``y_t`` given ``y_<t``.
        """
        idx = bos_shifted(y, self.bos, self.config.block_size)  # (B, T): [BOS, y_1 .. y_{T-1}]
        return self.next_token_logits(self.wte(idx))  # (B, T, V)

    def next_token_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, V) from the embedded inputs ``x`` (B, T, C) = embeddings of ``[BOS, y_1 .. y_{T-1}]``."""
        raise NotImplementedError


# Architecture name (the class name, recorded in checkpoints) -> (config class, module class).
_ARCHITECTURES: dict[str, tuple[type, type]] = {}


def register_architecture(config_cls: type):
    """Class decorator: the module is built as ``cls(config, generator=...)`` from a ``config_cls`` instance."""

    def decorate(module_cls: type) -> type:
        _ARCHITECTURES[module_cls.__name__] = (config_cls, module_cls)
        return module_cls

    return decorate


def architecture(name: str) -> tuple[type, type]:
    """(config class, module class) of the registered architecture ``name``."""
    if name not in _ARCHITECTURES:
        raise UnknownNameError("architecture", name, _ARCHITECTURES)
    return _ARCHITECTURES[name]


def build_model(config, *, generator: torch.Generator | None = None) -> nn.Module:
    """The registered architecture whose config class ``config`` is, with weights drawn from ``generator``."""
    for config_cls, module_cls in _ARCHITECTURES.values():
        if type(config) is config_cls:
            return module_cls(config, generator=generator)
    known = ", ".join(c.__name__ for c, _ in _ARCHITECTURES.values())
    raise ConfigError(f"no learner architecture takes a {type(config).__name__}; known configs: {known}")


@register_architecture(TransformerConfig)
class CausalTransformer(TokenArchitecture):
    """Next-token transformer for a token prior with V outcomes.

    Built from a resolved `TransformerConfig` and an optional ``generator`` (`Architecture`); the same
    generator state gives the same weights.

    Examples
    --------
    >>> model = CausalTransformer(TransformerConfig(vocab_size=2, block_size=16))
    >>> model(torch.zeros(3, 16, dtype=torch.long)).shape
    torch.Size([3, 16, 2])
    """

    def __init__(self, config: TransformerConfig, *, generator: torch.Generator | None = None):
        super().__init__(config)  # the BOS-shifted token embedding
        self.wpe = nn.Embedding(config.block_size, config.n_embd) if config.pos_encoding == "learned" else None
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=config.bias)
        self.initialise(generator)

    def reset_parameters(self, generator: torch.Generator) -> None:
        """GPT-2 initialisation, drawn from ``generator``."""
        self.gpt2_init(generator)

    def next_token_logits(self, x: torch.Tensor) -> torch.Tensor:
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(x.size(1), device=x.device))  # (B, T, C) + (T, C)
        for block in self.blocks:
            x = block(x)  # (B, T, C)
        return self.lm_head(self.ln_f(x))  # (B, T, V)


__all__ = [
    "TransformerConfig",
    "ModelConfig",
    "CausalTransformer",
    "Architecture",
    "TokenArchitecture",
    "masked_cross_entropy",
    "Block",
    "CausalSelfAttention",
    "SelfAttention",
    "attend",
    "MLP",
    "Rotary",
    "register_architecture",
    "architecture",
    "build_model",
    "context_length",
]
