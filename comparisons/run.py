"""Run an experiment: train (or reuse) a learner, evaluate every predictor on every scenario, report.

    python comparisons/run.py [--config comparisons/configs/NAME.toml] [--profile NAME]
                              [--set key=value ...] [--out DIR]

Without arguments it runs the default experiment (the two-coin prior with
misspecified coins) and writes ``results/coin_mixture/``: ``comparison.nc``,
``metrics.nc``, ``report.md``, ``figures/*.png``, ``learner/`` and, where
MCMC ran, ``mcmc/*.nc``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from comparisons.config import RunConfig, load_config  # noqa: E402
from toolkit.dims import PREDICTOR, SCENARIO  # noqa: E402
from toolkit.errors import ConfigError, MetabayesError, UnknownNameError  # noqa: E402


def _in_context(exc: MetabayesError, where: str) -> MetabayesError:
    """``exc`` with its message prefixed by the config key it came from, keeping its type and fields.

    Rebuilding it as ``type(exc)(message)`` fails for errors whose constructor takes more than a
    message (`UnknownNameError`).
    """
    exc.args = (f"{where}: {exc}",) + exc.args[1:]
    return exc


def build_prior(cfg: RunConfig, name: str | None = None, params: dict | None = None, *, where: str = "prior"):
    """The experiment's prior; with ``name`` / ``params``, another built the same way (a curriculum stage)."""
    from toolkit.registry import get_prior, load_prior

    p = cfg.prior
    name = p.name if name is None else name
    params = p.params if params is None else params
    try:
        if p.kind is not None and name == p.name:
            return load_prior(name, kind=p.kind, outcomes=p.outcomes, **params)
        return get_prior(name, **params)
    except MetabayesError as exc:
        raise _in_context(exc, where) from None


def build_curriculum(cfg: RunConfig, stages, where: str) -> list[tuple[int, object]]:
    """``(until, prior)`` pairs for `learners.train` from ``[[learner.curriculum]]`` stages.

    A stage without ``prior`` is the experiment's prior with its ``params``
    laid over those of ``[prior]``; one naming a prior takes its ``params`` alone.
    """
    out = []
    for i, stage in enumerate(stages or ()):
        if stage.prior is None or stage.prior == cfg.prior.name:
            params = {**cfg.prior.params, **stage.params}
        else:
            params = dict(stage.params)
        out.append((stage.until, build_prior(cfg, stage.prior, params, where=f"{where}.curriculum[{i}]")))
    return out


def build_scenarios(cfg: RunConfig, prior):
    from toolkit.scenario import Scenario, scenario_grid

    scenarios = []
    for name, sc in cfg.scenarios.items():
        try:
            if sc.kind == "in_distribution":
                item = Scenario.in_distribution(prior, name)
                item.description = sc.description or item.description
                scenarios.append(item)
            elif sc.kind == "misspecified":
                if not sc.prior:
                    raise ConfigError("a misspecified scenario needs `prior`, the source q (a registered name or path)")
                scenarios += scenario_grid(name, sc.prior, params=sc.params, grid=sc.grid, description=sc.description)
            else:
                if prior.kind != "tokens":
                    raise ConfigError("prompt scenarios need a tokens prior")
                scenarios.append(Scenario.from_prompts(name, sc.prompts or [], prior.outcomes, description=sc.description))
        except MetabayesError as exc:
            raise _in_context(exc, f"scenarios.{name}") from None
    return scenarios


def learner_architecture(cfg: RunConfig, prior) -> str:
    """The main learner's architecture: as configured, else by the prior's kind."""
    default = "transformer" if prior.kind == "tokens" else "pfn"
    chosen = cfg.learner.architecture or default
    if (chosen == "pfn") != (prior.kind == "regression"):
        fix = 'architecture = "pfn" (the regression learner)' if prior.kind == "regression" else (
            'architecture = "transformer" or "rnn"')
        raise ConfigError(f"learner.architecture = {chosen!r} does not fit prior {prior.name!r}, a {prior.kind} prior; "
                          f"set [learner] {fix}, or leave it out")
    return chosen


