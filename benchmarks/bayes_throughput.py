"""Latent x position evaluations per second of the enumeration engine; writes ``benchmarks/RESULTS.md``.

    python benchmarks/bayes_throughput.py [--episodes 256] [--length 64] [--coins 2,64,1024] [--only NAMES]

`toolkit.enumeration.enumerate_predictive` gives the exact predictive of every
position of every episode by weighing K latent values (the joint support of
the global latents, or the grid a prior declares). Its work is K x episodes x
positions latent-position evaluations (one likelihood term, one posterior
weight and one predictive term each), which is the figure reported here:
``K * episodes * T / seconds``, steady state (a first call, which compiles, is
not timed; the best of ``--repeats`` timed calls is kept).

Cases: ``coin_mixture`` with many coins (K = ``--coins``, coins spread evenly
over (0, 1)), then every other registered prior whose latents enumeration can
weigh (finite support or a declared grid, e.g. the regression grid priors);
priors it cannot (continuous latents without a grid) are listed as skipped.
Models with local latents (an HMM's states) take the prefix-masking path,
O(K T^2) per episode rather than O(K T), so their rate is not comparable.
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
import numpy as np  # noqa: E402

import priors  # noqa: E402
from toolkit.enumeration import enumerate_predictive, enumeration_path, latent_grid  # noqa: E402
from toolkit.errors import ModelError  # noqa: E402


def rate(prior, episodes: int, length: int, repeats: int, max_work: float) -> dict:
    """Best steady-state evaluations/s of ``enumerate_predictive`` on ``episodes`` sampled episodes.

    Large supports get fewer episodes, so that one call stays under ``max_work`` evaluations.
    """
    path = enumeration_path(prior)
    size = latent_grid(prior, allow_local=path == "prefix").size
    episodes = int(max(1, min(episodes, max_work // (size * length))))
    data = prior.sample(jax.random.key(1), episodes, length)
    load_before = tt.load()
    out = enumerate_predictive(prior, data)  # compiles
    first = next(v for k, v in out.items() if k != "log_evidence")
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        enumerate_predictive(prior, data)  # numpy results: the computation is complete
        best = min(best, time.perf_counter() - t0)
    return {
        "K": size,
        "path": path,
        "seconds": best,
        "rate": size * episodes * length / best,
        "finite": float(np.isfinite(first).mean()),
        "episodes": episodes,
        "load": f"{load_before} -> {tt.load()}",
    }


def coins(k: int):
    """coin_mixture with k coins spread evenly over (0, 1), equal weights."""
    return priors.get("coin_mixture", thetas=tuple(np.linspace(0.5 / k, 1 - 0.5 / k, k)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=256)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--coins", default="2,64,1024", help="K values of coin_mixture")
    parser.add_argument("--only", default=None, help="comma-separated other priors (default: every registered one)")
    parser.add_argument("--max-latents", type=int, default=2_000_000, help="skip priors with a larger support")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-work", type=float, default=2e9,
                        help="at most this many evaluations per call: large supports get fewer episodes")
    parser.add_argument("--no-write", action="store_true", help="print only, leave RESULTS.md alone")
    args = parser.parse_args(argv)
    argv = list(sys.argv[1:] if argv is None else argv)

    cases = [(f"coin_mixture, {k} coins", coins(k)) for k in map(int, args.coins.split(","))]
    names = args.only.split(",") if args.only else [n for n in priors.available() if n != "coin_mixture"]
    skipped = []
    for name in names:
        prior = priors.get(name)
        try:
            size = latent_grid(prior, allow_local=enumeration_path(prior) == "prefix").size
        except ModelError as exc:
            skipped.append(f"`{name}` ({exc})")
            continue
        if size > args.max_latents:
            skipped.append(f"`{name}` (K = {size:,} > --max-latents)")
            continue
        cases.append((name, prior))

    rows = []
    for label, prior in cases:
        print(f"{label} ...", flush=True)
        try:
            got = rate(prior, args.episodes, args.length, args.repeats, args.max_work)
        except Exception as exc:  # noqa: BLE001 - an engine failure on one prior is reported, the others still run
            rows.append(f"| {label} | {prior.kind} | – | – | – | – | failed: {type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:120]} | {tt.load()} |")
            print(rows[-1], flush=True)
            continue
        rows.append(f"| {label} | {prior.kind} | {got['K']:,} | {got['episodes']} | {got['path']} | "
                    f"{got['seconds']:.3f} | "
                    f"{got['rate']:,.0f} | {got['load']} |")
        print(rows[-1], flush=True)
    lines = [
        f"### Enumeration engine: latent x position evaluations per second (JAX on {jax.default_backend()})",
        "",
        f"Up to {args.episodes} episodes (fewer where K x episodes x T would pass {args.max_work:.0e}) x T = "
        f"{args.length} positions per call; rate = K x episodes x T / seconds, best of {args.repeats} compiled calls.",
        "",
        "| prior | kind | K latents | episodes | path | seconds per call | evaluations/s | load average |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Skipped (enumeration does not apply): " + ("; ".join(skipped) if skipped else "none") + ".",
    ]
    print("\n".join(lines))
    if not args.no_write:
        summary = f"{datetime.now(timezone.utc).date()}: " + "; ".join(
            f"{label} {r.split('|')[7].strip()}/s" for (label, _), r in zip(cases, rows) if "failed" not in r)
        where = f"JAX {jax.default_backend()}"
        tt.write_block("bayes_throughput", lines + [""] + tt.provenance("bayes_throughput.py", argv, where), summary)
        print(f"wrote {tt.RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
