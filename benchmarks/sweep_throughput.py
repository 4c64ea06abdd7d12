"""Sweep throughput: N equal cells on a local Dask cluster against one cell run alone, and a rerun.

    python benchmarks/sweep_throughput.py [--cells 8] [--workers 2] [--no-write]

The cells are the default two-coin experiment (300 training steps of the 1-layer learner, 500
evaluation episodes per scenario, one torch thread each), differing only in the learner's seed, so
they cost the same. Measured, one after the other on this machine:

1. one cell run alone (``comparisons.run.run`` in this process, one torch thread): its wall time;
2. ``python comparisons/sweep.py`` with N such cells on ``--workers`` workers: the whole command's wall
   time (cluster start, cells, combine, report) against N / workers x the cell's wall time;
3. the same command again: every cell is finished, so none is recomputed; its wall time against the first.

The block between ``<!-- sweep_throughput:start -->`` and ``...:end -->`` of ``benchmarks/RESULTS.md``
is replaced with the figures (``--no-write`` prints them only).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import commit, cpu_name, load_average, replace_block, system  # benchmarks/provenance.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
START, END = "<!-- sweep_throughput:start -->", "<!-- sweep_throughput:end -->"

SWEEP = """
[base]
config = "{config}"
set = {{ "evaluation.num_episodes" = 500, "torch_threads" = 1 }}

[sweep]
"learner.training.seed" = {seeds}
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=8, help="equal cells in the sweep (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="local Dask workers (default 2)")
    parser.add_argument("--no-write", action="store_true", help="print the figures, leave RESULTS.md alone")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))

    with tempfile.TemporaryDirectory(prefix="sweep_throughput_") as tmp:
        tmp = Path(tmp)
        path = tmp / "sweep.toml"
        seeds = list(range(100, 100 + args.cells))
        path.write_text(SWEEP.format(config=ROOT / "comparisons/configs/coin_mixture.toml", seeds=seeds))
        load = [load_average()]

        # 1. one cell alone, in a fresh interpreter as a sweep worker would be (its first cell pays the imports)
        one = tmp / "one.toml"
        one.write_text(SWEEP.format(config=ROOT / "comparisons/configs/coin_mixture.toml", seeds=[99]))
        code = ("import sys, time; sys.path.insert(0, %r); from comparisons.sweep import load_sweep; "
                "from comparisons.run import run; c = load_sweep(%r, out=%r).cells[0]; t = time.perf_counter(); "
                "run(c.config, c.folder, progress=False); print(time.perf_counter() - t)") % (
            str(ROOT), str(one), str(tmp / "alone"))
        cell_s = float(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                                      cwd=ROOT).stdout.split()[-1])
        load.append(load_average())

        command = [sys.executable, str(ROOT / "comparisons/sweep.py"), "--config", str(path), "--out",
                   str(tmp / "sweep"), "--workers", str(args.workers), "--no-progress"]
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
        first_s = time.perf_counter() - start
        load.append(load_average())
        start = time.perf_counter()
        again = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
        rerun_s = time.perf_counter() - start
        load.append(load_average())
        reused = f"{args.cells} reused" in again.stdout
        import numpy as np

        from toolkit.results import open_results

        in_sweep = np.asarray(open_results(tmp / "sweep")["sweep"].to_dataset()["cell_wall_time_s"].values, float)

    ideal = args.cells / args.workers * cell_s
    lines = [
        f"### Sweep throughput (`benchmarks/sweep_throughput.py --cells {args.cells} --workers {args.workers}`)",
        "",
        f"{args.cells} equal cells (the default two-coin run, 300 training steps, 500 evaluation episodes per scenario, "
        f"one torch thread each, learner seeds 100–{99 + args.cells}) on a local Dask cluster of {args.workers} "
        f"worker processes; {cpu_name()}, {system()}; commit {commit()}; load average before, between and after: "
        f"{' | '.join(load)}.",
        "",
        "| what | wall time | against |",
        "|---|---|---|",
        f"| one cell alone (a fresh interpreter's first run: JAX compilation included, module imports not) | "
        f"{cell_s:.1f} s | |",
        f"| a cell inside the sweep, mean (min–max; a worker compiles once for all its cells) | "
        f"{in_sweep.mean():.1f} s ({in_sweep.min():.1f}–{in_sweep.max():.1f}) | |",
        f"| the sweep, whole command (cluster start, {args.cells} cells, combine, report) | {first_s:.1f} s | "
        f"{first_s / ideal:.2f} x {args.cells}/{args.workers} x one cell ({ideal:.1f} s; target <= 1.2) |",
        f"| the same sweep again (every cell finished: {'none' if reused else 'some'} recomputed) | {rerun_s:.1f} s | "
        f"{rerun_s / first_s:.1%} of the first (target <= 10 %) |",
    ]
    block = "\n".join([START, *lines, END])
    print(block)
    if not args.no_write:
        replace_block(RESULTS, START, END, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