def train_learner(cfg: RunConfig, prior, out: Path, *, progress: bool):
    """Reuse a finished checkpoint whose config matches, else train (resuming from the newest checkpoint)."""
    try:
        architecture = learner_architecture(cfg, prior)  # checks it fits the prior
    except MetabayesError as exc:
        raise _in_context(exc, "learner") from None
    return trained_learner(cfg, prior, out / "learner", architecture, cfg.learner.model, cfg.learner.training,
                           cfg.learner.curriculum, where="learner", progress=progress)


def trained_learner(cfg: RunConfig, prior, directory: Path, architecture: str, model: dict, training: dict, stages,
                    *, where: str, name: str = "learner", progress: bool, label: str | None = None):
    """The learner of these settings in ``directory``: its finished checkpoint when the config matches, else trained.

    Config errors are prefixed with ``where`` (the config key); training resumes from the newest checkpoint and,
    with ``progress``, announces ``label`` first.
    """
    import learners

    try:
        model_cfg = model_config(architecture, model)
        train_cfg = learners.TrainConfig.from_dict(training)
        curriculum = build_curriculum(cfg, stages, where)
        learners.check_curriculum(prior, curriculum, train_cfg)
    except MetabayesError as exc:
        raise _in_context(exc, where) from None
    if learners.config_matches(directory, prior, model_cfg, train_cfg, finished=True, curriculum=curriculum):
        print(f"reusing the trained learner in {directory}")
        return learners.load(directory, name=name)
    if progress and label:
        print(f"training {label}")
    result = learners.train(prior, model_cfg, train_cfg, directory, progress=progress, curriculum=curriculum)
    predictor = result.predictor
    predictor.name = name
    return predictor


def learner_specs(cfg: RunConfig) -> dict[str, tuple[str, str, dict, dict, list]]:
    """Predictor name ``NAME-s<seed>`` -> (group NAME, architecture, model overrides, training overrides, curriculum)."""
    specs = {}
    for group, spec in cfg.learners.items():
        curriculum = cfg.learner.curriculum if spec.curriculum is None else spec.curriculum
        for seed in spec.seeds:
            training = {**cfg.learner.training, **spec.training, "seed": seed}
            specs[f"{group}-s{seed}"] = (group, spec.architecture, dict(spec.model), training, list(curriculum))
    return specs


def model_config(architecture: str, values: dict):
    """The architecture's config dataclass from a TOML table."""
    import learners

    if architecture == "transformer":
        return learners.TransformerConfig.from_dict(values)
    if architecture == "rnn":
        from learners.rnn import RNNConfig

        return RNNConfig.from_dict(values)
    if architecture == "pfn":
        return learners.PFNConfig.from_dict(values)
    raise UnknownNameError("architecture", architecture, ("transformer", "rnn", "pfn"))


def learner_contexts(cfg: RunConfig) -> dict[str, int]:
    """Each configured learner's context (model.block_size, else its training length), known before training."""
    import learners

    tables = {}
    if "learner" in cfg.evaluation.predictors:
        tables["learner"] = (cfg.learner.model, cfg.learner.training)
    for name, (_, _, model, training, _) in learner_specs(cfg).items():
        tables[name] = (model, training)
    contexts = {}
    for name, (model, training) in tables.items():
        length = training.get("length", learners.TrainConfig.length)
        contexts[name] = int(model.get("block_size") or length)
    return contexts


def check_prompts_fit(cfg: RunConfig, scenarios, outcomes) -> None:
    """Fail before any training when a prompt is too long for a learner's context, naming both."""
    from toolkit.completions import check_prompt_lengths

    for name, context in learner_contexts(cfg).items():
        for scenario in scenarios:
            if scenario.kind == "prompts":
                check_prompt_lengths(scenario.prompts, context, who=f"learner {name!r}",
                                     where=f"scenario {scenario.name!r}", outcomes=outcomes)


