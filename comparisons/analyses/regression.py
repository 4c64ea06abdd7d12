"""The default analysis of a regression run: squared error, coverage and the predictive bands over x.

In-context regression (Garg et al., arXiv:2208.01066; "Bayes' Power for
explaining in-context learning generalizations", arXiv:2410.01565): the
metrics Dataset carries, from the regression data kind
(`toolkit.kinds.Regression`), the squared error of each predictive mean
divided by d, its distance to Bayes' mean and the coverage of the central
50 % and 90 % intervals. This analysis answers with the learner's NLL and
squared error beside Bayes' per scenario, tabulates squared error and
coverage, plots squared error against the number of context examples and,
for one input feature, every predictor's mean and 90 % band over x after a
context of one episode.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from comparisons.analyses import Analysis, register_analysis
from comparisons.figures import plt, save_figure, scenario_panels, style
from comparisons.predictors import LEARNER
from comparisons.report import fmt, markdown_table, position_rows
from toolkit.dims import EPISODE, POSITION, PREDICTOR, QUANTILE, SCENARIO, Y_GRID
from toolkit.episodes import Episodes

REFERENCE = "bayes"


def regression_answer(metrics: xr.Dataset, *, learner: str = LEARNER) -> list[str]:
    """One line per scenario: the learner's NLL and squared error beside Bayes', and how far its mean is from Bayes'."""
    predictors = list(metrics[PREDICTOR].values)
    if learner not in predictors:
        return []
    lines = []
    for s in metrics[SCENARIO].values:
        m = metrics.sel({SCENARIO: s})
        get = lambda var, n: float(m[var].sel({PREDICTOR: n})) if n in predictors and var in m else np.nan  # noqa: E731
        line = (f"**{s}**: mean NLL over positions: learner {fmt(get('cross_entropy_mean', learner))}, "
                f"Bayes {fmt(get('cross_entropy_mean', REFERENCE))} nats")
        if "oracle" in predictors and np.isfinite(get("cross_entropy_mean", "oracle")):
            line += f", oracle {fmt(get('cross_entropy_mean', 'oracle'))}"
        line += (f"; squared error / d: learner {fmt(get('squared_error_mean', learner))}, "
                 f"Bayes {fmt(get('squared_error_mean', REFERENCE))}")
        if REFERENCE in predictors:
            line += f"; (learner mean − Bayes mean)² / d {fmt(get('squared_error_to_reference_mean', learner), 5)}"
            if "kl_from_reference_mean" in m:  # KL needs the y-grid (evaluation.num_y_grid > 0)
                line += f"; KL(bayes‖learner) on the y-grid {fmt(get('kl_from_reference_mean', learner), 4)}"
        lines.append(line + ".")
    return lines


def squared_error_table(metrics: xr.Dataset, scenario: str, positions: list[int]) -> str:
    """Squared error / d of each predictor's mean at the chosen positions, and 90 % coverage (position mean)."""
    positions = [p for p in positions if p in metrics[POSITION].values]
    coverage = lambda m, name: [fmt(m["coverage_90_mean"].sel({PREDICTOR: name}), 3) if "coverage_90_mean" in m else "–"]  # noqa: E731
    rows = position_rows(metrics, scenario, "squared_error", positions, extra=coverage)
    return markdown_table(["predictor"] + [f"t={p}" for p in positions] + ["90 % coverage"], rows)


# --------------------------------------------------------------------------- figures


def squared_error_figure(metrics: xr.Dataset, path: Path) -> Path:
    """One panel per scenario: squared error of the predictive mean / d against the number of context examples."""
    scenarios = list(metrics[SCENARIO].values)
    fig, axes = scenario_panels(scenarios)
    for ax, scenario in zip(axes, scenarios):
        m = metrics["squared_error"].sel({SCENARIO: scenario})
        context = m[POSITION].values - 1
        for name in metrics[PREDICTOR].values:
            err = m.sel({PREDICTOR: name})
            if np.all(np.isnan(err)):
                continue
            ax.plot(context, err, label=str(name), **style(str(name)))
        ax.set_yscale("log")
        ax.set_title(str(scenario), fontsize=10)
        ax.set_xlabel("in-context examples (t − 1)")
        ax.set_ylabel("squared error / d")
    axes[0].legend(fontsize=7)
    fig.suptitle("Squared error of the predictive mean of y_t, divided by d, mean over episodes")
    return save_figure(fig, path)


