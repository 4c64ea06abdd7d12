"""Simulation-based calibration (SBC) of the Bayes engines: closed form, enumeration, MCMC.

For each of N simulations: latents θ from the prior, an episode of n + 1
items from the model given θ, then L posterior draws of θ given the first n
items from the engine, and the rank of the true θ among them (`fractional_rank`:
ties, as of a discrete latent, broken at random). If the engine's posterior is
right, every scalar latent's ranks are Uniform(0, 1) (Talts et al. 2018). The
engine's predictive is checked the same way through the held-out item: the PIT
of y_{n+1} under the engine's predictive given the n items (``y_next``,
randomised for tokens) is Uniform(0, 1) too. Each quantity gets the ECDF
uniformity test of `toolkit.calibration` (Säilynoja et al. 2022); the check
passes when no p-value, times the number of quantities tested (Bonferroni),
falls below ``alpha``.

Where the draws come from:

- ``closed_form``: the prior's ``exact_posterior`` (its conjugate formulas);
  ``y_next`` from its ``exact_predictive`` through the engine.
- ``enumeration``: the exact posterior over the latent grid
  (`toolkit.enumeration.enumerate_posterior`), draws of grid values.
- ``mcmc``: the engine's NUTS draws (`toolkit.mcmc`) at position n + 1, every
  simulation a cell of one vectorised run, thinned evenly within each chain
  to L draws so that autocorrelation does not bend the ranks.

``engine_prior`` runs the engine for another prior than the one simulated
from (a wrong prior scale, say): the check must then fail.

>>> import jax, priors
>>> sbc = simulation_based_calibration(priors.get("beta_bernoulli"), engine="closed_form", num_simulations=64,
...                                    length=8, num_draws=31, key=jax.random.key(0))
>>> sorted(sbc["sbc_quantity"].values.tolist())
['p', 'y_next']
"""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import jax
import numpy as np
import xarray as xr

from .bayes import ENGINES, bayes_predictor, select_engine
from .calibration import fractional_rank, randomized_pit, uniformity_test
from .dims import POSITION, SBC_QUANTITY, SIMULATION
from .enumeration import enumerate_posterior
from .episodes import Episodes
from .errors import ModelError, UnknownNameError
from .prior import Prior

NEXT = "y_next"  # the held-out item's PIT: the engine's predictive, checked like a latent
ALPHA = 0.01  # the check fails when a Bonferroni-adjusted p-value is below this