def train_learners(cfg: RunConfig, prior, out: Path, *, progress: bool) -> dict:
    """Every ``[learners.NAME]`` learner, one per seed, each in ``out/learners/NAME-s<seed>``; reused when finished."""
    trained = {}
    for name, (group, architecture, model, training, stages) in learner_specs(cfg).items():
        trained[name] = trained_learner(cfg, prior, out / "learners" / name, architecture, model, training, stages,
                                        where=f"learners.{group}", name=name, progress=progress,
                                        label=f"{name} ({architecture})")
    return trained


def sample_all_completions(cfg: RunConfig, prior, scenarios, predictors: dict, learner_names: list[str]) -> dict:
    """``{(learner, scenario): (tokens, rule)}`` for every prompt scenario; rules when the aⁿbⁿ analysis is on."""
    import zlib

    from toolkit.completions import classify_anbn, sample_completions

    c = cfg.completions
    sampled = {}
    for j, scenario in enumerate(scenarios):
        if scenario.kind != "prompts":
            continue
        for name in learner_names:
            rng = np.random.default_rng([c.seed, j, zlib.crc32(name.encode())])
            tokens = sample_completions(
                predictors[name], scenario.prompts, num_completions=c.num, max_new_tokens=c.max_new_tokens,
                rng=rng, eos=prior.eos, temperature=c.temperature, outcomes=prior.outcomes, name=name,
            )
            rule = None
            if cfg.anbn is not None:
                from priors.anbn import A, B, EOS

                rule = classify_anbn(scenario.prompts, tokens, a=A, b=B, eos=EOS)
            sampled[(name, scenario.name)] = (tokens, rule)
    return sampled


def _token_only(name: str, make):
    def build(prior, **kwargs):
        if prior.kind != "tokens":
            raise ConfigError(f"evaluation.predictors: {name!r} is a token predictor; for a regression prior "
                              "use ridge, least_squares, knn or averaging")
        return make(prior, **kwargs)

    return build


def _regression_only(name: str, cls_name: str, defaults=lambda prior: {}):
    def build(prior, cfg, **_):
        if prior.kind != "regression":
            raise ConfigError(f"evaluation.predictors: {name!r} is a regression baseline; for a tokens prior use frequency")
        from toolkit import baselines

        options = {**defaults(prior), **cfg.evaluation.predictor_options.get(name, {})}
        try:
            return getattr(baselines, cls_name)(**options, name=name)
        except TypeError as exc:
            raise ConfigError(f"evaluation.predictor_options.{name}: {exc}") from None

    return build


def _mcmc_predictor(prior, cfg: RunConfig, progress: bool):
    """NUTS with the settings in ``[evaluation.predictor_options.bayes_mcmc]`` (num_warmup, num_samples, num_chains,
    positions, max_episodes, seed: the chains' key, default 0)."""
    from toolkit.bayes import bayes_predictor

    options = dict(cfg.evaluation.predictor_options.get("bayes_mcmc", {}))
    seed = options.pop("seed", 0)
    try:
        return bayes_predictor(prior, engine="mcmc", name="bayes_mcmc", progress=progress,
                               key=jax.random.key(seed), **options)
    except MetabayesError as exc:
        raise _in_context(exc, "evaluation.predictor_options.bayes_mcmc") from None


def _ridge_defaults(prior) -> dict:
    """Ridge as Bayes under w ~ N(0, τ² I) with the prior's own τ and σ, when it has them (task pools, GMMs)."""
    params = prior.params
    return {k: float(params[k]) for k in ("tau", "sigma") if k in params}


