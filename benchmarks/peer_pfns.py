"""Our PFN against the reference PFN trainer (automl/PFNs, ``pfns`` 0.4.2) at equal wall time and model size.

    pip install -e ".[peer]"          # or, without pfns' development tools: pip install --no-deps pfns==0.4.2 einops pyyaml tensorboard
    python benchmarks/peer_pfns.py [--budget SECONDS] [--eval-episodes N] [--no-write]

Both trainers learn the prior ``linear_regression`` (d = 5, σ = 0.1: x ~ N(0, I_5), w ~ N(0, I_5),
y = w·x + N(0, σ²)) on episodes of 2d + 1 = 11 points, one after the other on this machine, each for
``--budget`` seconds of training wall time, with the same transformer size (8 layers, 64 wide, 4 heads,
MLP 128 wide, 1000 bars with half-normal tails fitted to prior samples) and the same batch of 64 episodes:

- ``pfns``: its own loop, ``pfns.train.train``, on a ``get_batch`` that draws the episodes from the same
  NumPyro prior (``pfns.priors.prior.Batch(x, y, target_y)``), with the settings of its tutorial (AdamW
  at its tutorial's lr scaled to this width, cosine decay with its default 10 warmup epochs, gradient
  clipping at 1, the bar-distribution criterion with ``get_bucket_borders`` over 100,000 prior ys, the
  classic PFN architecture: ``attention_between_features = False``, all 5 features in one group); on the
  CPU without mixed precision (bf16 autocast is meant for GPUs) and uncompiled (its default); its data
  loader inline (``num_workers = 0``, as ours on the CPU: the 2 cores have no idle one to sample on).
- ours: `learners.train` with the cpu profile of ``benchmarks/pfn_linear_regression.py`` (compiled, lr 3e-3,
  200 warmup steps), its step count set so that the run fits the budget and its curriculum on the input
  dimension in stages of 150 steps instead of 300 (``PEER_CURRICULUM``, measured below).

Each trainer's speed is measured first by a short run of its own (300 and 200 steps, not counted),
and its step count set from it, so that its whole learning-rate schedule fits the budget; snapshots at
log-spaced wall times give the time-to-Bayes curve (``benchmarks/figures/time_to_bayes.png``). Every
snapshot is scored on the same fresh episodes (``--eval-episodes``, seed 1) against the closed-form
Bayes predictive with ``pfn_linear_regression.evaluate``: the NLL gap per position, (mean − Bayes
mean)² / d and the coverage of the central 90 % interval. Step counts come from measured speeds, so two
runs differ by a few steps; ``--ours-steps`` and ``--pfns-steps`` fix them for a repeatable run.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from pfn_linear_regression import (  # benchmarks/, beside this script
    CPU_MODEL,
    CPU_TRAIN,
    EVAL_SEED,
    dimension_curriculum,
    evaluate,
    machine,
    verdict,
)
from provenance import commit, load_average, replace_block

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

import learners  # noqa: E402
import priors  # noqa: E402
import toolkit  # noqa: E402
import torch  # noqa: E402
from learners.train import EVAL_FOLDER  # noqa: E402
from toolkit.dims import EPISODE, POSITION, QUANTILE, QUANTILES  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
FIGURE = HERE / "figures" / "time_to_bayes.png"
START, END = "<!-- peer_pfns:start -->", "<!-- peer_pfns:end -->"
D, SIGMA, LENGTH = 5, 0.1, 11
# pfns' tutorial trains a 512-wide PFN at lr 3e-4; at 64 wide, the square root of the width ratio scales it
# to 8.5e-4 (a learning rate falls with the width; a linear rule would give 2.4e-3).
PFNS_LR = 3e-4 * math.sqrt(512 / CPU_MODEL["n_embd"])
PFNS_STEPS_PER_EPOCH = 20  # pfns schedules (and snapshots) per epoch: short epochs keep both fine-grained
PFNS_WARMUP_EPOCHS = 10  # pfns' default
# The curriculum of the cpu profile (pfn_linear_regression.CPU_CURRICULUM) ends at step 1200 of 10,500; in a 5-minute budget of ~3500
# steps it took a third of the run. Stages of 150 steps instead of 300 left the loss plateau sooner: NLL gap
# 0.84 at step 794 against 1.40 at step 1121, 0.098 after 3810 steps (358 s) against 0.159 after 3108 (293 s);
# batch 128 instead of 64 did worse (0.487 after 1828 steps, 255 s), and so did lr 5e-3 (0.263 after 1871 steps,
# 230 s) and 6 layers (0.249 after 3140 steps, 287 s). Measured with --skip-pfns --budget 300 --ours KEY=VALUE.
# With the query tokens no longer keys (a step 0.89-0.98x the time, benchmarks/pfn_query_keys.py): 0.199 after 3000 steps (--ours-steps 3000), and
# batch 32, whose step costs 0.63x batch 64's, 0.160 after 6000 steps (the same episodes) and 0.202 after the
# 4913 steps of 300 s: no better at equal time, so both trainers keep batch 64.
PEER_CURRICULUM = "1:150,2:300,3:450,4:600"
TARGETS = {"gap_ratio": 0.5, "speed_ratio": 2.0, "gap": 0.05, "budget_s": 300.0}


@dataclass
class Run:
    """One trainer's run: its snapshots ``(wall s, step, predictor)``, final speed, and settings in words."""

    name: str
    settings: str
    snapshots: list[tuple[float, int, object]] = field(default_factory=list)
    steps: int = 0
    wall_s: float = 0.0
    targets: int = 0  # y values the loss was taken on, summed over the steps

    @property
    def targets_per_s(self) -> float:
        return self.targets / self.wall_s


