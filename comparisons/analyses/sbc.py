"""Simulation-based calibration of the run's Bayes engines (`toolkit.sbc`): is the reference itself right?

``[analysis.sbc]`` runs SBC on the run's prior for each engine in ``engines``
(``"auto"``: the one the run's Bayes reference uses): latents from the prior,
an episode from the model, posterior draws from the engine, ranks of the
truth and an ECDF uniformity test per scalar latent and for the held-out
item's PIT (``y_next``). It adds to ``metrics.nc`` ``sbc_rank (engine,
simulation, sbc_quantity)`` and ``sbc_pvalue``, ``sbc_pvalue_adjusted``
(engine, sbc_quantity), ``sbc_passed`` and ``sbc_wall_time_s`` (engine);
draws ``figures/sbc_ecdf.png`` (ECDF − uniform of the ranks, with ArviZ's
simultaneous band) and reports the verdict per engine.
"""

from __future__ import annotations

from typing import Literal

import jax
import numpy as np
import xarray as xr
from pydantic import Field

from comparisons.analyses import Analysis, AnalysisSettings, register_analysis
from comparisons.figures import plt, save_figure
from comparisons.report import fmt, markdown_table
from toolkit.bayes import bayes_predictor, select_engine
from toolkit.calibration import ecdf_difference, ecdf_points, uniform_ecdf_band
from toolkit.dims import ENGINE, SBC_QUANTITY, SIMULATION
from toolkit.errors import ConfigError, MetabayesError
from toolkit.sbc import simulation_based_calibration

EngineName = Literal["auto", "closed_form", "enumeration", "mcmc"]


