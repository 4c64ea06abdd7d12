"""`report.md`: the comparison's answer in numbers, as Markdown tables.

The skeleton every run shares (the question, the answer lines the analyses
give, the setup, cross-entropy per scenario, the Bayes engines and MCMC
diagnostics, then the analyses' sections and the figures); what one kind of
run adds lives with its analysis (`comparisons.analyses`).
"""

from __future__ import annotations

import json

import numpy as np
import xarray as xr

from toolkit.dims import POSITION, PREDICTOR, SCENARIO
from toolkit.kinds import kind_of


def fmt(value, digits=4) -> str:
    """``value`` with ``digits`` decimals; NaN as an en dash."""
    value = float(value)
    if np.isnan(value):
        return "–"
    return f"{value:.{digits}f}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def position_rows(metrics: xr.Dataset, scenario: str, variable: str, positions: list[int], *,
                  mark=lambda name, position: "", extra=lambda m, name: []) -> list[list[str]]:
    """A table row per predictor with any value of ``variable`` on ``scenario``: the name, the value at each
    position (plus ``mark(name, position)``), then ``extra(metrics of the scenario, name)``."""
    m = metrics.sel({SCENARIO: scenario})
    rows = []
    for name in metrics[PREDICTOR].values:
        values = m[variable].sel({PREDICTOR: name})
        if np.all(np.isnan(values)):
            continue
        rows.append([str(name)] + [fmt(values.sel({POSITION: p})) + mark(name, p) for p in positions] + extra(m, name))
    return rows


def cross_entropy_table(ds: xr.Dataset, metrics: xr.Dataset, scenario: str, positions: list[int]) -> str:
    """Cross-entropy at the chosen positions for every predictor of one scenario, with H(q)."""
    positions = [p for p in positions if p in metrics[POSITION].values]
    m = metrics.sel({SCENARIO: scenario})

    def means(m, name):
        out = [fmt(m["cross_entropy_mean"].sel({PREDICTOR: name}))]
        if "kl_from_reference_mean" in m:
            out.append(fmt(m["kl_from_reference_mean"].sel({PREDICTOR: name}), 5))
        return out

    rows = position_rows(metrics, scenario, "cross_entropy", positions, extra=means,
                         mark=lambda name, p: _mcmc_mark(metrics, name, scenario, p))
    header = ["predictor"] + [f"CE t={p}" for p in positions] + ["CE mean"]
    if "kl_from_reference_mean" in m:
        header.append(f"KL({metrics.attrs.get('reference', 'bayes')}‖·) mean")
    entropy = kind_of(ds).source_entropy(ds)
    if entropy is not None:
        h = entropy.sel({SCENARIO: scenario})
        rows.append(["H(q)"] + [fmt(h.sel({POSITION: p})) for p in positions] + [fmt(h.mean()), ""][: len(header) - len(positions) - 1])
    return markdown_table(header, rows)


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
            fmt(d["r_hat"].max(skipna=True)), fmt(d["ess_bulk"].min(skipna=True), 0),
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
    answer_lines: list[str] = (),
    stamp: dict | None = None,
) -> str:
    """The Markdown text of report.md.

    ``answer_lines`` (the analyses' answers) open it; ``sections`` (Markdown, the analyses') go
    before the figures; ``stamp`` (run id and config hash) is recorded in a comment on the first line.
    """
    prior = json.loads(ds.attrs["prior"]) if isinstance(ds.attrs.get("prior"), str) else ds.attrs.get("prior", {})
    out = [f"<!-- metabayes run {stamp['run_id']}, config {stamp['config_hash']} -->"] if stamp else []
    out += [f"# metabayes report: {prior.get('name', 'prior')}", ""]
    out += [
        "Does a sequence model meta-trained on the prior predict like exact Bayes, in-distribution and on data "
        "the prior cannot produce? Each predictor sees the same evaluation episodes; position t predicts y_t "
        "from the t − 1 earlier outcomes.",
        "",
        "## Answer",
        "",
    ]
    out += [f"- {line}" for line in (answer_lines or ["No learner in this comparison."])]
    out += ["", "## Setup", ""]
    out += [f"- **{k}**: {v}" for k, v in run_info.items()]
    out += ["", "## Cross-entropy (nats) per scenario", ""]
    for s in metrics[SCENARIO].values:
        desc = str(ds["scenario_description"].sel({SCENARIO: s}).values) if "scenario_description" in ds.coords else ""
        out += [f"### {s}", "", desc, "", cross_entropy_table(ds, metrics, str(s), positions), ""]
    out += mcmc_section(ds, metrics)
    for section in sections:
        out += [section.rstrip(), ""]
    if figures:
        out += ["## Figures", ""]
        out += [f"![{name}]({path})" for name, path in figures.items()]
        out.append("")
    return "\n".join(out)


__all__ = ["write_report", "cross_entropy_table", "position_rows", "markdown_table", "mcmc_section", "fmt"]
