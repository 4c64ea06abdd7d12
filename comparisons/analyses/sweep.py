"""The summary of every sweep: one metric of one predictor across the sweep axes, as lines, a heatmap and a table.

Every sweep runs it (``[analysis.sweep]`` in the sweep file sets it): ``metric`` (a variable of
``metrics.nc``, default ``cross_entropy_mean``), ``predictor`` (default the learner, else the first
predictor), ``scenario`` (default the first) and ``x`` (the axis along the line figure, default
``step`` where the sweep has the checkpoint axis, else the first numeric axis). Other dims of the
metric (``position``) are averaged for the table and heatmap. Lines: the metric against ``x``, one
per combination of the other axes (up to 12; beyond, averaged over the last ones), with Bayes' value
dashed where Bayes ran. Heatmap: the first two axes with more than one value, the rest averaged.
"""

from __future__ import annotations

import itertools

import numpy as np
import xarray as xr

from comparisons.analyses import Analysis, AnalysisSettings, final_step, register_analysis
from comparisons.figures import plt, save_figure
from comparisons.report import fmt, markdown_table
from toolkit.dims import PREDICTOR, SCENARIO, STEP
from toolkit.errors import ConfigError

MAX_LINES = 12


def _axes(ds: xr.Dataset, sweep) -> list[str]:
    """The sweep's dims and ``step`` where the cells kept checkpoints."""
    return list(sweep.dims) + ([STEP] if STEP in ds.dims else [])