@register_analysis("sbc")
class SBCAnalysis(Analysis):
    """SBC of each engine in ``engines`` on the run's prior."""

    class Settings(AnalysisSettings):
        engines: tuple[EngineName, ...] = ("auto",)  # "auto": the engine the run's Bayes reference uses
        num_simulations: int = Field(500, ge=2)  # N: simulations (ranks per quantity)
        context_length: int = Field(10, ge=0)  # n: items each posterior conditions on
        num_draws: int = Field(99, ge=1)  # L: posterior draws per simulation
        alpha: float = Field(0.01, gt=0, lt=1)  # fails when a Bonferroni-adjusted p-value is below alpha
        seed: int = 0
        num_warmup: int = Field(500, ge=1)  # MCMC only
        num_samples: int = Field(500, ge=1)  # MCMC only: draws kept per chain, thinned to num_draws in all
        num_chains: int = Field(4, ge=4)  # MCMC only
        dense_mass: bool = False  # MCMC only: a dense mass matrix (correlated posteriors, e.g. regression)

    def _engines(self, prior) -> list[str]:
        names = [select_engine(prior) if e == "auto" else e for e in self.settings.engines]
        return list(dict.fromkeys(names))

    def check(self, plan):
        s = self.settings
        for engine in self._engines(plan.prior):
            try:
                bayes_predictor(plan.prior, engine=engine, **({"progress": False} if engine == "mcmc" else {}))
            except MetabayesError as exc:
                raise ConfigError(f"analysis.sbc.engines: {engine} does not apply to this prior ({exc})") from None
            if engine == "closed_form" and plan.prior.exact_posterior is None:
                raise ConfigError(
                    f"analysis.sbc.engines: prior {plan.prior.name!r} supplies no exact_posterior, so its closed-form "
                    "engine has no posterior draws to rank; check 'enumeration' or 'mcmc' instead"
                )
            if engine == "mcmc" and s.num_samples * s.num_chains < s.num_draws:
                raise ConfigError(f"analysis.sbc: num_draws={s.num_draws} exceeds the {s.num_chains} x "
                                  f"{s.num_samples} MCMC draws kept; raise num_samples or lower num_draws")

    def metrics(self, ds, metrics, run):
        s = self.settings
        key = jax.random.key(s.seed)
        parts = []
        for engine in self._engines(run.plan.prior):
            options = {}
            if engine == "mcmc":
                options = dict(num_warmup=s.num_warmup, num_samples=s.num_samples, num_chains=s.num_chains,
                               dense_mass=s.dense_mass)
            # the same key for every engine: each ranks the same simulations
            out = simulation_based_calibration(run.plan.prior, engine=engine, num_simulations=s.num_simulations,
                                               length=s.context_length, num_draws=s.num_draws, key=key,
                                               alpha=s.alpha, **options)
            out["sbc_passed"] = out.attrs["passed"]
            out["sbc_wall_time_s"] = out.attrs["wall_time_s"]
            out["sbc_num_draws"] = out.attrs["num_draws"]
            if engine == "mcmc":
                out["sbc_max_r_hat"] = out.attrs["max_r_hat"]
                out["sbc_min_ess_bulk"] = out.attrs["min_ess_bulk"]
            parts.append(out.drop_vars("sbc_truth").expand_dims({ENGINE: [engine]}))
        sbc = xr.concat(parts, dim=ENGINE, join="outer", coords="minimal", compat="override")
        sbc.attrs = {}
        run.timings["sbc"] = float(sbc["sbc_wall_time_s"].sum())
        return metrics.merge(sbc, compat="override")

    # ------------------------------------------------------------------ report
    def figures(self, ds, metrics, run, folder):
        if "sbc_rank" not in metrics:
            return {}
        engines = list(metrics[ENGINE].values)
        fig, axes = plt.subplots(1, len(engines), figsize=(4.4 * len(engines), 3.4), squeeze=False)
        n = metrics.sizes[SIMULATION]
        points = ecdf_points(n)
        low, high = uniform_ecdf_band(n, points, level=1 - self.settings.alpha)
        for ax, engine in zip(axes[0], engines):
            ax.fill_between(points, low, high, step="mid", color="tab:blue", alpha=0.15,
                            label=f"{1 - self.settings.alpha:.0%} simultaneous band")
            for q in metrics[SBC_QUANTITY].values:
                rank = metrics["sbc_rank"].sel({ENGINE: engine, SBC_QUANTITY: q}).values
                if np.all(np.isnan(rank)):
                    continue
                ax.step(points, ecdf_difference(rank, points), where="mid", lw=1, label=str(q))
            passed = bool(metrics["sbc_passed"].sel({ENGINE: engine}))
            ax.set_title(f"{engine}: {'passes' if passed else 'FAILS'}", fontsize=10)
            ax.set_xlabel("fractional rank")
        axes[0, 0].set_ylabel("ECDF − uniform")
        axes[0, 0].legend(fontsize=6, ncol=2)
        fig.suptitle(f"SBC: {n} simulations, {self.settings.context_length} observations each")
        save_figure(fig, folder / "sbc_ecdf.png")
        return {"SBC ranks (ECDF difference)": "figures/sbc_ecdf.png"}

    def setup(self, run):
        if "sbc" not in run.timings:
            return {}
        s = self.settings
        return {"SBC": f"{s.num_simulations} simulations of {s.context_length} observations, {s.num_draws} posterior "
                       f"draws each, engines {', '.join(self._engines(run.plan.prior))}: "
                       f"{run.timings['sbc']:.0f} s"}

    def report_section(self, ds, metrics, run):
        if "sbc_pvalue" not in metrics:
            return ""
        rows = []
        for engine in metrics[ENGINE].values:
            m = metrics.sel({ENGINE: engine})
            for q in m[SBC_QUANTITY].values:
                p = float(m["sbc_pvalue"].sel({SBC_QUANTITY: q}))
                if np.isnan(p):
                    continue
                adjusted = float(m["sbc_pvalue_adjusted"].sel({SBC_QUANTITY: q}))
                rows.append([str(engine), str(q), fmt(p), fmt(adjusted),
                             "ok" if adjusted >= self.settings.alpha else "**fails**"])
        lines = [
            "## Simulation-based calibration of the Bayes engines",
            "",
            f"Each simulation draws the latents from the prior and {self.settings.context_length} observations plus "
            "one held-out item from the model; the engine's posterior draws rank the true latents, and its "
            "predictive gives the held-out item's PIT (`y_next`). A right engine makes every rank Uniform(0, 1). "
            "p: the ECDF uniformity test (Säilynoja et al. 2022); adjusted: times the number of quantities "
            f"(Bonferroni); an engine fails when an adjusted p is below {self.settings.alpha}.",
            "",
            markdown_table(["engine", "quantity", "p", "adjusted p", "verdict"], rows),
        ]
        if "sbc_max_r_hat" in metrics:
            m = metrics.sel({ENGINE: "mcmc"}) if "mcmc" in metrics[ENGINE].values else None
            if m is not None:
                lines += ["", f"MCMC draws: max r_hat {fmt(m['sbc_max_r_hat'], 3)}, min ess_bulk "
                              f"{fmt(m['sbc_min_ess_bulk'], 0)}, {int(m['sbc_num_draws'])} draws per simulation "
                              "after thinning."]
        return "\n".join(lines)

    def answer(self, ds, metrics, run):
        if "sbc_pvalue" not in metrics:
            return []
        lines = []
        for engine in metrics[ENGINE].values:
            m = metrics.sel({ENGINE: engine})
            adjusted = m["sbc_pvalue_adjusted"]
            worst = str(adjusted[SBC_QUANTITY].values[int(np.nanargmin(adjusted.values))])
            verdict = "passes" if bool(m["sbc_passed"]) else "**fails**"
            lines.append(f"**SBC of the {engine} engine** {verdict}: smallest adjusted p {fmt(adjusted.min(), 3)} "
                         f"({worst}) over {int(np.isfinite(adjusted).sum())} quantities, "
                         f"{metrics.sizes[SIMULATION]} simulations ({fmt(m['sbc_wall_time_s'], 0)} s).")
        return lines


__all__ = ["SBCAnalysis"]
