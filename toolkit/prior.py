"""`Prior`: a NumPyro model under the prior convention, plus a little metadata.

The convention (DESIGN.md, "Priors"): the model takes ``length`` and keyword
observations ``y=None`` (and ``x=None`` for regression); the predicted site is
``y`` and the regression inputs are ``x``, both inside
``numpyro.plate("position", length)``; every other site is a latent.
"""

from __future__ import annotations

import inspect
import json
from functools import lru_cache
from typing import Any, Callable, Literal

import jax
import numpy as np
from numpyro import handlers

from .dims import POSITION_PLATE, X_SITE, Y_SITE
from .episodes import Episodes
from .errors import ModelError, UnknownNameError
from .kinds import get_kind
from .validation import CONVENTION, SCAN_TAG, SiteInfo, check_kind, check_sites, model_trace, site_table, where

Kind = Literal["tokens", "regression"]

class Prior:
    """A prior over sequences: a NumPyro model plus what the toolkit needs to know about it.

    Parameters
    ----------
    model : callable
        ``model(length, y=None)`` for tokens, ``model(length, x=None, y=None)``
        for regression, following the prior convention.
    kind : {"tokens", "regression"}
        Integer outcomes in ``[0, V)`` or real outcomes with real inputs.
    outcomes : sequence of str, optional
        Labels of the V token outcomes (tokens only; default ``"0".."V-1"``
        read from the model's support).
    x_dim : int, optional
        Number of regression features (regression only; read from the model
        when omitted).
    exact_predictive : callable, optional
        Closed form ``exact_predictive(episodes) -> numpyro Distribution`` with
        batch shape (episode, position): the law of ``y_t`` given ``y_<t``
        (and ``x_<=t``). Used by the ``closed_form`` engine.
    exact_posterior : callable, optional
        Closed form ``exact_posterior(episodes) -> {site: numpyro Distribution}``
        with batch shape (episode,): the marginal posterior of each global
        latent given every observed item of the episode (y and x; padding
        left out). Simulation-based calibration of the ``closed_form`` engine
        draws from it (`toolkit.sbc`).
    eos : int, optional
        Token that ends a sequence; positions after the first EOS are padding
        and get ``mask = False``.
    name, params : str, dict, optional
        Registry name and parameters, recorded as provenance.
    metadata : dict, optional
        Anything else worth recording (e.g. a truncated probability mass).

    Examples
    --------
    >>> import numpyro, numpyro.distributions as dist
    >>> def model(length, y=None):
    ...     p = numpyro.sample("p", dist.Beta(1.0, 1.0))
    ...     with numpyro.plate("position", length):
    ...         numpyro.sample("y", dist.Bernoulli(p), obs=y)
    >>> prior = Prior(model, kind="tokens", outcomes=("H", "T"))
    """

    def __init__(
        self,
        model: Callable[..., Any],
        *,
        kind: Kind,
        outcomes: tuple[str, ...] | None = None,
        x_dim: int | None = None,
        exact_predictive: Callable[[Episodes], Any] | None = None,
        exact_posterior: Callable[[Episodes], dict[str, Any]] | None = None,
        eos: int | None = None,
        name: str | None = None,
        params: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ):
        try:
            data_kind = get_kind(kind)
        except UnknownNameError:
            raise ModelError(f"Prior kind must be 'tokens' or 'regression', got {kind!r}") from None
        if not callable(model):
            raise ModelError(f"Prior model must be a callable NumPyro model, got {type(model).__name__}; {CONVENTION}")
        if not _call_signature_ok(model):
            raise ModelError(f"the model does not accept the keyword 'y'; {CONVENTION}")
        self.model = model
        self.kind: Kind = data_kind.name
        self.data_kind = data_kind  # what differs between token and regression data (toolkit.kinds)
        self.exact_predictive = exact_predictive
        self.exact_posterior = exact_posterior
        self.eos = eos
        self.name = name or getattr(model, "__name__", "model")
        self.params = dict(params or {})
        self.metadata = dict(metadata or {})
        self.outcomes, self.x_dim = data_kind.data_shape(self.sites(), outcomes=outcomes, x_dim=x_dim)
        # y of the declared kind's shape and dtype; finite log-densities are checked by `bayes_predictor`
        check_kind(self, model_trace(self, 3), 3)

    # ------------------------------------------------------------------ structure
    @property
    def num_outcomes(self) -> int:
        if self.outcomes is None:
            raise AttributeError("regression priors have no finite outcome set")
        return len(self.outcomes)

    def trace(self, key, length: int, *, y=None, x=None) -> dict:
        """One NumPyro trace of the model (optionally conditioned on y and x)."""
        try:
            return handlers.trace(handlers.seed(self.model, key)).get_trace(
                length, **self.data_kind.model_kwargs(y=y, x=x)
            )
        except TypeError as exc:
            raise ModelError(f"calling the model failed ({exc}){where(self.model, exc)}; {CONVENTION}") from None

    def sites(self, length: int = 3) -> dict[str, SiteInfo]:
        """Sample sites of one trace at a small length, checked against the convention."""
        return _site_table(self, length)

    def latent_sites(self, length: int = 3) -> dict[str, SiteInfo]:
        """Latent sites outside the position plate (the global latents)."""
        return {
            n: s for n, s in self.sites(length).items() if n not in (Y_SITE, X_SITE) and not s.in_position_plate
        }

    def local_latent_sites(self, length: int = 3) -> dict[str, SiteInfo]:
        """Latent sites inside the position plate (e.g. an HMM's hidden states)."""
        return {n: s for n, s in self.sites(length).items() if n not in (Y_SITE, X_SITE) and s.in_position_plate}

    # ------------------------------------------------------------------ sampling
    def sample(self, key, num_episodes: int, length: int, *, jit: bool = True) -> Episodes:
        """Draw ``num_episodes`` sequences of ``length`` in one jitted, vmapped trace.

        Parameters
        ----------
        key : jax.random key
        num_episodes, length : int
        jit : bool
            Compile the vmapped trace (once per model and length: the way for
            training, which samples thousands of batches). ``False`` runs the
            same vmapped trace op by op, which skips XLA compiling a program
            that is used once (evaluation episodes of a scenario's source):
            seconds saved per prior, the same random draws.

        Returns
        -------
        Episodes
            ``y (episode, position)``, ``x (episode, position, feature)`` for
            regression, the true global ``latents`` and, when the prior has an
            EOS token, the ``mask``.
        """
        if num_episodes < 1 or length < 1:
            raise ModelError(f"num_episodes and length must be positive, got {num_episodes} and {length}")
        sampler = _sampler(self, int(length)) if jit else jax.vmap(_sample_one(self.model, self.kind, int(length)))
        out = sampler(jax.random.split(key, int(num_episodes)))
        out = jax.device_get(out)
        y = np.asarray(out.pop(Y_SITE))
        x = out.pop(X_SITE, None)
        y = self.data_kind.cast_y(y)
        mask = None
        if self.eos is not None:
            ended = np.cumsum(y == self.eos, axis=1) - (y == self.eos)
            mask = ended == 0
        return Episodes(y=y, x=None if x is None else np.asarray(x), latents=out, mask=mask)

    def describe(self) -> dict[str, Any]:
        """Provenance: name, kind, parameters (JSON-safe)."""
        return {"name": self.name, "kind": self.kind, "params": _jsonable(self.params), **_jsonable(self.metadata)}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"Prior({self.name}({params}), kind={self.kind!r})"


