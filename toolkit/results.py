"""A run's results as one unit: written into a folder of their own, made current in one step, checked on open.

A run directory holds::

    DIR/.results/<run id>/            comparison.nc, metrics.nc, report.md, figures/, mcmc/, manifest.json
    DIR/latest -> .results/<run id>   the current result set: a symbolic link, replaced by one rename
    DIR/comparison.nc -> latest/comparison.nc    (and metrics.nc, report.md, figures/, mcmc/ where MCMC ran;
                                              a sweep: sweep.nc, report.md, figures/)
    DIR/learner/ ...                  checkpoints (their own transaction: learners.checkpoint)

`ResultWriter` stages a run's files in ``.results/<run id>/``, writes the
manifest last (every file's size and sha256, the run id and the config hash,
which also sit in each netCDF file's attrs), then points ``latest`` at them
with ``os.replace``. A run killed at any moment leaves the previous result
set current and whole; the next run removes what the killed one left.
`open_results` opens the current set and refuses, with one line naming the
fix, a directory without one, an incomplete set (no manifest, a missing or
resized file) and a mixed one (a file of another run).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Collection
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import xarray as xr

from .errors import DataError
from .io import ENGINE, read_attrs, read_netcdf, write_text

STORE = ".results"  # each run's staged files, one folder per run id
CURRENT = "latest"  # the symbolic link to the current run's folder
MANIFEST = "manifest.json"
ENTRIES = ("comparison.nc", "metrics.nc", "report.md", "figures", "mcmc")  # linked from the run directory
FORMAT = "metabayes.results/1"


def new_run_id() -> str:
    """A run id: the UTC time to the second and six random hex digits."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def config_hash(config: dict) -> str:
    """The first 16 hex digits of the sha256 of the config as canonical JSON."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class ResultWriter:
    """The staging folder of one run's results, made current by `commit`.

    Parameters
    ----------
    directory : path
        The run directory (``--out``).
    run_id, config_hash : str
        Stamped on every file (``stamp``) and recorded in the manifest.

    Examples
    --------
    >>> results = ResultWriter("results/x", run_id=new_run_id(), config_hash="0" * 16)   # doctest: +SKIP
    >>> write_netcdf(ds.assign_attrs(results.stamp), results.path("comparison.nc"))      # doctest: +SKIP
    >>> results.commit()                                                                   # doctest: +SKIP
    """

    def __init__(self, directory, *, run_id: str, config_hash: str):
        self.directory = Path(directory)
        self.run_id, self.config_hash = run_id, config_hash
        self.folder = self.directory / STORE / run_id

    @property
    def stamp(self) -> dict[str, str]:
        """The attrs every result file carries."""
        return {"run_id": self.run_id, "config_hash": self.config_hash}

    def path(self, name: str) -> Path:
        """Where the result ``name`` (e.g. ``"comparison.nc"``, ``"figures"``) is staged."""
        return self.folder / name

    def begin(self) -> ResultWriter:
        """Remove what interrupted runs left (staged sets that never became current, temporaries), then stage."""
        clean(self.directory)
        self.folder.mkdir(parents=True, exist_ok=True)
        return self

    def commit(self, **extra) -> Path:
        """Write the manifest (with ``extra``: e.g. the run's wall time), make this run's results current in one
        rename, drop the previous set; returns its folder."""
        files = {}
        for path in sorted(p for p in self.folder.rglob("*") if p.is_file()):
            rel = path.relative_to(self.folder).as_posix()
            files[rel] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
        manifest = {"format": FORMAT, **self.stamp, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    **extra, "files": files}
        write_text(json.dumps(manifest, indent=1), self.folder / MANIFEST)
        _replace_link(self.directory / CURRENT, f"{STORE}/{self.run_id}")
        staged = {p.name for p in self.folder.iterdir() if p.name != MANIFEST}
        for entry in sorted(staged):
            link = self.directory / entry
            if not (link.is_symlink() and os.readlink(link) == f"{CURRENT}/{entry}"):
                _remove(link)  # a file of an earlier layout, or a stale link
                _replace_link(link, f"{CURRENT}/{entry}")
        for link in self.directory.iterdir():  # entries of an earlier run that this one does not have (mcmc/)
            through = link.is_symlink() and os.readlink(link).startswith(f"{CURRENT}/")
            if link.name not in staged and (through or link.name in ENTRIES):
                _remove(link)
        clean(self.directory)
        return self.folder


def _replace_link(link: Path, target: str) -> None:
    """Point ``link`` at ``target`` in one rename (a new link beside it, then ``os.replace``).

    A real folder in its place (a copy that followed the links) is removed first: it is a copy, not a result set.
    """
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    tmp = link.with_name(f".{link.name}.{secrets.token_hex(4)}.tmp")
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path)


def current_folder(directory: Path) -> Path | None:
    """The folder ``latest`` points to (or ``latest`` itself, in a copy that followed the links), or None."""
    link = Path(directory) / CURRENT
    if link.is_symlink():
        return (link.parent / os.readlink(link)).resolve()
    return link.resolve() if link.is_dir() else None


def clean(directory) -> None:
    """Remove result sets that are not current and temporaries left by interrupted writes in ``directory``."""
    directory = Path(directory)
    store = directory / STORE
    keep = current_folder(directory)
    if store.is_dir():
        for folder in store.iterdir():
            if folder.resolve() != keep:
                _remove(folder)
    if directory.is_dir():
        for path in directory.glob(".*.tmp*"):  # unfinished links and atomic writes
            _remove(path)


def open_results(directory, *, verify: bool = False,
                 nodes: Collection[str] = ("comparison", "metrics", "sweep", "mcmc")) -> xr.DataTree:
    """The current result set of a run directory, as one DataTree, after checking it is whole and of one run.

    Nodes: ``/comparison``, ``/metrics`` and ``/mcmc/<scenario>`` (each ArviZ
    group — posterior, sample_stats, log_likelihood — a child node); for a
    sweep's folder ``/sweep``. The tree's attrs hold the manifest's run id,
    config hash, creation time and wall time.

    Parameters
    ----------
    directory : path
        A run's ``--out`` folder.
    verify : bool
        Also check every file's sha256 against the manifest (reads every byte).
    nodes : collection of {"comparison", "metrics", "sweep", "mcmc"}
        The files to read (all by default); e.g. ``("metrics",)`` for a run's summaries without its
        per-episode comparison. The whole set is checked either way.

    Raises
    ------
    DataError
        No results, an incomplete set (a run interrupted while writing, a file
        missing or of another size), a mixed one (a file from another run), or
        a file that cannot be read; the message names the fix.

    Examples
    --------
    >>> tree = open_results("results/coin_mixture")          # doctest: +SKIP
    >>> tree["comparison"].ds.log_score.sel(predictor="bayes")  # doctest: +SKIP
    """
    directory = Path(directory)
    rerun = _rerun(directory)
    folder = current_folder(directory)
    manifest = current_manifest(directory, verify=verify)
    unknown = set(nodes) - {"comparison", "metrics", "sweep", "mcmc"}
    if unknown:
        raise ValueError(f"open_results: unknown nodes {sorted(unknown)}; choose from comparison, metrics, sweep, mcmc")
    if "comparison.nc" not in manifest["files"] and "sweep.nc" not in manifest["files"]:
        raise DataError(f"{folder} has no comparison.nc (nor a sweep's sweep.nc); {rerun}")
    read: dict[str, xr.Dataset] = {}
    for name in ("comparison", "metrics", "sweep"):
        if name in nodes and f"{name}.nc" in manifest["files"]:
            read[f"/{name}"] = _stamped(read_netcdf(folder / f"{name}.nc"), folder / f"{name}.nc", manifest, rerun)
    tree = xr.DataTree.from_dict(read)
    mcmc_files = manifest["files"] if "mcmc" in nodes else {}
    for rel in sorted(r for r in mcmc_files if r.startswith("mcmc/") and r.endswith(".nc")):
        path = folder / rel
        try:
            with xr.open_datatree(path, engine=ENGINE) as mcmc:
                mcmc = mcmc.load()
        except Exception as exc:  # noqa: BLE001 - any decoding failure means a damaged file
            raise DataError(f"{path} is not a readable InferenceData file ({exc}); {rerun}") from None
        _stamped(mcmc["posterior"].to_dataset() if "posterior" in mcmc.children else xr.Dataset(), path, manifest, rerun)
        tree[f"mcmc/{Path(rel).stem}"] = mcmc
    tree.attrs = {k: v for k, v in manifest.items() if k not in ("files", "format")}
    return tree


def current_manifest(directory, *, verify: bool = False) -> dict[str, Any]:
    """The manifest of a run directory's current result set, after checking the set is whole (no file is read).

    The checks of `open_results` short of opening the files: a manifest, and every file it lists present at
    its size (with ``verify``, its sha256 too). Enough to tell whether a run finished, and with which config
    (``manifest["config_hash"]``), at the cost of one small JSON file.

    Raises
    ------
    DataError
        As `open_results`, for a directory without results or with an incomplete set.
    """
    directory = Path(directory)
    rerun = _rerun(directory)
    folder = current_folder(directory)
    if folder is None:
        if (directory / "comparison.nc").is_file():
            raise DataError(f"{directory} holds results without a manifest (an earlier layout, or a run that "
                            f"never finished writing); {rerun}")
        raise DataError(f"{directory} holds no results (no comparison.nc); run `python comparisons/run.py "
                        f"--out {directory}` first")
    manifest = _manifest(folder, rerun)
    for rel, info in manifest["files"].items():
        path = folder / rel
        if not path.is_file() or path.stat().st_size != info["bytes"]:
            raise DataError(f"{path} is missing or not the file its run wrote (the result set is incomplete); {rerun}")
        if verify and file_sha256(path) != info["sha256"]:
            raise DataError(f"{path} differs from the file its run wrote (sha256); {rerun}")
    return manifest


def current_attrs(directory, name: str, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """The global attrs of ``name``.nc of the current result set, without its variables (a run's provenance).

    Checked as `open_results` checks a file it reads: the set whole (``manifest``, when given, is the one
    `current_manifest` returned for it) and the file stamped with the set's run id and config hash.

    Raises
    ------
    DataError
        As `open_results`: no results, an incomplete or mixed set, an unreadable file.
    """
    directory = Path(directory)
    manifest = current_manifest(directory) if manifest is None else manifest
    path = current_folder(directory) / f"{name}.nc"
    return _stamped(xr.Dataset(attrs=read_attrs(path)), path, manifest, _rerun(directory)).attrs


def _rerun(directory: Path) -> str:
    return f"rerun `python comparisons/run.py --out {directory}` (with the run's --config) to rewrite it"


def _manifest(folder: Path, rerun: str) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise DataError(f"{folder} has no {MANIFEST}: its run stopped before it finished writing; {rerun}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
            raise ValueError(f"not a {FORMAT} manifest")
        for key in ("run_id", "config_hash", "created"):
            if not isinstance(manifest.get(key), str):
                raise ValueError(f"no {key}")
        for info in manifest["files"].values():
            if not (isinstance(info, dict) and isinstance(info.get("bytes"), int) and isinstance(info.get("sha256"), str)):
                raise ValueError("a file entry without bytes and sha256")
    except (ValueError, AttributeError) as exc:
        raise DataError(f"{path} is damaged ({exc}); {rerun}") from None
    return manifest


def _stamped(ds: xr.Dataset, path: Path, manifest: dict, rerun: str):
    """``ds`` if its run id and config hash are the manifest's; else a DataError (a mixed result set)."""
    got = (ds.attrs.get("run_id"), ds.attrs.get("config_hash"))
    if got != (manifest["run_id"], manifest["config_hash"]):
        raise DataError(f"{path} belongs to run {got[0]}, not to run {manifest['run_id']} of its manifest "
                        f"(a mixed result set); {rerun}")
    return ds


__all__ = ["ResultWriter", "open_results", "current_manifest", "current_attrs", "clean", "current_folder", "new_run_id",
           "config_hash", "STORE", "CURRENT", "MANIFEST", "ENTRIES"]
