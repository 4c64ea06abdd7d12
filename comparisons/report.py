"""`report.md`: the comparison's answer in numbers, as Markdown tables."""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from toolkit.dims import POSITION, PREDICTOR, SCENARIO

from .figures import entropy_of_source


def _fmt(value, digits=4) -> str:
    value = float(value)
    if np.isnan(value):
        return "–"
    return f"{value:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def cross_entropy_table(ds: xr.Dataset, metrics: xr.Dataset, scenario: str, positions: list[int]) -> str:
    """Cross-entropy at the chosen positions for every predictor of one scenario, with H(q)."""
    positions = [p for p in positions if p in metrics[POSITION].values]
    m = metrics.sel({SCENARIO: scenario})
    rows = []
    for name in metrics[PREDICTOR].values:
        ce = m["cross_entropy"].sel({PREDICTOR: name})
        if np.all(np.isnan(ce)):
            continue
        row = [str(name)] + [_fmt(ce.sel({POSITION: p})) + _mcmc_mark(metrics, name, scenario, p) for p in positions]
        row.append(_fmt(m["cross_entropy_mean"].sel({PREDICTOR: name})))
        if "kl_from_reference_mean" in m:
            row.append(_fmt(m["kl_from_reference_mean"].sel({PREDICTOR: name}), 5))
        rows.append(row)
    header = ["predictor"] + [f"CE t={p}" for p in positions] + ["CE mean"]
    if "kl_from_reference_mean" in m:
        header.append(f"KL({metrics.attrs.get('reference', 'bayes')}‖·) mean")
    entropy = entropy_of_source(ds)
    if entropy is not None:
        h = entropy.sel({SCENARIO: scenario})
        rows.append(["H(q)"] + [_fmt(h.sel({POSITION: p})) for p in positions] + [_fmt(h.mean()), ""][: len(header) - len(positions) - 1])
    return markdown_table(header, rows)


def relative_distance_table(metrics: xr.Dataset, predictor: str, positions: list[int]) -> str:
    positions = [p for p in positions if p in metrics[POSITION].values]
    rd = metrics["relative_distance"].sel({PREDICTOR: predictor})
    rows = [[str(s)] + [_fmt(rd.sel({SCENARIO: s, POSITION: p}), 2) for p in positions] for s in metrics[SCENARIO].values]
    return markdown_table(["scenario"] + [f"t={p}" for p in positions], rows)


def verdict(value: float) -> str:
    if np.isnan(value):
        return "undetermined (Bayes and the best mixture agree here)"
    if value < -0.5:
        return "predicts like Bayes"
    if value > 0.5:
        return "predicts like the best fixed mixture"
    return "sits between Bayes and the best fixed mixture"


def regression_answer(metrics: xr.Dataset, *, learner: str = "learner") -> list[str]:
    """One line per scenario: the learner's NLL and squared error beside Bayes', and how far its mean is from Bayes'."""
    predictors = list(metrics[PREDICTOR].values)
    lines = []
    for s in metrics[SCENARIO].values:
        m = metrics.sel({SCENARIO: s})
        get = lambda var, n: float(m[var].sel({PREDICTOR: n})) if n in predictors and var in m else np.nan  # noqa: E731
        line = (f"**{s}**: mean NLL over positions: learner {_fmt(get('cross_entropy_mean', learner))}, "
                f"Bayes {_fmt(get('cross_entropy_mean', 'bayes'))} nats")
        if "oracle" in predictors and np.isfinite(get("cross_entropy_mean", "oracle")):
            line += f", oracle {_fmt(get('cross_entropy_mean', 'oracle'))}"
        line += (f"; squared error / d: learner {_fmt(get('squared_error_mean', learner))}, "
                 f"Bayes {_fmt(get('squared_error_mean', 'bayes'))}")
        if "squared_error_to_reference_mean" in m:
            line += f"; (learner mean − Bayes mean)² / d {_fmt(get('squared_error_to_reference_mean', learner), 5)}"
        if "kl_from_reference_mean" in m:
            line += f"; KL(bayes‖learner) on the y-grid {_fmt(get('kl_from_reference_mean', learner), 4)}"
        lines.append(line + ".")
    return lines