def snapshot_times(budget: float, count: int, first: float) -> np.ndarray:
    """``count`` log-spaced wall times from ``first`` to ``budget`` seconds."""
    return np.geomspace(first, budget, count)


def gap_summary(ev: dict[str, np.ndarray]) -> dict[str, float]:
    """Position averages of `pfn_linear_regression.evaluate`'s per-position arrays."""
    return {
        "gap": float(ev["nll_excess"].mean()),
        "gap_se": float(ev["nll_excess_avg_se"]),
        "mean_sq": float(ev["mean_sq"].mean()),
        "coverage90": float(ev["coverage90"].mean()),
    }


class PfnsPredictor:
    """A trained ``pfns`` model as a toolkit predictor: ``predict(episodes)`` gives the prediction Dataset.

    Position t (1-based) is predicted from the t − 1 pairs before it: pfns' ``single_eval_pos = t − 1``,
    whose first test output is y_t's bar distribution. ``criterion`` is the model's
    ``FullSupportBarDistribution``: its negative log density, mean and quantiles (``icdf``) are pfns' own.
    """

    def __init__(self, model, criterion):
        self.model, self.criterion = model.eval(), criterion

    @torch.no_grad()
    def predict(self, episodes) -> xr.Dataset:
        x = torch.tensor(np.asarray(episodes.x), dtype=torch.float32)  # (B, T, F)
        y = torch.tensor(np.asarray(episodes.y), dtype=torch.float32)  # (B, T)
        logits = torch.stack([self.model(x=x, y=y[:, :t], only_return_standard_out=True)[:, 0]
                              for t in range(y.shape[1])], dim=1)  # (B, T, bars): position t + 1 from t pairs
        log_score = -self.criterion(logits, y)  # (B, T)
        mean = self.criterion.mean(logits)  # (B, T)
        quantiles = torch.stack([self.criterion.icdf(logits, q) for q in QUANTILES], dim=-1)  # (B, T, Q)
        positions = np.arange(1, y.shape[1] + 1)
        return xr.Dataset(
            {
                "log_score": ((EPISODE, POSITION), log_score.double().numpy()),
                "mean": ((EPISODE, POSITION), mean.double().numpy()),
                "quantile_value": ((EPISODE, POSITION, QUANTILE), quantiles.double().numpy()),
            },
            coords={POSITION: positions, QUANTILE: list(QUANTILES)},
        )


