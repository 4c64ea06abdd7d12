"""The two-coin question as a phase diagram: where in (q, t) learners follow Bayes, the best mixture, or neither.

A learner meta-trained on two coins (P(🌈) = 1/3 or 2/3) sees i.i.d. flips of a coin q the prior lacks. Bayes'
posterior collapses onto the nearer coin; the best fixed mixture ρ* of the two reaches H(q) when q lies
between them. The longer the prompt, the smaller its probability under the prior, and the less training
pins the learner down: learners with the same training loss may go either way (``shared/background``,
the two-coin question). Per run this analysis adds, beside the tokens kind's ``relative_distance``
(−1: like Bayes, +1: like ρ*):

- ``excess_cross_entropy`` (predictor, scenario, position): cross-entropy minus H(q), the oracle's entropy;
- ``context_log_prior`` (scenario, position): the mean over episodes of log p_π(y_<t), how probable the
  context is under the prior (log 1 = 0 at t = 1);
- ``training_length``: the learner's training length; later positions are extrapolation.

Over a sweep of architectures × seeds (``comparisons/sweeps/coin_phase.toml``) its sweep hooks add the
learners' disagreement, read from every cell's own comparison (the cells share their evaluation episodes):
``disagreement`` (pair, scenario, position), the mean over episodes of the Jensen–Shannon divergence
between two cells' learners' next-token distributions, with ``pair_first``, ``pair_second`` and
``same_architecture`` on ``pair``; and ``disagreement_by_prior`` (pair_kind, prior_bin): the same pooled
over every cell (scenario, episode, position) whose context has a log10 prior probability in the bin.
Figures: relative distance over (q, t) per architecture; disagreement against the context's prior
probability; cross-entropy against t at q = ½ with Bayes, ρ* and H(q). The report answers at q = ½ and
t = 64, 256 (and 1024 where the architecture extrapolates).
"""

from __future__ import annotations

import itertools

import numpy as np
import xarray as xr
from pydantic import Field

from comparisons.analyses import Analysis, AnalysisSettings, final_step, register_analysis
from comparisons.figures import plt, save_figure
from comparisons.report import fmt, markdown_table
from toolkit import metrics as tm
from toolkit.dims import EPISODE, OUTCOME, PAIR, POSITION, PREDICTOR, SCENARIO
from toolkit.errors import ConfigError, MetabayesError
from toolkit.kinds import TOKENS
from toolkit.results import open_results

LEARNER, BAYES, MIXTURE, ORACLE = "learner", "bayes", "best_mixture", "oracle"
PAIR_KIND, PRIOR_BIN = "pair_kind", "prior_bin"
# log10 p_π(context) bins of the disagreement: [edge_i, edge_{i+1})
PRIOR_EDGES = (-np.inf, -60.0, -40.0, -20.0, -10.0, -5.0, -2.0, 0.01)


def _q(ds: xr.Dataset) -> xr.DataArray:
    return ds["scenario_thetas"]