PREDICTOR_BUILDERS = {
    "bayes": lambda prior, **_: __import__("toolkit.bayes", fromlist=["x"]).bayes_predictor(prior),
    "bayes_mcmc": lambda prior, cfg, progress=True, **_: _mcmc_predictor(prior, cfg, progress),
    "oracle": lambda prior, **_: __import__("toolkit.oracles", fromlist=["x"]).OraclePredictor(),
    "best_mixture": lambda prior, **_: __import__("toolkit.oracles", fromlist=["x"]).BestMixturePredictor(),
    "frequency": _token_only(
        "frequency", lambda prior, **_: __import__("toolkit.baselines", fromlist=["x"]).FrequencyPredictor(prior.outcomes)
    ),
    "ridge": _regression_only("ridge", "RidgePredictor", _ridge_defaults),
    "least_squares": _regression_only("least_squares", "LeastSquaresPredictor"),
    "knn": _regression_only("knn", "KNNPredictor"),
    "averaging": _regression_only("averaging", "AveragingPredictor"),
    "learner": lambda prior, cfg, out, progress: train_learner(cfg, prior, out, progress=progress),
}


def regression_y_grid(cfg: RunConfig, prior) -> np.ndarray | None:
    """The y-grid of a regression run: as configured, else the prior's 0.1 %–99.9 % range widened by half its width.

    ``num_y_grid = 0`` means none: enumerating 10⁶ latents on a grid costs about 24x the run without one
    (benchmarks/regression_enumeration.py), and without a grid the enumerated Bayes has no quantiles.
    """
    if prior.kind != "regression" or (cfg.evaluation.y_grid is None and cfg.evaluation.num_y_grid == 0):
        return None
    if cfg.evaluation.y_grid is not None:
        g = cfg.evaluation.y_grid
        return np.linspace(g.low, g.high, g.num)
    y = prior.sample(jax.random.key(cfg.evaluation.seed), 4096, cfg.evaluation.length, jit=False).y
    low, high = np.quantile(y, [0.001, 0.999])
    pad = 0.5 * (high - low) if high > low else 1.0
    return np.linspace(low - pad, high + pad, cfg.evaluation.num_y_grid)


def build_predictors(cfg: RunConfig, prior, out: Path, *, progress: bool) -> dict:
    predictors = {}
    for name in cfg.evaluation.predictors:
        if name not in PREDICTOR_BUILDERS:
            raise UnknownNameError("predictor", name, PREDICTOR_BUILDERS)
        predictors[name] = PREDICTOR_BUILDERS[name](prior, cfg=cfg, out=out, progress=progress)
    return predictors


