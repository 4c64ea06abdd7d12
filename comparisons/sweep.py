"""Sweeps: an experiment over a grid of config values, each cell an ordinary run, on Dask distributed.

    python comparisons/sweep.py --config comparisons/sweeps/NAME.toml [--set key=value ...] [--out DIR]
                                [--scheduler ADDRESS] [--workers N] [--dry-run] [--recombine] [--no-progress]

A sweep file names a base experiment (``[base]``: a config path or inline tables, a profile,
``set`` overrides) and ``[sweep]`` axes: any config key mapped to a list of values, combined as a
product; a ``[[sweep.zip]]`` table holds keys whose values move together (one axis). Every cell's
config is the base with the cell's values laid over it; its folder ``DIR/cells/<key>/`` is named by
the hash of that resolved config, so a rerun skips finished cells and an interrupted cell resumes
from its learner's last checkpoint. Cells run on Dask: a ``LocalCluster`` sized to the machine, or
any running scheduler (``--scheduler tcp://host:8786``: ``dask worker``s by hand, dask-jobqueue on
Slurm); cells whose learners train on ``cuda`` ask for ``resources={"GPU": 1}``. A failing cell
records its error (one line, in ``sweep.nc`` and the report; the whole text in its ``error.txt``)
and the others go on. ``DIR/sweep.nc`` holds every cell's metrics with each sweep axis a dim whose
coordinates are the axis values (plus ``step`` with ``learner.training.eval_steps``), each cell's
provenance beside them; ``report.md`` and ``figures/`` come from the analyses' sweep hooks (the
``sweep`` summary analysis always); a rerun with every cell finished keeps them while the cells' runs,
the sweep's analyses and the code are those they were combined from (``--recombine``: write them
anyway). Local workers take the settings of ``comparisons/dask.yaml``. Exit codes: 0 all cells done,
2 a bad sweep file (nothing ran), 100 + the number of failed cells (up to 125) otherwise.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pydantic import BaseModel, ConfigDict, ValidationError  # noqa: E402

from comparisons.config import (  # noqa: E402
    CONFIG_DIR,
    RunConfig,
    _apply,
    _merge,
    check_finite,
    parse_override,
    read_toml,
    validate,
)
from toolkit.errors import ConfigError, MetabayesError  # noqa: E402

SWEEP_DIR = Path(__file__).resolve().parent / "sweeps"
FAILED_EXIT_BASE = 100  # exit code 100 + the number of failed cells, capped at 125


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SweepBase(_Strict):
    config: str | None = None  # an experiment config file (relative to where you run from)
    inline: dict[str, Any] | None = None  # or the experiment's tables themselves
    profile: str | None = None  # a [profiles.NAME] of the base config
    set: dict[str, Any] = {}  # "a.b" = value overrides laid over the base, before the axes


class SweepFile(_Strict):
    base: SweepBase
    sweep: dict[str, Any]  # "a.b" = [values]; zip = [{"a.b" = [...], "c.d" = [...]}, ...]
    analysis: dict[str, dict[str, Any]] = {}  # settings of sweep-level analyses, e.g. [analysis.sweep]


@dataclass(frozen=True)
class Axis:
    """One dim of the sweep: one key, or several that move together (a zip group; the first names it, or its
    ``dim`` table: a name and one label per point)."""

    keys: tuple[str, ...]
    values: tuple[tuple, ...]  # one tuple per point: a value per key
    name: str | None = None  # the dim's name, from a zip group's dim table
    labels: tuple | None = None  # its coordinate values, from the same table

    @property
    def key(self) -> str:
        return self.keys[0]

    def label(self, i: int):
        """The coordinate value of point ``i``."""
        return self.labels[i] if self.labels is not None else _label(self.values[i][0])

    def __len__(self) -> int:
        return len(self.values)


@dataclass
class Cell:
    """One run of the sweep: its position on the axes, its overrides and resolved config."""

    index: tuple[int, ...]
    overrides: dict[str, Any]
    config: RunConfig
    key: str
    folder: Path

    def payload(self, torch_threads: int | None) -> dict[str, Any]:
        """What a worker needs to run the cell (plain data, so any Dask worker can take it)."""
        return {"config": self.config.model_dump(mode="json"), "folder": str(self.folder), "key": self.key,
                "overrides": self.overrides, "torch_threads": torch_threads}

    @property
    def gpu(self) -> bool:
        """Whether the cell's learners train on CUDA (it then asks a worker for ``GPU=1``)."""
        devices = [self.config.learner.training.get("device", "auto")]
        devices += [spec.training.get("device", "auto") for spec in self.config.learners.values()]
        return "cuda" in devices