def pfns_get_batch(prior, seed: int, counter: dict):
    """pfns' ``get_batch(batch_size, seq_len, num_features, single_eval_pos, ...)`` over our prior's sampler.

    Batch i is ``prior.sample(fold_in(key(seed), i))``; ``counter`` counts the batches and the targets
    (the y after ``single_eval_pos``, on which pfns takes its loss).
    """
    from pfns.priors.prior import Batch

    key = jax.random.key(seed)

    def get_batch(batch_size, seq_len, num_features, single_eval_pos=None, **_):
        if num_features != D:
            raise ValueError(f"the linear-regression prior has {D} features, pfns asked for {num_features}")
        episodes = prior.sample(jax.random.fold_in(key, counter["batches"]), batch_size, seq_len)
        counter["batches"] += 1
        counter["targets"] += batch_size * (seq_len - (single_eval_pos or 0))
        x = torch.tensor(np.asarray(episodes.x), dtype=torch.float32)  # (B, T, F)
        y = torch.tensor(np.asarray(episodes.y), dtype=torch.float32)  # (B, T)
        return Batch(x=x, y=y, target_y=y.clone())

    return get_batch


def train_pfns(prior, *, steps: int, seed: int, lr: float, times=(), on_epoch=None) -> Run:
    """Train with ``pfns.train.train`` for about ``steps`` steps; snapshot at the first epoch end past each time."""
    import pfns.train
    from pfns.batch_shape_sampler import BatchShapeSamplerConfig
    from pfns.model.bar_distribution import BarDistributionConfig, get_bucket_borders
    from pfns.model.transformer_config import TransformerConfig
    from pfns.optimizer import OptimizerConfig
    from pfns.priors.prior import AdhocPriorConfig

    fit = prior.sample(jax.random.fold_in(jax.random.key(seed), 2**31 - 1), 100_000 // LENGTH + 1, LENGTH)
    borders = get_bucket_borders(CPU_MODEL["num_buckets"], ys=torch.tensor(np.asarray(fit.y), dtype=torch.float32))
    counter = {"batches": 0, "targets": 0}
    epochs = max(1, round(steps / PFNS_STEPS_PER_EPOCH))
    config = pfns.train.MainConfig(
        priors=[AdhocPriorConfig(get_batch_methods=[pfns_get_batch(prior, seed, counter)], prior_kwargs={})],
        optimizer=OptimizerConfig("adamw", lr=lr, weight_decay=0.0),
        scheduler="cosine_decay",
        warmup_epochs=min(PFNS_WARMUP_EPOCHS, epochs - 1),
        model=TransformerConfig(
            criterion=BarDistributionConfig(borders.tolist(), full_support=True),
            emsize=CPU_MODEL["n_embd"], nhid=CPU_MODEL["n_embd"] * CPU_MODEL["mlp_ratio"],
            nlayers=CPU_MODEL["n_layer"], nhead=CPU_MODEL["n_head"],
            features_per_group=D, attention_between_features=False,
        ),
        batch_shape_sampler=BatchShapeSamplerConfig(batch_size=CPU_TRAIN["batch_size"], max_seq_len=LENGTH,
                                                    min_num_features=D, max_num_features=D, seed=seed),
        epochs=epochs, steps_per_epoch=PFNS_STEPS_PER_EPOCH, train_mixed_precision=False, num_workers=0,
        verbose=False, progress_bar=False, train_state_dict_save_path="in-memory",
    )
    run = Run("pfns 0.4.2", f"AdamW lr {lr:.2g}, cosine over {epochs} epochs of {PFNS_STEPS_PER_EPOCH} steps, "
                            f"{config.warmup_epochs} warmup epochs, uncompiled")
    pending = sorted(times)
    start = time.perf_counter()

    def save(checkpoint, _path):  # pfns' per-epoch checkpoint hook: keep the weights at the snapshot times
        elapsed = time.perf_counter() - start
        if on_epoch is not None:
            on_epoch(elapsed, checkpoint["epoch"])
        if pending and elapsed >= pending[0]:
            while pending and elapsed >= pending[0]:
                pending.pop(0)
            run.snapshots.append((elapsed, checkpoint["epoch"] * PFNS_STEPS_PER_EPOCH,
                                  copy.deepcopy(checkpoint["model_state_dict"])))

    torch.manual_seed(seed)  # pfns initialises its weights from torch's global generator
    with contextlib.redirect_stdout(io.StringIO()):  # pfns prints its configs and every checkpoint
        out = pfns.train.train(config, device="cpu", reusable_config=False, save_object_function=save)
    run.wall_s, run.steps, run.targets = time.perf_counter() - start, epochs * PFNS_STEPS_PER_EPOCH, counter["targets"]
    model = out["model"]
    final = copy.deepcopy(model.state_dict())
    if not run.snapshots or run.snapshots[-1][1] != run.steps:
        run.snapshots.append((run.wall_s, run.steps, final))
    snapshots = []
    for wall, step, weights in run.snapshots:
        net = copy.deepcopy(model)
        net.load_state_dict(weights)
        snapshots.append((wall, step, PfnsPredictor(net, net.criterion)))
    run.snapshots = snapshots
    return run


def train_ours(prior, *, steps: int, seed: int, eval_steps=(), overrides=None) -> Run:
    """Train our cpu-profile PFN for ``steps`` steps, keeping snapshots at ``eval_steps`` (and the end).

    ``overrides`` replaces settings of the profile: `learners.PFNConfig` and `learners.TrainConfig` fields
    by name, e.g. ``{"batch_size": 128, "compile": False}``.
    """
    overrides = dict(overrides or {})
    spec = overrides.pop("curriculum", PEER_CURRICULUM)
    model = {**CPU_MODEL, **{k: v for k, v in overrides.items() if k in CPU_MODEL}}
    train = {**CPU_TRAIN, "compile": True, **{k: v for k, v in overrides.items() if k not in CPU_MODEL}}
    train.update(steps=steps, warmup_steps=min(train["warmup_steps"], steps // 10))
    overrides.pop("steps", None)
    eval_steps = sorted({s for s in eval_steps if 1 <= s < steps})
    stages = dimension_curriculum(spec, d=D, sigma=SIGMA)
    stages = [(until, stage) for until, stage in stages if until < steps]
    cfg = learners.TrainConfig(**train, seed=seed, device="cpu", log_every=100, checkpoint_every=steps,
                               eval_steps=tuple(eval_steps))
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        result = learners.train(prior, learners.PFNConfig(**model), cfg, out, progress=False, curriculum=stages)
        wall = time.perf_counter() - start
        snaps = [learners.load(Path(out) / EVAL_FOLDER, step=s) for s in eval_steps]
    changed = "".join(f", {k} {v}" for k, v in overrides.items() if k not in ("lr", "compile", "warmup_steps"))
    run = Run("metabayes", f"AdamW lr {cfg.lr:g}, warmup {cfg.warmup_steps} steps, cosine over {steps:,} steps, "
                           f"curriculum until steps {','.join(str(u) for u, _ in stages) or 'none'}"
                           f"{changed}, {'compiled' if cfg.compile else 'eager'}")
    # a snapshot's wall time is the one its checkpoint records: since the start of learners.train
    run.snapshots = [(float(p.meta["wall_time_s"]), int(p.meta["step"]), p) for p in snaps]
    run.snapshots.append((wall, steps, result.predictor))
    run.steps, run.wall_s, run.targets = steps, wall, steps * cfg.batch_size * cfg.length
    return run


def calibrate_ours(prior, seed: int, overrides=None, steps: int = 300) -> tuple[float, float]:
    """(setup s, s per step) of our trainer, from the wall times of a short run at step 10 and at its end.

    Its curriculum stages end by step 8, so that their samplers compile within the setup, as in a long run.
    """
    overrides = {**(overrides or {}), "curriculum": "1:2,2:4,3:6,4:8"}
    run = train_ours(prior, steps=steps, seed=seed, eval_steps=[10], overrides=overrides)
    (w0, s0, _), (w1, s1, _) = run.snapshots[0], run.snapshots[-1]
    per_step = (w1 - w0) / (s1 - s0)
    return max(0.0, w0 - s0 * per_step), per_step


def calibrate_pfns(prior, seed: int, lr: float, epochs: int = 10) -> tuple[float, float]:
    """(setup s, s per step) of pfns' trainer, from the times of its first and last epoch ends in a short run."""
    ends: list[tuple[float, int]] = []
    train_pfns(prior, steps=epochs * PFNS_STEPS_PER_EPOCH, seed=seed, lr=lr, on_epoch=lambda t, e: ends.append((t, e)))
    (w0, e0), (w1, e1) = ends[0], ends[-1]
    per_step = (w1 - w0) / ((e1 - e0) * PFNS_STEPS_PER_EPOCH)
    return max(0.0, w0 - e0 * PFNS_STEPS_PER_EPOCH * per_step), per_step


def parse_setting(item: str) -> tuple[str, object]:
    """``"batch_size=128"`` -> ``("batch_size", 128)``, typed as the profile's value (``compile``: a bool)."""
    key, _, text = item.partition("=")
    tunable = ("min_lr_ratio", "beta1", "beta2", "grad_clip")  # TrainConfig fields the profile leaves at their defaults
    defaults = {**{k: getattr(learners.TrainConfig(), k) for k in tunable}, **CPU_MODEL, **CPU_TRAIN, "compile": True,
                "curriculum": PEER_CURRICULUM}
    if key not in defaults:
        raise SystemExit(f"--ours {item}: unknown setting {key!r}; known: {', '.join(sorted(defaults))}")
    kind = type(defaults[key])
    return key, text.lower() in ("1", "true", "yes") if kind is bool else kind(text)


def score(run: Run, bayes, prior, *, num_episodes: int) -> list[tuple[float, int, dict]]:
    """Every snapshot of ``run`` scored on the same fresh episodes: ``(wall s, step, evaluate's dict)``."""
    return [(wall, step, evaluate(p, bayes, prior, d=D, num_episodes=num_episodes, key=jax.random.key(EVAL_SEED)))
            for wall, step, p in run.snapshots]


def curve_line(name: str, points) -> str:
    """A table row ``| name | (wall s, step): gap, ... |`` of a time-to-Bayes curve."""
    return f"| {name} | " + ", ".join(f"({w:.0f}, {s:,}): {gap_summary(ev)['gap']:+.3f}" for w, s, ev in points) + " |"


def plot(curves: dict[str, list[tuple[float, int, dict]]], path: Path, budget: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (name, points), color in zip(curves.items(), ("tab:red", "tab:blue")):
        walls = [w for w, _, _ in points]
        gaps = [gap_summary(ev)["gap"] for _, _, ev in points]
        ax.plot(walls, gaps, "o-", color=color, label=name)
    ax.axhline(TARGETS["gap"], color="grey", ls="--", lw=1, label=f"{TARGETS['gap']} nats")
    ax.axvline(TARGETS["budget_s"], color="grey", ls=":", lw=1)
    ax.set(xscale="log", yscale="log", xlabel="training wall time (s, 2 CPU cores)",
           ylabel="NLL − Bayes NLL (nats, mean over positions 1–11)",
           title="linear regression, d = 5: time to Bayes")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(runs: dict[str, Run], curves: dict, *, budget: float, num_episodes: int, pfns_lr: float) -> list[str]:
    ours, peer = runs["metabayes"], runs["pfns 0.4.2"]
    final = {name: gap_summary(points[-1][2]) for name, points in curves.items()}
    evs = {name: points[-1][2] for name, points in curves.items()}
    gap_ratio = final["metabayes"]["gap"] / final["pfns 0.4.2"]["gap"]
    speed_ratio = ours.targets_per_s / peer.targets_per_s
    reached = next((w for w, _, ev in curves["metabayes"] if gap_summary(ev)["gap"] <= TARGETS["gap"]), None)
    lines = [
        "## Our PFN against pfns 0.4.2 (automl/PFNs) at equal wall time (`benchmarks/peer_pfns.py`)",
        "",
        f"Prior `linear_regression(d={D}, sigma={SIGMA})`, episodes of {LENGTH}; both trainers: an 8-layer, "
        f"{CPU_MODEL['n_embd']}-wide transformer, {CPU_MODEL['n_head']} heads, MLP "
        f"{CPU_MODEL['n_embd'] * CPU_MODEL['mlp_ratio']} wide, {CPU_MODEL['num_buckets']} bars with half-normal "
        f"tails at prior-sample quantiles, batch {CPU_TRAIN['batch_size']} episodes, fresh prior samples every "
        f"step, {budget:.0f} s of training each, one after the other. Evaluation: the same {num_episodes} fresh "
        f"episodes (seed {EVAL_SEED}) against the closed-form Bayes predictive.",
        "",
        "| trainer | settings | steps | wall (s) | targets / s | NLL gap (± s.e.) | (mean − Bayes)² / d | 90 % coverage |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        f = final[name]
        lines.append(f"| {name} | {run.settings} | {run.steps:,} | {run.wall_s:.0f} | {run.targets_per_s:,.0f} | "
                     f"{f['gap']:+.3f} ± {f['gap_se']:.3f} | {f['mean_sq']:.4f} | {f['coverage90']:.3f} |")
    lines += [
        "",
        "| position | " + " | ".join(f"NLL gap {n}" for n in runs) + " | "
        + " | ".join(f"(mean − Bayes)² / d {n}" for n in runs) + " | 90 % coverage " + " / ".join(runs) + " |",
        "|---|" + "---|" * (2 * len(runs) + 1),
    ]
    for t in range(LENGTH):
        lines.append(f"| {t + 1} | " + " | ".join(f"{evs[n]['nll_excess'][t]:+.3f}" for n in runs) + " | "
                     + " | ".join(f"{evs[n]['mean_sq'][t]:.4f}" for n in runs) + " | "
                     + " / ".join(f"{evs[n]['coverage90'][t]:.3f}" for n in runs) + " |")
    lines += [
        "",
        "Time to Bayes (NLL gap, mean over positions 1–11, at log-spaced training wall times; "
        f"`{FIGURE.relative_to(HERE.parent)}`):",
        "",
        "| trainer | " + " | ".join(["(wall s, step): NLL gap"]) + " |",
        "|---|---|",
    ]
    lines += [curve_line(name, points) for name, points in curves.items()]
    lines += [
        "",
        f"Targets: our NLL gap <= {TARGETS['gap_ratio']} of pfns' ({verdict(gap_ratio <= TARGETS['gap_ratio'])}: "
        f"{gap_ratio:.2f}), our targets / s >= {TARGETS['speed_ratio']}x pfns' "
        f"({verdict(speed_ratio >= TARGETS['speed_ratio'])}: {speed_ratio:.2f}x), within {TARGETS['gap']} nats of "
        f"Bayes in <= {TARGETS['budget_s']:.0f} s ({verdict(reached is not None and reached <= TARGETS['budget_s'])}: "
        + (f"first snapshot within it at {reached:.0f} s" if reached is not None else
           f"{final['metabayes']['gap']:+.3f} nats at {ours.wall_s:.0f} s") + ").",
        "",
        "What differs, and why equal wall time is the fair budget: the two trainers spend a step differently, "
        "so equal steps would favour the slower one. pfns splits every batch at one position drawn uniformly "
        "from 0..10 (its `single_eval_pos`): the pairs before it are the context, the y after it the targets, "
        "on average 6 of 11 per episode, and a step trains one context size. Ours predicts every position of "
        "every episode from the pairs before it in one causal pass: 11 targets per episode and every context "
        "size in each step. pfns' context attends within itself and its test items only to the context; ours "
        "lets each pair attend to the pairs before it. Ours draws its first steps from the curriculum (x in 1, "
        "2, 3, 4 of the 5 coordinates, 150 steps each), pfns from the prior itself (its tutorial has none); ours is compiled "
        "(its cpu profile), pfns is not (its default), and both run in float32. The sampler is the same "
        f"NumPyro prior for both. pfns' learning rate is its tutorial's 3e-4 for 512 wide scaled by "
        f"sqrt(512 / 64) to {pfns_lr:.2g}. Each trainer's step count is set from its speed measured in a "
        "short run before, so that its whole schedule fits the budget; on this shared machine a short run "
        f"predicts a long one's speed only to within about 20 %, and the runs took {ours.wall_s:.0f} s (ours) "
        f"and {peer.wall_s:.0f} s (pfns), setup and compilation included. A snapshot is the model at that moment of its run (its learning "
        "rate not yet decayed), the last one the finished run.",
        "",
    ]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=300.0, help="training wall time per trainer, s (default 300)")
    parser.add_argument("--snapshots", type=int, default=8, help="log-spaced snapshots per run (default 8)")
    parser.add_argument("--ours-steps", type=int, default=None, help="our step count (default: from the speed)")
    parser.add_argument("--pfns-steps", type=int, default=None, help="pfns' step count (default: from the speed)")
    parser.add_argument("--pfns-lr", type=float, default=PFNS_LR, help=f"pfns' learning rate (default {PFNS_LR:.2g})")
    parser.add_argument("--ours", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of our profile replaced, e.g. batch_size=128, compile=false, n_layer=6, "
                             "curriculum=1:150,2:300")
    parser.add_argument("--skip-pfns", action="store_true", help="train ours only (its curve and numbers; no block)")
    parser.add_argument("--seed", type=int, default=0, help="training seed of both (default 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--eval-episodes", type=int, default=4096, help="evaluation episodes (default 4096)")
    parser.add_argument("--no-write", action="store_true", help="print the results without touching RESULTS.md")
    args = parser.parse_args(argv)
    try:
        if not args.skip_pfns:
            import pfns  # noqa: F401
    except ImportError:
        parser.error('pfns is not installed: pip install -e ".[peer]" (or pip install --no-deps pfns==0.4.2 '
                     "einops pyyaml tensorboard)")
    command = "python benchmarks/peer_pfns.py" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    torch.set_num_threads(args.threads)
    provenance = [f"- date {datetime.now(timezone.utc).isoformat(timespec='seconds')}; commit {commit()}",
                  f"- machine: {machine()}", f"- command: `{command}`"]
    prior = priors.get("linear_regression", d=D, sigma=SIGMA)
    times = snapshot_times(args.budget, args.snapshots, first=min(10.0, args.budget / 4))
    runs = {}

    def fit(name, setup, per_step):
        steps = int((args.budget - setup) / per_step)
        if steps < 50:
            parser.error(f"--budget {args.budget:g} s leaves {name} {steps} steps after its {setup:.0f} s of setup")
        return steps

    overrides = dict(parse_setting(item) for item in args.ours)
    for name in ("metabayes",) + (() if args.skip_pfns else ("pfns 0.4.2",)):  # measure the speed, then train
        if name == "metabayes":
            setup, per_step = calibrate_ours(prior, args.seed, overrides)
            steps = args.ours_steps or fit("metabayes", setup, per_step)
            print(f"ours: setup {setup:.1f} s, {1e3 * per_step:.1f} ms/step -> {steps} steps", flush=True)
            run = train_ours(prior, steps=steps, seed=args.seed,
                             eval_steps=[int((t - setup) / per_step) for t in times], overrides=overrides)
        else:
            setup, per_step = calibrate_pfns(prior, args.seed, args.pfns_lr)
            steps = args.pfns_steps or fit("pfns", setup, per_step)
            print(f"pfns: setup {setup:.1f} s, {1e3 * per_step:.1f} ms/step -> {steps} steps", flush=True)
            run = train_pfns(prior, steps=steps, seed=args.seed, lr=args.pfns_lr, times=times)
        print(f"{name}: {run.steps} steps in {run.wall_s:.0f} s, {run.targets_per_s:,.0f} targets/s", flush=True)
        runs[name] = run
    provenance.append(f"- load average after training: {load_average()}")
    bayes = toolkit.bayes_predictor(prior)
    curves = {name: score(run, bayes, prior, num_episodes=args.eval_episodes) for name, run in runs.items()}
    if args.skip_pfns:
        print(curve_line("metabayes", curves["metabayes"]), "|", runs["metabayes"].settings,
              f"| {runs['metabayes'].targets_per_s:,.0f} targets/s |", *provenance[1:], flush=True)
        return 0
    lines = report(runs, curves, budget=args.budget, num_episodes=args.eval_episodes, pfns_lr=args.pfns_lr)
    print("\n".join(lines + provenance), flush=True)
    if not args.no_write:
        plot(curves, FIGURE, args.budget)
        replace_block(RESULTS, START, END, "\n".join([START, *lines, *provenance, "", END]))
        print(f"wrote {RESULTS} and {FIGURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