def _jsonable(value):
    return json.loads(json.dumps(value, default=lambda v: np.asarray(v).tolist()))


def _site_table(prior: Prior, length: int) -> dict[str, SiteInfo]:
    return check_sites(site_table(model_trace(prior, length), length), length)


def _sample_one(model, kind: str, length: int):
    """``key -> {site: value}``: one episode's y, x and global latents from one trace."""

    def one(key):
        kwargs = get_kind(kind).model_kwargs()
        tr = handlers.trace(handlers.seed(model, key)).get_trace(length, **kwargs)
        out = {}
        for name, site in tr.items():
            if site["type"] != "sample":
                continue
            # sites of a `scan` over the positions (an HMM's states) are local, like those in the plate
            in_plate = any(f.name == POSITION_PLATE for f in site["cond_indep_stack"]) or SCAN_TAG in site["infer"]
            if name in (Y_SITE, X_SITE) or not in_plate:
                out[name] = site["value"]
        return out

    return one


@lru_cache(maxsize=64)
def _sampler_cached(model, kind: str, length: int):
    return jax.jit(jax.vmap(_sample_one(model, kind, length)))


def _sampler(prior: Prior, length: int):
    return _sampler_cached(prior.model, prior.kind, length)


def _call_signature_ok(model) -> bool:
    """True when ``model`` accepts ``length`` positionally and ``y`` by keyword."""
    try:
        sig = inspect.signature(model)
    except (TypeError, ValueError):
        return True
    params = sig.parameters
    return "y" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


__all__ = ["Prior", "SiteInfo", "Kind", "CONVENTION"]
