"""Task diversity: when a learner memorises its pretraining tasks and when it generalises.

Raventós et al., "Pretraining task diversity and the emergence of non-Bayesian in-context learning for
regression" (arXiv:2306.15063); Wurgaft et al., "In-context learning strategies emerge rationally". A prior
whose M tasks are drawn once (``task_pool_regression``, ``balls_urns``) has two Bayes predictors: the
*memorising* one, Bayes over the M seen tasks (the prior's own ``bayes``: enumeration over the pool, dMMSE),
and the *generalising* one, Bayes under the distribution the tasks were drawn from (``ridge`` with the
prior's τ and σ for regression, ``dirichlet`` for urns). Per run, and per checkpoint where
``learner.training.eval_steps`` keeps them, this analysis adds for every predictor h:

- ``distance_to_memorising``, ``distance_to_generalising`` (predictor, scenario, position) and
  ``references_distance`` (scenario, position), the distance between the two references. Tokens: the mean
  over episodes of the Jensen–Shannon distance √JS between next-token distributions; regression: the root
  mean square over episodes of the difference of predictive means, divided by √d (its square is Raventós et
  al.'s ΔMSE). Both are metrics, so
- ``task_relative_distance`` (predictor, scenario, position) = (d(h, mem) − d(h, gen)) / d(mem, gen) lies in
  [−1, 1]: −1 predicts like the memorising predictor, +1 like the generalising one (NaN where the two agree).
  ``*_mean`` are position means; ``task_relative_distance_mean`` is the relative distance of the
  position-mean distances, so its sign says which reference is closer over the whole episode.
- ``mixture_weight`` (predictor): w in [0, 1] of h ≈ w · mem + (1 − w) · gen by least squares over every
  prediction of the run (each scenario, episode and position; tokens: every outcome's probability,
  regression: the predictive mean), ``mixture_fit_r`` (predictor) the Pearson correlation of h with that
  mixture over the same predictions (Wurgaft et al.'s fit quality), and ``mixture_fit_moments``
  (predictor, fit_moment), the sums that pool r over cells and checkpoints.

Over a sweep of M (the ``pool_size`` axis, ``prior.params.pool_size``) and seeds (every other axis), the
sweep hooks add ``transition_pool_size`` (per seed), M*: the smallest M whose learner, on the fresh tasks at
the end of training, is closer to the generalising predictor (``task_relative_distance_mean`` > 0), and
``transition_pool_size_mean`` the same from the seed-mean distances; ``transition_step`` (pool_size, seed), the
first checkpoint from which on w ≥ 0.5 (the learner weighs the memorising predictor more), NaN where it
never does within training; ``mixture_fit_r_pooled``, r over every cell and checkpoint. Figures: the relative
distance over (M, step); the distance to each predictor against M at the end of training (Raventós et al.'s
Fig. 2); w over training per M.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from comparisons.analyses import Analysis, AnalysisSettings, final_step, register_analysis
from comparisons.figures import plt, save_figure
from comparisons.predictors import LEARNER
from comparisons.report import fmt, markdown_table
from toolkit import metrics as tm
from toolkit.dims import EPISODE, FEATURE, FIT_MOMENT, OUTCOME, POSITION, PREDICTOR, SCENARIO, STEP
from toolkit.errors import ConfigError
from toolkit.kinds import RELATIVE_DISTANCE_MIN_SEPARATION
from toolkit.summaries import evaluation_mask

GENERALISING = {"regression": "ridge", "tokens": "dirichlet"}  # Bayes under the task distribution, per data kind
MOMENTS = ("n", "sum_h", "sum_f", "sum_hh", "sum_ff", "sum_hf")
DISTANCES = ("distance_to_memorising", "distance_to_generalising", "references_distance")


# --------------------------------------------------------------------------- numpy: the mixture fit


def mixture_fit(h, mem, gen) -> tuple[float, float, np.ndarray]:
    """The weight w in [0, 1] minimising Σ (h − w·mem − (1 − w)·gen)² over the cells where all three are finite.

    Parameters
    ----------
    h, mem, gen : array_like, one shape
        Predictions of the learner and of the two references, cell by cell (any dims).

    Returns
    -------
    w : float
        NaN where the references agree on every cell (nothing to weigh).
    r : float
        Pearson correlation of h with the fitted mixture over the cells.
    moments : np.ndarray, shape (6,)
        n, Σh, Σf, Σh², Σf², Σhf of h and the fitted f, which `pooled_r` combines over fits.
    """
    h, mem, gen = (np.asarray(v, dtype=np.float64).ravel() for v in (h, mem, gen))
    keep = np.isfinite(h) & np.isfinite(mem) & np.isfinite(gen)
    h, mem, gen = h[keep], mem[keep], gen[keep]
    gap = mem - gen
    spread = float(gap @ gap)
    # a 1-D quadratic: the unconstrained minimum clipped to [0, 1] is the constrained one
    w = float(np.clip((h - gen) @ gap / spread, 0.0, 1.0)) if spread > 0 else np.nan
    fit = gen + (0.0 if np.isnan(w) else w) * gap
    moments = np.array([h.size, h.sum(), fit.sum(), h @ h, fit @ fit, h @ fit])
    return w, float(pooled_r(moments)), moments


def pooled_r(moments, axis: int = -1) -> np.ndarray:
    """Pearson r from summed ``mixture_fit`` moments (``axis`` of length 6); NaN without spread."""
    n, sh, sf, shh, sff, shf = np.moveaxis(np.asarray(moments, dtype=np.float64), axis, 0)
    spread = (n * shh - sh**2) * (n * sff - sf**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(spread > 0, (n * shf - sh * sf) / np.sqrt(np.where(spread > 0, spread, 1.0)), np.nan)[()]


def first_lasting(flags: np.ndarray, steps: np.ndarray) -> float:
    """The first of ``steps`` from which on every flag holds; NaN where the last does not."""
    flags = np.asarray(flags, bool)
    if not flags.size or not flags[-1]:
        return np.nan
    broken = np.flatnonzero(~flags)
    return float(steps[broken[-1] + 1] if broken.size else steps[0])


# --------------------------------------------------------------------------- the analysis


@register_analysis("task_diversity")
class TaskDiversity(Analysis):
    """The learner between the memorising and the generalising Bayes predictor, per run and over M x steps."""

    class Settings(AnalysisSettings):
        memorising: str = "bayes"  # Bayes over the M seen tasks
        generalising: str | None = None  # Bayes under the task distribution; None: "ridge" (regression), "dirichlet" (tokens)
        fresh: str = "fresh_tasks"  # the scenario of fresh tasks from the task distribution (M* is read there)
        pool_axis: str = "pool_size"  # the sweep dim of M

    def _generalising(self, predictors, kind: str | None = None) -> str:
        """The generalising predictor: as set, else the one of `GENERALISING` among ``predictors``, else ``kind``'s."""
        names = [str(p) for p in predictors]
        found = [n for n in GENERALISING.values() if n in names]
        return self.settings.generalising or (found[0] if found else GENERALISING[kind])

    def check(self, plan):
        generalising = self._generalising(plan.predictor_names, plan.kind.name)
        needed = [self.settings.memorising, generalising]
        missing = [n for n in needed if n not in plan.predictor_names]
        if missing or not plan.learners:
            raise ConfigError(f"the task_diversity analysis needs {', '.join(missing or ['a learner'])} in "
                              "evaluation.predictors (the memorising and generalising Bayes predictors and a learner)")
        if self.settings.memorising == generalising:
            raise ConfigError("analysis.task_diversity: memorising and generalising name one predictor; name two")
        scenarios = [s.name for s in plan.scenarios]
        if self.settings.fresh not in scenarios:
            raise ConfigError(f"analysis.task_diversity.fresh: no scenario {self.settings.fresh!r}; scenarios: "
                              f"{', '.join(scenarios)} (add one of fresh tasks from the task distribution)")

    # ------------------------------------------------------------------ one run
    def _predictions(self, ds: xr.Dataset, finite_outcomes: bool) -> tuple[xr.DataArray, xr.DataArray]:
        """What the distances and the fit compare: next-token probabilities or predictive means; the cells that count."""
        valid = evaluation_mask(ds)
        if "bayes_defined" in ds:
            valid = valid & ds["bayes_defined"]
        values = np.exp(ds["log_prob"]) if finite_outcomes else ds["mean"]
        return values.where(valid), valid

    def _distance(self, a: xr.DataArray, b: xr.DataArray, valid: xr.DataArray, finite_outcomes: bool,
                  features: int) -> xr.DataArray:
        """Per (scenario, position): the mean over episodes of √JS between log-probabilities ``a`` and ``b``, or
        the root mean square over episodes of the difference of means ``a`` and ``b``, / √d."""
        if finite_outcomes:
            return np.sqrt(tm.xr_js_divergence(a, b, dim=OUTCOME).clip(min=0.0)).where(valid).mean(EPISODE, skipna=True)
        return np.sqrt(tm.xr_squared_error(a.where(valid), b.where(valid), EPISODE, scale=features))

    def metrics(self, ds, metrics, run):
        kind = run.plan.kind
        mem, gen = self.settings.memorising, self._generalising(run.plan.predictor_names)
        finite = kind.finite_outcomes
        values, valid = self._predictions(ds, finite)
        everyone = ds["log_prob"] if finite else ds["mean"]
        out = metrics.copy()
        one = lambda name: everyone.sel({PREDICTOR: name}, drop=True)  # noqa: E731
        distance = lambda a, b: self._distance(a, b, valid, finite, ds.sizes.get(FEATURE, 1))  # noqa: E731
        d_mem, d_gen, d_ab = distance(everyone, one(mem)), distance(everyone, one(gen)), distance(one(mem), one(gen))
        what = ("mean over episodes of the Jensen-Shannon distance sqrt(JS) of the next-token distributions" if finite
                else "root mean square over episodes of the difference of predictive means, / sqrt(d)")
        for name, value, between in ((DISTANCES[0], d_mem, f"each predictor and {mem}"),
                                     (DISTANCES[1], d_gen, f"each predictor and {gen}"),
                                     (DISTANCES[2], d_ab, f"{mem} and {gen}")):
            out[name] = value
            out[name].attrs = {"long_name": f"distance between {between}: {what}"}
            out[f"{name}_mean"] = value.mean(POSITION, skipna=True)
        separated = lambda d: d.where(d > RELATIVE_DISTANCE_MIN_SEPARATION, 0.0)  # noqa: E731 - references that agree
        meaning = f"-1: predicts like {mem} (memorising); +1: like {gen} (generalising)"
        out["task_relative_distance"] = tm.xr_relative_distance(d_mem, d_gen, separated(d_ab))
        out["task_relative_distance"].attrs = {"long_name": f"(d(h,{mem}) - d(h,{gen})) / d({mem},{gen})",
                                               "meaning": meaning}
        out["task_relative_distance_mean"] = tm.xr_relative_distance(
            out[f"{DISTANCES[0]}_mean"], out[f"{DISTANCES[1]}_mean"], separated(out[f"{DISTANCES[2]}_mean"]))
        out["task_relative_distance_mean"].attrs = {"long_name": "the relative distance of the position-mean distances",
                                                    "meaning": meaning}
        fits = [mixture_fit(values.sel({PREDICTOR: p}), values.sel({PREDICTOR: mem}), values.sel({PREDICTOR: gen}))
                for p in values[PREDICTOR].values]
        predictors = values[PREDICTOR].values
        out["mixture_weight"] = (PREDICTOR, np.array([f[0] for f in fits]))
        out["mixture_weight"].attrs = {"long_name": f"w of h = w {mem} + (1 - w) {gen}, least squares over every "
                                                    "prediction of the run (" + ("probabilities" if finite else "means")
                                                    + "), w in [0, 1]"}
        out["mixture_fit_r"] = (PREDICTOR, np.array([f[1] for f in fits]))
        out["mixture_fit_r"].attrs = {"long_name": "Pearson r of h with the fitted mixture over the same predictions"}
        out["mixture_fit_moments"] = ((PREDICTOR, FIT_MOMENT), np.stack([f[2] for f in fits]))
        out["mixture_fit_moments"].attrs = {"long_name": "n, sums of h, f, h^2, f^2, h f over the fit's predictions "
                                                         "(f the fitted mixture): pooled r over fits"}
        return out.assign_coords({PREDICTOR: predictors, FIT_MOMENT: list(MOMENTS)})

    def _learner(self, metrics: xr.Dataset) -> str:
        names = [str(p) for p in metrics[PREDICTOR].values]
        return LEARNER if LEARNER in names else names[-1]

    def report_section(self, ds, metrics, run):
        mem, gen = self.settings.memorising, self._generalising(run.plan.predictor_names)
        learner = self._learner(metrics)
        rows = []
        for s in metrics[SCENARIO].values:
            one = metrics.sel({SCENARIO: s, PREDICTOR: learner})
            rows.append([str(s), fmt(one["distance_to_memorising_mean"]), fmt(one["distance_to_generalising_mean"]),
                         fmt(metrics["references_distance_mean"].sel({SCENARIO: s})),
                         fmt(one["task_relative_distance_mean"], 2)])
        w, r = metrics["mixture_weight"].sel({PREDICTOR: learner}), metrics["mixture_fit_r"].sel({PREDICTOR: learner})
        return "\n".join([
            f"## Task diversity: {learner} between {mem} (memorising) and {gen} (generalising)", "",
            markdown_table(["scenario", f"d({learner}, {mem})", f"d({learner}, {gen})", f"d({mem}, {gen})",
                            "relative distance (−1 mem, +1 gen)"], rows), "",
            f"Mixture fit over every prediction: {learner} ≈ w · {mem} + (1 − w) · {gen} with w = {fmt(w, 3)}, "
            f"r = {fmt(r, 4)}.", ""])

    def answer(self, ds, metrics, run):
        learner = self._learner(metrics)
        rd = metrics["task_relative_distance_mean"].sel({PREDICTOR: learner})
        parts = [f"{s} {fmt(rd.sel({SCENARIO: s}), 2)}" for s in metrics[SCENARIO].values]
        return [f"**Memorising (−1) or generalising (+1)**: {learner}'s relative distance " + ", ".join(parts)
                + f"; mixture weight on memorising w = {fmt(metrics['mixture_weight'].sel({PREDICTOR: learner}), 3)} "
                f"(r = {fmt(metrics['mixture_fit_r'].sel({PREDICTOR: learner}), 4)})."]

    # ------------------------------------------------------------------ the sweep over M
    def _axes(self, ds, sweep) -> tuple[str, list[str]] | None:
        """The dim of M and the replicate dims (every other sweep axis), or None when the sweep has no M axis."""
        pool = self.settings.pool_axis
        if pool not in sweep.dims or "task_relative_distance_mean" not in ds:
            return None
        return pool, [d for d in sweep.dims if d != pool]

    def _mean(self, values: xr.DataArray, dims: list[str]) -> xr.DataArray:
        return values.mean(dims, skipna=True) if dims else values

    def sweep(self, ds, sweep):
        axes = self._axes(ds, sweep)
        if axes is None:
            return ds
        pool, replicates = axes
        learner, fresh = self._learner(ds), self.settings.fresh
        out = ds.copy()
        ds = ds.sortby(pool)  # M* is the smallest M: read the axis in increasing order
        sizes = ds[pool].values
        rd = final_step(ds["task_relative_distance_mean"]).sel({PREDICTOR: learner, SCENARIO: fresh})

        def smallest(closer: xr.DataArray) -> xr.DataArray:
            return xr.apply_ufunc(lambda c: sizes[np.argmax(c)].astype(np.float64) if c.any() else np.nan,
                                  closer, input_core_dims=[[pool]], vectorize=True)

        out["transition_pool_size"] = smallest(rd.transpose(..., pool) > 0)
        out["transition_pool_size"].attrs = {"long_name": f"M*: the smallest {pool} whose learner is closer to the "
                                                          f"generalising predictor on {fresh} at the end of training"}
        final = {n: self._mean(final_step(ds[f"{n}_mean"]), replicates) for n in DISTANCES}
        mem_mean = final[DISTANCES[0]].sel({PREDICTOR: learner, SCENARIO: fresh})
        gen_mean = final[DISTANCES[1]].sel({PREDICTOR: learner, SCENARIO: fresh})
        out["transition_pool_size_mean"] = smallest(gen_mean < mem_mean)
        out["transition_pool_size_mean"].attrs = {"long_name": "M* from the distances averaged over the replicates"}
        w = ds["mixture_weight"].sel({PREDICTOR: learner})
        if STEP in w.dims:
            steps = ds[STEP].values
            out["transition_step"] = xr.apply_ufunc(lambda v: first_lasting(v >= 0.5, steps), w,
                                                    input_core_dims=[[STEP]], vectorize=True)
            out["transition_step"].attrs = {"long_name": "the first checkpoint from which on the mixture weight on "
                                                         "the memorising predictor is >= 0.5 (NaN: never)"}
        moments = ds["mixture_fit_moments"].sel({PREDICTOR: learner})
        out["mixture_fit_r_pooled"] = float(pooled_r(moments.fillna(0.0).sum([d for d in moments.dims
                                                                              if d != FIT_MOMENT]).values))
        out["mixture_fit_r_pooled"].attrs = {"long_name": "Pearson r of the learner with its fitted mixture over every "
                                                          "prediction of every cell and checkpoint"}
        return out

    def sweep_figures(self, ds, sweep, folder):
        axes = self._axes(ds, sweep)
        if axes is None:
            return {}
        pool, replicates = axes
        ds = ds.sortby(pool)
        learner = self._learner(ds)
        mem, gen = self.settings.memorising, self._generalising(ds[PREDICTOR].values)
        sizes = ds[pool].values
        scenarios = [str(s) for s in ds[SCENARIO].values]
        figures = {}
        # relative distance over (M, step)
        rd = self._mean(ds["task_relative_distance_mean"].sel({PREDICTOR: learner}), replicates)
        steps = ds[STEP].values if STEP in rd.dims else np.array([0])
        fig, panels = plt.subplots(1, len(scenarios), figsize=(4.2 * len(scenarios), 3.6), squeeze=False, sharey=True)
        for ax, s in zip(panels[0], scenarios):
            grid = rd.sel({SCENARIO: s})
            grid = grid.transpose(pool, STEP).values if STEP in grid.dims else grid.values[:, None]
            mesh = ax.imshow(grid, origin="lower", aspect="auto", cmap="coolwarm", vmin=-1, vmax=1)
            ax.set_xticks(range(len(steps)), [str(v) for v in steps], fontsize=7, rotation=60)
            ax.set_yticks(range(len(sizes)), [str(v) for v in sizes], fontsize=7)
            ax.set_xlabel("training step")
            ax.set_title(s, fontsize=10)
        panels[0, 0].set_ylabel(f"M ({pool})")
        fig.colorbar(mesh, ax=panels[0].tolist(), label=f"relative distance (−1 {mem}, +1 {gen})")
        fig.suptitle("Memorising or generalising: the learner's relative distance over (M, step)"
                     + (f" (mean over {', '.join(replicates)})" if replicates else ""), fontsize=9)
        figures["relative distance over (M, step)"] = "figures/task_diversity_relative_distance.png"
        save_figure(fig, folder / "task_diversity_relative_distance.png")
        # distance to each predictor against M at the end of training
        fig, panels = plt.subplots(1, len(scenarios), figsize=(4.4 * len(scenarios), 3.6), squeeze=False)
        for ax, s in zip(panels[0], scenarios):
            for name, label, style in ((DISTANCES[0], f"learner to {mem} (memorising)", dict(color="tab:blue", marker="o")),
                                       (DISTANCES[1], f"learner to {gen} (generalising)", dict(color="tab:orange", marker="s")),
                                       (DISTANCES[2], f"{mem} to {gen}", dict(color="grey", ls="--"))):
                values = final_step(ds[f"{name}_mean"]).sel({SCENARIO: s})
                if PREDICTOR in values.dims:
                    values = values.sel({PREDICTOR: learner})
                mean = self._mean(values, replicates)
                ax.plot(sizes, mean.values, label=label, **style)
                if replicates and name != DISTANCES[2]:
                    ax.fill_between(sizes, values.min(replicates).values, values.max(replicates).values,
                                    color=style["color"], alpha=0.2, lw=0)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("M, number of pretraining tasks")
            ax.set_title(s, fontsize=10)
        panels[0, 0].set_ylabel("distance at the end of training")
        panels[0, 0].legend(fontsize=7)
        fig.suptitle("Distance of the learner to each Bayes predictor against M"
                     + (f" (mean and range over {', '.join(replicates)})" if replicates else ""), fontsize=9)
        figures["distance to each predictor against M"] = "figures/task_diversity_distances.png"
        save_figure(fig, folder / "task_diversity_distances.png")
        # w over training per M
        w = ds["mixture_weight"].sel({PREDICTOR: learner})
        if STEP in w.dims:
            fig, ax = plt.subplots(figsize=(6.0, 4.0))
            colors = plt.cm.viridis(np.linspace(0, 0.92, len(sizes)))
            for color, m in zip(colors, sizes):
                one = w.sel({pool: m})
                ax.plot(steps, self._mean(one, replicates).values, "o-", ms=3, color=color, label=f"M = {m}")
                if replicates:
                    ax.fill_between(steps, one.min(replicates).values, one.max(replicates).values, color=color,
                                    alpha=0.15, lw=0)
            ax.set_xscale("log")
            ax.set_ylim(-0.03, 1.03)
            ax.axhline(0.5, color="grey", lw=0.6, ls=":")
            ax.set_xlabel("training step")
            ax.set_ylabel(f"w: weight on {mem} (memorising)")
            r = float(ds["mixture_fit_r_pooled"]) if "mixture_fit_r_pooled" in ds else np.nan
            ax.set_title(f"learner ≈ w · {mem} + (1 − w) · {gen}; pooled r = {fmt(r, 3)}", fontsize=9)
            ax.legend(fontsize=6, ncol=2)
            figures["mixture weight over training per M"] = "figures/task_diversity_mixture_weight.png"
            save_figure(fig, folder / "task_diversity_mixture_weight.png")
        return figures

    def sweep_report_section(self, ds, sweep):
        axes = self._axes(ds, sweep)
        if axes is None:
            return (f"## Task diversity\n\nThe sweep has no `{self.settings.pool_axis}` axis "
                    "(analysis.task_diversity.pool_axis): nothing to place over M.")
        pool, replicates = axes
        ds = ds.sortby(pool)
        learner, fresh = self._learner(ds), self.settings.fresh
        spread = lambda v: (f"{fmt(v.mean(replicates), 3)} ({fmt(v.min(replicates), 3)} to {fmt(v.max(replicates), 3)})"  # noqa: E731
                            if replicates else fmt(v, 3))
        rows = []
        for m in ds[pool].values:
            one = final_step(ds.sel({pool: m}))
            at = lambda n: one[n].sel({PREDICTOR: learner, SCENARIO: fresh})  # noqa: E731
            row = [str(m), spread(at("distance_to_memorising_mean")), spread(at("distance_to_generalising_mean")),
                   fmt(self._mean(one["references_distance_mean"].sel({SCENARIO: fresh}), replicates), 3),
                   spread(at("task_relative_distance_mean")),
                   spread(one["mixture_weight"].sel({PREDICTOR: learner})),
                   spread(one["mixture_fit_r"].sel({PREDICTOR: learner}))]
            if "transition_step" in ds:
                steps = ds["transition_step"].sel({pool: m})
                row.append(", ".join(fmt(v, 0) for v in np.atleast_1d(steps.values)))
            rows.append(row)
        header = ["M", "d(learner, mem)", "d(learner, gen)", "d(mem, gen)", "relative distance", "w", "r"]
        header += ["transition step" + (f" per {', '.join(replicates)}" if replicates else "")] if "transition_step" in ds else []
        note = f" (mean and range over {', '.join(replicates)})" if replicates else ""
        lines = [f"## Task diversity: memorising or generalising, against M ({fresh}, end of training{note})", "",
                 markdown_table(header, rows), ""]
        r_all = ds["mixture_fit_r"].sel({PREDICTOR: learner})
        lines += [f"Mixture fit over every checkpoint: r per (cell, checkpoint) from {fmt(r_all.min(), 4)} to "
                  f"{fmt(r_all.max(), 4)} (median {fmt(r_all.median(), 4)}); pooled over every prediction "
                  f"r = {fmt(ds['mixture_fit_r_pooled'], 4)}.", ""]
        return "\n".join(lines)

    def sweep_answer(self, ds, sweep):
        axes = self._axes(ds, sweep)
        if axes is None:
            return []
        pool, replicates = axes
        ds = ds.sortby(pool)
        per = np.atleast_1d(ds["transition_pool_size"].values)
        seeds = ", ".join(fmt(v, 0) for v in per)
        mean = float(ds["transition_pool_size_mean"])
        learner, fresh = self._learner(ds), self.settings.fresh
        rd = self._mean(final_step(ds["task_relative_distance_mean"]).sel({PREDICTOR: learner, SCENARIO: fresh}),
                        replicates)
        lines = [f"**M*** (smallest M closer to the generalising predictor on {fresh} at the end of training): "
                 f"{fmt(mean, 0)} from the mean distances; per {', '.join(replicates) or 'cell'}: {seeds}. Relative "
                 f"distance at the smallest M = {ds[pool].values[0]}: {fmt(rd.isel({pool: 0}), 2)}, at the largest "
                 f"M = {ds[pool].values[-1]}: {fmt(rd.isel({pool: -1}), 2)}."]
        r_all = ds["mixture_fit_r"].sel({PREDICTOR: learner})
        lines.append(f"**Mixture fit**: r = {fmt(ds['mixture_fit_r_pooled'], 4)} over every prediction of every "
                     f"cell and checkpoint (per checkpoint {fmt(r_all.min(), 3)} to {fmt(r_all.max(), 3)}).")
        return lines


__all__ = ["TaskDiversity", "mixture_fit", "pooled_r", "first_lasting"]
