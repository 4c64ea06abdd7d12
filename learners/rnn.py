"""A small recurrent language model (LSTM or GRU): the non-transformer autoregressive learner.

Same contract as `CausalTransformer`: a BOS token is prepended, so inputs
``[BOS, y_1, ..., y_{T-1}]`` give the logits of ``y_1, ..., y_T`` in one pass
(position t predicts y_t from y_<t), the head has ``vocab_size`` logits, and
sequences longer than ``block_size`` (the training length) are refused: the
recurrence could run on, but nothing was trained there.

The recurrence counts by construction (a cell state can add one per a and
subtract one per b), where attention has to learn positions or counts; which
rule each extrapolates to an aⁿbⁿ prompt the grammar cannot produce is what
``comparisons/configs/anbn.toml`` measures. Weights are drawn from a
``torch.Generator`` (PyTorch's own RNN initialisation would use the global RNG):
uniform(±1/√hidden) as in PyTorch, except the LSTM biases: the forget gate's
at +1 (Gers, Schmidhuber & Cummins 2000), so the cell state remembers from
the start, and the hidden-to-hidden copy at 0 (it only duplicates ``bias_ih``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn

from toolkit.errors import ConfigError

from .config import ConfigDict
from .model import bos_shifted, register_architecture

Cell = Literal["lstm", "gru"]


@dataclass(frozen=True)
class RNNConfig(ConfigDict):
    """Architecture of a `RecurrentLM`."""

    vocab_size: int | None = None  # outcomes V of the prior (inputs add a BOS token); None = read from the prior
    block_size: int | None = None  # longest sequence accepted; None = the training length
    cell: Cell = "lstm"  # "lstm" or "gru"
    n_layer: int = 1  # stacked recurrent layers
    n_embd: int = 32  # token embedding width = hidden state width

    def __post_init__(self):
        if self.cell not in ("lstm", "gru"):
            raise ConfigError(f"model.cell must be 'lstm' or 'gru', got {self.cell!r}")
        self.require_positive("n_layer", "n_embd")
        if self.vocab_size is not None and self.vocab_size < 2:
            raise ConfigError(f"model.vocab_size must be at least 2 outcomes, got {self.vocab_size}")
        if self.block_size is not None and self.block_size < 1:
            raise ConfigError(f"model.block_size must be positive, got {self.block_size}")

    @property
    def resolved(self) -> bool:
        return self.vocab_size is not None and self.block_size is not None


@register_architecture(RNNConfig)
class RecurrentLM(nn.Module):
    """Next-token LSTM / GRU for a token prior with V outcomes.

    Parameters
    ----------
    config : RNNConfig
        A resolved config (``vocab_size`` and ``block_size`` set).
    generator : torch.Generator, optional
        Source of the initial weights (default: seeded with 0; the global RNG is never used).

    Examples
    --------
    >>> model = RecurrentLM(RNNConfig(vocab_size=3, block_size=16))
    >>> model(torch.zeros(2, 16, dtype=torch.long)).shape
    torch.Size([2, 16, 3])
    """

    def __init__(self, config: RNNConfig, *, generator: torch.Generator | None = None):
        super().__init__()
        if not config.resolved:
            raise ConfigError("RecurrentLM needs model.vocab_size and model.block_size set")
        self.config = config
        self.bos = config.vocab_size
        self.wte = nn.Embedding(config.vocab_size + 1, config.n_embd)  # V outcomes + BOS
        recurrence = nn.LSTM if config.cell == "lstm" else nn.GRU
        self.rnn = recurrence(config.n_embd, config.n_embd, num_layers=config.n_layer, batch_first=True)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size)
        self.reset_parameters(generator if generator is not None else torch.Generator().manual_seed(0))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        """PyTorch's RNN initialisation, drawn from ``generator``; LSTM forget-gate biases at 1."""
        bound = 1.0 / math.sqrt(self.config.n_embd)
        nn.init.normal_(self.wte.weight, mean=0.0, std=1.0, generator=generator)
        h = self.config.n_embd
        for name, p in self.rnn.named_parameters():
            nn.init.uniform_(p, -bound, bound, generator=generator)
            if self.config.cell == "lstm" and name.startswith("bias_ih"):
                p[h : 2 * h] = 1.0  # gates are ordered input, forget, cell, output
            elif self.config.cell == "lstm" and name.startswith("bias_hh"):
                p.zero_()
        nn.init.uniform_(self.lm_head.weight, -bound, bound, generator=generator)
        nn.init.zeros_(self.lm_head.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

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
        h, _ = self.rnn(self.wte(idx))  # (B, T, C)
        return self.lm_head(h)  # (B, T, V)


__all__ = ["RNNConfig", "RecurrentLM", "Cell"]
