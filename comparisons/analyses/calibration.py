"""Calibration of each predictor's predictive: PIT for real y, reliability and ECE for tokens.

Close in KL is not the same as calibrated. ``[analysis.calibration]`` adds to
``metrics.nc``:

- regression (the learners and Bayes by default, ``predictors`` to choose;
  any predictive with a CDF: the learner's bar distribution, Bayes in closed
  form or by MCMC, ridge, the oracle): with the PIT values F(y_t | context)
  of the comparison's ``pit (predictor, scenario, episode, position)`` on the
  evaluated cells, the ECDF uniformity
  test (`toolkit.calibration.uniformity_test`, Säilynoja et al. 2022) per
  position, ``pit_pvalue (predictor, scenario, position)``, and over every
  position at once, ``pit_pvalue_pooled (predictor, scenario)`` (under the
  predictor's own prior the PIT values of one episode are independent,
  Rosenblatt 1952); ``figures/pit_ecdf.png`` draws ECDF − uniform at three
  positions with ArviZ's simultaneous band;
- tokens: the reliability diagram of P(y_t = v) pooled over episodes,
  positions and outcomes, ``reliability_predicted``,
  ``reliability_observed``, ``reliability_count`` (predictor, scenario,
  calibration_bin), and the expected calibration error ``ece`` (predictor,
  scenario); ``figures/reliability.png``.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from pydantic import Field

from comparisons.analyses import Analysis, AnalysisSettings, register_analysis
from comparisons.figures import save_figure, scenario_panels, style
from comparisons.report import fmt, markdown_table
from toolkit.calibration import ecdf_difference, ecdf_points, uniform_ecdf_band, uniformity_test, xr_reliability
from toolkit.dims import CALIBRATION_BIN, EPISODE, OUTCOME, POSITION, PREDICTOR, SCENARIO
from toolkit.errors import ConfigError
from toolkit.summaries import evaluation_mask

LEARNER, REFERENCE = "learner", "bayes"


def _observed(ds: xr.Dataset) -> xr.DataArray:
    """Cells with a realised y_t (padding and a prompt's next-token position have none)."""
    return evaluation_mask(ds) & (ds["mask"] if "mask" in ds else True) & ds["y"].notnull()


def pit_tests(pit: xr.DataArray) -> xr.Dataset:
    """``pit_pvalue`` per (predictor, scenario, position) over episodes and ``pit_pvalue_pooled`` over both."""
    per_position = xr.apply_ufunc(lambda u: uniformity_test(u, -1).pvalue, pit, input_core_dims=[[EPISODE]])
    pooled = xr.apply_ufunc(lambda u: uniformity_test(u.reshape(u.shape[:-2] + (-1,)), -1).pvalue, pit,
                            input_core_dims=[[EPISODE, POSITION]])
    out = xr.Dataset({"pit_pvalue": per_position, "pit_pvalue_pooled": pooled})
    out["pit_pvalue"].attrs = {"long_name": "ECDF uniformity p-value of the PIT values over episodes (Säilynoja et al. 2022)"}
    out["pit_pvalue_pooled"].attrs = {"long_name": "the same over every (episode, position)"}
    return out


@register_analysis("calibration")
class CalibrationAnalysis(Analysis):
    """PIT (regression) or reliability and ECE (tokens) of every predictor that has them."""

    class Settings(AnalysisSettings):
        bins: int = Field(10, ge=2)  # tokens: equal-width bins of the reliability diagram
        alpha: float = Field(0.01, gt=0, lt=1)  # the level tables mark and the figure's band shows
        predictors: tuple[str, ...] | None = None  # regression: whose PIT is tested; default the learners and bayes

    def check(self, plan):
        missing = [p for p in self.settings.predictors or () if p not in plan.predictor_names]
        if missing:
            raise ConfigError(f"analysis.calibration.predictors {missing} are not among the predictors "
                              f"{plan.predictor_names}; name predictors the run evaluates")

    def _tested(self, run) -> list[str]:
        if self.settings.predictors is not None:
            return list(self.settings.predictors)
        return [n for n in run.plan.predictor_names if n in run.plan.learners or n == REFERENCE]

    def metrics(self, ds, metrics, run):
        observed = _observed(ds)
        if "pit" in ds:
            pit = ds["pit"].where(observed).sel({PREDICTOR: self._tested(run)})
            has = pit.notnull().any((SCENARIO, EPISODE, POSITION))
            pit = pit.sel({PREDICTOR: pit[PREDICTOR].values[has.values]})
            if pit.sizes[PREDICTOR] == 0:
                return metrics
            return metrics.merge(pit_tests(pit), join="left", compat="override")
        if "log_prob" not in ds:
            return metrics
        prob = np.exp(ds["log_prob"]).where(observed)
        index = xr.DataArray(np.arange(ds.sizes[OUTCOME]), dims=OUTCOME, coords={OUTCOME: ds[OUTCOME].values})
        event = (ds["y"] == index).where(observed)
        table = xr_reliability(prob, event, (EPISODE, POSITION, OUTCOME), bins=self.settings.bins)
        out = xr.Dataset({"reliability_predicted": table["mean_predicted"], "reliability_observed":
                          table["observed_frequency"], "reliability_count": table["count"], "ece": table["ece"]})
        out["ece"].attrs = {"long_name": "expected calibration error of P(y_t = v), pooled over episodes, positions "
                                         f"and outcomes, {self.settings.bins} equal-width bins"}
        keep = out["reliability_count"].sum(CALIBRATION_BIN) > 0
        return metrics.merge(out.where(keep), compat="override")

    # ------------------------------------------------------------------ report
    def figures(self, ds, metrics, run, folder):
        if "pit_pvalue" in metrics:
            self._pit_figure(ds["pit"].where(_observed(ds)).sel({PREDICTOR: self._shown(metrics)}), folder / "pit_ecdf.png")
            return {"PIT calibration (ECDF difference)": "figures/pit_ecdf.png"}
        if "ece" in metrics:
            self._reliability_figure(metrics, folder / "reliability.png")
            return {"reliability diagram": "figures/reliability.png"}
        return {}

    def _shown(self, metrics) -> list[str]:
        """The learner and Bayes, else the first two predictors tested."""
        if "pit_pvalue" in metrics:
            names = [str(p) for p in metrics[PREDICTOR].values if metrics["pit_pvalue"].sel({PREDICTOR: p}).notnull().any()]
        else:
            names = [str(p) for p in metrics[PREDICTOR].values]
        first = [n for n in (LEARNER, REFERENCE) if n in names]
        return first or names[:2]

    def _pit_figure(self, pit, path):
        scenarios = list(pit[SCENARIO].values)
        fig, axes = scenario_panels(scenarios)
        n = int(pit.notnull().sum(EPISODE).max())
        points = ecdf_points(n)
        low, high = uniform_ecdf_band(n, points, level=1 - self.settings.alpha)
        positions = list(pit[POSITION].values)
        shown = sorted({positions[0], positions[len(positions) // 2], positions[-1]})
        names = [str(p) for p in pit[PREDICTOR].values]
        for ax, scenario in zip(axes, scenarios):
            ax.fill_between(points, low, high, step="mid", color="tab:blue", alpha=0.12)
            for name in names:
                for j, t in enumerate(shown):
                    u = pit.sel({PREDICTOR: name, SCENARIO: scenario, POSITION: t}).values
                    if np.all(np.isnan(u)):
                        continue
                    line = dict(style(name), lw=1, alpha=0.4 + 0.6 * (j + 1) / len(shown))
                    ax.step(points, ecdf_difference(u, points), where="mid", label=f"{name}, t={t}", **line)
            ax.set_title(str(scenario), fontsize=10)
            ax.set_xlabel("PIT")
        axes[0].set_ylabel("ECDF − uniform")
        axes[0].legend(fontsize=6)
        fig.suptitle(f"PIT of y_t: ECDF − uniform over {n} episodes, {1 - self.settings.alpha:.0%} simultaneous band")
        save_figure(fig, path)

    def _reliability_figure(self, metrics, path):
        scenarios = list(metrics[SCENARIO].values)
        fig, axes = scenario_panels(scenarios)
        for ax, scenario in zip(axes, scenarios):
            ax.plot([0, 1], [0, 1], color="tab:gray", lw=0.8)
            for name in metrics[PREDICTOR].values:
                m = metrics.sel({PREDICTOR: name, SCENARIO: scenario})
                if np.all(np.isnan(m["reliability_predicted"])) or str(name) == "oracle":
                    continue
                ax.plot(m["reliability_predicted"], m["reliability_observed"], marker=".", ms=4,
                        label=f"{name} (ECE {fmt(m['ece'], 3)})", **style(str(name)))
            ax.set_title(str(scenario), fontsize=10)
            ax.set_xlabel("predicted P(y_t = v)")
            ax.legend(fontsize=6)
        axes[0].set_ylabel("observed frequency")
        fig.suptitle("Reliability of the next-token probabilities (pooled over positions and outcomes)")
        save_figure(fig, path)

    def report_section(self, ds, metrics, run):
        alpha = self.settings.alpha
        if "pit_pvalue" in metrics:
            names = self._shown(metrics)
            rows = []
            for s in metrics[SCENARIO].values:
                row = [str(s)]
                for name in names:
                    m = metrics.sel({PREDICTOR: name, SCENARIO: s})
                    failing = int((m["pit_pvalue"] < alpha).sum())
                    row += [fmt(m["pit_pvalue_pooled"], 3), f"{failing} of {m.sizes[POSITION]}"]
                rows.append(row)
            header = ["scenario"] + [h for n in names for h in (f"{n}: pooled p", f"{n}: positions p < {alpha}")]
            return "\n".join([
                "## Calibration: PIT of the predictive",
                "",
                "PIT = the predictive CDF at the realised y_t; a calibrated predictive gives Uniform(0, 1) PIT values. "
                "p: the ECDF uniformity test over episodes (Säilynoja et al. 2022), pooled over every position, and "
                "the number of positions where the test at that position alone rejects. PIT values are "
                "`comparison.nc`'s `pit`.",
                "",
                markdown_table(header, rows),
            ])
        if "ece" in metrics:
            predictors = [p for p in metrics[PREDICTOR].values if np.isfinite(metrics["ece"].sel({PREDICTOR: p})).any()]
            rows = [[str(s)] + [fmt(metrics["ece"].sel({PREDICTOR: p, SCENARIO: s}), 4) for p in predictors]
                    for s in metrics[SCENARIO].values]
            return "\n".join([
                "## Calibration: reliability of the next-token probabilities",
                "",
                f"Expected calibration error of P(y_t = v) ({self.settings.bins} equal-width bins, pooled over "
                "episodes, positions and outcomes): Σ_b n_b |mean predicted − observed frequency| / n. Finite samples "
                "give a calibrated predictor a small positive ECE.",
                "",
                markdown_table(["scenario"] + [str(p) for p in predictors], rows),
            ])
        return ""

    def answer(self, ds, metrics, run):
        names = [n for n in (LEARNER, REFERENCE) if n in metrics[PREDICTOR].values]
        if not names:
            return []
        scenario = str(metrics[SCENARIO].values[0])
        alpha = self.settings.alpha
        if "pit_pvalue" in metrics and LEARNER in names:
            parts = []
            for name in names:
                m = metrics.sel({PREDICTOR: name, SCENARIO: scenario})
                parts.append(f"{name} pooled ECDF test p = {fmt(m['pit_pvalue_pooled'], 3)}, "
                             f"{int((m['pit_pvalue'] < alpha).sum())} of {m.sizes[POSITION]} positions with p < {alpha}")
            return [f"**PIT calibration on {scenario}**: " + "; ".join(parts) + "."]
        if "ece" in metrics and LEARNER in names:
            ece = {n: fmt(metrics["ece"].sel({PREDICTOR: n, SCENARIO: scenario}), 4) for n in names}
            return [f"**Calibration on {scenario}**: expected calibration error of P(y_t = v) "
                    + ", ".join(f"{n} {v}" for n, v in ece.items()) + "."]
        return []


__all__ = ["CalibrationAnalysis", "pit_tests"]