@dataclass
class Sweep:
    """A sweep file resolved: its axes, every cell and the analyses that summarise it."""

    name: str
    out: Path
    axes: list[Axis]
    dims: list[str]
    cells: list[Cell]
    base: RunConfig
    analysis_tables: dict[str, dict] = field(default_factory=dict)


# --------------------------------------------------------------------------- reading a sweep file


def _dim_names(axes: list[Axis]) -> list[str]:
    """A zip group's ``dim`` name; else each axis' last key part (``seed`` for ``learner.training.seed``) where
    unique, else the whole key."""
    short = [a.name or a.key.rsplit(".", 1)[-1] for a in axes]
    names = [s if short.count(s) == 1 or a.name else a.key for s, a in zip(short, axes)]
    if len(set(names)) != len(names):
        raise ConfigError(f"sweep key sweep: two axes have one name: {names}")
    return names


def _base_tree(base: SweepBase, where: Path) -> tuple[dict, str]:
    if (base.config is None) == (base.inline is None):
        raise ConfigError("sweep key base: give exactly one of base.config (a config file) or [base.inline] tables")
    if base.inline is not None:
        tree, name = json.loads(json.dumps(base.inline)), "inline"
        profiles = tree.pop("profiles", {})
    else:
        path = Path(base.config)
        try:
            tree = read_toml(path, "config file", CONFIG_DIR)
        except ConfigError as exc:
            raise ConfigError(f"sweep key base.config: {exc} (relative to {Path.cwd()})") from None
        profiles, name = tree.pop("profiles", {}), path.stem
    if base.profile is not None:
        if base.profile not in profiles:
            raise ConfigError(f"sweep key base.profile: {base.profile!r} is not a profile of the base config; "
                              f"profiles there: {', '.join(profiles) or '(none)'}")
        _merge(tree, profiles[base.profile])
    for key, value in base.set.items():
        _apply(tree, key.split("."), value)
    return tree, name


def _axes(sweep: dict[str, Any]) -> list[Axis]:
    axes = []
    for key, values in sweep.items():
        if key == "zip":
            groups = values if isinstance(values, list) else [values]
            for i, group in enumerate(groups):
                if not isinstance(group, dict) or not group:
                    raise ConfigError(f"sweep key sweep.zip.{i}: a zip group is a table of keys with lists of values")
                group = dict(group)
                dim = group.pop("dim", None)
                name, labels = None, None
                if dim is not None:
                    if not (isinstance(dim, dict) and len(dim) == 1 and isinstance(next(iter(dim.values())), list)):
                        raise ConfigError(f"sweep key sweep.zip.{i}.dim: name the group's dim and label its points, "
                                          'e.g. dim = { architecture = ["learned", "rotary"] }')
                    (name, labels), = dim.items()
                    labels = tuple(_values(f"sweep.zip.{i}.dim.{name}", labels))
                lists = {k: _values(f"sweep.zip.{i}.{k}", v, unique=False) for k, v in group.items()}
                sizes = {k: len(v) for k, v in lists.items()} | ({"dim": len(labels)} if labels else {})
                if not lists or len(set(sizes.values())) != 1:
                    raise ConfigError(f"sweep key sweep.zip.{i}: the keys of a zip group need as many values each, "
                                      f"got {sizes}")
                points = tuple(zip(*lists.values()))
                if len({json.dumps(p, sort_keys=True) for p in points}) != len(points):
                    raise ConfigError(f"sweep key sweep.zip.{i}: two points of the group are the same")
                if labels is None and len({_label(p[0]) for p in points}) != len(points):
                    raise ConfigError(f"sweep key sweep.zip.{i}: the first key's values repeat, so they cannot label "
                                      'the dim; add dim = { NAME = [one label per point] }')
                axes.append(Axis(tuple(lists), points, name, labels))
        else:
            axes.append(Axis((key,), tuple((v,) for v in _values(f"sweep.{key}", values))))
    if not axes:
        raise ConfigError("sweep key sweep: no axes; give at least one key with a list of values, e.g. "
                          '"learner.training.seed" = [0, 1]')
    keys = [k for a in axes for k in a.keys]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"sweep key sweep: a key is on two axes: {sorted(k for k in keys if keys.count(k) > 1)}")
    return axes


