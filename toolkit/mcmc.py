"""The MCMC engine: NUTS at chosen positions, vectorised over episodes, positions and chains.

Each cell (episode, position t) conditions the prior on its context y_<t by
masking the likelihood of y at positions ≥ t (`ObservationMask`), so every
cell has the same array shapes. Each (cell, chain) pair is one lane of a
`jax.vmap` over NumPyro's NUTS kernel (``numpyro.infer.hmc.hmc``, Hoffman &
Gelman 2014, with NumPyro's warmup adaptation); one compiled function advances
every lane by a block of steps, and the progress bar ticks between blocks.
Discrete latents are summed out of the potential by NumPyro's enumeration
(funsor), as ``MCMC(NUTS(model))`` would.

The predictive of y_t is Rao–Blackwellised: the mean over draws θ_s of
p(y_t | θ_s, y_<t), with the discrete latents marginalised exactly given θ_s
(global ones by enumerating their support, local ones — an HMM's states — by
NumPyro's enumeration). A prior without continuous latents needs no sampling
at all: its "draws" are exact, and the engine reduces to enumeration.

Every run keeps an ArviZ ``InferenceData`` (posterior, sample_stats,
log_likelihood) with named ``episode`` and ``position`` dims, built by
``az.from_dict``; ``r_hat``, ``ess_bulk``, ``ess_tail`` (ArviZ) and
``divergences`` per cell go into the prediction Dataset, with ``mcse``, the
Monte-Carlo standard error of the predictive (ArviZ's ``az.mcse`` of the
mean over draws: for tokens the largest over outcomes of P(y_t = v), for
real y the predictive mean), so a difference from an exact answer can be
read in MCSE units. Cells with
r_hat > 1.01, ess_bulk < 400 or any divergence are flagged (`unconverged`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jax.scipy.special import logsumexp
from numpyro import handlers
from numpyro.infer.hmc import hmc
from numpyro.infer.util import initialize_model

from .dims import EPISODE, OUTCOME, POSITION, X_SITE, Y_SITE
from .enumeration import LatentGrid, ObservationMask, log_joint_fn
from .episodes import Episodes
from .errors import ModelError
from .predictive import Prediction, Predictor
from .prior import Prior
from .validation import model_trace

# Convergence thresholds (Vehtari et al. 2021, "Rank-normalization, folding, and localization").
R_HAT_MAX = 1.01
ESS_BULK_MIN = 400
DIAGNOSTICS = ("r_hat", "ess_bulk", "ess_tail", "divergences", "mcse")


@dataclass(frozen=True)
class MCMCConfig:
    """Settings of the MCMC engine; ``bayes_predictor(prior, engine="mcmc", **settings)`` overrides them."""

    num_warmup: int = 500  # adaptation steps per chain (step size, diagonal mass matrix)
    num_samples: int = 500  # kept draws per chain
    num_chains: int = 4  # independent chains per cell, at least 4: r_hat needs several
    positions: tuple[int, ...] | None = None  # 1-based positions to run; None: context lengths 0, 1, 2, 4, ..., T-1
    max_episodes: int | None = None  # run the first max_episodes episodes only (the rest stay NaN); None: all
    target_accept_prob: float = 0.8  # NUTS step-size adaptation target
    max_tree_depth: int = 10  # NUTS doubling limit
    dense_mass: bool = False  # adapt a dense mass matrix instead of a diagonal one
    lanes_per_batch: int = 4096  # (cell, chain) lanes run together; more lanes run in batches of this size
    steps_per_call: int = 100  # NUTS steps per compiled call; the progress bar ticks between calls
    draws_per_batch: int = 64  # draws evaluated together by the predictive (bounds its memory)
    max_discrete_support: int = 4096  # largest joint support of global discrete latents enumerated per draw

    def __post_init__(self):
        for name in ("num_warmup", "num_samples", "lanes_per_batch", "steps_per_call", "draws_per_batch"):
            if getattr(self, name) < 1:
                raise ModelError(f"MCMC setting {name} must be positive, got {getattr(self, name)}")
        if self.num_chains < 4:
            raise ModelError(
                f"MCMC runs at least 4 chains per cell (r_hat needs several; Vehtari et al. 2021), got num_chains={self.num_chains}"
            )


def default_positions(length: int) -> tuple[int, ...]:
    """Positions whose context lengths are 0, 1, 2, 4, 8, ... and T − 1 (the last position)."""
    contexts = {0, length - 1} | {2**i for i in range(int(math.log2(max(length, 1))) + 1) if 2**i < length}
    return tuple(sorted(c + 1 for c in contexts))


def unconverged(ds: xr.Dataset | xr.DataArray, *, r_hat_max: float = R_HAT_MAX, ess_min: float = ESS_BULK_MIN):
    """True on cells whose MCMC diagnostics fail: r_hat > 1.01, ess_bulk < 400 or any divergence.

    ``ds`` holds ``r_hat``, ``ess_bulk`` and ``divergences`` (any dims);
    cells without MCMC (NaN diagnostics) are not flagged.
    """
    return (ds["r_hat"] > r_hat_max) | (ds["ess_bulk"] < ess_min) | (ds["divergences"] > 0)


class _Structure:
    """What the engine needs to know about a prior's latents."""

    def __init__(self, prior: Prior, max_discrete_support: int):
        sites = prior.sites(3)
        latents = {n: s for n, s in sites.items() if n not in (Y_SITE, X_SITE)}
        self.continuous = sorted(n for n, s in latents.items() if not s.is_discrete)
        self.local_discrete = sorted(n for n, s in latents.items() if s.is_discrete and s.in_position_plate)
        global_discrete = {n: s for n, s in latents.items() if s.is_discrete and not s.in_position_plate}
        for name, info in latents.items():
            if info.is_discrete and not info.has_enumerate_support:
                raise ModelError(
                    f"latent site {name!r} is discrete without a finite support ({name} cannot be sampled by NUTS "
                    "nor summed out by enumeration); give it a finite support (e.g. Categorical) or make it continuous"
                )
        if self.local_discrete and not prior.data_kind.finite_outcomes:
            raise ModelError(
                f"the MCMC engine sums local discrete latents {self.local_discrete} out only for tokens priors"
            )
        tr = model_trace(prior, 3)
        names, sizes, supports = [], [], {}
        for name, info in global_discrete.items():
            support = np.asarray(tr[name]["fn"].enumerate_support(expand=False))
            names.append(name)
            sizes.append(support.shape[0])
            supports[name] = support.reshape((support.shape[0],) + info.shape)
        self.grid = LatentGrid(tuple(names), tuple(sizes), supports)
        if self.grid.size > max_discrete_support and not self.local_discrete:
            raise ModelError(
                f"the global discrete latents {list(names)} have {self.grid.size} joint values, above "
                f"max_discrete_support={max_discrete_support}; raise it or give the prior fewer discrete values"
            )
        # local discrete latents: every discrete latent is summed out by funsor, none drawn
        self.enumerated = bool(self.local_discrete)
        self.drawn_discrete = [] if self.enumerated else list(names)


