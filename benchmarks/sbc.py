"""Simulation-based calibration of every Bayes engine; the numbers go to ``benchmarks/RESULTS.md``
(between ``<!-- sbc:start -->`` and ``<!-- sbc:end -->``).

    python benchmarks/sbc.py [--simulations 500] [--draws 99] [--only beta_bernoulli,...] [--no-write]

`toolkit.sbc.simulation_based_calibration` (Talts et al. 2018) with N simulations per check: latents from
the prior, n observations plus a held-out item from the model, L posterior draws from the engine, ranks of
the true latents and the held-out item's PIT, the ECDF uniformity test of Säilynoja et al. (2022) per
quantity, Bonferroni over the quantities. Checks, each with one seed:

- beta_bernoulli (Beta(1, 1)), n = 10: closed form, MCMC; wrong: both engines assuming Beta(4, 4);
- dirichlet_categorical (5 colours, α = 1), n = 10: closed form, MCMC; wrong: closed form assuming α = 4;
- linear_regression (d = 5, τ = 1, σ = 0.1), n = 4 (< d, so the prior shapes the posterior): closed form,
  MCMC (dense mass matrix); wrong: closed form assuming τ = 3;
- enumerated priors: counting (101 biases), n = 10, by enumeration and by the MCMC engine (no continuous
  latent: its draws are exact); a mixture of 10 coins (P = 0.05, 0.15, ..., 0.95, equal weights), n = 10, by
  enumeration; wrong: enumeration assuming weights ∝ 1, 2, ..., 10.

A right engine must pass (no adjusted p below 0.01), a wrong one must fail. Every check is timed cold
(compilation included) in this one process; the total is the suite's wall time.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from provenance import commit, cpu_name, load_average, replace_block, system  # benchmarks/provenance.py, beside this script

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import numpy as np  # noqa: E402

import priors  # noqa: E402
from toolkit.sbc import simulation_based_calibration  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
START, END = "<!-- sbc:start -->", "<!-- sbc:end -->"
MCMC = dict(num_warmup=500, num_samples=500, num_chains=4)
COINS = tuple(np.round(np.linspace(0.05, 0.95, 10), 2).tolist())


def checks() -> list[dict]:
    """Every check: the prior simulated from, the engine, the prior it assumes, n, MCMC options, expected verdict."""
    beta, wrong_beta = priors.get("beta_bernoulli"), priors.get("beta_bernoulli", a=4.0, b=4.0)
    dirichlet, wrong_dirichlet = priors.get("dirichlet_categorical"), priors.get("dirichlet_categorical", alpha=4.0)
    linear, wrong_linear = priors.get("linear_regression"), priors.get("linear_regression", tau=3.0)
    coins = priors.get("coin_mixture", thetas=COINS)
    wrong_coins = priors.get("coin_mixture", thetas=COINS, weights=tuple(np.arange(1, 11) / 55))
    counting = priors.get("counting")
    return [
        dict(group="beta_bernoulli", label="Beta(1, 1)", prior=beta, engine="closed_form", length=10),
        dict(group="beta_bernoulli", label="Beta(1, 1)", prior=beta, engine="mcmc", length=10, options=MCMC),
        dict(group="beta_bernoulli", label="Beta(1, 1)", prior=beta, engine="closed_form", length=10,
             engine_prior=wrong_beta, assumed="Beta(4, 4)"),
        dict(group="beta_bernoulli", label="Beta(1, 1)", prior=beta, engine="mcmc", length=10, options=MCMC,
             engine_prior=wrong_beta, assumed="Beta(4, 4)"),
        dict(group="dirichlet_categorical", label="5 colours, α = 1", prior=dirichlet, engine="closed_form", length=10),
        dict(group="dirichlet_categorical", label="5 colours, α = 1", prior=dirichlet, engine="mcmc", length=10,
             options=MCMC),
        dict(group="dirichlet_categorical", label="5 colours, α = 1", prior=dirichlet, engine="closed_form",
             length=10, engine_prior=wrong_dirichlet, assumed="α = 4"),
        dict(group="linear_regression", label="d = 5, τ = 1, σ = 0.1", prior=linear, engine="closed_form", length=4),
        dict(group="linear_regression", label="d = 5, τ = 1, σ = 0.1", prior=linear, engine="mcmc", length=4,
             options=dict(MCMC, dense_mass=True)),
        dict(group="linear_regression", label="d = 5, τ = 1, σ = 0.1", prior=linear, engine="closed_form", length=4,
             engine_prior=wrong_linear, assumed="τ = 3"),
        dict(group="counting", label="101 biases", prior=counting, engine="enumeration", length=10),
        dict(group="counting", label="101 biases", prior=counting, engine="mcmc", length=10, options=MCMC),
        dict(group="coin_mixture", label="10 coins", prior=coins, engine="enumeration", length=10),
        dict(group="coin_mixture", label="10 coins", prior=coins, engine="enumeration", length=10,
             engine_prior=wrong_coins, assumed="weights ∝ 1..10"),
    ]


def run(check: dict, simulations: int, draws: int, key) -> dict:
    out = simulation_based_calibration(
        check["prior"], engine=check["engine"], num_simulations=simulations, length=check["length"],
        num_draws=draws, key=key, engine_prior=check.get("engine_prior"), **check.get("options", {}),
    )
    adjusted = out["sbc_pvalue_adjusted"].values
    worst = int(np.nanargmin(adjusted))
    expected = "engine_prior" not in check
    return {
        **{k: check[k] for k in ("group", "label", "engine", "length")},
        "assumed": check.get("assumed", "the same"),
        "quantities": len(adjusted),
        "min_p": float(np.nanmin(out["sbc_pvalue"].values)),
        "min_adjusted": float(adjusted[worst]),
        "worst": str(out["sbc_quantity"].values[worst]),
        "passed": bool(out.attrs["passed"]),
        "as_expected": bool(out.attrs["passed"]) == expected,
        "draws": int(out.attrs["num_draws"]),
        "wall_s": float(out.attrs["wall_time_s"]),
        "mcmc": (f"max r_hat {out.attrs['max_r_hat']:.3f}, min ess_bulk {out.attrs['min_ess_bulk']:.0f}, "
                 f"{out.attrs['divergences']} divergences") if check["engine"] == "mcmc" and np.isfinite(
                     out.attrs.get("max_r_hat", np.nan)) else ("exact draws" if check["engine"] == "mcmc" else "–"),
    }


def table(rows: list[dict], simulations: int, draws: int, total_s: float, command: str) -> list[str]:
    body = [
        f"| {r['group']} ({r['label']}) | {r['engine']} | {r['assumed']} | {r['length']} | {r['draws']} | "
        f"{r['quantities']} | {r['min_p']:.2g} | {r['min_adjusted']:.2g} ({r['worst']}) | "
        f"{'passes' if r['passed'] else '**fails**'} | {r['mcmc']} | {r['wall_s']:.0f} |"
        for r in rows
    ]
    right = [r for r in rows if r["assumed"] == "the same"]
    wrong = [r for r in rows if r["assumed"] != "the same"]
    verdict = (f"{sum(r['passed'] for r in right)} of {len(right)} right engines pass, "
               f"{sum(not r['passed'] for r in wrong)} of {len(wrong)} wrong ones fail")
    return [
        "## Simulation-based calibration of the Bayes engines (`benchmarks/sbc.py`)",
        "",
        f"{simulations} simulations per check (latents from the prior, n observations plus a held-out item from the "
        f"model), L posterior draws per simulation ({draws}; MCMC: 4 chains x 500 warmup + 500 draws, thinned "
        "evenly to 25 per chain), fractional ranks of the true latents (ties randomised) and the held-out item's "
        "PIT (`y_next`), the ECDF uniformity test of Säilynoja et al. (2022) on each quantity, p-values times the "
        "number of quantities (Bonferroni). A check passes when no adjusted p is below 0.01.",
        "",
        "| prior | engine | engine assumes | n | L | quantities | min p | min adjusted p | verdict | MCMC | wall (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *body,
        "",
        f"**{verdict}; the suite took {total_s / 60:.1f} min wall** (every check cold, compilation included, in "
        f"one process: `{command}`).",
        "",
    ]


def machine() -> str:
    return (f"{cpu_name()}, {__import__('os').cpu_count()} cores visible (load average {load_average()} at the "
            f"end), {system()}, jax {jax.__version__}, backend {jax.default_backend()}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--simulations", type=int, default=500, help="N, simulations per check (default 500)")
    parser.add_argument("--draws", type=int, default=99, help="L, posterior draws per simulation (default 99)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default=None, help="comma-separated groups (beta_bernoulli, dirichlet_categorical, "
                                                     "linear_regression, counting, coin_mixture)")
    parser.add_argument("--no-write", action="store_true", help="print the table, leave RESULTS.md alone")
    args = parser.parse_args(argv)
    command = "python benchmarks/sbc.py" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    selected = [c for c in checks() if args.only is None or c["group"] in args.only.split(",")]
    start, rows = time.perf_counter(), []
    for i, check in enumerate(selected):
        rows.append(run(check, args.simulations, args.draws, jax.random.fold_in(jax.random.key(args.seed), i)))
        r = rows[-1]
        print(f"{r['group']:22s} {r['engine']:12s} assumes {r['assumed']:16s} min adjusted p {r['min_adjusted']:.3g} "
              f"{'passes' if r['passed'] else 'FAILS'} ({'as expected' if r['as_expected'] else 'NOT AS EXPECTED'}) "
              f"{r['wall_s']:.0f} s", flush=True)
    total = time.perf_counter() - start
    lines = table(rows, args.simulations, args.draws, total, command) + [
        f"- date {datetime.now(timezone.utc).isoformat(timespec='seconds')}; commit {commit()}",
        f"- machine: {machine()}",
        "",
    ]
    print("\n".join(lines))
    if not args.no_write:
        replace_block(RESULTS, START, END, "\n".join([START, *lines, END]))
        print(f"wrote {RESULTS}")
    return 0 if all(r["as_expected"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
