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

from .config import TokenModelConfig
from .model import TokenArchitecture, register_architecture

Cell = Literal["lstm", "gru"]


@dataclass(frozen=True)
class RNNConfig(TokenModelConfig):
    """Architecture of a `RecurrentLM`; ``vocab_size`` and ``block_size`` (`TokenModelConfig`) come first."""

    NAME = "rnn"
    cell: Cell = "lstm"  # "lstm" or "gru"
    n_layer: int = 1  # stacked recurrent layers
    n_embd: int = 32  # token embedding width = hidden state width

    def __post_init__(self):
        super().__post_init__()
        if self.cell not in ("lstm", "gru"):
            raise ConfigError(f"model.cell must be 'lstm' or 'gru', got {self.cell!r}")
        self.require_positive("n_layer", "n_embd")


@register_architecture(RNNConfig)
class RecurrentLM(TokenArchitecture):
    """Next-token LSTM / GRU for a token prior with V outcomes.

    Built from a resolved `RNNConfig` and an optional ``generator`` (`learners.model.Architecture`).

    Examples
    --------
    >>> model = RecurrentLM(RNNConfig(vocab_size=3, block_size=16))
    >>> model(torch.zeros(2, 16, dtype=torch.long)).shape
    torch.Size([2, 16, 3])
    """

    def __init__(self, config: RNNConfig, *, generator: torch.Generator | None = None):
        super().__init__(config)  # the BOS-shifted token embedding
        recurrence = nn.LSTM if config.cell == "lstm" else nn.GRU
        self.rnn = recurrence(config.n_embd, config.n_embd, num_layers=config.n_layer, batch_first=True)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size)
        self.initialise(generator)

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

    def next_token_logits(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(x)  # (B, T, C)
        return self.lm_head(h)  # (B, T, V)


__all__ = ["RNNConfig", "RecurrentLM", "Cell"]
