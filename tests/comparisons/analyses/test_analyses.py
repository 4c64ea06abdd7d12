"""Analyses as plug-ins: one registered from this file alone runs end to end through ``comparisons/run.py``.

The toy analysis below touches no other file: it declares its ``[analysis.toy]`` table, adds a prompt
scenario, a variable to the comparison Dataset and one to the metrics Dataset (dims from
`toolkit.dims`), draws a figure, writes a report section and an answer line.
"""

import numpy as np
import pytest
import xarray as xr
from conftest import REPO, TINY_ARGS
from pydantic import Field

from comparisons.analyses import (
    Analysis,
    AnalysisSettings,
    available_analyses,
    build_analyses,
    get_analysis,
    register_analysis,
)
from comparisons.config import load_config
from comparisons.figures import plt, save_figure
from comparisons.run import main
from toolkit.dims import EPISODE, POSITION, PREDICTOR, SCENARIO
from toolkit.errors import ConfigError, UnknownNameError
from toolkit.io import read_netcdf
from toolkit.scenario import Scenario

SMALL = ("--set", "evaluation.num_episodes=8", "--set", "scenarios.q.grid.thetas=[[0.5]]",
         "--set", 'evaluation.predictors=["bayes", "frequency", "learner"]')


@register_analysis("toy")
class ToyAnalysis(Analysis):
    """Counts, per scenario and position, the episodes whose learner puts more than ``threshold`` on outcome 0."""

    class Settings(AnalysisSettings):
        threshold: float = Field(0.5, gt=0, lt=1)

    calls: list = []  # the hooks in the order the pipeline called them (class-level: one run at a time)

    def check(self, plan):
        self.calls.append("check")
        if "learner" not in plan.learners:
            raise ConfigError("the toy analysis needs the [learner]")

    def scenarios(self, plan):
        self.calls.append("scenarios")
        return [Scenario.from_prompts("toy_prompts", ["🌈🌈", "🦄"], plan.prior.outcomes)]

    def comparison(self, ds, run):
        self.calls.append("comparison")
        p0 = np.exp(ds["log_prob"].sel({PREDICTOR: "learner"}).isel(outcome=0))
        return ds.assign(toy_above=(p0 > self.settings.threshold).where(p0.notnull()))

    def metrics(self, ds, metrics, run):
        self.calls.append("metrics")
        return metrics.assign(toy_count=ds["toy_above"].sum(EPISODE))

    def figures(self, ds, metrics, run, folder):
        self.calls.append("figures")
        fig, ax = plt.subplots()
        ax.plot(metrics[POSITION].values, metrics["toy_count"].isel({SCENARIO: 0}).values)
        save_figure(fig, folder / "toy.png")
        return {"toy counts": "figures/toy.png"}

    def report_section(self, ds, metrics, run):
        return f"## Toy\n\nthreshold {self.settings.threshold}"

    def answer(self, ds, metrics, run):
        return [f"**toy**: {int(metrics['toy_count'].sum())} cells above {self.settings.threshold}"]


@pytest.fixture
def toy_run(tmp_path, capsys):
    ToyAnalysis.calls = []
    out = tmp_path / "run"
    assert main([*TINY_ARGS, *SMALL, "--set", "analysis.toy.threshold=0.25", "--out", str(out)]) == 0
    return out, capsys.readouterr().out


