"""Result IO: atomic writes of netCDF, ArviZ and text files, and reading them back (`toolkit.results` makes a
run's files one unit)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .errors import DataError

ENGINE = "h5netcdf"


def _encode_attr(value: Any):
    if isinstance(value, (str, int, float, np.integer, np.floating)):
        return value
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if value is None:
        return "null"
    return json.dumps(value, default=lambda v: np.asarray(v).tolist(), ensure_ascii=False)


def encode_attrs(attrs: dict) -> dict:
    """netCDF-safe attrs: nested values become JSON strings (decode with ``json.loads``)."""
    return {str(k): _encode_attr(v) for k, v in attrs.items()}


def _encoded(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.copy()
    ds.attrs = encode_attrs(ds.attrs)
    for name in ds.variables:
        ds[name].attrs = encode_attrs(ds[name].attrs)
        if ds[name].dtype == bool:
            ds[name] = ds[name].astype("int8")
            ds[name].attrs["dtype"] = "bool"
    return ds


def _temporary(path: Path) -> str:
    """A temporary file beside ``path`` with the permissions a plain ``open`` would give."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return tmp


def write_netcdf(ds: xr.Dataset, path: str | os.PathLike, *, compress: bool = True) -> Path:
    """Write ``ds`` to ``path`` atomically: a temporary file in the same folder, then a rename.

    A run killed while writing leaves the previous file (or none), never a truncated one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = _encoded(ds)
    encoding = {}
    if compress:
        for name, var in ds.data_vars.items():
            if var.dtype.kind in "fiu" and var.ndim:
                encoding[name] = {"compression": "gzip", "compression_opts": 1, "shuffle": True}
    tmp = _temporary(path)
    try:
        ds.to_netcdf(tmp, engine=ENGINE, encoding=encoding, invalid_netcdf=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_inference_data(idata, path: str | os.PathLike) -> Path:
    """Write an ArviZ ``InferenceData`` to ``path`` atomically (its own netCDF groups; a temporary file, a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        idata.to_netcdf(tmp, engine=ENGINE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(text: str, path: str | os.PathLike) -> Path:
    """Write a text file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        Path(tmp).write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_netcdf(path: str | os.PathLike) -> xr.Dataset:
    """Read a Dataset written by `write_netcdf`, restoring bool variables, fully loaded."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    try:
        with xr.open_dataset(path, engine=ENGINE) as ds:
            ds = ds.load()
    except Exception as exc:  # noqa: BLE001 - any decoding failure means a damaged file
        raise DataError(f"{path} is not a readable netCDF file ({exc}); rerun the experiment to rewrite it") from None
    for name in list(ds.variables):
        if ds[name].attrs.get("dtype") == "bool":
            ds[name] = ds[name].astype(bool)
            del ds[name].attrs["dtype"]
    return ds


def read_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """The global attrs of a netCDF file, without reading its variables (a run's provenance, cheaply)."""
    path = Path(path)
    try:
        with xr.open_dataset(path, engine=ENGINE) as ds:
            return dict(ds.attrs)
    except Exception as exc:  # noqa: BLE001 - any decoding failure means a damaged file
        raise DataError(f"{path} is not a readable netCDF file ({exc}); rerun the experiment to rewrite it") from None


def provenance(**extra) -> dict[str, Any]:
    """Creation time, toolkit version and git commit, plus ``extra``."""
    from . import __version__

    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "toolkit_version": __version__,
        "git_commit": git_commit(),
        **extra,
    }


def git_commit() -> str:
    """The checkout's commit (with ``+dirty`` when it has changes), or ``unknown``."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


__all__ = ["write_netcdf", "write_inference_data", "write_text", "read_netcdf", "provenance", "encode_attrs", "git_commit"]
