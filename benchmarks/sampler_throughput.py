"""Prior sampling against training consumption, for every registered prior; writes ``benchmarks/RESULTS.md``.

    python benchmarks/sampler_throughput.py [--only coin_mixture,anbn] [--seconds 2] [--threads N]

For each prior in ``priors.available()``:

- **sampled**: episodes/s of ``prior.sample(key, B, T)`` at its learner's
  training batch B and length T, compiled and in steady state (the first call,
  which compiles, is not timed; each timed call has a fresh key);
- **consumed**: episodes/s of that learner's training steps on batches sampled
  beforehand (`benchmarks/train_throughput.py`'s timing of
  `learners.train.train_step`), i.e. what training would take from the sampler
  if sampling were free.

The learner is the ``[learner]`` of the prior's own experiment when a config in
``comparisons/configs/`` names the prior (with its parameters), else the
default coin learner (``coin_mixture.toml``) for token priors and the
regression experiment's learner (``linear_regression.toml``) for regression
priors. The target is sampled / consumed >= 10. On the CPU both share the same
cores, so in a real run the sampler also takes time from training (the
prefetch thread is off on the CPU for that reason).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_throughput as tt  # noqa: E402  (puts the repository on sys.path)
import jax  # noqa: E402
import torch  # noqa: E402

import priors  # noqa: E402
from learners.train import pick_device  # noqa: E402

CONFIGS = tt.ROOT / "comparisons" / "configs"
TARGET = 10.0


def experiment_for(name: str, kind: str) -> tuple[Path, bool]:
    """The config whose [learner] trains on prior ``name``, and whether that config is the prior's own."""
    import tomllib

    for path in sorted(CONFIGS.glob("*.toml")):
        if tomllib.loads(path.read_text()).get("prior", {}).get("name") == name:
            return path, True
    return CONFIGS / ("coin_mixture.toml" if kind == "tokens" else "linear_regression.toml"), False


def sampling_rate(prior, batch: int, length: int, seconds: float) -> tuple[float, int]:
    """Steady-state episodes/s of ``prior.sample`` and the number of timed calls."""
    prior.sample(jax.random.key(0), batch, length)  # compiles
    calls, t0 = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - t0 < seconds:
        prior.sample(jax.random.key(calls + 1), batch, length)  # returns host arrays: the call is complete
        calls += 1
    return batch * calls / (time.perf_counter() - t0), calls


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=None, help="comma-separated prior names (default: every registered prior)")
    parser.add_argument("--seconds", type=float, default=2.0, help="timing budget per sampler")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps per learner")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU; default torch's own)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)

    names = args.only.split(",") if args.only else priors.available()
    rows, worst = [], None
    for name in names:
        print(f"{name} ...", flush=True)
        try:
            kind = priors.get(name).kind
            config, own = experiment_for(name, kind)
            other = None if own else priors.get(name)
            prior, model_cfg, cfg = tt.learner_setup(config, [], "coin", args.device, prior=other)
        except Exception as exc:  # noqa: BLE001 - a prior this benchmark cannot set up is reported, not fatal
            rows.append(f"| `{name}` | – | – | – | – | – | set-up failed: {type(exc).__name__}: {exc} |")
            continue
        load_before = tt.load()
        sampled, calls = sampling_rate(prior, cfg.batch_size, cfg.length, args.seconds)
        got = tt.measure(prior, model_cfg, cfg, device, steps=args.steps, warmup=3, sampled=False)
        ratio = sampled / got["episodes_per_s"]
        worst = ratio if worst is None else min(worst, ratio)
        learner = f"{tt.describe(model_cfg, cfg)} from `{config.name}`" + ("" if own else " (default for its kind)")
        verdict = "ok" if ratio >= TARGET else f"**below {TARGET:.0f}x**"
        rows.append(
            f"| `{prior.name}`{'' if not prior.params else ' ' + _params(prior)} | {learner} | {sampled:,.0f} "
            f"({calls} calls) | {got['episodes_per_s']:,.0f} | {ratio:,.1f}x | {load_before} -> {tt.load()} "
            f"| {verdict} |"
        )
        print(rows[-1], flush=True)

    threads = f", {torch.get_num_threads()} torch threads" if device.type == "cpu" else ""
    lines = [
        f"### Prior sampling against training consumption ({device.type}{threads})",
        "",
        "Sampled: steady-state episodes/s of `prior.sample` at the learner's training batch and length (JAX on "
        f"{jax.default_backend()}). Consumed: episodes/s of the learner's training steps without sampling. "
        f"Target: sampled / consumed >= {TARGET:.0f}x.",
        "",
        "| prior | learner (batch x length) | sampled episodes/s | consumed episodes/s | ratio | load average | |",
        "|---|---|---|---|---|---|---|",
        *rows,
    ]
    print("\n".join(lines))
    if not args.no_write:
        summary = (f"{datetime.now(timezone.utc).date()} {device.type}{threads}: {len(rows)} priors, smallest ratio "
                   f"{worst:,.1f}x" if worst is not None else "no prior measured")
        tt.write_block("sampler_throughput", lines + [""] + tt.provenance("sampler_throughput.py", argv, str(device)),
                       summary)
        print(f"wrote {tt.RESULTS}")
    return 0


def _params(prior) -> str:
    text = ", ".join(f"{k}={v}" for k, v in prior.params.items())
    return f"({text[:60]}{'…' if len(text) > 60 else ''})"


if __name__ == "__main__":
    sys.exit(main())