def squared_error_table(metrics: xr.Dataset, scenario: str, positions: list[int]) -> str:
    """Squared error / d of each predictor's mean at the chosen positions, and 90 % coverage (position mean)."""
    positions = [p for p in positions if p in metrics[POSITION].values]
    m = metrics.sel({SCENARIO: scenario})
    rows = []
    for name in metrics[PREDICTOR].values:
        err = m["squared_error"].sel({PREDICTOR: name})
        if np.all(np.isnan(err)):
            continue
        row = [str(name)] + [_fmt(err.sel({POSITION: p})) for p in positions]
        row.append(_fmt(m["coverage_90_mean"].sel({PREDICTOR: name}), 3) if "coverage_90_mean" in m else "–")
        rows.append(row)
    return markdown_table(["predictor"] + [f"t={p}" for p in positions] + ["90 % coverage"], rows)


def answer(ds: xr.Dataset, metrics: xr.Dataset, *, learner: str = "learner") -> list[str]:
    """One line per scenario: the learner's cross-entropy beside Bayes, the best mixture and H(q)."""
    lines = []
    predictors = list(metrics[PREDICTOR].values)
    if learner not in predictors:
        return ["No learner in this comparison."]
    if "squared_error" in metrics:
        return regression_answer(metrics, learner=learner)
    entropy = entropy_of_source(ds)
    for s in metrics[SCENARIO].values:
        m = metrics.sel({SCENARIO: s})
        last = int(m[POSITION].values[-1])
        ce = lambda n: float(m["cross_entropy"].sel({PREDICTOR: n, POSITION: last})) if n in predictors else np.nan  # noqa: E731
        parts = [f"**{s}**: at t={last} the learner's cross-entropy is {_fmt(ce(learner))} nats"]
        parts.append(f"(Bayes {_fmt(ce('bayes'))}, best mixture {_fmt(ce('best_mixture'))}")
        if entropy is not None:
            parts[-1] += f", H(q) {_fmt(entropy.sel({SCENARIO: s, POSITION: last}))}"
        parts[-1] += ")"
        if "kl_from_reference_mean" in m:
            parts[-1] += f"; mean KL(bayes‖learner) over positions {_fmt(m['kl_from_reference_mean'].sel({PREDICTOR: learner}), 5)}"
        if "relative_distance" in m:
            tail = m["relative_distance"].sel({PREDICTOR: learner}).isel({POSITION: slice(len(m[POSITION]) // 2, None)})
            rd = float(tail.mean(skipna=True)) if np.any(np.isfinite(tail)) else np.nan
            parts[-1] += f"; relative distance (second half of positions) {_fmt(rd, 2)}: the learner {verdict(rd)}"
        lines.append(" ".join(parts) + ".")
    return lines


def _mcmc_mark(metrics: xr.Dataset, predictor, scenario: str, position: int) -> str:
    """" ⚠" on an MCMC predictor's value that averages over cells whose diagnostics fail."""
    if "mcmc_flagged" not in metrics or str(predictor) not in metrics.attrs.get("mcmc_predictors", []):
        return ""
    flagged = metrics["mcmc_flagged"].sel({SCENARIO: scenario, POSITION: position})
    return " ⚠" if int(flagged) > 0 else ""


def _described(ds: xr.Dataset) -> dict:
    described = ds.attrs.get("predictors", {})
    return json.loads(described) if isinstance(described, str) else dict(described)


def mcmc_section(ds: xr.Dataset, metrics: xr.Dataset) -> list[str]:
    """The Bayes engines and why they were chosen; with MCMC, its diagnostics per scenario."""
    engines = {n: d for n, d in _described(ds).items() if isinstance(d, dict) and "engine" in d}
    if not engines:
        return []
    out = ["## Bayes engines", ""]
    for name, d in engines.items():
        out.append(f"- **{name}**: {d['engine']}" + (f" — {d['reason']}" if d.get("reason") else ""))
    out.append("")
    if "mcmc_flagged" not in metrics:
        return out
    from toolkit.mcmc import ESS_BULK_MIN, R_HAT_MAX

    out += [
        f"MCMC cells are flagged when r_hat > {R_HAT_MAX}, ess_bulk < {ESS_BULK_MIN} or any transition diverged; "
        "cross-entropies marked ⚠ above average over flagged cells. Draws: `mcmc/<scenario>.nc` (ArviZ).",
        "",
    ]
    rows = []
    for s in metrics[SCENARIO].values:
        cells = int(metrics["mcmc_cells"].sel({SCENARIO: s}).sum())
        if not cells:
            continue
        d = ds.sel({SCENARIO: s})
        flagged = metrics["mcmc_flagged"].sel({SCENARIO: s})
        worst = [int(p) for p in flagged[POSITION].values[flagged.values > 0]]
        rows.append([
            str(s), str(cells), str(int(flagged.sum())),
            _fmt(d["r_hat"].max(skipna=True)), _fmt(d["ess_bulk"].min(skipna=True), 0),
            str(int(d["divergences"].sum(skipna=True))), ", ".join(map(str, worst)) or "–",
        ])
    out += [markdown_table(["scenario", "cells", "flagged", "max r_hat", "min ess_bulk", "divergences",
                            "positions with flags"], rows), ""]
    return out


def write_report(
    ds: xr.Dataset,
    metrics: xr.Dataset,
    *,
    positions: list[int],
    figures: dict[str, str],
    run_info: dict,
    sections: list[str] = (),
    answer_lines: list[str] | None = None,
) -> str:
    """The Markdown text of report.md.

    ``sections`` (Markdown) go before the figures; ``answer_lines`` replace the
    learner-versus-Bayes answer (e.g. an experiment with many learners answers its own question).
    """
    prior = json.loads(ds.attrs["prior"]) if isinstance(ds.attrs.get("prior"), str) else ds.attrs.get("prior", {})
    out = [f"# metabayes report: {prior.get('name', 'prior')}", ""]
    out += [
        "Does a sequence model meta-trained on the prior predict like exact Bayes, in-distribution and on data "
        "the prior cannot produce? Each predictor sees the same evaluation episodes; position t predicts y_t "
        "from the t − 1 earlier outcomes.",
        "",
        "## Answer",
        "",
    ]
    out += [f"- {line}" for line in (answer(ds, metrics) if answer_lines is None else answer_lines)]
    out += ["", "## Setup", ""]
    out += [f"- **{k}**: {v}" for k, v in run_info.items()]
    out += ["", "## Cross-entropy (nats) per scenario", ""]
    for s in metrics[SCENARIO].values:
        desc = str(ds["scenario_description"].sel({SCENARIO: s}).values) if "scenario_description" in ds.coords else ""
        out += [f"### {s}", "", desc, "", cross_entropy_table(ds, metrics, str(s), positions), ""]
        if "squared_error" in metrics:
            out += ["Squared error of the predictive mean / d:", "", squared_error_table(metrics, str(s), positions), ""]
    out += mcmc_section(ds, metrics)
    if "relative_distance" in metrics and "learner" in metrics[PREDICTOR].values:
        out += [
            "## Where the learner sits between Bayes (−1) and the best fixed mixture (+1)",
            "",
            "Relative distance (d(h, bayes) − d(h, best_mixture)) / d(bayes, best_mixture), with d the Jensen–Shannon "
            "distance √JS averaged over episodes: −1 means the learner predicts exactly like Bayes, +1 exactly like the "
            "best fixed mixture. Where Bayes and the best mixture nearly agree the ratio is noisy.",
            "",
            relative_distance_table(metrics, "learner", sorted({2, 4, 8, 16, 32, *positions})),
            "",
        ]
    for section in sections:
        out += [section.rstrip(), ""]
    if figures:
        out += ["## Figures", ""]
        out += [f"![{name}]({path})" for name, path in figures.items()]
        out.append("")
    return "\n".join(out)


__all__ = ["write_report", "answer", "regression_answer", "squared_error_table", "cross_entropy_table", "relative_distance_table", "markdown_table", "mcmc_section"]