def test_a_registered_analysis_runs_end_to_end_through_the_cli(toy_run):
    toy_run, printed = toy_run
    assert ToyAnalysis.calls == ["check", "scenarios", "comparison", "metrics", "figures"]
    ds, metrics = read_netcdf(toy_run / "comparison.nc"), read_netcdf(toy_run / "metrics.nc")
    assert "toy_prompts" in ds[SCENARIO].values
    assert ds["toy_above"].dims == (SCENARIO, EPISODE, POSITION)
    p0 = np.exp(ds["log_prob"].sel({PREDICTOR: "learner"}).isel(outcome=0))
    expected = ((p0 > 0.25).where(p0.notnull())).sum(EPISODE)
    xr.testing.assert_equal(metrics["toy_count"].drop_vars(metrics["toy_count"].coords), expected.drop_vars(expected.coords))
    report = (toy_run / "report.md").read_text(encoding="utf-8")
    assert "## Toy\n\nthreshold 0.25" in report and "![toy counts](figures/toy.png)" in report
    assert (toy_run / "figures" / "toy.png").read_bytes()[:4] == b"\x89PNG"
    answer = report.split("## Answer", 1)[1].split("\n## ", 1)[0]
    assert "**toy**:" in answer and "**in_distribution**" in answer  # beside the tokens analysis' answer
    assert "**toy**:" in printed


def test_an_analysis_failing_its_check_stops_the_run_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    code = main([*TINY_ARGS, *SMALL, "--set", 'evaluation.predictors=["bayes"]', "--set", "analysis.toy={}",
                 "--out", str(out)])
    assert code == 2
    assert capsys.readouterr().err == "error: analysis.toy: the toy analysis needs the [learner]\n"
    assert not out.exists()


def test_analysis_settings_are_validated_with_the_key_named():
    with pytest.raises(ConfigError, match=r"config key analysis.toy.threshold: .*less than 1 \(got 2.0\)"):
        load_config(None, ["analysis.toy.threshold=2.0"])
    with pytest.raises(ConfigError, match=r"config key analysis.toy.thresh: is not a known key; allowed here: threshold"):
        load_config(None, ["analysis.toy.thresh=0.2"])
    with pytest.raises(ConfigError, match=r"config key analysis.nope: unknown analysis 'nope'; known analyses: .*toy"):
        load_config(None, ["analysis.nope={}"])
    with pytest.raises(ConfigError, match=r"the \[anbn\] table is now \[analysis.anbn\]"):
        load_config(None, ["anbn.max_prompt_length=3"])


def test_the_kinds_default_analyses_and_the_built_in_ones_are_registered():
    assert {"tokens", "regression", "anbn", "completions", "toy"} <= set(available_analyses())
    with pytest.raises(UnknownNameError, match="unknown analysis 'nope'"):
        get_analysis("nope")
    with pytest.raises(TypeError, match="subclass of comparisons.analyses.Analysis"):
        register_analysis("bad")(object)


class _First(Analysis):
    pass


class _Second(Analysis):
    after = ("first",)


class _Loop(Analysis):
    after = ("loop",)


def test_analyses_run_after_those_they_read_and_cycles_are_refused(monkeypatch):
    from comparisons import analyses

    monkeypatch.setitem(analyses._REGISTRY, "first", _First)
    monkeypatch.setitem(analyses._REGISTRY, "second", _Second)
    monkeypatch.setitem(analyses._REGISTRY, "loop", _Loop)
    order = [type(a) for a in build_analyses("tokens", {"second": {}, "first": {}})]
    assert order == [get_analysis("tokens"), _First, _Second]
    # an analysis the run does not have is no reason to wait
    assert [type(a) for a in build_analyses("tokens", {"second": {}})] == [get_analysis("tokens"), _Second]
    with pytest.raises(ConfigError, match="each wait for another"):
        build_analyses("tokens", {"loop": {}})


def test_the_readmes_analysis_example_runs_as_written(tmp_path, capsys):
    """The "Add an analysis" block of the README registers its analysis and runs through the CLI."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Add an analysis", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert code.startswith("# comparisons/analyses/confident.py")
    exec(compile(code, "README.md", "exec"), {"__name__": "readme_confident"})
    assert main([*TINY_ARGS, *SMALL, "--set", "analysis.confident.threshold=0.8", "--out", str(tmp_path / "run")]) == 0
    assert "**confident**:" in capsys.readouterr().out
    assert "confident_rate" in read_netcdf(tmp_path / "run" / "metrics.nc")