def run(cfg: RunConfig, out: Path, *, progress: bool = True, config_name: str = "") -> dict:
    """Run the experiment described by ``cfg`` into ``out``; returns the paths written and timings."""
    from comparisons.figures import cross_entropy_figure, mixture_weight_figure, predictions_figure
    from comparisons.report import write_report
    from toolkit.compare import compare
    from toolkit.io import write_netcdf, write_text
    from toolkit.oracles import component_log_prob
    from toolkit.summaries import metrics_dataset

    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    if cfg.torch_threads is not None:
        import torch

        # small models on a few shared cores: extra threads mostly spin-wait
        torch.set_num_threads(cfg.torch_threads)
    prior = build_prior(cfg)
    scenarios = build_scenarios(cfg, prior)
    if cfg.anbn is not None:
        from comparisons.anbn import prompt_scenarios
        from toolkit.bayes import bayes_predictor

        try:
            scenarios += prompt_scenarios(prior, bayes_predictor(prior), max_prompt_length=cfg.anbn.max_prompt_length,
                                          min_prior_prob=cfg.anbn.min_prior_prob)
        except MetabayesError as exc:
            raise _in_context(exc, "anbn") from None
    if prior.kind == "tokens":
        check_prompts_fit(cfg, scenarios, prior.outcomes)
    t0 = time.perf_counter()
    predictors = build_predictors(cfg, prior, out, progress=progress)
    many = train_learners(cfg, prior, out, progress=progress)
    predictors.update(many)
    train_s = time.perf_counter() - t0
    learner = predictors.get("learner")
    learner_names = (["learner"] if learner is not None else []) + list(many)
    attrs = {"config": cfg.model_dump(mode="json"), "config_name": config_name}
    if learner is not None:
        info = learner.describe()
        attrs.update(learner=info, training_steps=info.get("steps"), training_wall_time_s=info.get("wall_time_s"),
                     checkpoint_sha256=info.get("weights_sha256"))
    if "bayes" in predictors:
        attrs["inference_method"] = predictors["bayes"].engine
    inference_data: dict = {}
    t0 = time.perf_counter()
    y_grid = regression_y_grid(cfg, prior)
    ds = compare(
        prior, scenarios, predictors,
        num_episodes=cfg.evaluation.num_episodes, length=cfg.evaluation.length,
        key=jax.random.key(cfg.evaluation.seed), y_grid=y_grid, inference_data=inference_data, attrs=attrs,
    )
    groups = {"learner": "learner"} if learner is not None else {}
    groups.update({name: spec[0] for name, spec in learner_specs(cfg).items()})
    ds = ds.assign_coords(architecture=(PREDICTOR, [groups.get(str(p), "") for p in ds[PREDICTOR].values]))
    ds["architecture"].attrs = {"long_name": "the [learners.NAME] table a learner came from; empty for other predictors"}
    metrics = metrics_dataset(ds, bootstrap_resamples=cfg.evaluation.bootstrap_resamples, seed=cfg.evaluation.seed)
    completions_s = 0.0
    if cfg.completions is not None and learner_names:
        from toolkit.completions import add_completions

        t1 = time.perf_counter()
        sampled = sample_all_completions(cfg, prior, scenarios, predictors, learner_names)
        ds = add_completions(ds, sampled, attrs=cfg.completions.model_dump())
        completions_s = time.perf_counter() - t1
    analysis = None
    if cfg.anbn is not None:
        from comparisons.anbn import analyse

        analysis = analyse(ds, groups={n: groups[n] for n in learner_names})
        # learners only in the analysis: align to the metrics' predictors and scenarios, keeping their order
        aligned = analysis.reindex({PREDICTOR: metrics[PREDICTOR], SCENARIO: metrics[SCENARIO]})
        aligned = aligned.assign_coords(architecture=metrics["architecture"])
        attrs_before = dict(metrics.attrs)
        metrics = xr.merge([metrics, aligned], join="left", compat="override", combine_attrs="drop")
        metrics.attrs = {**attrs_before, **analysis.attrs}
    metrics.attrs.update({k: ds.attrs[k] for k in ("created", "toolkit_version", "git_commit")})
    eval_s = time.perf_counter() - t0
    written = {"comparison": write_netcdf(ds, out / "comparison.nc"), "metrics": write_netcdf(metrics, out / "metrics.nc")}
    for scenario, idata in inference_data.items():
        (out / "mcmc").mkdir(exist_ok=True)
        written[f"mcmc/{scenario}"] = idata.to_netcdf(str(out / "mcmc" / f"{scenario}.nc"))
    figures = {"cross-entropy": "figures/cross_entropy.png"}
    cross_entropy_figure(ds, metrics, out / figures["cross-entropy"])
    focus = next((str(s.name) for s in scenarios if s.kind == "misspecified"), str(scenarios[0].name))
    if prior.kind == "tokens" and "log_prob" in ds:
        figures[f"predictions on {focus}"] = "figures/predictions.png"
        predictions_figure(ds, focus, out / figures[f"predictions on {focus}"])
        if learner is not None and "bayes" in predictors:
            try:
                theta = np.exp(component_log_prob(prior, 1)[:, 0, 0])
            except MetabayesError:
                theta = np.array([])
            if theta.size == 2:
                figures["implied mixture weight"] = "figures/mixture_weight.png"
                mixture_weight_figure(ds, focus, theta, out / figures["implied mixture weight"])
    if prior.kind == "regression":
        from comparisons.figures import regression_band_figure, squared_error_figure

        figures["squared error against context size"] = "figures/squared_error.png"
        squared_error_figure(metrics, out / figures["squared error against context size"])
        if prior.x_dim == 1:
            shown = [s for s in scenarios if s.kind == "misspecified"] or scenarios
            figures["predictive mean and 90 % band over x"] = "figures/regression_bands.png"
            drawn = {n: predictors[n] for n in ("bayes", "oracle", *learner_names) if n in predictors}
            regression_band_figure(ds, drawn, [str(s.name) for s in shown[:4]],
                                   out / figures["predictive mean and 90 % band over x"], prior=prior, scenario_objects=scenarios)
    if analysis is not None:
        from comparisons.anbn import adherence_figure, disagreement_figure

        if "rule_count" in analysis:
            figures["rule adherence per architecture"] = "figures/adherence.png"
            adherence_figure(analysis, out / figures["rule adherence per architecture"])
        if "prompt_disagreement" in analysis:
            figures["disagreement against prior probability"] = "figures/disagreement.png"
            disagreement_figure(analysis, out / figures["disagreement against prior probability"])
    total_s = time.perf_counter() - start
    run_info = {
        "prior": f"{prior!r}",
        "scenarios": ", ".join(s.name for s in scenarios),
        "episodes": f"{cfg.evaluation.num_episodes} per scenario, length {cfg.evaluation.length}",
        "Bayes engine": attrs.get("inference_method", "–"),
        "wall time": f"{total_s:.0f} s in all ({train_s:.0f} s training or loading the learners, {eval_s:.0f} s evaluation"
        + (f", of which {completions_s:.0f} s sampling completions)" if completions_s else ")"),
    }
    if many:
        trained_s = sum(float(p.describe().get("wall_time_s") or 0.0) for p in many.values())
        run_info["learners"] = (
            ", ".join(f"{g} ({cfg.learners[g].architecture}, seeds {', '.join(map(str, cfg.learners[g].seeds))})"
                      for g in cfg.learners)
            + f"; {trained_s:.0f} s of training in all"
        )
    if cfg.completions is not None:
        c = cfg.completions
        run_info["completions"] = (f"{c.num} per prompt per learner, temperature {c.temperature:g}, "
                                   f"at most {c.max_new_tokens} tokens, seed {c.seed}")
    if learner is not None:
        info = attrs["learner"]
        run_info["learner"] = (
            f"{info.get('architecture', 'learner')} {json.dumps(info.get('model', {}))}, {info.get('steps')} steps, "
            f"trained in {info.get('wall_time_s', float('nan')):.0f} s"
        )
    sections, answer_lines = [], None
    if analysis is not None:
        from comparisons.anbn import answer as anbn_answer
        from comparisons.anbn import report_section

        sections.append(report_section(ds, analysis))
        answer_lines = anbn_answer(analysis)
    report = write_report(ds, metrics, positions=cfg.evaluation.report_positions, figures=figures, run_info=run_info,
                          sections=sections, answer_lines=answer_lines)
    written["report"] = write_text(report, out / "report.md")
    if answer_lines is None:
        from comparisons.report import answer

        answer_lines = answer(ds, metrics)
    return {"dataset": ds, "metrics": metrics, "report": report, "written": written, "wall_time_s": total_s,
            "answer": answer_lines}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python comparisons/run.py", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="TOML config (default: comparisons/configs/coin_mixture.toml)")
    parser.add_argument("--profile", help="a [profiles.NAME] table of the config to apply (e.g. tiny, cpu, paper)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set evaluation.length=32 (repeatable)")
    parser.add_argument("--out", help="output folder (default: results/<config name>)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides, args.profile)
        name = Path(args.config).stem if args.config else "coin_mixture"
        out = Path(args.out) if args.out else Path("results") / name
        result = run(cfg, out, progress=not args.no_progress, config_name=name)
    except MetabayesError as exc:
        print(f"error: {exc}", file=sys.stderr)
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
