"""Misspecification detection: can a predictor tell, from the context alone, that the data are off its prior?

``[analysis.detection]`` scores every (scenario, episode, position t) with
each detector's own answers, never with q (`toolkit.detection`):

- a learner (any predictor that is not a Bayes engine): its surprise
  S_t = −Σ_{s≤t} log p(y_s | y_<s) standardised per t by its mean and
  standard deviation over the in-distribution episodes (``surprise``);
- Bayes: its sequential posterior-predictive check of the context
  (``posterior_predictive``): each y_s scored against Bayes' posterior
  predictive given y_<s and standardised by that predictive's own moments —
  tokens by the entropy and variance of −log p, real y by the PIT values'
  normal scores.

It then computes, for each misspecified scenario against the in-distribution
one and at every t, the ROC AUC of the scores (the probability that a
misspecified episode scores higher, ties one half) with a percentile
bootstrap interval over the episodes of both. The AUC is of |z|: a context
can be further from the prior by being more surprising (a fair coin for a
prior of biased ones) or less (a coin more biased than any the prior has),
and both count. ``comparison.nc`` gains the signed scores ``detection_z
(detector, scenario, episode, position)`` with the coordinate
``detection_method (detector)``; ``metrics.nc`` gains ``detection_auc``,
``detection_auc_low``, ``detection_auc_high`` (detector, scenario, position);
``figures/detection_auc.png`` draws the AUC against t. The standardisation
is monotone at each t, so it leaves the AUC as it is; it makes scores of
different t comparable (z-scores).
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from pydantic import Field

from comparisons.analyses import Analysis, AnalysisSettings, register_analysis
from comparisons.figures import save_figure, scenario_panels, style
from comparisons.report import fmt, markdown_table
from toolkit.detection import (
    xr_auc_interval,
    xr_cumulative_surprise,
    xr_pit_surprise,
    xr_prequential_surprise,
    xr_standardize,
)
from toolkit.dims import DETECTOR, EPISODE, POSITION, PREDICTOR, SCENARIO
from toolkit.errors import ConfigError

SURPRISE, PPC = "surprise", "posterior_predictive"
DEFAULT_DETECTORS = ("learner", "bayes")


def _is_bayes(predictor) -> bool:
    return "engine" in predictor.describe() if predictor is not None else False


@register_analysis("detection")
class DetectionAnalysis(Analysis):
    """ROC AUC of in-distribution against each misspecified scenario, per t, for each detector's score."""

    class Settings(AnalysisSettings):
        detectors: tuple[str, ...] | None = None  # predictors whose answers score the contexts; default learner, bayes
        positions: tuple[int, ...] | None = None  # t the report and answer state; default the report positions
        bootstrap_resamples: int = Field(200, ge=1)  # resamples of the AUC intervals
        level: float = Field(0.95, gt=0, lt=1)  # coverage of the AUC intervals
        seed: int = 0  # the bootstrap's generator

    def _scenarios(self, plan) -> tuple[str, list[str]]:
        reference = [s.name for s in plan.scenarios if s.kind == "in_distribution"]
        others = [s.name for s in plan.scenarios if s.kind == "misspecified"]
        return (reference[0] if reference else ""), others

    def _detectors(self, plan) -> list[str]:
        """The detectors named, else those of the learner and Bayes the run evaluates."""
        if self.settings.detectors is not None:
            return list(self.settings.detectors)
        return [d for d in DEFAULT_DETECTORS if d in plan.predictor_names]

    def _active(self, plan) -> bool:
        reference, others = self._scenarios(plan)
        return bool(reference and others and self._detectors(plan))

    def check(self, plan):
        bad = [t for t in self.settings.positions or () if not 1 <= t <= plan.length]
        if bad:
            raise ConfigError(f"analysis.detection.positions {bad} lie outside 1..{plan.length} (evaluation.length)")
        if self.settings.detectors is None:
            return  # the defaults: detect with what the run has, or nothing (no learner, no misspecified scenario)
        reference, others = self._scenarios(plan)
        if not reference or not others:
            raise ConfigError("analysis.detection needs an in_distribution scenario and at least one misspecified one "
                              "to tell apart; add them under [scenarios]")
        missing = [d for d in self.settings.detectors if d not in plan.predictor_names]
        if missing:
            raise ConfigError(f"analysis.detection.detectors {missing} are not among the predictors "
                              f"{plan.predictor_names}; name predictors the run evaluates")

    def _score(self, ds: xr.Dataset, name: str, bayes: bool, reference: str) -> tuple[xr.DataArray, str]:
        observed = ds["mask"] if "mask" in ds else xr.ones_like(ds["y"], dtype=bool)
        one = ds.sel({PREDICTOR: name}, drop=True)
        if bayes and "log_prob" in one:
            return xr_prequential_surprise(one["log_prob"], ds["y"].where(observed)), PPC
        if bayes and "pit" in one and one["pit"].notnull().any():
            return xr_pit_surprise(one["pit"].where(observed)), PPC
        surprise = xr_cumulative_surprise(one["log_score"].where(observed))
        return xr_standardize(surprise, surprise.sel({SCENARIO: reference}, drop=True), EPISODE), SURPRISE

    def comparison(self, ds, run):
        if not self._active(run.plan):
            return ds
        reference, _ = self._scenarios(run.plan)
        detectors = self._detectors(run.plan)
        scores, methods = [], []
        for name in detectors:
            score, method = self._score(ds, name, _is_bayes(run.predictors.get(name)), reference)
            scores.append(score.transpose(SCENARIO, EPISODE, POSITION))
            methods.append(method)
        score = xr.concat(scores, dim=DETECTOR).assign_coords({DETECTOR: detectors, "detection_method":
                                                                (DETECTOR, methods)})
        score.attrs = {
            "long_name": "how far the context y_<=t is from the prior, by the detector's own answers (no q): "
                         "z-score of its cumulative surprise (learners) or of Bayes' posterior-predictive check; "
                         "> 0: more surprising than the prior's own data",
        }
        return ds.assign(detection_z=score)

    def metrics(self, ds, metrics, run):
        s = self.settings
        if "detection_z" not in ds:
            return metrics
        reference, others = self._scenarios(run.plan)
        score = ds["detection_z"]
        rng = np.random.default_rng(s.seed)
        two_sided = abs(score)
        negative = two_sided.sel({SCENARIO: reference}, drop=True)
        parts = {}
        for scenario in others:
            parts[scenario] = xr_auc_interval(negative, two_sided.sel({SCENARIO: scenario}, drop=True), EPISODE,
                                              num_resamples=s.bootstrap_resamples, level=s.level, rng=rng)
        auc = xr.concat(list(parts.values()), dim=SCENARIO).assign_coords({SCENARIO: list(parts)})
        out = xr.Dataset({"detection_auc": auc["estimate"], "detection_auc_low": auc["low"],
                          "detection_auc_high": auc["high"]})
        out = out.assign_coords(detection_method=(DETECTOR, ds["detection_method"].values))
        out["detection_auc"].attrs = {
            "long_name": f"ROC AUC of |detection_z| of the scenario against {reference}: P(higher) + P(tie) / 2",
            "bootstrap_resamples": s.bootstrap_resamples, "level": s.level,
        }
        return metrics.merge(out, join="left", compat="override")

    # ------------------------------------------------------------------ report
    def _positions(self, run, metrics) -> list[int]:
        given = self.settings.positions or run.plan.report_positions
        return [t for t in given if t in metrics[POSITION].values]

    def figures(self, ds, metrics, run, folder):
        if "detection_auc" not in metrics:
            return {}
        _, others = self._scenarios(run.plan)
        fig, axes = scenario_panels(others)
        for ax, scenario in zip(axes, others):
            m = metrics.sel({SCENARIO: scenario})
            t = m[POSITION].values
            for name in m[DETECTOR].values:
                line = style(str(name))
                ax.plot(t, m["detection_auc"].sel({DETECTOR: name}), label=f"{name} ({m['detection_method'].sel({DETECTOR: name}).item()})", **line)
                ax.fill_between(t, m["detection_auc_low"].sel({DETECTOR: name}),
                                m["detection_auc_high"].sel({DETECTOR: name}), alpha=0.15, color=line.get("color"))
            ax.axhline(0.5, color="tab:gray", lw=0.8, ls=":")
            ax.set_ylim(0.3, 1.0)
            ax.set_xscale("log")
            ax.set_title(str(scenario), fontsize=10)
            ax.set_xlabel("position t")
        axes[0].set_ylabel("ROC AUC against in-distribution")
        axes[0].legend(fontsize=7)
        fig.suptitle(f"Detecting misspecification from y_≤t ({self.settings.level:.0%} bootstrap band)")
        save_figure(fig, folder / "detection_auc.png")
        return {"misspecification detection (AUC)": "figures/detection_auc.png"}

    def _cell(self, m, name, t) -> str:
        sel = {DETECTOR: name, POSITION: t}
        return (f"{fmt(m['detection_auc'].sel(sel), 3)} [{fmt(m['detection_auc_low'].sel(sel), 3)}, "
                f"{fmt(m['detection_auc_high'].sel(sel), 3)}]")

    def report_section(self, ds, metrics, run):
        if "detection_auc" not in metrics:
            return ""
        reference, others = self._scenarios(run.plan)
        positions = self._positions(run, metrics)
        detectors = [str(d) for d in metrics[DETECTOR].values]
        rows = [[str(s)] + [self._cell(metrics.sel({SCENARIO: s}), d, t) for d in detectors for t in positions]
                for s in others]
        methods = ", ".join(f"{d}: {metrics['detection_method'].sel({DETECTOR: d}).item()}" for d in detectors)
        return "\n".join([
            "## Can the context tell that the data are off the prior?",
            "",
            f"ROC AUC of each misspecified scenario against {reference} after t observations, with a "
            f"{self.settings.level:.0%} bootstrap interval ({self.settings.bootstrap_resamples} resamples); 0.5: no "
            "better than chance, 1: every misspecified episode scores above every in-distribution one. The scores "
            f"do not know q ({methods}; `comparison.nc`: `detection_z`); the AUC is of |z|, so a context less surprising "
            "than the prior's own data (a coin more biased than any the prior has) counts as well.",
            "",
            markdown_table(["scenario"] + [f"{d} t={t}" for d in detectors for t in positions], rows),
        ])

    def answer(self, ds, metrics, run):
        if "detection_auc" not in metrics:
            return []
        _, others = self._scenarios(run.plan)
        positions = self._positions(run, metrics)
        lines = []
        for s in others:
            m = metrics.sel({SCENARIO: s})
            parts = [f"t={t}: " + ", ".join(f"{d} {self._cell(m, str(d), t)}" for d in m[DETECTOR].values)
                     for t in positions]
            lines.append(f"**Detection of {s}** (ROC AUC against in-distribution): " + "; ".join(parts) + ".")
        return lines


__all__ = ["DetectionAnalysis"]