def query_episodes(x_context: np.ndarray, y_context: np.ndarray, x_query: np.ndarray) -> Episodes:
    """One episode per query point: the same context, then the query x as the last position (its y unused)."""
    n, q = len(y_context), len(x_query)
    x = np.concatenate([np.broadcast_to(x_context, (q, n, x_context.shape[-1])), x_query[:, None, :]], axis=1)
    y = np.concatenate([np.broadcast_to(y_context, (q, n)), np.zeros((q, 1))], axis=1)
    return Episodes(y=y, x=x)


def regression_band_figure(
    ds: xr.Dataset, predictors: dict, scenarios: list[str], path: Path, *, prior, scenario_objects=(),
    num_context: int = 16, num_query: int = 120,
) -> Path:
    """Bayes' Power pictures: predictive mean and 90 % band over x after ``num_context`` examples of one episode.

    For each scenario the first ``num_context`` points of episode 0 are the
    context; every predictor in ``predictors`` (e.g. Bayes, the oracle where
    the source is known, the learners) predicts y at ``num_query`` query
    points across the scenario's x range. ``scenario_objects`` bind the
    predictors that depend on the scenario (the oracle); a predictor without
    an answer for a scenario (``bind`` gives None) is left out of its panel.
    """
    y_grid = ds[Y_GRID].values if Y_GRID in ds.dims else None
    by_name = {s.name: s for s in scenario_objects}
    fig, axes = plt.subplots(1, len(scenarios), figsize=(4.6 * len(scenarios), 3.6), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios):
        sub = ds.sel({SCENARIO: scenario}).isel({EPISODE: 0})
        n = min(num_context, sub.sizes[POSITION] - 1)
        x_ctx = sub["x"].isel({POSITION: slice(0, n)}).values  # (n, 1)
        y_ctx = sub["y"].isel({POSITION: slice(0, n)}).values
        x_all = ds["x"].sel({SCENARIO: scenario}).values
        lo, hi = np.nanmin(x_all), np.nanmax(x_all)
        x_query = np.linspace(lo, hi, num_query)[:, None]
        episodes = query_episodes(x_ctx, y_ctx, x_query)
        for name, predictor in predictors.items():
            predictor = predictor.bind(prior, by_name[scenario], episodes)
            if predictor is None:
                continue
            pred = predictor.predict(episodes, y_grid=y_grid).isel({POSITION: -1})
            look = style(str(name))
            ax.plot(x_query[:, 0], pred["mean"].values, label=str(name), **look)
            if "quantile_value" in pred and name != "oracle":  # point predictors carry no quantiles
                q = pred["quantile_value"]
                ax.fill_between(x_query[:, 0], q.sel({QUANTILE: 0.05}).values, q.sel({QUANTILE: 0.95}).values,
                                alpha=0.15, color=look.get("color"))
        ax.plot(x_ctx[:, 0], y_ctx, "o", color="tab:orange", ms=3.5, label=f"{n} context points")
        ax.set_title(str(scenario), fontsize=10)
        ax.set_xlabel("x")
    axes[0, 0].set_ylabel("y")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Predictive mean and 90 % band over x after the context (the oracle: the source's own mean)")
    return save_figure(fig, path)


@register_analysis("regression")
class RegressionAnalysis(Analysis):
    """Every regression run: squared error and coverage per scenario, and the bands over x for one feature."""

    def figures(self, ds, metrics, run, folder):
        plan = run.plan
        figures = {"squared error against context size": "figures/squared_error.png"}
        squared_error_figure(metrics, folder / "squared_error.png")
        if plan.prior.x_dim == 1:
            shown = [s for s in plan.scenarios if s.kind == "misspecified"] or plan.scenarios
            drawn = {n: run.predictors[n] for n in ("bayes", "oracle", *run.learner_names) if n in run.predictors}
            figures["predictive mean and 90 % band over x"] = "figures/regression_bands.png"
            regression_band_figure(ds, drawn, [s.name for s in shown[:4]], folder / "regression_bands.png",
                                   prior=plan.prior, scenario_objects=plan.scenarios)
        return figures

    def report_section(self, ds, metrics, run):
        positions = run.plan.report_positions
        out = ["## Squared error of the predictive mean / d per scenario", ""]
        for s in metrics[SCENARIO].values:
            out += [f"### {s}", "", squared_error_table(metrics, str(s), positions), ""]
        return "\n".join(out)

    def answer(self, ds, metrics, run):
        return regression_answer(metrics)


__all__ = ["RegressionAnalysis", "regression_answer", "squared_error_table", "squared_error_figure",
           "regression_band_figure", "query_episodes"]
