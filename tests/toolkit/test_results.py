"""A run's results as one unit: staged, made current in one step, refused when incomplete or mixed.

The kill test interrupts the writing of a result set at 20 random moments (each step of the
transaction, and inside file writes, leaving truncated files) and then opens the directory: it
must give the previous complete result set or a one-line error, never a truncated or mixed one.
"""

import json
import os

import arviz as az
import numpy as np
import pytest
import xarray as xr

from toolkit.errors import DataError
from toolkit.io import read_netcdf, write_inference_data, write_netcdf, write_text
from toolkit.results import (CURRENT, MANIFEST, STORE, ResultWriter, clean, config_hash, current_attrs, current_manifest,
                             new_run_id, open_results)


def datasets(seed: int):
    rng = np.random.default_rng(seed)
    comparison = xr.Dataset({"log_score": (("predictor", "position"), rng.normal(size=(2, 3)))},
                            coords={"predictor": ["bayes", "learner"], "position": [1, 2, 3]})
    metrics = xr.Dataset({"cross_entropy": (("predictor",), rng.normal(size=2))}, coords={"predictor": ["bayes", "learner"]})
    idata = az.from_dict(posterior={"p": rng.random((4, 10))})
    return comparison, metrics, idata


def write_run(directory, seed: int, *, mcmc: bool = True) -> ResultWriter:
    """A complete result set, the way `comparisons.run.write_results` writes one."""
    writer = ResultWriter(directory, run_id=new_run_id(), config_hash=config_hash({"seed": seed})).begin()
    comparison, metrics, idata = datasets(seed)
    write_netcdf(comparison.assign_attrs(writer.stamp), writer.path("comparison.nc"))
    write_netcdf(metrics.assign_attrs(writer.stamp), writer.path("metrics.nc"))
    if mcmc:
        idata.posterior.attrs.update(writer.stamp)
        write_inference_data(idata, writer.path("mcmc/in_distribution.nc"))
    write_text(f"report {seed}", writer.path("report.md"))
    writer.path("figures").mkdir()
    write_text("png", writer.path("figures/cross_entropy.png"))
    writer.commit()
    return writer


def test_a_committed_run_opens_whole_through_the_run_directory(tmp_path):
    writer = write_run(tmp_path, 0)
    tree = open_results(tmp_path, verify=True)
    assert set(tree.children) == {"comparison", "metrics", "mcmc"}
    assert tree.attrs["run_id"] == writer.run_id
    xr.testing.assert_equal(tree["comparison"].to_dataset().drop_attrs(), datasets(0)[0])
    # the documented paths still read: DIR/comparison.nc, DIR/figures/, DIR/mcmc/<scenario>.nc
    assert read_netcdf(tmp_path / "comparison.nc").attrs["run_id"] == writer.run_id
    assert (tmp_path / "figures" / "cross_entropy.png").read_text() == "png"
    assert az.from_netcdf(str(tmp_path / "mcmc" / "in_distribution.nc")).posterior.attrs["run_id"] == writer.run_id
    assert os.readlink(tmp_path / CURRENT) == f"{STORE}/{writer.run_id}"


def test_a_new_run_replaces_the_old_and_removes_it(tmp_path):
    first = write_run(tmp_path, 0)
    second = write_run(tmp_path, 1, mcmc=False)
    assert open_results(tmp_path).attrs["run_id"] == second.run_id
    assert not first.folder.exists() and [p.name for p in (tmp_path / STORE).iterdir()] == [second.run_id]
    assert not (tmp_path / "mcmc").exists(), "the old run's mcmc/ must not outlive it"
    xr.testing.assert_equal(open_results(tmp_path)["metrics"].to_dataset().drop_attrs(), datasets(1)[1])


def test_chosen_nodes_and_the_manifest_alone_read_less_but_check_the_whole_set(tmp_path):
    writer = write_run(tmp_path, 0)
    tree = open_results(tmp_path, nodes=("metrics",))
    assert set(tree.children) == {"metrics"} and tree.attrs["run_id"] == writer.run_id
    xr.testing.assert_equal(tree["metrics"].to_dataset().drop_attrs(), datasets(0)[1])
    assert set(open_results(tmp_path, nodes=("comparison", "mcmc")).children) == {"comparison", "mcmc"}
    manifest = current_manifest(tmp_path)
    assert (manifest["run_id"], manifest["config_hash"]) == (writer.run_id, writer.config_hash)
    assert set(manifest["files"]) >= {"comparison.nc", "metrics.nc", "mcmc/in_distribution.nc", "report.md"}
    with pytest.raises(ValueError, match="unknown nodes \\['metric'\\]"):
        open_results(tmp_path, nodes=("metric",))
    comparison = writer.path("comparison.nc")
    comparison.write_bytes(comparison.read_bytes()[:100])  # a file not read is still checked
    for opened in (lambda: open_results(tmp_path, nodes=("metrics",)), lambda: current_manifest(tmp_path)):
        with pytest.raises(DataError, match="comparison.nc is missing or not the file its run wrote"):
            opened()
    with pytest.raises(DataError, match="holds no results"):
        current_manifest(tmp_path / "elsewhere")


