"""Benchmark of exact Bayes by enumeration for regression priors on large latent grids; numbers go to
``benchmarks/RESULTS.md`` (between ``<!-- regression_enumeration:start -->`` and ``...:end -->``).

    python benchmarks/regression_enumeration.py [--episodes 256] [--length 50] [--grid-points 64]
                                                [--grid-amplitudes 5] [--no-write]

The step-function prior of Müller, Hollmann & Hutter (2024), ``step_functions`` (101³ = 1,030,301
equally likely functions), on ``--episodes`` x ``--length`` of its own samples, through
``toolkit.enumeration.enumerate_predictive`` (the cumulative path):

1. without a y-grid (log score, mean, variance, evidence), the full 101³ grid;
2. with a ``--grid-points`` y-grid (adds the grid density and CDF: one Normal density and CDF per
   latent, episode, position and grid point), on a sub-grid with ``--grid-amplitudes`` amplitudes
   (101 x 101 x A functions) and, for the ratio, the same sub-grid without the y-grid. The full
   grid's time is extrapolated linearly in the number of latents (the work is a sum over latents).

Each case runs in its own process (so its peak resident memory, ``ru_maxrss``, is its own) and is
timed cold, compilation included. Wall time and the process's CPU time are both reported: the
machine is shared, so wall time depends on the load (the load average is recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from provenance import commit, cpu_name, load_average, replace_block, system  # benchmarks/provenance.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
START, END = "<!-- regression_enumeration:start -->", "<!-- regression_enumeration:end -->"


def run_case(amplitudes: int, episodes: int, length: int, grid_points: int) -> dict:
    """One enumeration in this process: its timings, peak memory and a few checks of the output."""
    import jax
    import numpy as np

    import priors
    from toolkit.enumeration import enumerate_predictive

    prior = priors.get("step_functions", num_amplitudes=amplitudes)
    data = prior.sample(jax.random.key(0), episodes, length)
    y_grid = np.linspace(-1.5, 3.5, grid_points) if grid_points else None
    load = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    out = enumerate_predictive(prior, data, y_grid=y_grid)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    checks = {"finite log_score": bool(np.isfinite(out["log_score"]).all())}
    if grid_points:
        mass = np.trapezoid(np.exp(out["grid_log_density"]), y_grid, axis=-1)
        checks["max |grid mass - 1|"] = float(np.max(np.abs(mass - 1)))
        checks["max |CDF at the top - 1|"] = float(np.max(np.abs(out["grid_cdf"][..., -1] - 1)))
    return {
        "latents": 101 * 101 * amplitudes,
        "grid_points": grid_points,
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "load_1min": load,
        "checks": checks,
    }


def case(amplitudes: int, episodes: int, length: int, grid_points: int) -> dict:
    """``run_case`` in a fresh process."""
    cmd = [sys.executable, __file__, "--case", f"{amplitudes},{episodes},{length},{grid_points}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"case {cmd} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> str:
    import jax

    cpu = cpu_name()
    return (f"{cpu}, {os.cpu_count()} cores visible (load average {load_average()} at the start), "
            f"{system()}, jax {jax.__version__}, "
            f"backend {jax.default_backend()}")


def row(label: str, r: dict) -> str:
    return (f"| {label} | {r['latents']:,} | {r['grid_points'] or '—'} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} | "
            f"{r['peak_rss_gib']:.2f} | {r['load_1min']:.1f} |")


def report(args, full: dict, sub: dict, sub_grid: dict) -> list[str]:
    scale = full["latents"] / sub_grid["latents"]
    ratio = sub_grid["cpu_s"] / sub["cpu_s"]
    return [
        "## Regression enumeration (`benchmarks/regression_enumeration.py`)",
        "",
        f"`step_functions` (Müller, Hollmann & Hutter 2024), {args.episodes} episodes x {args.length} positions of "
        "its own samples, `enumerate_predictive` (cumulative path, float64), each case cold (compilation "
        "included) in its own process.",
        "",
        "| case | latents | y-grid points | wall (s) | CPU (s) | peak RSS (GiB) | load (1 min) |",
        "|---|---|---|---|---|---|---|",
        row("full 101³ grid, no y-grid", full),
        row(f"sub-grid (101 x 101 x {args.grid_amplitudes}), no y-grid", sub),
        row(f"sub-grid (101 x 101 x {args.grid_amplitudes}), y-grid", sub_grid),
        "",
        f"With the {args.grid_points}-point y-grid the same enumeration costs {ratio:.1f}x the CPU time of the run "
        f"without it (a Normal density and CDF per latent, episode, position and grid point); scaled linearly to "
        f"the full 101³ grid: about {sub_grid['wall_s'] * scale / 60:.0f} min wall at this load, "
        f"{sub_grid['cpu_s'] * scale / 60:.0f} min CPU (extrapolated, not run).",
        f"Checks: full run {full['checks']}; y-grid run {sub_grid['checks']}.",
        "The machine is shared with other work: wall time follows the load; CPU time is the process's own "
        "(both cores count), itself inflated when the cores are oversubscribed.",
        "",
    ]


def write(lines: list[str]) -> None:
    replace_block(RESULTS, START, END, "\n".join([START, *lines, END]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episodes", type=int, default=256)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--grid-points", type=int, default=64, help="y-grid size of the grid case")
    parser.add_argument("--grid-amplitudes", type=int, default=5, help="amplitudes in the grid case's sub-grid")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md alone")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case in this process, JSON on stdout
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(*map(int, args.case.split(",")))))
        return 0
    command = "python benchmarks/regression_enumeration.py" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    provenance = [
        f"- date {datetime.now(timezone.utc).isoformat(timespec='seconds')}; commit {commit()}",
        f"- machine: {machine()}",
        f"- command: `{command}`",
    ]
    full = case(101, args.episodes, args.length, 0)
    print(json.dumps(full), flush=True)
    sub = case(args.grid_amplitudes, args.episodes, args.length, 0)
    print(json.dumps(sub), flush=True)
    sub_grid = case(args.grid_amplitudes, args.episodes, args.length, args.grid_points)
    print(json.dumps(sub_grid), flush=True)
    lines = report(args, full, sub, sub_grid) + provenance + [""]
    print("\n".join(lines))
    if not args.no_write:
        write(lines)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