def _values(where: str, values, *, unique: bool = True) -> list:
    if not isinstance(values, list):
        raise ConfigError(f"sweep key {where}: an axis is a list of values, got {values!r}")
    if not values:
        raise ConfigError(f"sweep key {where}: the axis is empty; give at least one value")
    kinds = {_type_name(v) for v in values}
    if len(kinds) > 1:
        raise ConfigError(f"sweep key {where}: the values are of different types ({', '.join(sorted(kinds))}): {values}")
    labels = [_label(v) for v in values]
    if unique and len(set(labels)) != len(labels):
        raise ConfigError(f"sweep key {where}: a value appears twice: {values}")
    return values


def _type_name(value) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "number"
    return "list" if isinstance(value, (list, tuple)) else type(value).__name__


def _label(value):
    """A coordinate value: the value itself when it is a scalar, else its JSON text."""
    return value if isinstance(value, (int, float, str, bool)) else json.dumps(value, sort_keys=True)


def _lookup(tree: dict, path: list[str]):
    node = tree
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


_MISSING = object()


def _check_key(tree: dict, axis: Axis, cfg: RunConfig) -> None:
    """An axis key must be a setting the base config has or its section accepts, with values of its type."""
    import learners
    from comparisons.plan import build_prior

    for i, key in enumerate(axis.keys):
        path, values = key.split("."), [point[i] for point in axis.values]
        current = _lookup(tree, path)
        if current is _MISSING:
            known = None
            if path[:2] == ["learner", "training"] and len(path) == 3:
                known = {f.name: f.default for f in learners.TrainConfig.__dataclass_fields__.values()}
            elif path[:2] == ["learner", "model"] and len(path) == 3:
                arch = learners.architecture_config(cfg.learner.architecture or build_prior(cfg).data_kind.default_architecture)
                known = {f.name: f.default for f in arch.__dataclass_fields__.values()}
            elif path[:2] == ["prior", "params"] and len(path) == 3:
                known = dict(build_prior(cfg).params)
            if known is not None:
                if path[-1] not in known:
                    raise ConfigError(f"sweep key {key}: {'.'.join(path[:-1])} has no setting {path[-1]!r}; "
                                      f"known: {', '.join(sorted(known))}")
                current = known[path[-1]]
        if current is not _MISSING and current is not None and not isinstance(current, dict):
            expected = _type_name(current)
            bad = [v for v in values if _type_name(v) != expected]
            if bad:
                raise ConfigError(f"sweep key {key}: values {bad} are not of the setting's type "
                                  f"({expected}, as in the base: {current!r})")


def load_sweep(path: str | Path, overrides: list[str] = (), out: str | Path | None = None) -> Sweep:
    """Read and check a sweep file: every cell's config is built and validated before anything runs.

    Raises
    ------
    ConfigError
        A bad sweep file: unknown keys, an empty axis, values of the wrong type, a cell whose config
        does not validate. The message names the key.
    """
    path = Path(path)
    raw = read_toml(path, "sweep file", SWEEP_DIR)
    for item in overrides:
        _apply(raw, *parse_override(item))
    check_finite(raw)
    try:
        spec = SweepFile.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "is not a known key" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(f"sweep key {key}: {msg}") from None
    tree, name = _base_tree(spec.base, path)
    base = _validated(tree, "the base config")
    axes = _axes(spec.sweep)
    for axis in axes:
        _check_key(tree, axis, base)
    root = Path(out) if out else Path("results") / f"sweep_{path.stem}"
    cells = []
    for index in itertools.product(*(range(len(a)) for a in axes)):
        overrides = {k: v for axis, i in zip(axes, index) for k, v in zip(axis.keys, axis.values[i])}
        cell_tree = json.loads(json.dumps(tree))
        for key, value in overrides.items():
            _apply(cell_tree, key.split("."), value)
        cfg = _validated(cell_tree, "cell " + ", ".join(f"{d}={a.label(i)}" for d, a, i in zip(_dim_names(axes), axes, index)))
        key = config_key(cfg)
        cells.append(Cell(index, overrides, cfg, key, root / "cells" / key))
    keys = [c.key for c in cells]
    if len(set(keys)) != len(keys):
        raise ConfigError("sweep: two cells resolve to the same config (an axis value the base ignores?)")
    return Sweep(name=path.stem, out=root, axes=axes, dims=_dim_names(axes), cells=cells, base=base,
                 analysis_tables=dict(spec.analysis))


