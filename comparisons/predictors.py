"""The predictors a config can name (``evaluation.predictors``), registered by name.

Each entry builds its predictor from the prior and its options
(``[evaluation.predictor_options.NAME]``) and says which data kind it
predicts, so the plan refuses a token baseline for a regression prior (and
the reverse) before anything trains, and the config's list of allowed names
is this registry's. ``learner`` is the run's own trained learner: the
pipeline trains it (`comparisons.training`), nothing here builds it.

>>> from comparisons.predictors import available_predictors
>>> "bayes" in available_predictors()
True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import jax

from toolkit.errors import ConfigError, MetabayesError, ModelError, UnknownNameError
from toolkit.predictive import Predictor
from toolkit.prior import Prior

LEARNER = "learner"  # the [learner] table's learner, trained by the pipeline


@dataclass(frozen=True)
class PredictorEntry:
    """One registered predictor: how to build it and which data it predicts."""

    name: str
    kind: str | None  # the data kind it predicts; None: any
    build: Callable[..., Predictor] | None  # build(prior, options, *, progress, all_options); None for the learner
    takes_options: bool  # whether [evaluation.predictor_options.NAME] may configure it
    description: str


_REGISTRY: dict[str, PredictorEntry] = {}


def register_predictor(name: str, *, kind: str | None = None, takes_options: bool = True):
    """Register ``build(prior, options, *, progress, all_options) -> Predictor`` under ``name``.

    ``all_options`` is the whole ``[evaluation.predictor_options]`` table (the Bayes entry reads the
    MCMC settings when the prior needs MCMC); ``options`` is this predictor's own.
    """

    def decorate(build):
        _REGISTRY[name] = PredictorEntry(name, kind, build, takes_options, (build.__doc__ or "").strip().split("\n")[0])
        return build

    return decorate


def available_predictors() -> list[str]:
    """Names a config may list in ``evaluation.predictors``, in registration order."""
    return list(_REGISTRY)


def predictor_entry(name: str) -> PredictorEntry:
    if name not in _REGISTRY:
        raise UnknownNameError("predictor", name, _REGISTRY)
    return _REGISTRY[name]


def predictors_for(kind: str) -> list[str]:
    """The registered predictors that predict ``kind`` data."""
    return [n for n, e in _REGISTRY.items() if e.kind in (None, kind)]


def build_predictor(name: str, prior: Prior, all_options: dict[str, dict], *, progress: bool) -> Predictor:
    """The predictor ``name`` for ``prior``; errors name the config key to fix."""
    entry = predictor_entry(name)
    options = dict(all_options.get(name, {}))
    try:
        return entry.build(prior, options, progress=progress, all_options=all_options)
    except ModelError as exc:  # the prior's model, not the predictor's options, is at fault
        exc.args = (f"prior: {exc}",) + exc.args[1:]
        raise
    except MetabayesError as exc:
        exc.args = (f"evaluation.predictor_options.{name}: {exc}",) + exc.args[1:]
        raise
    except (TypeError, ValueError) as exc:  # an option the constructor does not take, or one it refuses
        raise ConfigError(f"evaluation.predictor_options.{name}: {exc}") from None


def _mcmc_settings(options: dict) -> tuple[dict, Any]:
    """The MCMC settings of ``[evaluation.predictor_options.bayes_mcmc]`` and the chains' key (``seed``, default 0).

    Unknown settings and settings of the wrong type are told apart, each naming the setting.
    """
    import pydantic

    from toolkit.mcmc import MCMCConfig

    options = dict(options)
    seed = options.pop("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise ConfigError(f"seed must be an integer in 0..2^63 - 1, got {seed!r}")
    known = list(MCMCConfig.__dataclass_fields__)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"unknown MCMC setting(s) {', '.join(unknown)}; known: {', '.join(known + ['seed'])}")
    try:
        pydantic.TypeAdapter(MCMCConfig).validate_python(options)
    except pydantic.ValidationError as exc:
        err = exc.errors()[0]
        original = err.get("ctx", {}).get("error")
        if isinstance(original, MetabayesError):  # a range check of MCMCConfig: already names the setting
            raise ConfigError(str(original)) from None
        raise ConfigError(f"{'.'.join(map(str, err['loc']))}: {err['msg']} (got {err.get('input')!r})") from None
    return options, jax.random.key(seed)


@register_predictor("bayes", takes_options=False)
def _bayes(prior, options, *, progress, all_options):
    """Exact Bayes (closed form or enumeration); NUTS with the bayes_mcmc settings where neither applies."""
    from toolkit.bayes import bayes_predictor, engine_choice

    if engine_choice(prior)[0] != "mcmc":
        return bayes_predictor(prior)
    try:
        settings, key = _mcmc_settings(all_options.get("bayes_mcmc", {}))
        return bayes_predictor(prior, progress=progress, key=key, **settings)
    except MetabayesError as exc:
        raise ConfigError(f"the prior needs MCMC for bayes; evaluation.predictor_options.bayes_mcmc: {exc}") from None


@register_predictor("bayes_mcmc")
def _bayes_mcmc(prior, options, *, progress, all_options):
    """NUTS (num_warmup, num_samples, num_chains, positions, max_episodes, ...; seed: the chains' key)."""
    from toolkit.bayes import bayes_predictor

    settings, key = _mcmc_settings(options)
    return bayes_predictor(prior, engine="mcmc", name="bayes_mcmc", progress=progress, key=key, **settings)


@register_predictor("oracle", takes_options=False)
def _oracle(prior, options, **_):
    """The data-generating source q itself, where the scenario knows it."""
    from toolkit.oracles import OraclePredictor

    return OraclePredictor()


@register_predictor("best_mixture", kind="tokens", takes_options=False)
def _best_mixture(prior, options, **_):
    """The best fixed mixture ρ* of the prior's components for the scenario's source."""
    from toolkit.oracles import BestMixturePredictor

    return BestMixturePredictor()


@register_predictor("frequency", kind="tokens")
def _frequency(prior, options, **_):
    """Laplace-smoothed running frequency (alpha: the pseudo-count)."""
    from toolkit.baselines import FrequencyPredictor

    return FrequencyPredictor(prior.outcomes, **options)


@register_predictor("dirichlet", kind="tokens")
def _dirichlet(prior, options, **_):
    """Bayes under one urn p ~ Dirichlet(α) (the Dirichlet–categorical closed form); alpha: the prior's own α."""
    from toolkit.bayes import bayes_predictor
    from toolkit.registry import get_prior

    options = dict(options)
    alpha = options.pop("alpha", prior.params.get("alpha"))
    if options:
        raise ConfigError(f"unknown option(s) {', '.join(sorted(options))}; the dirichlet predictor takes alpha")
    if alpha is None:
        raise ConfigError("the prior has no parameter alpha; give the Dirichlet's concentration as alpha")
    try:
        urn = get_prior("dirichlet_categorical", num_outcomes=prior.num_outcomes, alpha=alpha, outcomes=prior.outcomes)
    except ModelError as exc:
        raise ConfigError(f"alpha: {exc}") from None
    return bayes_predictor(urn, name="dirichlet")


def _regression_baseline(name: str, class_name: str, doc: str, defaults=lambda prior: {}):
    def build(prior, options, **_):
        from toolkit import baselines

        return getattr(baselines, class_name)(**{**defaults(prior), **options}, name=name)

    build.__doc__ = doc
    register_predictor(name, kind="regression")(build)


def _ridge_defaults(prior) -> dict:
    """Ridge as Bayes under w ~ N(0, τ² I) with the prior's own τ and σ, when it has them (task pools, GMMs)."""
    return {k: float(prior.params[k]) for k in ("tau", "sigma") if k in prior.params}


_regression_baseline("ridge", "RidgePredictor", "Ridge regression, Bayes under w ~ N(0, τ² I) (tau, sigma).", _ridge_defaults)
_regression_baseline("least_squares", "LeastSquaresPredictor", "Minimum-norm least squares.")
_regression_baseline("knn", "KNNPredictor", "k nearest neighbours (k).")
_regression_baseline("averaging", "AveragingPredictor", "The averaging estimator.")

_REGISTRY[LEARNER] = PredictorEntry(LEARNER, None, None, False, "the [learner] table's learner, trained by the run")


__all__ = ["register_predictor", "available_predictors", "predictor_entry", "predictors_for", "build_predictor",
           "PredictorEntry", "LEARNER"]
