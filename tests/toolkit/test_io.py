"""Result IO: netCDF round trips, atomic writes, damaged files (a run's files as one unit: test_results.py)."""

import json
import os
import re

import numpy as np
import pytest
import xarray as xr

from toolkit.errors import DataError
from toolkit.io import encode_attrs, read_netcdf, write_netcdf, write_text


def sample_dataset(seed=0):
    rng = np.random.default_rng(seed)
    return xr.Dataset(
        {
            "log_score": (("predictor", "position"), np.where(rng.random((2, 3)) < 0.2, np.nan, rng.normal(size=(2, 3)))),
            "bayes_defined": (("position",), np.array([True, False, True])),
            "y": (("position",), np.array([0, 1, 1], dtype=np.int64)),
        },
        coords={"predictor": ["bayes", "learner"], "position": [1, 2, 3], "outcome_label": ("position", ["🌈", "🦄", "🌈"])},
        attrs={
            "prior": {"name": "coin_mixture", "params": {"thetas": [0.25, 0.75]}},
            "seeds": [1, 2],
            "note": "plain text",
            "length": 3,
            "finished": True,
            "checkpoint": None,
        },
    )


def test_round_trip_restores_values_bools_and_json_attrs(tmp_path):
    ds = sample_dataset()
    path = write_netcdf(ds, tmp_path / "comparison.nc")
    back = read_netcdf(path)
    assert back["bayes_defined"].dtype == bool
    assert "dtype" not in back["bayes_defined"].attrs
    xr.testing.assert_equal(back, ds)  # values, dims and coordinates; attrs below
    assert json.loads(back.attrs["prior"]) == ds.attrs["prior"]
    assert json.loads(back.attrs["seeds"]) == [1, 2]
    assert back.attrs["note"] == "plain text" and back.attrs["length"] == 3
    assert back.attrs["finished"] == 1 and back.attrs["checkpoint"] == "null"


def test_encode_attrs_makes_nested_values_json():
    encoded = encode_attrs({"a": {"b": np.arange(2)}, "c": 1.5, "d": False})
    assert json.loads(encoded["a"]) == {"b": [0, 1]}
    assert encoded["c"] == 1.5 and encoded["d"] == 0


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "comparison.nc"
    write_netcdf(sample_dataset(0), path)
    real = xr.Dataset.to_netcdf
    attempted = []

    def half_written(self, target, *args, **kwargs):
        attempted.append(target)
        with open(target, "wb") as f:  # a partial file where the write was heading
            f.write(b"\x89HDF\r\n\x1a\n truncated")
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", half_written)
    with pytest.raises(OSError, match="disk full"):
        write_netcdf(sample_dataset(1), path)
    monkeypatch.setattr(xr.Dataset, "to_netcdf", real)
    assert attempted and os.path.dirname(attempted[0]) == str(tmp_path) and attempted[0] != str(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["comparison.nc"]
    xr.testing.assert_equal(read_netcdf(path), sample_dataset(0))


def test_write_text_is_atomic_too(tmp_path, monkeypatch):
    path = write_text("first", tmp_path / "report.md")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("no rename")))
    with pytest.raises(OSError):
        write_text("second", path)
    monkeypatch.undo()
    assert path.read_text(encoding="utf-8") == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_a_corrupt_file_is_a_data_error_naming_the_path(tmp_path):
    path = tmp_path / "comparison.nc"
    path.write_bytes(b"this is not netCDF")
    with pytest.raises(DataError, match=re.escape(str(path))):
        read_netcdf(path)
    with pytest.raises(DataError, match="does not exist"):
        read_netcdf(tmp_path / "missing.nc")