def _validated(tree: dict, what: str) -> RunConfig:
    try:
        return validate(json.loads(json.dumps(tree)))
    except ConfigError as exc:
        raise ConfigError(f"sweep: {what}: {exc}") from None


def config_key(cfg: RunConfig) -> str:
    """The folder name of a cell: the hash of its resolved config (the run's own config hash)."""
    from toolkit.results import config_hash

    return config_hash(cfg.model_dump(mode="json"))


# --------------------------------------------------------------------------- running cells


def finished(cell: Cell) -> bool:
    """Whether the cell's folder holds the whole results of exactly this config (its manifest says so)."""
    from toolkit.results import current_manifest

    try:
        return current_manifest(cell.folder)["config_hash"] == cell.key
    except MetabayesError:
        return False


def run_cell(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one cell in this process (a Dask worker); returns its status, never raises for a failing cell."""
    from comparisons.run import run
    from toolkit.io import write_text

    folder = Path(payload["folder"])
    folder.mkdir(parents=True, exist_ok=True)
    write_text(json.dumps({"key": payload["key"], "overrides": payload["overrides"]}, indent=1), folder / "cell.json")
    (folder / "error.txt").unlink(missing_ok=True)
    start = time.perf_counter()
    try:
        config = validate(payload["config"])
        if config.torch_threads is None and payload["torch_threads"]:
            config = config.model_copy(update={"torch_threads": payload["torch_threads"]})
        run(config, folder, progress=False, config_name=payload["key"])
        return {"key": payload["key"], "status": "done", "error": "", "wall_time_s": time.perf_counter() - start}
    except Exception as exc:  # noqa: BLE001 - a failing cell is recorded, the sweep goes on
        line = str(exc) if isinstance(exc, MetabayesError) else f"{type(exc).__name__}: {exc}"
        line = " ".join(line.split())
        write_text(line + "\n\n" + traceback.format_exc(), folder / "error.txt")
        return {"key": payload["key"], "status": "failed", "error": line, "wall_time_s": time.perf_counter() - start}


def _client(scheduler: str | None, workers: int | None):
    """A Dask client: joined to ``scheduler``, or on a LocalCluster of ``workers`` processes (one cell each)."""
    import dask
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"--scheduler {scheduler}: no Dask scheduler answers there ({exc}); start one "
                              "(`dask scheduler`) or leave --scheduler out for a local cluster") from None
    workers = workers or os.cpu_count() or 1
    with dask.config.set(worker_config()):  # read as the nannies start (and restart) their workers
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=40, env=worker_environment(workers))
    return Client(cluster), cluster


WORKER_SETTINGS = Path(__file__).with_name("dask.yaml")  # Dask settings for cells' workers (see the file)


def worker_config() -> dict[str, Any]:
    """``comparisons/dask.yaml`` as dotted Dask config keys, for ``dask.config.set``."""
    import yaml

    def dotted(tree: dict, prefix: str = "") -> dict[str, Any]:
        out = {}
        for key, value in tree.items():
            out.update(dotted(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
        return out

    return dotted(yaml.safe_load(WORKER_SETTINGS.read_text(encoding="utf-8")))


def worker_environment(workers: int) -> dict[str, str]:
    """Thread settings for local workers that share the machine's cores: each takes its share.

    Left alone, every worker's XLA and OpenMP would use every core: two workers on two cores then ran a
    cell in 70 s where one alone took 30 s (measured while another job ran; single-threaded XLA: 45 s).
    """
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    env = {"OMP_NUM_THREADS": str(threads)}
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1".strip()
    return env


def run_sweep(sweep: Sweep, *, scheduler: str | None = None, workers: int | None = None,
              progress: bool = True) -> dict[str, dict]:
    """Run every unfinished cell on Dask; returns ``{cell key: status}`` for every cell (finished ones too)."""
    from tqdm.auto import tqdm

    statuses, todo = {}, []
    for cell in sweep.cells:
        if finished(cell):
            statuses[cell.key] = {"key": cell.key, "status": "reused", "error": "", "wall_time_s": 0.0}
        else:
            todo.append(cell)
    if not todo:
        return statuses
    from distributed import as_completed

    client, cluster = _client(scheduler, workers)
    try:
        threads = None
        if cluster is not None:  # each local worker takes its share of the cores
            threads = max(1, (os.cpu_count() or 1) // max(1, len(cluster.workers)))
        futures = {
            client.submit(run_cell, cell.payload(threads), key=f"cell-{cell.key}", pure=False,
                          resources={"GPU": 1} if cell.gpu else None): cell
            for cell in todo
        }
        bar = tqdm(total=len(sweep.cells), initial=len(statuses), disable=not progress, unit="cell", desc="sweep")
        failed = 0
        for future in as_completed(futures):
            cell = futures[future]
            try:
                status = future.result()
            except Exception as exc:  # noqa: BLE001 - the worker died too often, or the cluster went away
                status = {"key": cell.key, "status": "failed", "error": f"the cell's worker failed: {exc}",
                          "wall_time_s": math.nan}
            statuses[cell.key] = status
            failed += status["status"] == "failed"
            running = min(len(client.nthreads()), len(futures) - (len(statuses) - (len(sweep.cells) - len(todo))))
            bar.set_postfix(done=len(statuses) - failed, running=running, failed=failed, refresh=False)
            bar.update(1)
        bar.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return statuses


# --------------------------------------------------------------------------- the combined result


def combine(sweep: Sweep, statuses: dict[str, dict] | None = None):
    """``sweep.nc``'s Dataset: every cell's metrics with each axis a dim, and each cell's provenance beside them."""
    import numpy as np
    import xarray as xr

    from toolkit.results import current_attrs, open_results

    statuses = statuses or {}
    parts, template = {}, None
    provenance = {name: np.full([len(a) for a in sweep.axes], "", dtype=object)
                  for name in ("cell_key", "cell_status", "cell_error", "git_commit", "checkpoint_sha256", "config")}
    wall = np.full([len(a) for a in sweep.axes], np.nan)
    for cell in sweep.cells:
        provenance["cell_key"][cell.index] = cell.key
        provenance["config"][cell.index] = json.dumps(cell.config.model_dump(mode="json"), sort_keys=True)
        status = statuses.get(cell.key)
        try:
            tree = open_results(cell.folder, nodes=("metrics",))
            comparison_attrs = current_attrs(cell.folder, "comparison", tree.attrs)
        except MetabayesError as exc:
            error = (status or {}).get("error") or str(exc)
            provenance["cell_status"][cell.index] = "failed" if status else "missing"
            provenance["cell_error"][cell.index] = error
            continue
        metrics = tree["metrics"].to_dataset()
        parts[cell.index] = metrics
        template = metrics if template is None else template
        provenance["cell_status"][cell.index] = (status or {"status": "reused"})["status"]
        provenance["git_commit"][cell.index] = str(comparison_attrs.get("git_commit", ""))
        provenance["checkpoint_sha256"][cell.index] = str(comparison_attrs.get("checkpoint_sha256", ""))
        wall[cell.index] = float(tree.attrs.get("wall_time_s", np.nan))
    if template is None:
        raise ConfigError(f"no cell of the sweep finished; their errors are in {sweep.out}/cells/*/error.txt")
    blank = template.drop_attrs().map(
        lambda v: xr.full_like(v, np.nan, dtype=float) if v.dtype.kind in "biuf" else xr.full_like(v, "", dtype=object))
    cells = [parts.get(cell.index, blank).drop_attrs() for cell in sweep.cells]
    stacked = xr.concat(cells, dim="cell", join="outer", coords="minimal", compat="override", combine_attrs="drop")
    index = {dim: ("cell", [axis.label(c.index[i]) for c in sweep.cells])
             for i, (dim, axis) in enumerate(zip(sweep.dims, sweep.axes))}
    stacked = stacked.assign_coords(index)
    if len(sweep.dims) == 1:  # one axis: the cells are its values
        stacked = stacked.swap_dims(cell=sweep.dims[0])
    else:
        stacked = stacked.set_index(cell=sweep.dims).unstack("cell")
    stacked = stacked.transpose(*sweep.dims, ...)
    for i, (dim, axis) in enumerate(zip(sweep.dims, sweep.axes)):
        stacked = stacked.reindex({dim: [axis.label(j) for j in range(len(axis))]})
        stacked[dim].attrs = {"sweep_key": axis.key}
        named = axis.keys if axis.labels is not None else axis.keys[1:]  # a zip group's keys: coordinates on its dim
        for key in named:
            j = axis.keys.index(key)
            stacked = stacked.assign_coords({key: (dim, [_label(point[j]) for point in axis.values])})
    for name, values in provenance.items():
        stacked[name] = (tuple(sweep.dims), values.astype(str))
    stacked["cell_wall_time_s"] = (tuple(sweep.dims), wall)
    stacked["cell_wall_time_s"].attrs = {"long_name": "wall time of the cell's run", "units": "s"}
    stacked.attrs = {"sweep": sweep.name, "axes": json.dumps({d: a.keys for d, a in zip(sweep.dims, sweep.axes)}),
                     "num_cells": len(sweep.cells),
                     "num_failed": int(sum(s in ("failed", "missing") for s in provenance["cell_status"].ravel()))}
    return stacked


def combined_hash(sweep: Sweep) -> str:
    """What ``sweep.nc`` is made from: every cell's config and current run, the sweep's analyses, the code."""
    from toolkit.io import git_commit
    from toolkit.results import config_hash, current_manifest

    runs = []
    for cell in sweep.cells:
        try:
            runs.append(current_manifest(cell.folder)["run_id"])
        except MetabayesError:
            runs.append("")
    return config_hash({"cells": [c.key for c in sweep.cells], "runs": runs, "analysis": sweep.analysis_tables,
                        "code": git_commit()})


def up_to_date(sweep: Sweep) -> list[str] | None:
    """The answer of the sweep's current report if ``sweep.nc`` was combined from exactly these cells' runs
    with this code and these analyses (so combining again would write the same); else None."""
    from toolkit.results import current_manifest

    try:
        if current_manifest(sweep.out)["config_hash"] != combined_hash(sweep):
            return None
        report = (sweep.out / "report.md").read_text(encoding="utf-8").split("\n## ")
    except (MetabayesError, OSError):
        return None
    section = next((part for part in report if part.startswith("Answer")), "")
    return [line[2:] for line in section.splitlines() if line.startswith("- ")]


def write_sweep(sweep: Sweep, ds, *, wall_time_s: float) -> tuple[Path, list[str]]:
    """``sweep.nc``, ``report.md`` and ``figures/`` of the sweep, as one transaction; returns the answer lines."""
    import numpy as np

    from comparisons.analyses import build_analyses
    from comparisons.plan import build_prior
    from comparisons.report import markdown_table
    from toolkit.io import write_netcdf, write_text
    from toolkit.results import ResultWriter, new_run_id

    default = build_prior(sweep.base).data_kind.default_analysis
    tables = {**sweep.base.analysis, "sweep": {}, **sweep.analysis_tables}
    analyses = build_analyses(default, tables)
    results = ResultWriter(sweep.out, run_id=new_run_id(), config_hash=combined_hash(sweep))
    results.begin()
    figures, sections, answer = {}, [], []
    for analysis in analyses:
        ds = analysis.sweep(ds, sweep)
    for analysis in analyses:
        figures.update(analysis.sweep_figures(ds, sweep, results.path("figures")))
        sections.append(analysis.sweep_report_section(ds, sweep))
        answer += analysis.sweep_answer(ds, sweep)
    failed = [(str(k), str(e)) for k, s, e in zip(ds["cell_key"].values.ravel(), ds["cell_status"].values.ravel(),
                                                  ds["cell_error"].values.ravel()) if s in ("failed", "missing")]
    lines = [f"<!-- metabayes run {results.run_id}, config {results.config_hash} -->",
             f"# metabayes sweep: {sweep.name}", "", "## Answer", ""]
    lines += [f"- {line}" for line in answer or ["No analysis answered for this sweep."]]
    lines += ["", "## Setup", "",
              f"- **cells**: {len(sweep.cells)} ({' x '.join(f'{d} {len(a)}' for d, a in zip(sweep.dims, sweep.axes))}), "
              f"{len(failed)} failed",
              "- **axes**: " + "; ".join(f"{d} = {', '.join(str(a.label(i)) for i in range(len(a)))}"
                                         for d, a in zip(sweep.dims, sweep.axes)),
              f"- **wall time**: {wall_time_s:.0f} s (cells: {float(np.nansum(ds['cell_wall_time_s'].values)):.0f} s "
              "of runs in all)", ""]
    if failed:
        lines += ["## Failed cells", "", markdown_table(["cell", "error"], [[k, e] for k, e in failed]), ""]
    lines += [s.rstrip() + "\n" for s in sections if s]
    if figures:
        lines += ["## Figures", ""] + [f"![{name}]({path})" for name, path in figures.items()] + [""]
    ds.attrs.update(results.stamp)
    write_netcdf(ds, results.path("sweep.nc"))
    write_text("\n".join(lines), results.path("report.md"))
    results.commit(wall_time_s=round(wall_time_s, 3))
    return sweep.out / "sweep.nc", answer


# --------------------------------------------------------------------------- the command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python comparisons/sweep.py", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="sweep file (comparisons/sweeps/NAME.toml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value of the sweep file, e.g. --set base.profile=tiny (repeatable)")
    parser.add_argument("--out", help="output folder (default: results/sweep_<sweep name>)")
    parser.add_argument("--scheduler", help="address of a running Dask scheduler (default: a local cluster)")
    parser.add_argument("--workers", type=int, help="local cluster: worker processes (default: the CPU count)")
    parser.add_argument("--dry-run", action="store_true", help="list the cells and where each goes; run nothing")
    parser.add_argument("--recombine", action="store_true",
                        help="combine the cells into sweep.nc and the report even when they are up to date")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        if args.workers is not None and args.workers < 1:
            raise ConfigError(f"--workers {args.workers}: give at least 1 worker")
        sweep = load_sweep(args.config, args.overrides, args.out)
        if args.dry_run:
            for cell in sweep.cells:
                state = "finished" if finished(cell) else "to run"
                values = ", ".join(f"{d}={a.label(i)}" for d, a, i in zip(sweep.dims, sweep.axes, cell.index))
                print(f"{cell.folder}  {state}  {values}")
            todo = sum(not finished(c) for c in sweep.cells)
            print(f"{len(sweep.cells)} cells ({todo} to run) into {sweep.out}/cells/")
            return 0
        from comparisons.plan import check_out

        check_out(sweep.out)
        statuses = run_sweep(sweep, scheduler=args.scheduler, workers=args.workers, progress=not args.no_progress)
        reused = all(s["status"] == "reused" for s in statuses.values())
        answer = None if args.recombine or not reused else up_to_date(sweep)
        kept, path = answer is not None, sweep.out / "sweep.nc"
        if not kept:
            path, answer = write_sweep(sweep, combine(sweep, statuses), wall_time_s=time.perf_counter() - start)
    except MetabayesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished cells are kept; run the same command to go on", file=sys.stderr)
        return 130
    failed = [s for s in statuses.values() if s["status"] == "failed"]
    print("\n".join(answer))
    ran = sum(s["status"] == "done" for s in statuses.values())
    print(f"\n{len(sweep.cells)} cells: {ran} run, {len(sweep.cells) - ran - len(failed)} reused, {len(failed)} failed; "
          f"{'kept (up to date with its cells; --recombine to write it again)' if kept else 'wrote'} {path} in "
          f"{time.perf_counter() - start:.0f} s")
    for status in failed:
        print(f"failed {status['key']}: {status['error']}", file=sys.stderr)
    return min(FAILED_EXIT_BASE + len(failed), 125) if failed else 0


__all__ = ["load_sweep", "run_sweep", "run_cell", "combine", "write_sweep", "main", "Sweep", "Cell", "Axis"]

if __name__ == "__main__":
    from comparisons.sweep import main as _main  # the cells' functions must live in the importable module

    sys.exit(_main())