@register_analysis("sweep")
class SweepSummary(Analysis):
    """One metric of one predictor across the sweep axes."""

    class Settings(AnalysisSettings):
        metric: str = "cross_entropy_mean"  # a variable of the cells' metrics.nc
        predictor: str | None = None  # default: "learner", else the first predictor
        scenario: str | None = None  # default: the first scenario
        x: str | None = None  # the axis along the line figure; default: step, else the first numeric axis

    def _selection(self, ds: xr.Dataset, sweep) -> tuple[xr.DataArray, str, str]:
        s = self.settings
        if s.metric not in ds:
            known = sorted(v for v in ds.data_vars if PREDICTOR in ds[v].dims)
            raise ConfigError(f"analysis.sweep.metric: the cells' metrics have no {s.metric!r}; known: {', '.join(known)}")
        predictors = [str(p) for p in ds[PREDICTOR].values]
        predictor = s.predictor or ("learner" if "learner" in predictors else predictors[0])
        scenarios = [str(v) for v in ds[SCENARIO].values]
        scenario = s.scenario or scenarios[0]
        for name, value, known in (("predictor", predictor, predictors), ("scenario", scenario, scenarios)):
            if value not in known:
                raise ConfigError(f"analysis.sweep.{name}: {value!r} is not in the sweep; known: {', '.join(known)}")
        return ds[s.metric].sel({SCENARIO: scenario}), predictor, scenario

    def _x(self, ds: xr.Dataset, sweep) -> str:
        axes = _axes(ds, sweep)
        if self.settings.x is not None:
            if self.settings.x not in axes:
                raise ConfigError(f"analysis.sweep.x: {self.settings.x!r} is not an axis of the sweep; axes: {', '.join(axes)}")
            return self.settings.x
        if STEP in axes:
            return STEP
        numeric = [a for a in axes if np.issubdtype(ds[a].dtype, np.number)]
        return (numeric or axes)[0]

    def _reduced(self, values: xr.DataArray, keep: list[str]) -> xr.DataArray:
        extra = [d for d in values.dims if d not in keep]
        return values.mean(extra, skipna=True) if extra else values

    def sweep_figures(self, ds, sweep, folder):
        values, predictor, scenario = self._selection(ds, sweep)
        axes, x = _axes(ds, sweep), self._x(ds, sweep)
        others = [a for a in axes if a != x and ds.sizes[a] > 1]
        metric = self.settings.metric
        figures = {}
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        combos = list(itertools.product(*(range(ds.sizes[a]) for a in others)))
        kept = others
        while len(combos) > MAX_LINES and kept:
            kept = kept[:-1]
            combos = list(itertools.product(*(range(ds.sizes[a]) for a in kept)))
        lines = self._reduced(values, [PREDICTOR, x, *kept])
        colors = plt.cm.viridis(np.linspace(0, 0.9, max(len(combos), 1)))
        xs = ds[x].values
        for color, combo in zip(colors, combos):
            sel = {a: i for a, i in zip(kept, combo)}
            one = lines.isel(sel)
            label = ", ".join(f"{a}={ds[a].values[i]}" for a, i in sel.items()) or predictor
            ax.plot(xs, one.sel({PREDICTOR: predictor}).values, "o-", color=color, label=label)
            if predictor != "bayes" and "bayes" in ds[PREDICTOR].values:
                ax.plot(xs, one.sel({PREDICTOR: "bayes"}).values, "--", color=color, lw=0.8)
        ax.set_xlabel(x)
        if np.issubdtype(np.asarray(xs).dtype, np.number) and np.all(np.asarray(xs) > 0) and np.ptp(xs) > 0 \
                and np.max(xs) / np.min(xs) >= 20:
            ax.set_xscale("log")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} of {predictor} on {scenario}" + (" (dashed: bayes)" if "bayes" in ds[PREDICTOR].values
                                                                  and predictor != "bayes" else ""), fontsize=10)
        ax.legend(fontsize=7)
        figures[f"{metric} against {x}"] = "figures/sweep_lines.png"
        save_figure(fig, folder / "sweep_lines.png")
        grid = [a for a in axes if ds.sizes[a] > 1][:2]
        if len(grid) == 2:
            heat = self._reduced(values.sel({PREDICTOR: predictor}), grid).transpose(*grid)
            fig, ax = plt.subplots(figsize=(5.6, 4.4))
            mesh = ax.imshow(heat.values, origin="lower", aspect="auto", cmap="viridis")
            ax.set_yticks(range(ds.sizes[grid[0]]), [str(v) for v in ds[grid[0]].values], fontsize=7)
            ax.set_xticks(range(ds.sizes[grid[1]]), [str(v) for v in ds[grid[1]].values], fontsize=7, rotation=45)
            ax.set_ylabel(grid[0])
            ax.set_xlabel(grid[1])
            fig.colorbar(mesh, ax=ax, label=metric)
            rest = [a for a in axes if a not in grid and ds.sizes[a] > 1]
            ax.set_title(f"{metric} of {predictor} on {scenario}" + (f" (mean over {', '.join(rest)})" if rest else ""),
                         fontsize=9)
            figures[f"{metric} over {grid[0]} and {grid[1]}"] = "figures/sweep_heatmap.png"
            save_figure(fig, folder / "sweep_heatmap.png")
        return figures

    def sweep_report_section(self, ds, sweep):
        values, predictor, scenario = self._selection(ds, sweep)
        dims = list(sweep.dims)
        table = self._reduced(values, [PREDICTOR, *_axes(ds, sweep)])
        table = final_step(table)  # the final learners
        shown = [predictor] + (["bayes"] if predictor != "bayes" and "bayes" in ds[PREDICTOR].values else [])
        rows = []
        for index in itertools.product(*(range(ds.sizes[d]) for d in dims)):
            sel = dict(zip(dims, index))
            cell = table.isel(sel)
            rows.append([str(ds[d].values[i]) for d, i in sel.items()]
                        + [fmt(cell.sel({PREDICTOR: p})) for p in shown]
                        + [str(ds["cell_status"].isel(sel).values), fmt(ds["cell_wall_time_s"].isel(sel), 0)])
        header = dims + [f"{self.settings.metric} {p}" for p in shown] + ["status", "wall s"]
        note = " (the final step)" if STEP in ds.dims else ""
        return "\n".join([f"## {self.settings.metric} per cell, {scenario}{note}", "", markdown_table(header, rows)])

    def sweep_answer(self, ds, sweep):
        values, predictor, scenario = self._selection(ds, sweep)
        one = self._reduced(values.sel({PREDICTOR: predictor}), _axes(ds, sweep))
        one = final_step(one)
        if not bool(np.isfinite(one).any()):
            return [f"**{self.settings.metric}** of {predictor} on {scenario}: no cell finished."]
        low, high = one.argmin(...), one.argmax(...)
        where = lambda at: ", ".join(f"{d}={ds[d].values[int(i)]}" for d, i in at.items())  # noqa: E731
        return [f"**{self.settings.metric}** of {predictor} on {scenario} over {int(np.isfinite(one).sum())} cells: "
                f"lowest {fmt(one.isel(low))} at {where(low)}, highest {fmt(one.isel(high))} at {where(high)}."]


__all__ = ["SweepSummary"]
