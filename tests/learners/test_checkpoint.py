"""Checkpoints: pickle-free round trip, corruption and mismatch errors, atomic writes."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest
import safetensors
import xarray as xr

import learners
from learners import checkpoint, load, train
from toolkit.errors import CheckpointError

LEARNERS_DIR = Path(learners.__file__).parent


@pytest.fixture
def trained(coin_prior, tiny_model, tiny_train, tmp_path):
    return train(coin_prior, tiny_model, tiny_train, tmp_path, progress=False), tmp_path


def test_load_gives_identical_predictions(trained, coin_prior):
    result, out = trained
    episodes = coin_prior.sample(jax.random.key(9), 20, 16)
    loaded = load(out)
    xr.testing.assert_identical(loaded.predict(episodes), result.predictor.predict(episodes))
    assert loaded.describe()["weights_sha256"] == result.weights_sha256
    assert loaded.describe() == result.predictor.describe()


def test_checkpoint_files_are_safetensors_and_json(trained):
    result, out = trained
    meta = json.loads(result.checkpoint.read_text())
    assert meta["step"] == 12 and meta["finished"] is True
    assert meta["model"]["vocab_size"] == 2 and meta["model"]["block_size"] == 16
    assert meta["prior"]["name"] == "coin_mixture"
    assert meta["train"]["seed"] == 0 and meta["seed"] == 0
    assert [s for s, _ in meta["loss_log"]] == [2, 4, 6, 8, 10, 12]
    assert meta["wall_time_s"] > 0
    for name in (meta["files"]["weights"], meta["files"]["optimizer"]):
        with safetensors.safe_open(out / name, "pt") as f:
            assert f.metadata()["format"] == checkpoint.FORMAT
    with safetensors.safe_open(out / meta["files"]["optimizer"], "pt") as f:
        assert {k.split(".", 1)[1] for k in f.keys()} == {"step", "exp_avg", "exp_avg_sq"}


def test_no_pickle_anywhere_in_the_package():
    for path in LEARNERS_DIR.glob("*.py"):
        text = path.read_text()
        assert "torch.load(" not in text and "import pickle" not in text, path.name


def test_truncated_weights_name_the_file(trained, coin_prior, tiny_model, tiny_train):
    _, out = trained
    weights = out / "step-000012.safetensors"
    weights.write_bytes(weights.read_bytes()[:-50])
    with pytest.raises(CheckpointError, match="step-000012.safetensors.*corrupt"):
        load(out)
    with pytest.raises(CheckpointError, match="step-000012.safetensors"):
        train(coin_prior, tiny_model, tiny_train, out, progress=False)


def test_altered_weights_fail_the_hash(trained):
    _, out = trained
    weights = out / "step-000012.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # still a valid file, different numbers
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="step-000012.safetensors.*sha256"):
        load(out)


@pytest.mark.parametrize("text", ["{not json", "", '["a list"]', '{"format": "something else"}'])
def test_bad_json_names_the_file(trained, text):
    _, out = trained
    (out / "step-000012.json").write_text(text)
    with pytest.raises(CheckpointError, match="step-000012.json"):
        load(out)


def test_corrupt_optimizer_state_names_the_file(coin_prior, tiny_model, tiny_train, tmp_path):
    import dataclasses

    train(coin_prior, tiny_model, tiny_train, tmp_path, progress=False)
    (tmp_path / "step-000012.optim.safetensors").write_bytes(b"\x00" * 10)
    longer = dataclasses.replace(tiny_train, steps=16)
    (tmp_path / "step-000012.json").write_text(
        (tmp_path / "step-000012.json").read_text().replace('"steps": 12', '"steps": 16')
    )
    with pytest.raises(CheckpointError, match="step-000012.optim.safetensors"):
        train(coin_prior, tiny_model, longer, tmp_path, progress=False)


def test_missing_checkpoint_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no learner checkpoint"):
        load(tmp_path)


def test_load_an_earlier_step(trained):
    _, out = trained
    early = load(out, step=8)
    assert early.describe()["steps"] == 8 and early.describe()["finished"] is False
    with pytest.raises(CheckpointError, match="no checkpoint at step 4"):
        load(out, step=4)


def test_writes_are_atomic_and_leave_no_temporaries(trained):
    _, out = trained
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


def test_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "step-000001.json"
    target.write_text("old")

    def explode(tmp):
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        checkpoint._atomic(target, explode)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["step-000001.json"]


def test_weights_hash_sees_every_bit():
    import torch

    a = {"w": torch.zeros(3), "b": torch.ones(2)}
    next_after_one = float(np.nextafter(np.float32(1), np.float32(2)))
    b = {"w": torch.zeros(3), "b": torch.tensor([1.0, next_after_one], dtype=torch.float32)}
    assert checkpoint.weights_sha256(a) == checkpoint.weights_sha256(dict(reversed(list(a.items()))))
    assert checkpoint.weights_sha256(a) != checkpoint.weights_sha256(b)
