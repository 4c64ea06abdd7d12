"""The prior registry: `register_prior`, `get_prior`, `available_priors`, and loading a user's file.

One prior = one file in ``priors/`` whose factory is decorated with
``@register_prior("name")`` (sbibm keeps one folder per task; a registry
replaces its if/elif ``get_task``). The built-in priors, and those of any
installed package, are found through the ``metabayes.priors`` entry-point
group (``pyproject.toml``), so the core never imports ``priors`` itself. A user's prior can also live in any Python
file or module: ``"path/to/file.py:model"`` or ``"package.module:factory"``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any, Callable

from .errors import ModelError, UnknownNameError
from .prior import Prior

_REGISTRY: dict[str, Callable[..., Prior]] = {}


def register_prior(name: str):
    """Register a factory ``f(**params) -> Prior`` under ``name``.

    Examples
    --------
    >>> @register_prior("my_coin")          # doctest: +SKIP
    ... def my_coin(p=0.5) -> Prior: ...
    """

    def decorate(factory: Callable[..., Prior]):
        _REGISTRY[name] = factory
        factory.prior_name = name
        return factory

    return decorate


def available_priors() -> list[str]:
    """Names of the registered priors, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def get_prior(name: str, **params) -> Prior:
    """Build the registered prior ``name`` with ``params``, or load ``"file.py:obj"`` / ``"module:obj"``.

    Raises
    ------
    UnknownNameError
        ``name`` is neither registered nor a loadable path; the message lists the known names.
    ModelError
        A parameter the factory does not take.
    """
    _load_builtin()
    if name in _REGISTRY:
        return _build(name, _REGISTRY[name], params)
    if ":" in name or name.endswith(".py"):
        return load_prior(name, **params)
    raise UnknownNameError("prior", name, _REGISTRY)


def load_prior(spec: str, *, kind: str | None = None, outcomes=None, x_dim=None, **params) -> Prior:
    """Load a prior from ``"path/to/file.py[:name]"`` or ``"package.module[:name]"``.

    ``name`` may be a registered factory, a function returning a `Prior`, a
    `Prior` object, or a bare NumPyro ``model`` (then ``kind`` is required).
    Without ``:name`` the file must register exactly one prior or define
    ``model``.
    """
    target, _, attr = spec.partition(":")
    before = set(_REGISTRY)
    module = _import_target(target)
    added = [n for n in _REGISTRY if n not in before]
    if not attr:
        if len(added) == 1:
            attr = added[0]
        elif hasattr(module, "model"):
            attr = "model"
        else:
            raise ModelError(
                f"{target} registers {len(added)} priors and defines no `model`; name one as '{target}:NAME'"
            )
    if attr in _REGISTRY and attr in added:
        return _build(attr, _REGISTRY[attr], params)
    if not hasattr(module, attr):
        raise ModelError(f"{target} has no attribute {attr!r}; define `{attr}` there or name another with ':'")
    obj = getattr(module, attr)
    if isinstance(obj, Prior):
        return obj
    if getattr(obj, "prior_name", None):
        return _build(obj.prior_name, obj, params)
    if not callable(obj):
        raise ModelError(f"{spec} is neither a Prior, a prior factory nor a NumPyro model")
    sig = inspect.signature(obj)
    if "length" in sig.parameters or "y" in sig.parameters:  # a bare model
        if kind is None:
            raise ModelError(f"{spec} is a bare model: give its kind ('tokens' or 'regression') and, for tokens, outcomes")
        if params:
            raise ModelError(f"{spec} is a bare model and takes no parameters, got {sorted(params)}")
        return Prior(obj, kind=kind, outcomes=outcomes, x_dim=x_dim, name=spec)
    prior = _build(spec, obj, params)
    return prior


def _import_target(target: str):
    if target.endswith(".py") or "/" in target:
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise ModelError(f"prior file {target} does not exist")
        mod_name = f"metabayes_user_{abs(hash(str(path)))}"
        if mod_name in sys.modules:
            return sys.modules[mod_name]
        spec = importlib.util.spec_from_file_location(mod_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except (Exception, SystemExit, KeyboardInterrupt) as exc:  # user code: its exit is an import failure too
            del sys.modules[mod_name]
            raise ModelError(f"importing {target} failed: {type(exc).__name__}: {exc}") from exc
        return module
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name != target.split(".")[0] and exc.name != target:  # the module exists; something it imports does not
            raise ModelError(f"importing {target} failed: {type(exc).__name__}: {exc}") from exc
        raise UnknownNameError("prior", target, _REGISTRY) from exc
    except (Exception, SystemExit, KeyboardInterrupt) as exc:  # user code: its exit is an import failure too
        raise ModelError(f"importing {target} failed: {type(exc).__name__}: {exc}") from exc


def _build(name: str, factory: Callable[..., Prior], params: dict[str, Any]) -> Prior:
    sig = inspect.signature(factory)
    takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    unknown = [k for k in params if k not in sig.parameters and not takes_any]
    if unknown:
        raise ModelError(
            f"prior {name!r} takes no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters are: {', '.join(sig.parameters) or '(none)'}"
        )
    prior = factory(**params)
    if not isinstance(prior, Prior):
        raise ModelError(f"prior factory {name!r} must return a toolkit.Prior, got {type(prior).__name__}")
    bound = sig.bind(**params)
    bound.apply_defaults()
    prior.name = name
    prior.params = {**dict(bound.arguments), **prior.params}
    return prior


# Packages that register priors name a module in this entry-point group (metabayes' own: ``priors``, whose
# files register themselves on import), so the registry finds them without the core importing them.
ENTRY_POINT_GROUP = "metabayes.priors"
_loaded_entry_points: set[str] = set()


def _load_builtin() -> None:
    """Import every module of the ``metabayes.priors`` entry-point group once, so their priors register."""
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.value in _loaded_entry_points:
            continue
        _loaded_entry_points.add(entry.value)
        try:
            entry.load()
        except Exception as exc:  # noqa: BLE001 - a broken plug-in package: name it
            raise ModelError(
                f"loading the priors of entry point {entry.name!r} ({entry.value}) failed: {type(exc).__name__}: {exc}"
            ) from exc


__all__ = ["register_prior", "get_prior", "available_priors", "load_prior"]