class MCMCPredictor(Predictor):
    """Bayes posterior predictive by NUTS, one vectorised run per call of `predict`.

    Parameters
    ----------
    prior : Prior
    key : jax.random key, optional
        Randomness of the chains (default ``jax.random.key(0)``).
    name : str
    progress : bool
        Show a progress bar over NUTS steps.
    **settings
        Fields of `MCMCConfig`.

    Attributes
    ----------
    engine : str
        ``"mcmc"``.

    `run` returns the draws beside the predictions, as an ArviZ InferenceData:
    posterior (continuous latents, draws of the global discrete latents,
    ``predictive_prob`` or ``predictive_mean`` per draw), sample_stats,
    log_likelihood (``y``: log p(y_t | θ_s, y_<t)), dims ``chain, draw,
    episode, position``.
    """

    engine = "mcmc"

    def __init__(self, prior: Prior, *, key=None, name: str = "bayes_mcmc", progress: bool = True, **settings):
        if "positions" in settings and settings["positions"] is not None:
            settings["positions"] = tuple(int(p) for p in settings["positions"])
        try:
            self.config = MCMCConfig(**settings)
        except TypeError as exc:
            known = ", ".join(MCMCConfig.__dataclass_fields__)
            raise ModelError(f"unknown MCMC setting ({exc}); known settings: {known}") from None
        self.prior, self.name, self.progress = prior, name, progress
        self.key = jax.random.key(0) if key is None else key
        self.structure = _Structure(prior, self.config.max_discrete_support)
        self.reason = ""
        self._compiled: dict = {}

    # ------------------------------------------------------------------ public
    def predict(self, episodes: Episodes, *, y_grid: np.ndarray | None = None) -> xr.Dataset:
        """Predictions at the configured positions (NaN elsewhere) plus per-cell diagnostics.

        Returns
        -------
        xr.Dataset
            The prediction variables (episode, position[, outcome | y_grid |
            quantile]) and ``r_hat``, ``ess_bulk``, ``ess_tail``,
            ``divergences``, ``mcse`` (episode, position); positions and
            episodes not run are NaN.
        """
        return self.run(episodes, y_grid=y_grid).dataset

    def run(self, episodes: Episodes, *, y_grid: np.ndarray | None = None) -> Prediction:
        """`predict`'s Dataset and the run's draws as an ArviZ ``InferenceData``."""
        prior, cfg = self.prior, self.config
        prior.data_kind.check_episodes(episodes, outcomes=prior.outcomes)
        length = episodes.length
        positions = cfg.positions or default_positions(length)
        bad = [p for p in positions if not 1 <= p <= length]
        if bad:
            raise ModelError(f"MCMC positions {bad} lie outside 1..{length}")
        num_run = episodes.num_episodes if cfg.max_episodes is None else min(cfg.max_episodes, episodes.num_episodes)
        run = _Run(self, episodes[:num_run], positions, y_grid)
        draws = run.sample()
        stats = run.predictive(draws)
        idata = run.inference_data(draws, stats)
        return Prediction(run.prediction_dataset(stats, draws, idata, episodes), idata)

    def describe(self) -> dict[str, Any]:
        return {
            "engine": "mcmc",
            "algorithm": "NUTS (numpyro), vmapped over (episode, position, chain)",
            "prior": self.prior.describe(),
            "discrete_latents": "enumerated" if self.structure.enumerated or self.structure.grid.names else "none",
            "thresholds": {"r_hat_max": R_HAT_MAX, "ess_bulk_min": ESS_BULK_MIN, "divergences": 0},
            **({"reason": self.reason} if self.reason else {}),
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.config).items()},
        }

    def _cached(self, key, build):
        """Compiled functions reused across calls of `predict` (one compilation per length)."""
        if key not in self._compiled:
            self._compiled[key] = build()
        return self._compiled[key]

