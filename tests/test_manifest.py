import json

import pytest

from orpo_deploy.core.manifest import (
    MANIFEST_NAME,
    atomic_output_dir,
    make_manifest,
    read_manifest,
    weights_sha256,
    write_manifest,
)


def test_atomic_output_dir_renames_only_on_success(tmp_path):
    final = tmp_path / "out"
    with atomic_output_dir(final) as tmp:
        (tmp / "model.safetensors").write_bytes(b"abc")
        assert not final.exists()
    assert (final / "model.safetensors").read_bytes() == b"abc"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_output_dir_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_output_dir(final) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_dir_keeps_old_output_until_replaced(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old").write_text("1")
    with pytest.raises(FileExistsError):
        with atomic_output_dir(final):
            pass
    with pytest.raises(RuntimeError), atomic_output_dir(final, overwrite=True):
        raise RuntimeError
    assert (final / "old").read_text() == "1"
    with atomic_output_dir(final, overwrite=True) as tmp:
        (tmp / "new").write_text("2")
    assert sorted(p.name for p in final.iterdir()) == ["new"]


def test_manifest_round_trip_and_weights_sha(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"abc")
    (tmp_path / "config.json").write_text("{}")
    shas = weights_sha256(tmp_path)
    assert shas == {"model.safetensors": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}
    write_manifest(tmp_path, make_manifest("train", weights_sha256=shas))
    m = read_manifest(tmp_path)
    assert m["stage"] == "train" and m["weights_sha256"] == shas
    assert json.loads((tmp_path / MANIFEST_NAME).read_text()) == m
    assert read_manifest(tmp_path / "nowhere") is None
