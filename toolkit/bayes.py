"""The Bayes reference: `bayes_predictor(prior, engine=...)` picks and runs an engine.

Engines, in the order ``"auto"`` tries them, decided from the model alone: the
prior's closed form (``exact_predictive``); enumeration, when every latent has
finite support (or the prior declares a grid) and the joint support of the
global latents is at most ``max_support`` (the cumulative path when
observations are i.i.d. given the global latents, else prefix masking); and
MCMC (NUTS, `toolkit.mcmc`).
Whatever the engine, the predictor also reports ``prior_log_prob``
(log p_π(y_<=t), by the chain rule) and ``bayes_defined`` (False where the
context y_<t has probability zero under π, where every Bayes variable is NaN).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import xarray as xr

from .dims import EPISODE, POSITION
from .enumeration import enumerate_predictive, enumeration_path, latent_grid
from .episodes import Episodes
from .errors import ModelError, UnknownNameError
from .predictive import Predictor
from .prior import Prior
from .validation import check_log_density

Engine = Literal["auto", "closed_form", "enumeration", "mcmc"]
ENGINES = ("auto", "closed_form", "enumeration", "mcmc")

def select_engine(prior: Prior, *, max_support: int = 10**7) -> str:
    """The engine ``"auto"`` uses for ``prior``: closed form, else enumeration, else MCMC."""
    return engine_choice(prior, max_support=max_support)[0]


def engine_choice(prior: Prior, *, max_support: int = 10**7) -> tuple[str, str]:
    """The engine ``"auto"`` uses and why, in words (recorded in the Dataset's attrs and the report)."""
    if prior.exact_predictive is not None:
        return "closed_form", "the prior supplies a closed-form predictive"
    try:
        grid = latent_grid(prior, max_support=max_support, allow_local=True)
    except ModelError as exc:
        return "mcmc", f"NUTS: {exc}"
    if enumeration_path(prior) == "prefix":
        local = sorted(prior.local_latent_sites(2))
        return "enumeration", (
            f"enumeration by prefix masking over {grid.size} global latent values: local latents {local} make "
            "observations depend on each other, so each prefix's marginal likelihood is computed on its own"
        )
    return "enumeration", f"enumeration, cumulative path over {grid.size} global latent values"


class BayesPredictor(Predictor):
    """Exact Bayes posterior predictive by closed form or enumeration.

    Parameters
    ----------
    prior : Prior
    engine : {"closed_form", "enumeration"}
    max_support : int
        Largest joint latent support enumeration accepts.
    name : str
    """

    def __init__(self, prior: Prior, engine: str, *, max_support: int = 10**7, name: str = "bayes", reason: str = ""):
        self.prior, self.engine, self.max_support, self.name = prior, engine, max_support, name
        self.reason = reason

    def predict(self, episodes: Episodes, *, y_grid: np.ndarray | None = None) -> xr.Dataset:
        """Predictions plus ``prior_log_prob`` and ``bayes_defined`` (episode, position)."""
        prior, kind = self.prior, self.prior.data_kind
        kind.check_episodes(episodes, outcomes=prior.outcomes)
        if self.engine == "closed_form":
            ds = kind.from_distribution(prior.exact_predictive(episodes), episodes, prior, y_grid=y_grid)
        else:
            out = enumerate_predictive(prior, episodes, y_grid=y_grid, max_support=self.max_support)
            ds = kind.predictions(out, episodes, outcomes=prior.outcomes, y_grid=y_grid)
        return add_prior_log_prob(ds, episodes)

    def describe(self) -> dict[str, Any]:
        out = {"engine": self.engine, "prior": self.prior.describe()}
        if self.engine == "enumeration":
            out["path"] = enumeration_path(self.prior)
        if self.reason:
            out["reason"] = self.reason
        return out


def add_prior_log_prob(ds: xr.Dataset, episodes: Episodes) -> xr.Dataset:
    """Add ``prior_log_prob`` = log p(y_<=t) (chain rule over ``log_score``) and ``bayes_defined``.

    A NaN score means the context already had probability zero; padding adds nothing.
    """
    score = ds["log_score"].values
    mask = np.ones(score.shape, bool) if episodes.mask is None else episodes.mask
    step = np.where(mask, np.where(np.isnan(score), -np.inf, score), 0.0)
    prior_log_prob = np.cumsum(step, axis=1)
    context = np.concatenate([np.zeros((score.shape[0], 1)), prior_log_prob[:, :-1]], axis=1)
    defined = np.isfinite(context)
    ds = ds.where(xr.DataArray(defined, dims=(EPISODE, POSITION)))
    ds["prior_log_prob"] = ((EPISODE, POSITION), prior_log_prob)
    ds["bayes_defined"] = ((EPISODE, POSITION), defined)
    return ds


def bayes_predictor(prior: Prior, *, engine: Engine = "auto", name: str = "bayes", **options):
    """The Bayes reference predictor for ``prior``.

    Parameters
    ----------
    prior : Prior
    engine : {"auto", "closed_form", "enumeration", "mcmc"}
        ``"auto"`` picks the closed form if the prior has one, else
        enumeration when every latent has finite support or a declared grid
        (joint support of the global latents up to ``max_support``), else MCMC.
        ``predictor.engine`` says which ran, ``predictor.describe()`` why.
    **options
        Engine options: ``max_support`` for enumeration; for MCMC the fields
        of `toolkit.mcmc.MCMCConfig` (``num_warmup``, ``num_samples``,
        ``num_chains``, ``positions``, ...) plus ``key`` and ``progress``.

    Raises
    ------
    ModelError
        A site's log-density is NaN or infinite on the model's own samples,
        or the engine asked for does not apply to the model.

    Examples
    --------
    >>> import priors
    >>> bayes = bayes_predictor(priors.get("coin_mixture"))
    >>> bayes.engine
    'enumeration'
    """
    max_support = int(options.pop("max_support", 10**7))
    # a log-density that is NaN or infinite on the model's own samples fails here, naming the site
    check_log_density(prior)
    reason = ""
    if engine == "auto":
        engine, reason = engine_choice(prior, max_support=max_support)
    if engine == "closed_form":
        if prior.exact_predictive is None:
            raise ModelError(f"prior {prior.name!r} has no closed-form exact_predictive; use engine='enumeration' or 'mcmc'")
        return BayesPredictor(prior, "closed_form", max_support=max_support, name=name, reason=reason)
    if engine == "enumeration":
        latent_grid(prior, max_support=max_support, allow_local=True)  # fail now, with the reason, not at predict time
        return BayesPredictor(prior, "enumeration", max_support=max_support, name=name, reason=reason)
    if engine == "mcmc":
        from .mcmc import MCMCPredictor  # ArviZ and the sampler load only when MCMC runs

        predictor = MCMCPredictor(prior, name=name, **options)
        predictor.reason = reason or "engine='mcmc' was asked for"
        return predictor
    raise UnknownNameError("engine", str(engine), ENGINES)


__all__ = [
    "bayes_predictor",
    "BayesPredictor",
    "select_engine",
    "engine_choice",
    "add_prior_log_prob",
    "ENGINES",
]