class _Run:
    """One call of `MCMCPredictor.predict`: the lanes, the compiled sampler and the predictive."""

    def __init__(self, predictor: MCMCPredictor, episodes: Episodes, positions, y_grid):
        self.p, self.cfg, self.prior, self.s = predictor, predictor.config, predictor.prior, predictor.structure
        self.episodes, self.positions, self.y_grid = episodes, tuple(positions), y_grid
        num_episodes, length = episodes.y.shape
        self.length, self.num_episodes, self.num_positions = length, num_episodes, len(positions)
        chains = self.cfg.num_chains
        # lane = (episode, position, chain), chain fastest
        e = np.repeat(np.arange(num_episodes), self.num_positions * chains)
        t = np.tile(np.repeat(np.asarray(positions) - 1, chains), num_episodes)  # context length = position - 1
        self.lane_episode, self.lane_t = e, t
        data = np.ones(episodes.y.shape, bool) if episodes.mask is None else episodes.mask
        observed = (np.arange(length)[None, :] < t[:, None]) & data[e]
        self.lane_y = jnp.asarray(self.prior.data_kind.cast_y(episodes.y[e]))
        x = episodes.x if episodes.x is not None else np.zeros(episodes.y.shape + (1,))
        if X_SITE in self.prior.sites(3) and len(self.prior.sites(3)[X_SITE].shape) == 1:
            x = x[..., 0]  # the model's x site is (position,): one feature, no feature dim
        self.lane_x = jnp.asarray(np.asarray(x, np.float64)[e])
        self.lane_observed = jnp.asarray(observed)
        self.lane_tj = jnp.asarray(t)
        self.num_lanes = len(e)

    def _batches(self):
        size = min(self.cfg.lanes_per_batch, self.num_lanes)
        for start in range(0, self.num_lanes, size):
            index = np.arange(start, start + size)
            valid = index < self.num_lanes
            yield np.where(valid, index, 0), valid

    # ------------------------------------------------------------------ sampling
    def sample(self) -> dict[str, Any]:
        """NUTS draws of the continuous latents for every lane: dict of (lane, draw, ...) arrays."""
        cfg, s = self.cfg, self.s
        if not s.continuous:
            return {"z": {}, "stats": {}, "valid": np.ones(self.num_lanes, bool)}
        block = min(cfg.steps_per_call, cfg.num_warmup + cfg.num_samples)
        num_blocks = -(-(cfg.num_warmup + cfg.num_samples) // block)
        example = (self.lane_y[0], self.lane_x[0], self.lane_observed[0])
        init, advance, constrain = self.p._cached(("sampler", self.length), lambda: _sampler_fns(
            _cell_model(self.prior, self.length), cfg, block, example))

        base = jax.random.fold_in(self.p.key, 0)
        keys = jax.random.split(base, self.num_lanes)
        zs, stats, valid_all = [], [], []
        from tqdm.auto import tqdm

        batches = list(self._batches())
        bar = tqdm(total=len(batches) * num_blocks * block, desc=f"NUTS {self.num_lanes} lanes", unit="step",
                   disable=not self.p.progress, leave=False)
        with bar:
            for index, valid in batches:
                args = (self.lane_y[index], self.lane_x[index], self.lane_observed[index])
                state, ok = init(keys[index], *args)
                kept_z, kept_stats = [], []
                for b in range(num_blocks):
                    state, out = advance(state, *args)
                    first = b * block
                    keep = np.arange(first, first + block)
                    keep = (keep >= cfg.num_warmup) & (keep < cfg.num_warmup + cfg.num_samples)
                    if keep.any():
                        z, *rest = out
                        kept_z.append(jax.tree.map(lambda a: a[:, keep], z))
                        kept_stats.append([np.asarray(a[:, keep]) for a in rest])
                    bar.update(block)
                z = jax.tree.map(lambda *a: jnp.concatenate(a, axis=1), *kept_z)
                z = constrain(z, *args)
                zs.append(jax.tree.map(lambda a: np.asarray(a)[valid], z))
                stats.append([np.concatenate(parts, axis=1)[valid] for parts in zip(*kept_stats)])
                valid_all.append(np.asarray(ok)[valid])
        z = {n: np.concatenate([part[n] for part in zs]) for n in zs[0]}
        names = ("diverging", "n_steps", "acceptance_rate", "potential_energy", "energy", "step_size")
        stat = {n: np.concatenate([part[i] for part in stats]) for i, n in enumerate(names)}
        return {"z": {n: v for n, v in z.items() if n in s.continuous}, "stats": stat,
                "valid": np.concatenate(valid_all)}

    # ------------------------------------------------------------------ predictive
    def _draw_fn(self):
        """``f(params, key, y, x, observed, t) -> per-draw predictive stats`` for one lane and one draw."""
        prior, s, length = self.prior, self.s, self.length
        tokens = prior.data_kind.finite_outcomes
        grid_values = {}
        if s.grid.names:
            grid_values = {n: jnp.asarray(v) for n, v in s.grid.values(np.arange(s.grid.size)).items()}
        points = jnp.zeros((0,)) if self.y_grid is None else jnp.asarray(self.y_grid, jnp.float64)

        if s.enumerated:  # local discrete latents: funsor sums every discrete latent out
            log_joint = log_joint_fn(prior, length, enumerate_local=True)
            outcomes = jnp.arange(prior.num_outcomes)
            positions = jnp.arange(length)

            def per_draw(params, key, y, x, observed, t):
                at_t = observed | (positions == t)
                lj = jax.vmap(lambda v: log_joint(params, y.at[t].set(v), None, at_t))(outcomes)
                return {"log_prob": lj - logsumexp(lj)}

            return per_draw

        def trace_stats(values, y, x, observed, t):
            model = handlers.substitute(handlers.seed(prior.model, jax.random.key(0)), data=values)
            kwargs = prior.data_kind.model_kwargs(y=y, x=x)
            tr = handlers.trace(model).get_trace(length, **kwargs)
            log_w = 0.0
            for name, site in tr.items():
                if site["type"] != "sample":
                    continue
                lp = site["fn"].log_prob(site["value"])
                if name == Y_SITE:
                    lp = jnp.where(observed, lp, 0.0)
                if site.get("scale") is not None:
                    lp = lp * site["scale"]
                log_w = log_w + jnp.sum(lp)
            fn = tr[Y_SITE]["fn"]
            if tokens:
                table = fn.log_prob(jnp.arange(prior.num_outcomes)[:, None])  # (outcome, position)
                return log_w, {"log_prob": jnp.broadcast_to(table, (prior.num_outcomes, length))[:, t]}
            out = {
                "log_score": jnp.broadcast_to(fn.log_prob(y), (length,))[t],
                "mean": jnp.broadcast_to(fn.mean, (length,))[t],
                "second_moment": jnp.broadcast_to(fn.variance + fn.mean**2, (length,))[t],
            }
            try:  # the PIT F(y_t | θ_s): its mean over draws is the predictive CDF at the realised y_t
                out["pit"] = jnp.broadcast_to(fn.cdf(y), (length,))[t]
            except NotImplementedError:
                pass
            if points.shape[0]:
                out["grid_log_density"] = jnp.broadcast_to(fn.log_prob(points[:, None]), (points.shape[0], length))[:, t]
                out["grid_cdf"] = jnp.broadcast_to(fn.cdf(points[:, None]), (points.shape[0], length))[:, t]
            return log_w, out

        def per_draw(params, key, y, x, observed, t):
            if not s.grid.names:
                return trace_stats(params, y, x, observed, t)[1]
            log_w, out = jax.vmap(lambda zk: trace_stats({**params, **zk}, y, x, observed, t))(grid_values)
            norm = logsumexp(log_w)
            w = jnp.exp(log_w - norm)
            mixed = {}
            for name, value in out.items():
                if name in ("log_prob", "log_score", "grid_log_density"):
                    shape = (-1,) + (1,) * (value.ndim - 1)
                    mixed[name] = logsumexp(log_w.reshape(shape) + value, axis=0) - norm
                else:
                    mixed[name] = jnp.tensordot(w, value, axes=1)
            index = jax.random.categorical(key, log_w)
            for name in s.drawn_discrete:
                mixed[f"latent:{name}"] = grid_values[name][index]
            return mixed

        return per_draw

    def predictive(self, draws: dict[str, Any]) -> dict[str, np.ndarray]:
        """Per-draw predictive statistics for every lane: dict of (lane, draw, ...) arrays."""
        cfg = self.cfg
        per_draw = self._draw_fn()
        num_draws = cfg.num_samples
        exact = not self.s.continuous
        # without continuous latents every draw is the same: compute one, sample discrete draws from it
        computed = 1 if exact and self.s.enumerated else num_draws
        z = draws["z"]

        def lane_fn(params, key, y, x, observed, t):
            keys = jax.random.split(key, computed)
            if exact:
                return jax.lax.map(lambda k: per_draw({}, k, y, x, observed, t), keys,
                                   batch_size=min(cfg.draws_per_batch, computed))
            return jax.lax.map(lambda a: per_draw(a[0], a[1], y, x, observed, t), (params, keys),
                               batch_size=min(cfg.draws_per_batch, computed))

        grid_key = None if self.y_grid is None else np.asarray(self.y_grid, np.float64).tobytes()
        fn = self.p._cached(("predictive", self.length, grid_key), lambda: jax.jit(jax.vmap(lane_fn)))
        base = jax.random.fold_in(self.p.key, 1)
        keys = jax.random.split(base, self.num_lanes)
        lanes = max(1, min(self.num_lanes, (2**22) // max(computed * max(self.length, 8), 1)))
        parts = []
        for start in range(0, self.num_lanes, lanes):
            index = np.arange(start, start + lanes)
            valid = index < self.num_lanes
            index = np.where(valid, index, 0)
            params = {n: jnp.asarray(v[index]) for n, v in z.items()}
            out = fn(params, keys[index], self.lane_y[index], self.lane_x[index], self.lane_observed[index],
                     self.lane_tj[index])
            parts.append({n: np.asarray(v)[valid] for n, v in out.items()})
        stats = {n: np.concatenate([p[n] for p in parts]) for n in parts[0]}
        if computed != num_draws:
            stats = {n: np.repeat(v, num_draws, axis=1) for n, v in stats.items()}
        return stats

    # ------------------------------------------------------------------ results
    def _cells(self, lane_array: np.ndarray) -> np.ndarray:
        """(lane, draw, ...) -> (chain, draw, episode, position, ...)."""
        shape = (self.num_episodes, self.num_positions, self.cfg.num_chains) + lane_array.shape[1:]
        cells = lane_array.reshape(shape)
        return np.moveaxis(np.moveaxis(cells, 2, 0), 3, 1)

    def inference_data(self, draws, stats) -> az.InferenceData:
        prior = self.prior
        tokens = prior.data_kind.finite_outcomes
        posterior, dims = {}, {}
        for name, value in draws["z"].items():
            posterior[name] = self._cells(value)
            dims[name] = [EPISODE, POSITION] + [f"{name}_dim_{i}" for i in range(value.ndim - 2)]
        for key, value in stats.items():
            if key.startswith("latent:"):
                name = key.split(":", 1)[1]
                posterior[name] = self._cells(value)
                dims[name] = [EPISODE, POSITION] + [f"{name}_dim_{i}" for i in range(value.ndim - 2)]
        y_cells = self.episodes.y[self.lane_episode, self.lane_t]  # realised y_t of each lane
        if tokens:
            posterior["predictive_prob"] = self._cells(np.exp(stats["log_prob"]))
            dims["predictive_prob"] = [EPISODE, POSITION, OUTCOME]
            loglik = np.take_along_axis(stats["log_prob"], y_cells.astype(np.int64)[:, None, None], axis=-1)[..., 0]
        else:
            posterior["predictive_mean"] = self._cells(stats["mean"])
            dims["predictive_mean"] = [EPISODE, POSITION]
            loglik = stats["log_score"]
        sample_stats = {}
        for name, value in draws["stats"].items():
            sample_stats[name] = self._cells(value)
            dims[name] = [EPISODE, POSITION]
        if not sample_stats:  # exact draws: nothing diverged
            sample_stats["diverging"] = np.zeros(posterior["predictive_prob" if tokens else "predictive_mean"].shape[:4], bool)
            dims["diverging"] = [EPISODE, POSITION]
        dims["y"] = [EPISODE, POSITION]
        coords = {EPISODE: np.arange(self.num_episodes), POSITION: np.asarray(self.positions)}
        if tokens:
            coords[OUTCOME] = list(prior.outcomes)
        attrs = {
            "inference_library": "numpyro",
            "algorithm": "NUTS" if self.s.continuous else "exact (no continuous latents)",
            "prior": prior.name,
            "num_warmup": self.cfg.num_warmup,
            "num_chains": self.cfg.num_chains,
            "r_hat_max": R_HAT_MAX,
            "ess_bulk_min": ESS_BULK_MIN,
        }
        return az.from_dict(
            posterior=posterior,
            sample_stats=sample_stats,
            log_likelihood={"y": self._cells(loglik)},
            coords=coords,
            dims=dims,
            attrs=attrs,
            posterior_attrs=attrs,
        )

    def diagnostics(self, idata: az.InferenceData) -> dict[str, np.ndarray]:
        """Per-cell r_hat (max over variables), ess_bulk and ess_tail (min), divergences (count) and the
        MCSE of the predictive (max over outcomes of P(y_t = v); for real y, of the predictive mean)."""
        post = idata.posterior
        predictive = "predictive_prob" if "predictive_prob" in post else "predictive_mean"
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            r_hat = _reduce(az.rhat(post, method="rank"), np.fmax)
            ess_bulk = _reduce(az.ess(post, method="bulk"), np.fmin)
            ess_tail = _reduce(az.ess(post, method="tail"), np.fmin)
            mcse = _reduce(az.mcse(post[[predictive]], method="mean"), np.fmax)
        divergences = idata.sample_stats["diverging"].sum(("chain", "draw")).values.astype(np.float64)
        return {"r_hat": r_hat, "ess_bulk": ess_bulk, "ess_tail": ess_tail, "divergences": divergences,
                "mcse": mcse}

    def prediction_dataset(self, stats, draws, idata, episodes: Episodes) -> xr.Dataset:
        """The full (episode, position) prediction Dataset; cells not run, or whose chains found no
        valid start (a context of probability zero), are NaN."""
        prior = self.prior
        num_episodes, length = episodes.y.shape
        pos_index = np.asarray(self.positions) - 1
        run_e = slice(0, self.num_episodes)
        lane_valid = draws["valid"].reshape(self.num_episodes, self.num_positions, self.cfg.num_chains)
        invalid = ~lane_valid.all(axis=-1)

        def mean_over_draws(value, log=False):
            cells = self._cells(value)  # (chain, draw, episode, position, ...)
            flat = cells.reshape((-1,) + cells.shape[2:])
            if log:
                return logsumexp(flat, axis=0) - np.log(flat.shape[0])
            return flat.mean(axis=0)

        def full(shape_tail, value):
            out = np.full((num_episodes, length) + shape_tail, np.nan)
            sub = out[run_e]
            sub[:, pos_index] = np.where(invalid.reshape(invalid.shape + (1,) * len(shape_tail)), np.nan, value)
            out[run_e] = sub
            return out

        out = {}
        for name, value in stats.items():  # (lane, draw, ...) -> (episode, position, ...): means over the draws
            if name in ("log_prob", "log_score", "grid_log_density"):
                out[name] = full(value.shape[2:], np.asarray(mean_over_draws(value, log=True)))
            elif name in ("mean", "grid_cdf", "pit"):
                out[name] = full(value.shape[2:], mean_over_draws(value))
        if "second_moment" in stats:
            out["variance"] = full((), mean_over_draws(stats["second_moment"]) - mean_over_draws(stats["mean"]) ** 2)
        ds = prior.data_kind.predictions(out, episodes, outcomes=prior.outcomes, y_grid=self.y_grid)
        if self.s.continuous:
            diagnostics = self.diagnostics(idata)
        else:  # exact draws: no chain to converge, nothing to flag, no Monte-Carlo error
            nan = np.full((self.num_episodes, self.num_positions), np.nan)
            diagnostics = {"r_hat": nan, "ess_bulk": nan, "ess_tail": nan, "divergences": np.zeros_like(nan),
                           "mcse": np.zeros_like(nan)}
        for name, value in diagnostics.items():
            ds[name] = ((EPISODE, POSITION), full((), value))
        ds.attrs["mcmc_positions"] = list(self.positions)
        ds.attrs["mcmc_episodes"] = self.num_episodes
        return ds


def _cell_model(prior: Prior, length: int):
    """The prior conditioned on the positions where ``observed`` (bool, (position,)) is True."""

    def cell_model(y, x, observed):
        kwargs = prior.data_kind.model_kwargs(y=y, x=x)
        ObservationMask(prior.model, observed)(length, **kwargs)

    return cell_model


def _sampler_fns(cell_model, cfg: MCMCConfig, block: int, example):
    """Compiled ``init``, ``advance`` (``block`` NUTS steps) and ``constrain``, each vmapped over lanes."""
    # the potential and postprocess generators, from an abstract trace: nothing is compiled here
    found = {}

    def probe(y, x, observed):
        found["info"] = initialize_model(jax.random.key(0), cell_model, model_args=(y, x, observed), dynamic_args=True)
        return found["info"].param_info

    jax.eval_shape(probe, *example)
    init_kernel, sample_kernel = hmc(potential_fn_gen=found["info"].potential_fn, algo="NUTS")
    postprocess_gen = found["info"].postprocess_fn

    def init_lane(key, y, x, observed):
        k_init, k_kernel = jax.random.split(key)
        lane_info = initialize_model(k_init, cell_model, model_args=(y, x, observed), dynamic_args=True)
        state = init_kernel(
            lane_info.param_info,
            cfg.num_warmup,
            target_accept_prob=cfg.target_accept_prob,
            max_tree_depth=cfg.max_tree_depth,
            dense_mass=cfg.dense_mass,
            trajectory_length=None,
            model_args=(y, x, observed),
            rng_key=k_kernel,
        )
        return state, jnp.isfinite(lane_info.param_info.potential_energy)

    def advance_lane(state, y, x, observed):
        def step(st, _):
            st = sample_kernel(st, model_args=(y, x, observed))
            out = (st.z, st.diverging, st.num_steps, st.accept_prob, st.potential_energy, st.energy,
                   st.adapt_state.step_size)
            return st, out

        return jax.lax.scan(step, state, None, length=block)

    # init_kernel sets the sampler's warmup schedule: trace `init` before `advance`
    init = jax.jit(jax.vmap(init_lane))
    advance = jax.jit(jax.vmap(advance_lane))
    constrain = jax.jit(jax.vmap(jax.vmap(lambda z, y, x, o: postprocess_gen(y, x, o)(z), (0, None, None, None))))
    return init, advance, constrain


def _reduce(diag: xr.Dataset, op) -> np.ndarray:
    """Reduce a per-variable diagnostic Dataset to one (episode, position) array with ``op`` (NaN-aware)."""
    out = None
    for var in diag.data_vars.values():
        other = [d for d in var.dims if d not in (EPISODE, POSITION)]
        values = var.transpose(EPISODE, POSITION, *other).values.reshape(var.sizes[EPISODE], var.sizes[POSITION], -1)
        reduced = op.reduce(values, axis=-1) if values.shape[-1] else np.full(values.shape[:2], np.nan)
        out = reduced if out is None else op(out, reduced)
    return out


__all__ = [
    "MCMCPredictor",
    "MCMCConfig",
    "default_positions",
    "unconverged",
    "R_HAT_MAX",
    "ESS_BULK_MIN",
    "DIAGNOSTICS",
]
