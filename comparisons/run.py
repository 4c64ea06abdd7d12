"""Run an experiment: train (or reuse) the learners, evaluate every predictor on every scenario, analyse, report.

    python comparisons/run.py [--config comparisons/configs/NAME.toml] [--profile NAME]
                              [--set key=value ...] [--out DIR]

Without arguments it runs the default experiment (the two-coin prior with
misspecified coins) and writes ``results/coin_mixture/``: ``comparison.nc``,
``metrics.nc``, ``report.md``, ``figures/*.png``, ``learner/`` and, where
MCMC ran, ``mcmc/*.nc``.

`run` is the pipeline: plan (every check, before anything trains;
`comparisons.plan`) → train or reuse the learners (`comparisons.training`) →
compare → metrics → each analysis (`comparisons.analyses`) → report → write.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import xarray as xr  # noqa: E402

from comparisons.config import RunConfig, add_config_arguments, config_from_args  # noqa: E402
from comparisons.plan import RunState, build_plan  # noqa: E402
from toolkit.dims import PREDICTOR  # noqa: E402
from toolkit.errors import ConfigError, MetabayesError  # noqa: E402
from toolkit.results import ResultWriter, config_hash, new_run_id  # noqa: E402


def run(cfg: RunConfig, out: Path, *, progress: bool = True, config_name: str = "") -> dict:
    """Run the experiment described by ``cfg`` into ``out``; returns the Datasets, report, paths written and timings."""
    from comparisons.steps import metrics_at_steps, with_steps
    from comparisons.training import train_learners

    start = time.perf_counter()
    plan = build_plan(cfg, out, config_name=config_name, progress=progress)
    make_folder(out)
    results = ResultWriter(out, run_id=new_run_id(), config_hash=config_hash(cfg.model_dump(mode="json"))).begin()
    with torch_threads(cfg.torch_threads):
        state = RunState(plan, dict(plan.predictors))
        with timed(state, "train"):
            trained = train_learners(plan, progress=progress)
            state.predictors = {name: {**plan.predictors, **trained}[name] for name in plan.predictor_names}
        with timed(state, "evaluate"):
            at_steps = metrics_at_steps(state, evaluate)  # the learners at learner.training.eval_steps, if any
            ds, metrics = evaluate(state)
            metrics.attrs.update({k: ds.attrs[k] for k in ("created", "toolkit_version", "git_commit")}, **results.stamp)
        report, answer = write_figures_and_report(ds, metrics, state, start, results)
        written = write_results(results, ds, with_steps(metrics, at_steps, plan), state.inference_data, report,
                                wall_time_s=time.perf_counter() - start)
    return {"dataset": ds, "metrics": metrics, "report": report, "written": written,
            "wall_time_s": time.perf_counter() - start, "answer": answer}


def evaluate(state: RunState) -> tuple[xr.Dataset, xr.Dataset]:
    """The comparison and metrics Datasets of ``state``'s predictors, each analysis' variables added."""
    from toolkit.summaries import metrics_dataset

    plan, ev = state.plan, state.plan.config.evaluation
    ds = comparison(state)
    for analysis in plan.analyses:
        ds = analysis.comparison(ds, state)
    metrics = metrics_dataset(ds, kind=plan.kind, bootstrap_resamples=ev.bootstrap_resamples, seed=ev.seed)
    for analysis in plan.analyses:
        metrics = analysis.metrics(ds, metrics, state)
    return ds, metrics


@contextmanager
def timed(state: RunState, step: str):
    """Record the wall time of the block as ``state.timings[step]``."""
    start = time.perf_counter()
    yield
    state.timings[step] = time.perf_counter() - start


@contextmanager
def torch_threads(threads: int | None):
    """torch's intra-op threads for the block (small models on a few shared cores: extra threads mostly spin-wait)."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def make_folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot create the folder ({exc.strerror or exc}); choose another --out") from None


def comparison(state: RunState) -> xr.Dataset:
    """Every predictor on every scenario (`toolkit.compare`), with the run's provenance and learner groups."""
    from toolkit.compare import compare

    plan, predictors = state.plan, state.predictors
    attrs = {"config": plan.config.model_dump(mode="json"), "config_name": plan.config_name}
    learner = predictors.get("learner")
    if learner is not None:
        info = learner.describe()
        attrs.update(learner=info, training_steps=info.get("steps"), training_wall_time_s=info.get("wall_time_s"),
                     checkpoint_sha256=info.get("weights_sha256"))
    if "bayes" in predictors:
        attrs["inference_method"] = predictors["bayes"].describe()["engine"]
    ev = plan.config.evaluation
    ds = compare(plan.prior, plan.scenarios, predictors, num_episodes=ev.num_episodes, length=ev.length,
                 key=jax.random.key(ev.seed), y_grid=plan.y_grid, inference_data=state.inference_data, attrs=attrs)
    groups = plan.groups
    ds = ds.assign_coords(architecture=(PREDICTOR, [groups.get(str(p), "") for p in ds[PREDICTOR].values]))
    ds["architecture"].attrs = {"long_name": "the [learners.NAME] table a learner came from; empty for other predictors"}
    return ds