def test_an_incomplete_or_mixed_set_is_refused_with_the_fix(tmp_path):
    writer = write_run(tmp_path, 0)
    other = tmp_path / "elsewhere"
    stray = write_run(other, 1)
    target = writer.path("metrics.nc")
    os.replace(stray.path("metrics.nc"), target)  # a file of another run, in place
    with pytest.raises(DataError, match="not the file its run wrote|belongs to run"):
        open_results(tmp_path)
    target.write_bytes(target.read_bytes()[:100])  # truncated
    with pytest.raises(DataError, match=r"metrics.nc is missing or not the file its run wrote.*rerun"):
        open_results(tmp_path)
    target.unlink()
    with pytest.raises(DataError, match="missing"):
        open_results(tmp_path)
    writer.path(MANIFEST).unlink()
    with pytest.raises(DataError, match="has no manifest.json: its run stopped before it finished writing"):
        open_results(tmp_path)


def test_a_mixed_file_of_the_same_size_is_caught_by_its_run_id(tmp_path):
    writer = write_run(tmp_path, 0)
    comparison = datasets(0)[0].assign_attrs(run_id="20990101T000000Z-000000", config_hash=writer.config_hash)
    write_netcdf(comparison, writer.path("comparison.nc"))
    manifest = json.loads(writer.path(MANIFEST).read_text())
    manifest["files"]["comparison.nc"]["bytes"] = writer.path("comparison.nc").stat().st_size
    writer.path(MANIFEST).write_text(json.dumps(manifest))
    for opened in (lambda: open_results(tmp_path), lambda: current_attrs(tmp_path, "comparison")):
        with pytest.raises(DataError, match="belongs to run 20990101T000000Z-000000, not to run .* \\(a mixed result set\\)"):
            opened()
    assert current_attrs(tmp_path, "metrics")["run_id"] == writer.run_id  # its own file is of its run


def test_no_results_and_an_earlier_layout_name_the_fix(tmp_path):
    with pytest.raises(DataError, match="holds no results.*run.py --out"):
        open_results(tmp_path)
    write_netcdf(datasets(0)[0], tmp_path / "comparison.nc")
    with pytest.raises(DataError, match="results without a manifest"):
        open_results(tmp_path)
    write_run(tmp_path, 1)  # a new run takes over the folder of the earlier layout
    assert (tmp_path / "comparison.nc").is_symlink()
    assert open_results(tmp_path)["comparison"].to_dataset()["log_score"].shape == (2, 3)


def test_a_copy_that_followed_the_links_still_opens_and_can_be_rerun(tmp_path):
    import shutil

    write_run(tmp_path / "a", 0)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # symlinks followed: real files and folders
    assert not (tmp_path / "b" / CURRENT).is_symlink()
    assert open_results(tmp_path / "b", verify=True)["comparison"] is not None
    writer = write_run(tmp_path / "b", 1)
    assert open_results(tmp_path / "b").attrs["run_id"] == writer.run_id


def test_leftovers_of_an_interrupted_run_are_removed_by_the_next(tmp_path):
    keep = write_run(tmp_path, 0)
    (tmp_path / STORE / "20990101T000000Z-aaaaaa").mkdir()  # staged, never committed
    (tmp_path / ".metrics.nc.x1y2.tmp").write_text("half")
    (tmp_path / ".latest.deadbeef.tmp").symlink_to("nowhere")
    clean(tmp_path)
    assert [p.name for p in (tmp_path / STORE).iterdir()] == [keep.run_id]
    assert not list(tmp_path.glob(".*.tmp*"))
    assert open_results(tmp_path).attrs["run_id"] == keep.run_id


class Killed(BaseException):
    """A kill at a chosen moment: not an Exception, so nothing on the way catches it."""


def test_killed_at_20_random_moments_the_previous_set_stays_whole(tmp_path, monkeypatch):
    """Each step of the transaction (writes, renames, links) may be the one a kill interrupts, and file
    writes may stop half-way (a truncated file). After each kill the directory opens as the previous
    complete set, or, once the new one is committed, as the new one: never truncated, never mixed."""
    rng = np.random.default_rng(20260601)
    good = write_run(tmp_path, 0)
    calls = {"n": 0, "kill_at": None, "truncate": False}
    real_replace, real_symlink = os.replace, os.symlink

    def maybe_kill(path=None):
        calls["n"] += 1
        if calls["n"] == calls["kill_at"]:
            if calls["truncate"] and path is not None and os.path.isfile(path):
                with open(path, "r+b") as f:
                    f.truncate(max(1, os.path.getsize(path) // 3))
            raise Killed()

    def replace(src, dst):
        maybe_kill(src)
        return real_replace(src, dst)

    def symlink(src, dst, *args, **kwargs):
        maybe_kill()
        return real_symlink(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "symlink", symlink)
    calls["kill_at"] = 10**9
    write_run(tmp_path / "count", 8)
    calls["n"] = 0
    write_run(tmp_path / "count", 9)  # how many interruptible steps a transaction over an earlier one has
    steps = calls["n"]
    assert steps >= 7  # five files, the manifest, the link
    current = good.run_id
    for trial in range(20):
        # a moment among the transaction's steps, or none (the run completes and becomes current)
        calls.update(n=0, kill_at=int(rng.integers(1, steps + 2)), truncate=bool(rng.integers(0, 2)))
        try:
            current = write_run(tmp_path, 100 + trial).run_id
        except Killed:
            pass
        tree = open_results(tmp_path, verify=True)  # never a DataError: a whole set is always current
        assert tree.attrs["run_id"] == current
        assert tree["comparison"].to_dataset().attrs["run_id"] == tree["metrics"].to_dataset().attrs["run_id"] == current
        assert tree["mcmc"]["in_distribution"]["posterior"].attrs["run_id"] == current
    assert current != good.run_id, "some trial should have completed"