@register_analysis("coin_phase")
class CoinPhase(Analysis):
    """Relative distance, excess cross-entropy over H(q), disagreement and the context's prior probability."""

    class Settings(AnalysisSettings):
        q: float = Field(0.5, gt=0, lt=1)  # the coin the report answers at
        positions: list[int] = [64, 256, 1024]  # the t the report answers at (where a learner reaches them)
        bar: float = Field(0.002, gt=0)  # in-distribution bar: mean KL(bayes || learner) per position

    def check(self, plan):
        needed = {BAYES, MIXTURE, ORACLE, LEARNER}
        missing = sorted(needed - set(plan.predictor_names))
        if missing:
            raise ConfigError(f"the coin_phase analysis needs the predictors {', '.join(missing)} in "
                              "evaluation.predictors (Bayes, the best mixture, the oracle and the learner)")
        if not plan.kind.finite_outcomes or plan.prior.num_outcomes != 2:
            raise ConfigError("the coin_phase analysis compares coins: it needs a prior of two outcomes")

    def metrics(self, ds, metrics, run):
        entropy = TOKENS.source_entropy(ds, ORACLE)
        out = metrics.assign(excess_cross_entropy=metrics["cross_entropy"] - entropy)
        out["excess_cross_entropy"].attrs = {"long_name": "cross-entropy minus H(q), the oracle's entropy",
                                             "units": "nats"}
        context = ds["prior_log_prob"].shift({POSITION: 1}, fill_value=0.0)  # log p(y_<t): 0 before anything
        out["context_log_prior"] = context.where(ds["bayes_defined"]).mean(EPISODE, skipna=True)
        out["context_log_prior"].attrs = {"long_name": "mean over episodes of log p_prior(y_<t)", "units": "nats"}
        out["training_length"] = run.plan.learners[LEARNER].train.length  # positions beyond it are extrapolation
        out["training_length"].attrs = {"long_name": "the learner's training length: later positions extrapolate"}
        return out

    # ------------------------------------------------------------------ the sweep
    def _learners(self, sweep):
        """(label, cell, Dataset) for every finished cell: its learner's next-token ``log_prob`` and the context's
        ``prior_log_prob``, read from its own comparison (the rest is not kept)."""
        found = []
        for cell in sweep.cells:
            try:
                comparison = open_results(cell.folder)["comparison"].to_dataset()
            except MetabayesError:  # a failed cell has no learner to compare
                continue
            kept = xr.Dataset({"log_prob": comparison["log_prob"].sel({PREDICTOR: LEARNER}, drop=True),
                               "prior_log_prob": comparison["prior_log_prob"]}).load()
            label = ", ".join(f"{d}={a.label(i)}" for d, a, i in zip(sweep.dims, sweep.axes, cell.index))
            found.append((label, cell, kept))
        return found

    def sweep(self, ds, sweep):
        found = self._learners(sweep)
        if len(found) < 2:
            return ds
        arch_dim = _arch_dim(sweep)
        parts, labels, firsts, seconds, same = [], [], [], [], []
        pooled = {True: [np.zeros(len(PRIOR_EDGES) - 1), np.zeros(len(PRIOR_EDGES) - 1)],
                  False: [np.zeros(len(PRIOR_EDGES) - 1), np.zeros(len(PRIOR_EDGES) - 1)]}
        for (la, ca, a), (lb, cb, b) in itertools.combinations(found, 2):
            common = np.intersect1d(a[POSITION].values, b[POSITION].values)
            pa = a["log_prob"].sel({POSITION: common})
            pb = b["log_prob"].sel({POSITION: common})
            js = tm.xr_js_divergence(pa, pb, dim=OUTCOME)
            parts.append(js.mean(EPISODE))
            labels.append(f"{la} | {lb}")
            firsts.append(la)
            seconds.append(lb)
            same_arch = arch_dim is not None and ca.index[arch_dim] == cb.index[arch_dim]
            same.append(same_arch)
            log10_p = (a["prior_log_prob"].shift({POSITION: 1}, fill_value=0.0).sel({POSITION: common}) / np.log(10))
            values, where = js.values.ravel(), log10_p.values.ravel()
            keep = np.isfinite(values) & ~np.isnan(where)
            bins = np.digitize(np.where(np.isneginf(where), -np.inf, where)[keep], PRIOR_EDGES[1:-1])
            pooled[same_arch][0] += np.bincount(bins, weights=values[keep], minlength=len(PRIOR_EDGES) - 1)
            pooled[same_arch][1] += np.bincount(bins, minlength=len(PRIOR_EDGES) - 1)
        disagreement = xr.concat(parts, dim=PAIR, join="outer").assign_coords(
            {PAIR: labels, "pair_first": (PAIR, firsts), "pair_second": (PAIR, seconds),
             "same_architecture": (PAIR, same)})
        drop = [c for c in disagreement.coords if c not in (PAIR, SCENARIO, POSITION, "pair_first", "pair_second",
                                                            "same_architecture")]
        out = ds.assign(disagreement=disagreement.drop_vars(drop))
        out["disagreement"].attrs = {"long_name": "mean over episodes of the Jensen-Shannon divergence between two "
                                                  "cells' learners' next-token distributions", "units": "nats"}
        kinds = ["same architecture", "different architectures"]
        sums = np.stack([pooled[True][0], pooled[False][0]])
        counts = np.stack([pooled[True][1], pooled[False][1]])
        with np.errstate(invalid="ignore"):
            by_prior = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
        edges = [f"[{lo:g}, {hi:g})" for lo, hi in zip(PRIOR_EDGES[:-1], PRIOR_EDGES[1:])]
        out["disagreement_by_prior"] = ((PAIR_KIND, PRIOR_BIN), by_prior)
        out["disagreement_by_prior_count"] = ((PAIR_KIND, PRIOR_BIN), counts.astype(np.int64))
        out = out.assign_coords({PAIR_KIND: kinds, PRIOR_BIN: edges})
        out["disagreement_by_prior"].attrs = {
            "long_name": "mean JS between two learners over the cells whose context has log10 p_prior(y_<t) in the bin",
            "units": "nats"}
        return out

    def _by_architecture(self, ds, sweep, name: str, predictor: str = LEARNER) -> xr.DataArray:
        """``name`` of ``predictor`` at the final step, averaged over every axis but the architecture's."""
        values = final_step(ds[name]).sel({PREDICTOR: predictor})
        arch = sweep.dims[_arch_dim(sweep)] if _arch_dim(sweep) is not None else None
        others = [d for d in sweep.dims if d != arch]
        return values.mean(others, skipna=True) if others else values

    def sweep_figures(self, ds, sweep, folder):
        figures = {}
        arch = sweep.dims[_arch_dim(sweep)] if _arch_dim(sweep) is not None else None
        rd = self._by_architecture(ds, sweep, "relative_distance")
        sampled = [s for s in ds[SCENARIO].values if np.isfinite(float(_q(ds).sel({SCENARIO: s})))]
        q = np.asarray([float(_q(ds).sel({SCENARIO: s})) for s in sampled])
        order = np.argsort(q)
        archs = list(ds[arch].values) if arch else [None]
        fig, axes = plt.subplots(1, len(archs), figsize=(3.6 * len(archs), 3.4), squeeze=False, sharey=True)
        for ax, a in zip(axes[0], archs):
            grid = (rd.sel({arch: a}) if a is not None else rd).sel({SCENARIO: [sampled[i] for i in order]})
            positions = grid[POSITION].values
            mesh = ax.pcolormesh(positions, q[order], grid.transpose(SCENARIO, POSITION).values, vmin=-1, vmax=1,
                                 cmap="coolwarm", shading="nearest")
            ax.set_xscale("log")
            ax.set_xlabel("position t")
            ax.set_title(str(a) if a is not None else "learner", fontsize=10)
        axes[0, 0].set_ylabel("q = P(🌈) of the source".replace("🌈", "outcome 0"))
        fig.colorbar(mesh, ax=axes[0].tolist(), label="relative distance (−1 Bayes, +1 ρ*)")
        fig.suptitle("Where the learner sits between Bayes and the best fixed mixture (seeds averaged; blank: "
                     "Bayes = ρ*, or beyond the context)", fontsize=9)
        figures["relative distance over (q, t)"] = "figures/phase_relative_distance.png"
        save_figure(fig, folder / "phase_relative_distance.png")
        if "disagreement_by_prior" in ds:
            fig, ax = plt.subplots(figsize=(6.0, 3.8))
            mids = [np.mean([max(lo, -80.0), hi]) for lo, hi in zip(PRIOR_EDGES[:-1], PRIOR_EDGES[1:])]
            for kind, style in zip(ds[PAIR_KIND].values, ("o-", "s--")):
                ax.plot(mids, ds["disagreement_by_prior"].sel({PAIR_KIND: kind}).values, style, label=str(kind))
            ax.set_yscale("log")
            ax.set_xlabel("log10 prior probability of the context, p_prior(y_<t)")
            ax.set_ylabel("mean JS between two learners (nats)")
            ax.set_title("Disagreement between learners against the prior probability of the context", fontsize=9)
            ax.legend(fontsize=8)
            figures["disagreement against the context's prior probability"] = "figures/phase_disagreement.png"
            save_figure(fig, folder / "phase_disagreement.png")
        at = self._scenario_at(ds, self.settings.q)
        ce = final_step(ds["cross_entropy"]).sel({SCENARIO: at})
        fig, ax = plt.subplots(figsize=(6.4, 4.0))
        seeds = [d for d in sweep.dims if d != arch]
        mean = _log_binned(ce.mean(seeds, skipna=True) if seeds else ce)
        for a in archs:
            one = mean.sel({arch: a}) if a is not None else mean
            ax.plot(one[POSITION].values, one.sel({PREDICTOR: LEARNER}).values, "o-", ms=3, lw=1.2, label=f"learner: {a}")
        everyone = mean.mean(arch, skipna=True) if arch else mean  # Bayes and rho* are the same in every cell
        ax.plot(everyone[POSITION].values, everyone.sel({PREDICTOR: BAYES}).values, color="black", lw=2, label="Bayes")
        ax.plot(everyone[POSITION].values, everyone.sel({PREDICTOR: MIXTURE}).values, "g--", label="best mixture ρ*")
        entropy = (ds["cross_entropy"] - ds["excess_cross_entropy"]).sel({PREDICTOR: LEARNER, SCENARIO: at})
        entropy = _log_binned(final_step(entropy).mean([d for d in sweep.dims], skipna=True))
        ax.plot(entropy[POSITION].values, entropy.values, ":", color="tab:blue", label="H(q)")
        ax.set_xscale("log")
        ax.set_xlabel("position t")
        ax.set_ylabel("cross-entropy (nats)")
        ax.set_title(f"q = {self.settings.q:g}: cross-entropy of y_t (seeds averaged; positions in log-spaced bins)",
                     fontsize=9)
        ax.legend(fontsize=7)
        figures[f"cross-entropy against t at q = {self.settings.q:g}"] = "figures/phase_cross_entropy.png"
        save_figure(fig, folder / "phase_cross_entropy.png")
        return figures

    def _scenario_at(self, ds, q: float) -> str:
        thetas = _q(ds)
        hits = [str(s) for s, v in zip(ds[SCENARIO].values, thetas.values) if np.isclose(v, q)]
        if not hits:
            raise ConfigError(f"analysis.coin_phase.q: no scenario has the coin q = {q:g}")
        return hits[0]

    def _bar(self, ds, sweep) -> xr.DataArray:
        """Each learner's mean KL(bayes || learner) per position in-distribution, over its training length."""
        kl = final_step(ds["kl_from_reference"]).sel({PREDICTOR: LEARNER, SCENARIO: "in_distribution"})
        length = final_step(ds["training_length"])
        return kl.where(kl[POSITION] <= length).mean(POSITION, skipna=True)

    def sweep_report_section(self, ds, sweep):
        s = self.settings
        arch = sweep.dims[_arch_dim(sweep)] if _arch_dim(sweep) is not None else None
        at = self._scenario_at(ds, s.q)
        rd = final_step(ds["relative_distance"]).sel({PREDICTOR: LEARNER})
        bar = self._bar(ds, sweep)
        lines = [f"## The two-coin phase diagram (q = {s.q:g})", "",
                 f"In-distribution bar: mean KL(bayes‖learner) ≤ {s.bar} nats per position over the training "
                 "length, per learner:", ""]
        rows = [[", ".join(f"{d}={ds[d].values[i]}" for d, i in zip(sweep.dims, index)),
                 fmt(bar.values[index], 5), "yes" if bar.values[index] <= s.bar else "**no**"]
                for index in itertools.product(*(range(ds.sizes[d]) for d in sweep.dims))]
        lines += [markdown_table(["learner", "KL(bayes‖learner)", f"≤ {s.bar}"], rows), ""]
        if arch:
            seeds = [d for d in sweep.dims if d != arch]
            header = ["architecture"] + [f"t={t}" for t in s.positions]
            rows = []
            for a in ds[arch].values:
                one = rd.sel({arch: a, SCENARIO: at})
                row = [str(a)]
                for t in s.positions:
                    if t not in one[POSITION].values or not bool(np.isfinite(one.sel({POSITION: t})).any()):
                        row.append("–")
                        continue
                    v = one.sel({POSITION: t})
                    row.append(f"{fmt(v.mean(seeds), 2)} ({fmt(v.min(seeds), 2)} to {fmt(v.max(seeds), 2)})"
                               if seeds else fmt(v, 2))
                rows.append(row)
            lines += [f"Relative distance of the learner at q = {s.q:g} (−1: Bayes, +1: ρ*; mean over seeds, range):",
                      "", markdown_table(header, rows), ""]
        if "disagreement" in ds:
            d = ds["disagreement"].sel({SCENARIO: at})
            rows = []
            for t in s.positions:
                if t not in d[POSITION].values:
                    continue
                one = d.sel({POSITION: t})
                same, cross = one.where(one["same_architecture"]), one.where(~one["same_architecture"])
                rows.append([f"t={t}", fmt(same.mean(skipna=True), 5), fmt(cross.mean(skipna=True), 5),
                             fmt(one.max(skipna=True), 4)])
            lines += [f"Disagreement at q = {s.q:g}: mean JS between two learners (nats):", "",
                      markdown_table(["position", "same architecture", "different architectures", "largest"], rows), ""]
            rows = [[str(b)] + [fmt(ds["disagreement_by_prior"].sel({PAIR_KIND: k, PRIOR_BIN: b}), 5)
                                + f" ({int(ds['disagreement_by_prior_count'].sel({PAIR_KIND: k, PRIOR_BIN: b}))})"
                                for k in ds[PAIR_KIND].values] for b in ds[PRIOR_BIN].values]
            lines += ["Disagreement by the context's prior probability (every q, t and episode; cells pooled):", "",
                      markdown_table(["log10 p_prior(y_<t)"] + [str(k) for k in ds[PAIR_KIND].values], rows), ""]
        return "\n".join(lines)

    def sweep_answer(self, ds, sweep):
        s = self.settings
        arch = sweep.dims[_arch_dim(sweep)] if _arch_dim(sweep) is not None else None
        at = self._scenario_at(ds, s.q)
        rd = final_step(ds["relative_distance"]).sel({PREDICTOR: LEARNER, SCENARIO: at})
        bar = self._bar(ds, sweep)
        passed = int((bar <= s.bar).sum())
        lines = [f"**In-distribution bar**: {passed} of {int(np.isfinite(bar).sum())} learners reach mean "
                 f"KL(bayes‖learner) ≤ {s.bar} nats per position (largest {fmt(bar.max(), 5)})."]
        if arch:
            seeds = [d for d in sweep.dims if d != arch]
            parts = []
            for a in ds[arch].values:
                values = [f"t={t}: {fmt(rd.sel({arch: a, POSITION: t}).mean(seeds), 2)}" for t in s.positions
                          if t in rd[POSITION].values and bool(np.isfinite(rd.sel({arch: a, POSITION: t})).any())]
                parts.append(f"{a} " + ", ".join(values))
            lines.append(f"**Between Bayes (−1) and ρ* (+1)** at q = {s.q:g}, mean over seeds: " + "; ".join(parts) + ".")
        if "disagreement_by_prior" in ds:
            kinds = list(ds[PAIR_KIND].values)
            d = ds["disagreement_by_prior"]
            finite = [b for b in ds[PRIOR_BIN].values if bool(np.isfinite(d.sel({PRIOR_BIN: b})).all())]
            if len(finite) >= 2:
                lo, hi = finite[0], finite[-1]
                parts = []
                for k in kinds:
                    likely, unlikely = float(d.sel({PAIR_KIND: k, PRIOR_BIN: hi})), float(d.sel({PAIR_KIND: k, PRIOR_BIN: lo}))
                    trend = "rises" if unlikely > likely else "falls"
                    parts.append(f"{k}: it {trend} from {fmt(likely, 5)} nats (log10 p in {hi}) to {fmt(unlikely, 5)} "
                                 f"({lo}), {unlikely / likely:.1f}x" if likely > 0 else f"{k}: {fmt(unlikely, 5)}")
                lines.append("**Disagreement against the context's prior probability** (mean JS between two learners): "
                             + "; ".join(parts) + ".")
        return lines


def _log_binned(values: xr.DataArray, per_octave: int = 3) -> xr.DataArray:
    """``values`` averaged over positions in log-spaced bins (a third of an octave), at each bin's mean position."""
    positions = values[POSITION].values
    edges = np.unique(np.round(2.0 ** (np.arange(0, np.log2(positions.max()) * per_octave + 2) / per_octave)))
    bins = np.digitize(positions, edges)
    grouped = values.assign_coords(bin=(POSITION, bins)).groupby("bin")
    out = grouped.mean(skipna=True)
    centres = values[POSITION].groupby(xr.DataArray(bins, dims=POSITION, name="bin")).mean()
    return out.rename(bin=POSITION).assign_coords({POSITION: centres.values})


def _arch_dim(sweep) -> int | None:
    """The index of the sweep's architecture axis (named ``architecture``), or None."""
    return sweep.dims.index("architecture") if "architecture" in sweep.dims else None


__all__ = ["CoinPhase"]