def _thin(draws: np.ndarray, num_draws: int) -> np.ndarray:
    """(chain, draw, ...) -> (chains · k draws, ...): k = ceil(L / chains) draws evenly spaced in each chain."""
    chains, total = draws.shape[:2]
    per_chain = max(1, -(-num_draws // chains))
    if per_chain > total:
        raise ModelError(f"SBC asks for {num_draws} draws but MCMC keeps {chains} x {total}; raise num_samples")
    index = np.linspace(0, total - 1, per_chain).round().astype(np.int64)
    return draws[:, index].reshape((chains * per_chain,) + draws.shape[2:])


def _require_posterior(prior: Prior) -> None:
    if prior.exact_posterior is None:
        raise ModelError(
            f"prior {prior.name!r} supplies no exact_posterior, so SBC of its closed-form engine has no posterior "
            "draws; give Prior(exact_posterior=...) its conjugate posterior, or check engine='enumeration' or 'mcmc'"
        )


def _closed_form_draws(prior: Prior, context: Episodes, num_draws: int, key) -> dict[str, np.ndarray]:
    _require_posterior(prior)
    out = {}
    for i, (name, law) in enumerate(sorted(prior.exact_posterior(context).items())):
        draws = np.asarray(law.sample(jax.random.fold_in(key, i), (num_draws,)))  # (draw, simulation, ...)
        out[name] = np.moveaxis(draws, 0, 1)
    return out


def _enumeration_draws(prior: Prior, context: Episodes, num_draws: int, key, max_support) -> dict[str, np.ndarray]:
    grid, log_w = enumerate_posterior(prior, context, max_support=max_support)
    index = np.asarray(jax.random.categorical(key, np.nan_to_num(log_w, nan=0.0), shape=(num_draws, len(log_w))))
    values = grid.values(index.T.reshape(-1))  # simulation-major
    return {n: v.reshape((len(log_w), num_draws) + v.shape[1:]) for n, v in values.items()}


def _quantities(values: dict[str, np.ndarray], lead: int) -> dict[str, np.ndarray]:
    """{site: (lead..., *shape)} -> {"site" or "site[i,j]": (lead...)}: one entry per scalar component."""
    out = {}
    for name in sorted(values):
        value = np.asarray(values[name], dtype=np.float64)
        shape = value.shape[lead:]
        for idx in itertools.product(*(range(s) for s in shape)):
            label = name if not shape else f"{name}[{','.join(map(str, idx))}]"
            out[label] = value[(Ellipsis, *idx)] if shape else value
    return out


def _next_pit(prior: Prior, prediction: xr.Dataset, episodes: Episodes, rng: np.random.Generator) -> np.ndarray | None:
    """PIT of y_{n+1} under the engine's predictive at position n + 1; None where the engine has no CDF there."""
    last = prediction.isel({POSITION: -1})
    y = np.asarray(episodes.y[:, -1], dtype=np.float64)
    if episodes.mask is not None:
        y = np.where(episodes.mask[:, -1], y, np.nan)
    if prior.data_kind.finite_outcomes:
        return randomized_pit(last["log_prob"].values, y, axis=-1, rng=rng)
    if "pit" not in last:
        return None
    return np.where(np.isnan(y), np.nan, last["pit"].values)


def simulation_based_calibration(
    prior: Prior,
    *,
    engine: str = "auto",
    num_simulations: int = 500,
    length: int = 10,
    num_draws: int = 99,
    key,
    engine_prior: Prior | None = None,
    num_points: int | None = None,
    alpha: float = ALPHA,
    max_support: int = 10**7,
    **mcmc_options: Any,
) -> xr.Dataset:
    """SBC of one Bayes engine on ``prior``: ranks, uniformity p-values and the verdict.

    Parameters
    ----------
    prior : Prior
        The prior the latents and data are simulated from.
    engine : {"auto", "closed_form", "enumeration", "mcmc"}
        The engine checked; ``"auto"`` the one `bayes_predictor` picks for ``engine_prior``.
    num_simulations : int
        N, the ranks per quantity.
    length : int
        n, the items each posterior conditions on (episodes have n + 1; the last is ``y_next``).
    num_draws : int
        L, posterior draws per simulation (MCMC: rounded up to a multiple of the chains).
    key : jax.random key
        Simulation i's data come from ``prior.sample(fold_in(key, 0), ...)``; the draws from
        ``fold_in(key, 1)``; tie breaks from a numpy Generator seeded by ``fold_in(key, 2)``.
    engine_prior : Prior, optional
        The prior the engine assumes (default ``prior``); another one makes a deliberately wrong engine.
    num_points : int, optional
        K of the ECDF test (default min(N, 100)).
    alpha : float
        Level of the verdict after the Bonferroni correction.
    max_support : int
        Largest joint latent support enumeration accepts.
    **mcmc_options
        `toolkit.mcmc.MCMCConfig` fields (``num_warmup``, ``num_samples``, ``num_chains``, ``dense_mass``, ...)
        and ``progress``, for ``engine="mcmc"``.

    Returns
    -------
    xr.Dataset
        ``sbc_rank (simulation, sbc_quantity)`` (fractional ranks; for ``y_next`` the PIT),
        ``sbc_truth (simulation, sbc_quantity)`` (the simulated values; NaN for ``y_next``),
        ``sbc_statistic``, ``sbc_pvalue`` and ``sbc_pvalue_adjusted`` (``min(1, m·p)``, m quantities)
        over ``sbc_quantity``, whose coordinate ``sbc_site`` names the latent site. ``attrs``: the engine,
        both priors, N, n, L, ``alpha``, ``passed``, the wall time and, for MCMC, its diagnostics.

    Raises
    ------
    ModelError
        The engine does not apply to ``engine_prior`` (e.g. no ``exact_posterior`` for ``closed_form``).
    """
    if engine not in ENGINES:
        raise UnknownNameError("engine", str(engine), ENGINES)
    if num_simulations < 2 or length < 0 or num_draws < 1:
        raise ModelError(f"SBC needs num_simulations >= 2, length >= 0 and num_draws >= 1, got "
                         f"{num_simulations}, {length} and {num_draws}")
    engine_prior = prior if engine_prior is None else engine_prior
    if engine_prior.kind != prior.kind:
        raise ModelError(f"engine_prior is a {engine_prior.kind} prior but {prior.name!r} is {prior.kind}")
    engine = select_engine(engine_prior, max_support=max_support) if engine == "auto" else engine
    if engine == "closed_form":
        _require_posterior(engine_prior)  # before anything runs
    start = time.perf_counter()
    episodes = prior.sample(jax.random.fold_in(key, 0), num_simulations, length + 1, jit=False)  # drawn once
    context = Episodes(y=episodes.y[:, :length], x=None if episodes.x is None else episodes.x[:, :length],
                       mask=None if episodes.mask is None else episodes.mask[:, :length])
    post_key = jax.random.fold_in(key, 1)
    rng = np.random.default_rng(np.asarray(jax.random.key_data(jax.random.fold_in(key, 2))).ravel().tolist())
    attrs: dict[str, Any] = {}
    if engine == "mcmc":
        options = {"progress": False, **mcmc_options, "positions": (length + 1,)}
        predictor = bayes_predictor(engine_prior, engine="mcmc", key=post_key, **options)
        prediction, idata = predictor.run(episodes)
        post = idata.posterior.sel({POSITION: length + 1})
        draws = {}
        for name in engine_prior.latent_sites():
            if name in post:  # (chain, draw, simulation, ...) -> (simulation, draw, ...)
                draws[name] = np.moveaxis(_thin(post[name].values, num_draws), 0, 1)
        diag = prediction.isel({POSITION: length})
        attrs.update(max_r_hat=float(np.nanmax(diag["r_hat"])) if np.any(np.isfinite(diag["r_hat"])) else np.nan,
                     min_ess_bulk=float(np.nanmin(diag["ess_bulk"])) if np.any(np.isfinite(diag["ess_bulk"])) else np.nan,
                     divergences=int(np.nansum(diag["divergences"])),
                     mcmc=json.dumps({k: v for k, v in predictor.describe().items() if k not in ("prior", "reason")}))
    else:
        predictor = bayes_predictor(engine_prior, engine=engine, max_support=max_support)
        prediction = predictor.predict(episodes)
        if engine == "closed_form":
            draws = _closed_form_draws(engine_prior, context, num_draws, post_key)
        else:
            draws = _enumeration_draws(engine_prior, context, num_draws, post_key, max_support)

    truth = _quantities({n: v for n, v in episodes.latents.items() if n in draws}, 1)
    drawn = _quantities(draws, 2)
    ranks = {q: fractional_rank(drawn[q], truth[q], axis=1, rng=rng) for q in truth}
    sites = {q: q.split("[")[0] for q in ranks}
    pit = _next_pit(prior, prediction, episodes, rng)
    if pit is not None:
        ranks[NEXT], sites[NEXT] = pit, NEXT
    names = list(ranks)
    if not names:
        raise ModelError(f"SBC of {engine} on {engine_prior.name!r}: no latent draws and no predictive CDF to check")
    rank = np.stack([ranks[q] for q in names], axis=1)
    test = uniformity_test(rank, axis=0, num_points=num_points)
    adjusted = np.minimum(1.0, test.pvalue * len(names))
    values = np.stack([truth.get(q, np.full(num_simulations, np.nan)) for q in names], axis=1)
    ds = xr.Dataset(
        {
            "sbc_rank": ((SIMULATION, SBC_QUANTITY), rank),
            "sbc_truth": ((SIMULATION, SBC_QUANTITY), values),
            "sbc_statistic": ((SBC_QUANTITY,), np.atleast_1d(test.statistic)),
            "sbc_pvalue": ((SBC_QUANTITY,), np.atleast_1d(test.pvalue)),
            "sbc_pvalue_adjusted": ((SBC_QUANTITY,), np.atleast_1d(adjusted)),
        },
        coords={SIMULATION: np.arange(num_simulations), SBC_QUANTITY: names,
                "sbc_site": (SBC_QUANTITY, [sites[q] for q in names])},
    )
    ds["sbc_rank"].attrs = {"long_name": "fractional rank of the true value among the posterior draws "
                                         "(y_next: PIT of the held-out item); Uniform(0, 1) if the engine is right"}
    ds["sbc_pvalue_adjusted"].attrs = {"long_name": "ECDF uniformity p-value times the number of quantities (max 1)"}
    ds.attrs = {
        "engine": engine,
        "prior": json.dumps(prior.describe()),
        "engine_prior": json.dumps(engine_prior.describe()),
        "num_simulations": int(num_simulations),
        "context_length": int(length),
        "num_draws": int(drawn[next(iter(drawn))].shape[1]) if drawn else 0,
        "alpha": float(alpha),
        "passed": bool(np.all(adjusted >= alpha)),
        "wall_time_s": time.perf_counter() - start,
        **attrs,
    }
    return ds


__all__ = ["simulation_based_calibration", "NEXT", "ALPHA"]
