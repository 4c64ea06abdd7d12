"""The PFN learner against exact Bayes on linear regression; the numbers go to ``benchmarks/RESULTS.md``.

    python benchmarks/pfn_linear_regression.py [--steps N] [--n-layer L] ... [--out DIR] [--no-write]

Trains the ``cpu``-profile PFN (`learners.PFNConfig`) on the prior
``linear_regression`` (d = 5, σ = 0.1: w ~ N(0, I_d), x ~ N(0, I_d),
y = w·x + N(0, σ²)) with `learners.train`, the first steps on a curriculum
of fewer input dimensions (Garg et al. 2022), then compares it with the
closed-form Bayes predictive (`toolkit.bayes_predictor`) on fresh evaluation
episodes of length 2d + 1 = 11, position by position:

- the squared difference of the predictive means divided by d, averaged over
  the episodes (Garg et al. 2022's normalised error, against Bayes rather than
  the truth); the target is <= 0.05 averaged over positions 1..2d+1 and
  <= 0.1 at each of them;
- the mean negative log predictive density (−log_score) of the realised y_t,
  learner minus Bayes; the target is within 0.05 nats averaged over the same
  positions.

Training time is the wall time `learners.train` records; on a shared machine it
depends on the load (printed with the results).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from provenance import commit, cpu_name, load_average, replace_block, system  # benchmarks/provenance.py, beside this script

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import learners  # noqa: E402  (before torch: sets torch's OpenMP wait policy)
import priors  # noqa: E402
import toolkit  # noqa: E402
import torch  # noqa: E402
from toolkit.dims import QUANTILE  # noqa: E402
from toolkit.metrics import coverage  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
START, END = "<!-- pfn_linear_regression:start -->", "<!-- pfn_linear_regression:end -->"
TRAIN_SEED, EVAL_SEED = 0, 1

# The cpu profile (the PFNConfig defaults and comparisons/configs/linear_regression.toml): episodes of 2d + 1,
# the positions evaluated, as Garg et al. train at d = 20 (41 points).
CPU_MODEL = dict(n_layer=8, n_head=4, n_embd=64, mlp_ratio=2, num_buckets=1000)
CPU_TRAIN = dict(steps=10500, batch_size=64, length=11, lr=3e-3, warmup_steps=200, weight_decay=0.0)
# Garg et al.'s curriculum on the input dimension: x in the first k coordinates until the step given, then all d.
CPU_CURRICULUM = "1:300,2:600,3:900,4:1200"
TARGETS = {"mean_avg": 0.05, "mean_max": 0.1, "nll_excess": 0.05}


def evaluate(learner, bayes, prior, *, d: int, num_episodes: int, key) -> dict[str, np.ndarray]:
    """Per-position comparison on ``num_episodes`` fresh episodes of length 2d + 1.

    ``learner`` is any predictor whose ``predict`` gives ``mean``, ``log_score`` and ``quantile_value`` (the
    learners' and the toolkit's predictors, or the peer PFN of ``peer_pfns.py``); every entry is a
    per-position array, ``coverage90`` the fraction of realised y inside the learner's 0.05..0.95 band.
    """
    episodes = prior.sample(key, num_episodes, 2 * d + 1)
    got, want = learner.predict(episodes), bayes.predict(episodes)
    sq = (got["mean"].values - want["mean"].values) ** 2 / d  # (episode, position)
    nll_l, nll_b = -got["log_score"].values, -want["log_score"].values
    excess = nll_l - nll_b
    n = num_episodes
    band = got["quantile_value"].sel({QUANTILE: [0.05, 0.95]}).values  # (episode, position, 2)
    return {
        "coverage90": coverage(episodes.y, band[..., 0], band[..., 1], axis=0),
        "mean_sq": sq.mean(0),
        "mean_sq_se": sq.std(0, ddof=1) / np.sqrt(n),
        "nll_learner": nll_l.mean(0),
        "nll_bayes": nll_b.mean(0),
        "nll_excess": excess.mean(0),
        "nll_excess_se": excess.std(0, ddof=1) / np.sqrt(n),
        "nll_excess_avg_se": excess.mean(1).std(ddof=1) / np.sqrt(n),
    }


def dimension_curriculum(spec: str, *, d: int, sigma: float, unit: bool = False) -> list[tuple[int, object]]:
    """``"1:300,2:600"`` -> stages of linear_regression with x in the first 1, then 2, coordinates.

    The prior keeps E|x|² = d in a subspace (each of its k coordinates has variance d / k); with ``unit`` the
    coordinates have variance 1 instead, as in Garg et al.'s curriculum.
    """
    stages = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
        k, until = (int(v) for v in item.split(":"))
        scale = (k / d) ** 0.5 if unit else 1.0
        stages.append((until, priors.get("linear_regression", d=d, sigma=sigma, x_subspace=k, x_scale=scale)))
    return stages


def report(
    ev: dict[str, np.ndarray], *, d: int, model: dict, train: dict, result, num_episodes: int, curriculum: str = "",
    seed: int = TRAIN_SEED,
) -> list[str]:
    mean_avg, mean_max = float(ev["mean_sq"].mean()), float(ev["mean_sq"].max())
    nll_excess = float(ev["nll_excess"].mean())
    ok = {
        "mean_avg": mean_avg <= TARGETS["mean_avg"],
        "mean_max": mean_max <= TARGETS["mean_max"],
        "nll_excess": abs(nll_excess) <= TARGETS["nll_excess"],
    }
    lines = [
        "## PFN learner against exact Bayes on linear regression (`benchmarks/pfn_linear_regression.py`)",
        "",
        f"Prior `linear_regression(d={d}, sigma={result.meta['prior']['params'].get('sigma')})`; learner "
        f"`PFNConfig({', '.join(f'{k}={v}' for k, v in model.items())})` ({result.meta['num_parameters']:,} "
        f"parameters), `TrainConfig({', '.join(f'{k}={v}' for k, v in train.items())})`, seed {seed}, "
        + (f"curriculum on the input dimension `{curriculum}` (x in the first k coordinates before step s, "
           "for k:s)" if curriculum else "no curriculum") + "; "
        f"trained {result.steps} steps in {result.wall_time_s / 60:.1f} min on the CPU"
        f"{', compiled (torch.compile)' if result.meta.get('runtime', {}).get('compile') else ', eager'} (finished "
        f"{result.meta.get('saved_at', 'at an unrecorded time')}; the load average below is the one when this "
        "command started, which reused the finished run when given its --out) "
        f"(final training loss {result.loss_log[-1][1]:.3f} nats). Evaluation: {num_episodes} fresh episodes of "
        f"length {2 * d + 1} (seed {EVAL_SEED}) against the closed-form Bayes predictive.",
        "",
        "Training loss (mean over the preceding log interval, nats): "
        + ", ".join(f"{v:.3f} at step {s}" for s, v in _loss_points(result.loss_log)) + ".",
        "",
        "| position | (mean − Bayes mean)² / d | NLL learner | NLL Bayes | NLL excess (± s.e.) |",
        "|---|---|---|---|---|",
    ]
    for t in range(len(ev["mean_sq"])):
        lines.append(
            f"| {t + 1} | {ev['mean_sq'][t]:.4f} | {ev['nll_learner'][t]:.3f} | {ev['nll_bayes'][t]:.3f} | "
            f"{ev['nll_excess'][t]:+.3f} ± {ev['nll_excess_se'][t]:.3f} |"
        )
    lines += [
        f"| **average** | **{mean_avg:.4f}** | {ev['nll_learner'].mean():.3f} | {ev['nll_bayes'].mean():.3f} | "
        f"**{nll_excess:+.3f}** ± {float(ev['nll_excess_avg_se']):.3f} |",
        "",
        f"Targets: squared mean difference / d averaged over positions 1..{2 * d + 1} <= {TARGETS['mean_avg']} "
        f"({verdict(ok['mean_avg'])}: {mean_avg:.4f}), at every position <= {TARGETS['mean_max']} "
        f"({verdict(ok['mean_max'])}: largest {mean_max:.4f}), NLL within {TARGETS['nll_excess']} nats of Bayes "
        f"({verdict(ok['nll_excess'])}: {nll_excess:+.3f}).",
        "",
    ]
    return lines


def verdict(ok: bool) -> str:
    """How a target reads in RESULTS.md: met, or missed in bold."""
    return "met" if ok else "**missed**"


def _loss_points(loss_log, count: int = 6) -> list[tuple[int, float]]:
    """About ``count`` evenly spaced entries of the loss log, the last one included."""
    stride = max(1, len(loss_log) // count)
    return [tuple(e) for e in loss_log[::-stride][:count]][::-1]


def machine() -> str:
    cpu = cpu_name()
    return (f"{cpu}, {os.cpu_count()} cores visible (load average {load_average()} at the start), torch threads "
            f"{torch.get_num_threads()}, {system()}, "
            f"torch {torch.__version__}")


def write(lines: list[str], provenance: list[str]) -> None:
    """Replace this benchmark's block in RESULTS.md (everything else stays as it is)."""
    replace_block(RESULTS, START, END, "\n".join([START, *lines, *provenance, "", END]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--d", type=int, default=5, help="input dimension of the prior (default 5)")
    parser.add_argument("--sigma", type=float, default=0.1, help="noise standard deviation (default 0.1)")
    for name, value in {**CPU_MODEL, **CPU_TRAIN}.items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=type(value), default=value, help=f"default {value} (the cpu profile)")
    parser.add_argument("--curriculum", default=CPU_CURRICULUM,
                        help=f"K:UNTIL,...: x in K of the d dimensions before step UNTIL; '' for none "
                             f"(default {CPU_CURRICULUM})")
    parser.add_argument("--unit-curriculum", action="store_true",
                        help="curriculum inputs with unit variance per coordinate (default: E|x|^2 = d throughout)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="torch.compile the training step (default on, as in the cpu profile)")
    parser.add_argument("--seed", type=int, default=TRAIN_SEED, help=f"training seed (default {TRAIN_SEED})")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--eval-episodes", type=int, default=4096, help="evaluation episodes (default 4096)")
    parser.add_argument("--out", default=None, help="checkpoint directory (resumes there); default: no checkpoints")
    parser.add_argument("--no-write", action="store_true", help="print the results without touching RESULTS.md")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    command = "python benchmarks/pfn_linear_regression.py" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    torch.set_num_threads(args.threads)
    provenance = [
        f"- date {datetime.now(timezone.utc).isoformat(timespec='seconds')}; commit {commit()}",
        f"- machine: {machine()}",
        f"- command: `{command}`",
    ]
    model = {k: getattr(args, k) for k in CPU_MODEL}
    train = {k: getattr(args, k) for k in CPU_TRAIN}
    prior = priors.get("linear_regression", d=args.d, sigma=args.sigma)
    curriculum = dimension_curriculum(args.curriculum, d=args.d, sigma=args.sigma, unit=args.unit_curriculum)
    cfg = learners.TrainConfig(**train, seed=args.seed, device="cpu", compile=args.compile, log_every=100,
                               checkpoint_every=500)
    t0 = time.perf_counter()
    result = learners.train(prior, learners.PFNConfig(**model), cfg, args.out, progress=not args.no_progress,
                            curriculum=curriculum)
    print(f"trained in {time.perf_counter() - t0:.0f} s; loss log (every 500 steps): "
          f"{[(s, round(v, 3)) for s, v in result.loss_log if s % 500 == 0]}", flush=True)
    bayes = toolkit.bayes_predictor(prior)
    ev = evaluate(result.predictor, bayes, prior, d=args.d, num_episodes=args.eval_episodes,
                  key=jax.random.key(EVAL_SEED))
    lines = report(ev, d=args.d, model=model, train=train, result=result, num_episodes=args.eval_episodes,
                   curriculum=args.curriculum, seed=args.seed)
    print("\n".join(lines + provenance), flush=True)
    if not args.no_write:
        write(lines, provenance)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