def write_figures_and_report(ds: xr.Dataset, metrics: xr.Dataset, state: RunState, start: float,
                             results: ResultWriter) -> tuple[str, list[str]]:
    """Draw every figure (the cross-entropy, then each analysis') into the staged results; the report and answer."""
    from comparisons.figures import cross_entropy_figure
    from comparisons.report import write_report

    plan, folder = state.plan, results.path("figures")
    figures = {"cross-entropy": "figures/cross_entropy.png"}
    cross_entropy_figure(ds, metrics, folder / "cross_entropy.png")
    sections, answer = [], []
    for analysis in plan.analyses:
        figures.update(analysis.figures(ds, metrics, state, folder))
        sections.append(analysis.report_section(ds, metrics, state))
        answer += analysis.answer(ds, metrics, state)
    info = setup_lines(state, time.perf_counter() - start)
    report = write_report(ds, metrics, positions=plan.report_positions, figures=figures,
                          run_info=info, sections=[s for s in sections if s], answer_lines=answer, stamp=results.stamp)
    return report, answer or ["No learner in this comparison."]


def setup_lines(state: RunState, total_s: float) -> dict[str, str]:
    """The report's Setup section: prior, scenarios, episodes, engine, wall times, learners, the analyses' lines."""
    plan, t, ev = state.plan, state.timings, state.plan.config.evaluation
    extra = f", of which {t['completions']:.0f} s sampling completions" if "completions" in t else ""
    info = {
        "prior": f"{plan.prior!r}",
        "scenarios": ", ".join(s.name for s in plan.scenarios),
        "episodes": f"{ev.num_episodes} per scenario, length {ev.length}",
        "Bayes engine": state.predictors["bayes"].describe()["engine"] if "bayes" in state.predictors else "–",
        "wall time": f"{total_s:.0f} s in all ({t['train']:.0f} s training or loading the learners, "
        f"{t['evaluate']:.0f} s evaluation{extra})",
    }
    many = [name for name in plan.learners if name != "learner"]
    if many:
        trained_s = sum(float(state.predictors[n].describe().get("wall_time_s") or 0.0) for n in many)
        tables = plan.config.learners
        info["learners"] = (", ".join(f"{g} ({tables[g].architecture}, seeds {', '.join(map(str, tables[g].seeds))})"
                                      for g in tables) + f"; {trained_s:.0f} s of training in all")
    for analysis in plan.analyses:
        info.update(analysis.setup(state))
    if "learner" in state.predictors:
        d = state.predictors["learner"].describe()
        info["learner"] = (f"{d.get('architecture', 'learner')} {json.dumps(d.get('model', {}))}, {d.get('steps')} "
                           f"steps, trained in {d.get('wall_time_s', float('nan')):.0f} s")
    return info


def write_results(results: ResultWriter, ds: xr.Dataset, metrics: xr.Dataset, inference_data: dict,
                  report: str, *, wall_time_s: float) -> dict[str, Path]:
    """``comparison.nc``, ``metrics.nc``, ``mcmc/<scenario>.nc`` and ``report.md`` staged, then made current as one.

    Each carries the run id and config hash (`toolkit.results`); a kill before the commit leaves the
    previous results current.
    """
    from toolkit.io import write_inference_data, write_netcdf, write_text

    ds.attrs.update(results.stamp)
    staged = {"comparison": write_netcdf(ds, results.path("comparison.nc")),
              "metrics": write_netcdf(metrics, results.path("metrics.nc"))}
    for scenario, idata in inference_data.items():
        for group in idata.groups():
            idata[group].attrs.update(results.stamp)
        staged[f"mcmc/{scenario}"] = write_inference_data(idata, results.path(f"mcmc/{scenario}.nc"))
    staged["report"] = write_text(report, results.path("report.md"))
    results.commit(wall_time_s=round(wall_time_s, 3))
    return {name: results.directory / path.relative_to(results.folder) for name, path in staged.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python comparisons/run.py", description=__doc__.split("\n")[0])
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    try:
        cfg, name, out = config_from_args(args)
        result = run(cfg, out, progress=not args.no_progress, config_name=name)
    except MetabayesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the disk filled, a folder vanished: what was written before stays
        print(f"error: writing the results failed ({exc}); finished checkpoints are kept, rerun to resume",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished checkpoints and result files are intact; run the same command to resume",
              file=sys.stderr)
        return 130
    print("\n".join(result["answer"]))
    print(f"\nwrote {out}/ (report.md, comparison.nc, metrics.nc, figures/) in {result['wall_time_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
