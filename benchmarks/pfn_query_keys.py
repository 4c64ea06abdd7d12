"""Time of a PFN training step with the query tokens as keys (the square mask) and without (`ContextAttention`).

    python benchmarks/pfn_query_keys.py [--blocks 12] [--steps 20] [--threads 2]

Both are the cpu-profile PFN of ``benchmarks/pfn_linear_regression.py`` (8 layers, 64 wide, 1000 bars) with the
same weights, compiled, on one fixed batch of 64 episodes of 11 from ``linear_regression`` (no sampling in the
loop): ``square`` runs every block's `SelfAttention` over all 2T + 1 tokens with the mask padded to (2T + 1,
2T + 1), as before the queries stopped being keys; ``queries-no-keys`` is `PFNTransformer` itself. They take
turns, ``--blocks`` times ``--steps`` steps each, so that both see the same moments of a shared machine; the
median ratio of neighbouring blocks is the figure (the two compute the same function: tests/learners/test_pfn.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

from pfn_linear_regression import CPU_MODEL, CPU_TRAIN  # benchmarks/, beside this script

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402

import learners  # noqa: E402
import priors  # noqa: E402
import torch  # noqa: E402
from learners.model import SelfAttention  # noqa: E402
from learners.pfn import PFNTransformer, pfn_attention_mask  # noqa: E402
from learners.train import _make_optimizer, _Prefetcher, resolve_model_config, train_step, training_objective  # noqa: E402


def square_mask(length: int, device=None) -> torch.Tensor:
    """`pfn_attention_mask` over all 2T + 1 tokens as keys, the queries included (nothing attends to them)."""
    mask = torch.zeros(2 * length + 1, 2 * length + 1, dtype=torch.bool, device=device)
    mask[:, : length + 1] = pfn_attention_mask(length, device=device)
    return mask


class SquareMaskPFN(PFNTransformer):
    """The same network computed the old way: every token a key, every block over all 2T + 1 rows.

    Also the reference that tests/learners/test_pfn.py checks `PFNTransformer` against.
    """

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.size()
        mask = square_mask(T, device=x.device)
        ex = self.enc_x(x)
        h = torch.cat([self.empty.expand(B, 1, -1), ex + self.enc_y(y.unsqueeze(-1)), ex], dim=1)
        for block in self.blocks:
            h = h + SelfAttention.forward(block.attn, block.ln_1(h), mask)
            h = h + block.mlp(block.ln_2(h))
        return self.head(self.ln_f(h[:, T + 1 :]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=12, help="turns each (default 12)")
    parser.add_argument("--steps", type=int, default=20, help="training steps a turn (default 20)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    prior = priors.get("linear_regression", d=5, sigma=0.1)
    cfg = learners.TrainConfig(**CPU_TRAIN, seed=0, device="cpu", compile=True)
    config = resolve_model_config(prior, learners.PFNConfig(**CPU_MODEL), cfg)
    batch = _Prefetcher(prior, cfg, 0, torch.device("cpu"), y_dtype=torch.float32).batch(0)
    runs = {}
    for name, cls in (("square", SquareMaskPFN), ("queries-no-keys", PFNTransformer)):
        model = cls(config, generator=torch.Generator().manual_seed(0))
        model.fit_to_prior(prior, jax.random.key(1), cfg)
        runs[name] = (model, _make_optimizer(model, cfg, torch.device("cpu")),
                      training_objective(model, cfg, torch.device("cpu")))
    for model, optimizer, objective in runs.values():  # compile and warm up
        for step in range(30):
            train_step(objective, optimizer, model, batch, step, cfg, nullcontext())
    ms = {name: [] for name in runs}
    for _ in range(args.blocks):
        for name, (model, optimizer, objective) in runs.items():
            start = time.perf_counter()
            for step in range(args.steps):
                loss = train_step(objective, optimizer, model, batch, step, cfg, nullcontext())
            loss.item()
            ms[name].append(1e3 * (time.perf_counter() - start) / args.steps)
    ratio = statistics.median(new / old for new, old in zip(ms["queries-no-keys"], ms["square"]))
    for name, values in ms.items():
        print(f"{name}: median {statistics.median(values):.1f} ms a step (blocks {min(values):.1f} to {max(values):.1f})")
    print(f"queries-no-keys / square: median {ratio:.3f} over {args.blocks} neighbouring turns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
