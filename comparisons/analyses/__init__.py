"""Analyses: what a run computes, draws and reports beyond the comparison itself, one file each.

An analysis subclasses `Analysis` and registers itself by name::

    @register_analysis("my_analysis")
    class MyAnalysis(Analysis):
        class Settings(AnalysisSettings):      # its [analysis.my_analysis] table
            threshold: float = 0.5

        def metrics(self, ds, metrics, run):   # any hook it needs; the others keep their defaults
            return metrics.assign(...)

Every hook has a default that does nothing (NumPyro's ``MCMCKernel`` pattern),
so the pipeline calls each hook of each analysis without asking what it has.
In pipeline order:

1. `check` (while the plan is built, before anything trains) and `scenarios`
   (extra scenarios or prompt sets; the plan checks them against every
   learner's context like the config's own);
2. `comparison`: variables added to the comparison Dataset (e.g. sampled
   completions), after every predictor ran;
3. `metrics`: variables added to the metrics Dataset;
4. `figures`, `setup`, `report_section` and `answer`: the report.

A sweep (``comparisons/sweep.py``) gives the same analyses, after its cells
ran, the combined Dataset (``sweep.nc``: every cell's metrics with the sweep
axes as dims): `sweep` adds variables, then `sweep_figures`,
`sweep_report_section` and `sweep_answer` write the sweep's report; the
``sweep`` summary analysis is always among them.

Variables an analysis adds use dims named in `toolkit.dims`. A config runs an
analysis by giving its table, ``[analysis.NAME]`` (empty for the defaults);
every run also gets its data kind's default analysis (``tokens`` or
``regression``). ``after`` orders analyses that read what another adds.
Adding an analysis is one new file in this folder (or a registration from
any module imported before the run, e.g. a test).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import xarray as xr
from pydantic import BaseModel, ConfigDict

from toolkit.dims import STEP
from toolkit.errors import ConfigError, UnknownNameError

if TYPE_CHECKING:
    from comparisons.plan import Plan, RunState
    from comparisons.sweep import Sweep
    from toolkit.scenario import Scenario


class AnalysisSettings(BaseModel):
    """Base of an analysis' ``[analysis.NAME]`` table: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Analysis:
    """One analysis of a run; subclasses override the hooks they need.

    Parameters
    ----------
    settings : AnalysisSettings
        The validated ``[analysis.NAME]`` table (its defaults when the config has none).
    """

    name: ClassVar[str] = ""  # set by `register_analysis`
    Settings: ClassVar[type[AnalysisSettings]] = AnalysisSettings
    after: ClassVar[tuple[str, ...]] = ()  # analyses whose additions this one reads: run first when the run has them

    def __init__(self, settings: AnalysisSettings | None = None):
        self.settings = self.Settings() if settings is None else settings

    # ------------------------------------------------------------------ planning
    def scenarios(self, plan: Plan) -> list[Scenario]:
        """Scenarios (or prompt sets) to evaluate besides the config's."""
        return []

    def check(self, plan: Plan) -> None:
        """Raise a `MetabayesError` naming the fix if the plan cannot give this analysis what it needs."""

    # ------------------------------------------------------------------ results
    def comparison(self, ds: xr.Dataset, run: RunState) -> xr.Dataset:
        """The comparison Dataset with this analysis' variables added."""
        return ds

    def metrics(self, ds: xr.Dataset, metrics: xr.Dataset, run: RunState) -> xr.Dataset:
        """The metrics Dataset with this analysis' variables added."""
        return metrics

    # ------------------------------------------------------------------ report
    def figures(self, ds: xr.Dataset, metrics: xr.Dataset, run: RunState, folder: Path) -> dict[str, str]:
        """Draw figures into ``folder``; returns caption -> path relative to the run directory."""
        return {}

    def setup(self, run: RunState) -> dict[str, str]:
        """Lines for the report's Setup section (what this analysis did), label -> text."""
        return {}

    def report_section(self, ds: xr.Dataset, metrics: xr.Dataset, run: RunState) -> str:
        """A Markdown section of report.md (empty for none)."""
        return ""

    def answer(self, ds: xr.Dataset, metrics: xr.Dataset, run: RunState) -> list[str]:
        """Lines of the report's Answer (also printed by the CLI)."""
        return []

    # ------------------------------------------------------------------ a sweep of runs
    def sweep(self, ds: xr.Dataset, sweep: Sweep) -> xr.Dataset:
        """``sweep.nc``'s Dataset (every cell's metrics, the sweep axes as dims) with this analysis' variables."""
        return ds

    def sweep_figures(self, ds: xr.Dataset, sweep: Sweep, folder: Path) -> dict[str, str]:
        """Figures of the sweep, drawn into ``folder``; caption -> path relative to the sweep's folder."""
        return {}

    def sweep_report_section(self, ds: xr.Dataset, sweep: Sweep) -> str:
        """A Markdown section of the sweep's report.md (empty for none)."""
        return ""

    def sweep_answer(self, ds: xr.Dataset, sweep: Sweep) -> list[str]:
        """Lines of the sweep report's Answer."""
        return []


_REGISTRY: dict[str, type[Analysis]] = {}


def register_analysis(name: str):
    """Class decorator: register an `Analysis` subclass as ``name`` (its config table is ``[analysis.NAME]``)."""

    def decorate(cls: type[Analysis]) -> type[Analysis]:
        if not (isinstance(cls, type) and issubclass(cls, Analysis)):
            raise TypeError(f"@register_analysis({name!r}) decorates a subclass of comparisons.analyses.Analysis")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def available_analyses() -> list[str]:
    """Names of the registered analyses, sorted."""
    return sorted(_REGISTRY)


def get_analysis(name: str) -> type[Analysis]:
    """The analysis class registered as ``name``."""
    if name not in _REGISTRY:
        raise UnknownNameError("analysis", name, _REGISTRY)
    return _REGISTRY[name]


def build_analyses(default: str, tables: dict[str, dict]) -> list[Analysis]:
    """The analyses of a run: the kind's ``default`` and each ``[analysis.NAME]`` table, ordered by ``after``.

    Raises
    ------
    ConfigError
        The ``after`` order has a cycle.
    """
    names = [default] + [n for n in tables if n != default]
    built = {n: get_analysis(n)(get_analysis(n).Settings.model_validate(tables.get(n, {}))) for n in names}
    ordered: list[str] = []
    while len(ordered) < len(names):
        ready = [n for n in names if n not in ordered and all(a in ordered or a not in built for a in built[n].after)]
        if not ready:
            raise ConfigError(f"the analyses {sorted(set(names) - set(ordered))} each wait for another to run first")
        ordered.append(ready[0])
    return [built[n] for n in ordered]


def final_step(values: xr.DataArray | xr.Dataset) -> xr.DataArray | xr.Dataset:
    """``values`` at the final learners: the last ``step`` where checkpoints were evaluated, else as they are."""
    return values.isel({STEP: -1}) if STEP in values.dims else values


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Analysis", "AnalysisSettings", "register_analysis", "available_analyses", "get_analysis", "build_analyses",
           "final_step"]
