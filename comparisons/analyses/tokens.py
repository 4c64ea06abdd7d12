"""The default analysis of a tokens run: where the learner sits between Bayes and the best fixed mixture.

Under misspecification Bayes' posterior collapses onto the component of the
prior closest to q, while the best fixed mixture ρ* of the components reaches
the lower cross-entropy (the two-coin question, ``shared/background``). The
metrics Dataset carries, from the tokens data kind (`toolkit.kinds.Tokens`),
KL(bayes‖·), the Jensen–Shannon distances to both references and the relative
distance (−1: like Bayes, +1: like ρ*). This analysis answers with them per
scenario, tabulates the relative distance and draws the predictions along a
few episodes and, for a two-component prior, the learner's implied mixture
weight against Bayes' posterior weight.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from comparisons.analyses import Analysis, register_analysis
from comparisons.figures import plt, save_figure, style
from comparisons.predictors import LEARNER
from comparisons.report import fmt, markdown_table
from toolkit.dims import EPISODE, OUTCOME, POSITION, PREDICTOR, SCENARIO
from toolkit.errors import MetabayesError
from toolkit.kinds import TOKENS
from toolkit.oracles import component_log_prob

REFERENCE, MIXTURE = "bayes", "best_mixture"


def verdict(value: float) -> str:
    if np.isnan(value):
        return "undetermined (Bayes and the best mixture agree here)"
    if value < -0.5:
        return "predicts like Bayes"
    if value > 0.5:
        return "predicts like the best fixed mixture"
    return "sits between Bayes and the best fixed mixture"


def relative_distance_table(metrics: xr.Dataset, predictor: str, positions: list[int]) -> str:
    positions = [p for p in positions if p in metrics[POSITION].values]
    rd = metrics["relative_distance"].sel({PREDICTOR: predictor})
    rows = [[str(s)] + [fmt(rd.sel({SCENARIO: s, POSITION: p}), 2) for p in positions] for s in metrics[SCENARIO].values]
    return markdown_table(["scenario"] + [f"t={p}" for p in positions], rows)


def answer(ds: xr.Dataset, metrics: xr.Dataset, *, learner: str = LEARNER) -> list[str]:
    """One line per scenario: the learner's cross-entropy beside Bayes, the best mixture and H(q)."""
    predictors = list(metrics[PREDICTOR].values)
    if learner not in predictors:
        return []
    entropy = TOKENS.source_entropy(ds)
    lines = []
    for s in metrics[SCENARIO].values:
        m = metrics.sel({SCENARIO: s})
        last = int(m[POSITION].values[-1])
        ce = lambda n: float(m["cross_entropy"].sel({PREDICTOR: n, POSITION: last})) if n in predictors else np.nan  # noqa: E731
        parts = [f"**{s}**: at t={last} the learner's cross-entropy is {fmt(ce(learner))} nats"]
        parts.append(f"(Bayes {fmt(ce(REFERENCE))}, best mixture {fmt(ce(MIXTURE))}")
        if entropy is not None:
            parts[-1] += f", H(q) {fmt(entropy.sel({SCENARIO: s, POSITION: last}))}"
        parts[-1] += ")"
        if REFERENCE in predictors:
            parts[-1] += f"; mean KL(bayes‖learner) over positions {fmt(m['kl_from_reference_mean'].sel({PREDICTOR: learner}), 5)}"
        if REFERENCE in predictors and MIXTURE in predictors:
            tail = m["relative_distance"].sel({PREDICTOR: learner}).isel({POSITION: slice(len(m[POSITION]) // 2, None)})
            rd = float(tail.mean(skipna=True)) if np.any(np.isfinite(tail)) else np.nan
            parts[-1] += f"; relative distance (second half of positions) {fmt(rd, 2)}: the learner {verdict(rd)}"
        lines.append(" ".join(parts) + ".")
    return lines


# --------------------------------------------------------------------------- figures


def _label(ds: xr.Dataset, outcome: int) -> str:
    """The outcome's label where the figure font can draw it (emoji labels fall back to the index)."""
    label = str(ds[OUTCOME].values[outcome])
    return label if label.isascii() else f"outcome {outcome}"


def predictions_figure(ds: xr.Dataset, scenario: str, path: Path, *, num_episodes: int = 4, outcome: int = 0) -> Path:
    """P(outcome) along a few episodes of one scenario (at most ``num_episodes``), for each predictor."""
    sub = ds.sel({SCENARIO: scenario}).isel({EPISODE: slice(0, num_episodes)})
    num_episodes = sub.sizes[EPISODE]
    label = _label(ds, outcome)
    fig, axes = plt.subplots(num_episodes, 1, figsize=(8, 1.9 * num_episodes), sharex=True, squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        ep = sub.isel({EPISODE: i})
        pos = ep[POSITION].values
        for name in ds[PREDICTOR].values:
            if name in ("oracle", "frequency"):
                continue
            p = np.exp(ep["log_prob"].sel({PREDICTOR: name}).isel({OUTCOME: outcome}))
            if np.all(np.isnan(p)):
                continue
            ax.plot(pos, p, label=str(name), **style(str(name)))
        hits = pos[ep["y"].values == outcome]
        ax.plot(hits, np.full(hits.shape, 0.02), "|", color="tab:orange", ms=6, label=f"y = {label}")
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"P({label})")
    axes[0, 0].legend(fontsize=7, ncol=4)
    axes[-1, 0].set_xlabel("position t")
    fig.suptitle(f"Predictions along {num_episodes} episodes of {scenario}")
    return save_figure(fig, path)


def implied_weight(p: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Weight w on component 0 such that w θ0 + (1 − w) θ1 = p (two components)."""
    return (p - theta[1]) / (theta[0] - theta[1])


def mixture_weight_figure(ds: xr.Dataset, scenario: str, theta: np.ndarray, path: Path, *, learner=LEARNER, outcome=0) -> Path:
    """The learner's implied weight on component 0 against Bayes' posterior weight, every (episode, position)."""
    sub = ds.sel({SCENARIO: scenario}).isel({OUTCOME: outcome})
    w_bayes = implied_weight(np.exp(sub["log_prob"].sel({PREDICTOR: REFERENCE}).values), theta).ravel()
    w_learner = implied_weight(np.exp(sub["log_prob"].sel({PREDICTOR: learner}).values), theta).ravel()
    keep = np.isfinite(w_bayes) & np.isfinite(w_learner)
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    ax.plot(w_bayes[keep], w_learner[keep], ".", ms=1.5, alpha=0.25, color="tab:red")
    ax.plot([0, 1], [0, 1], color="black", lw=1, label="learner = Bayes")
    ax.axhline(0.5, color="tab:green", ls="--", lw=1, label="best fixed mixture (1/2)")
    ax.set_xlabel("Bayes posterior weight on component 0")
    ax.set_ylabel("learner's implied weight on component 0")
    ax.set_title(f"{scenario}: implied mixture weight", fontsize=10)
    ax.legend(fontsize=7)
    return save_figure(fig, path)


@register_analysis("tokens")
class TokensAnalysis(Analysis):
    """Every tokens run: the learner between Bayes (−1) and the best fixed mixture (+1), per scenario."""

    def figures(self, ds, metrics, run, folder):
        plan, figures = run.plan, {}
        focus = next((s.name for s in plan.scenarios if s.kind == "misspecified"), plan.scenarios[0].name)
        figures[f"predictions on {focus}"] = "figures/predictions.png"
        predictions_figure(ds, focus, folder / "predictions.png")
        if LEARNER in run.predictors and REFERENCE in run.predictors:
            try:
                theta = np.exp(component_log_prob(plan.prior, 1)[:, 0, 0])
            except MetabayesError:  # latents without finite support: no components to weigh
                theta = np.array([])
            if theta.size == 2:
                figures["implied mixture weight"] = "figures/mixture_weight.png"
                mixture_weight_figure(ds, focus, theta, folder / "mixture_weight.png")
        return figures

    def report_section(self, ds, metrics, run):
        if not {LEARNER, REFERENCE, MIXTURE} <= set(run.predictors):
            return ""
        positions = sorted({2, 4, 8, 16, 32, *run.plan.report_positions})
        return "\n".join([
            "## Where the learner sits between Bayes (−1) and the best fixed mixture (+1)",
            "",
            "Relative distance (d(h, bayes) − d(h, best_mixture)) / d(bayes, best_mixture), with d the Jensen–Shannon "
            "distance √JS averaged over episodes: −1 means the learner predicts exactly like Bayes, +1 exactly like the "
            "best fixed mixture. Where Bayes and the best mixture nearly agree the ratio is noisy.",
            "",
            relative_distance_table(metrics, LEARNER, positions),
        ])

    def answer(self, ds, metrics, run):
        return answer(ds, metrics)


__all__ = ["TokensAnalysis", "answer", "verdict", "relative_distance_table", "predictions_figure",
           "mixture_weight_figure", "implied_weight"]
