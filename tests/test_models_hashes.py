"""A1111's model hash of a single-file checkpoint: the first 10 hex digits of the file's sha256, hashed once
per file version and kept on disk, so the next run (a new process) reads it instead of hashing again."""

from __future__ import annotations

import builtins
import hashlib
import json
import os

import pytest

from sdgen.models import hashes


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SDGEN_CACHE_DIR", str(tmp_path / "cache"))
    hashes._sha256.cache_clear()
    yield tmp_path / "cache"
    hashes._sha256.cache_clear()


def test_the_short_hash_is_a1111s_and_is_kept_per_file_version(cache_dir, tmp_path, monkeypatch) -> None:
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"weights" * 1000)
    assert hashes.model_short_hash(model) == hashlib.sha256(model.read_bytes()).hexdigest()[:10]
    kept = json.loads((cache_dir / "hashes.json").read_text())
    assert kept[str(model.resolve())]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()

    hashes._sha256.cache_clear()  # a new process: the disk cache answers, the file is not read again
    real_open = builtins.open

    def no_weights_read(path, *args, **kwargs):
        assert str(path) != str(model.resolve()), "hashed again"
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", no_weights_read)
    assert hashes.model_short_hash(model) == hashlib.sha256(model.read_bytes()).hexdigest()[:10]
    monkeypatch.setattr(builtins, "open", real_open)

    model.write_bytes(b"other weights")  # a new version of the file is hashed anew
    os.utime(model, ns=(1, 1))
    assert hashes.model_short_hash(model) == hashlib.sha256(b"other weights").hexdigest()[:10]


def test_no_hash_for_a_folder_or_a_hub_id_and_an_unwritable_cache_only_costs_time(tmp_path, monkeypatch) -> None:
    assert hashes.model_short_hash(tmp_path) is None
    assert hashes.model_short_hash("stable-diffusion-v1-5/stable-diffusion-v1-5") is None
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("SDGEN_CACHE_DIR", str(blocker))
    hashes._sha256.cache_clear()
    model = tmp_path / "m.ckpt"
    model.write_bytes(b"abc")
    assert hashes.model_short_hash(model) == hashlib.sha256(b"abc").hexdigest()[:10]
    hashes._sha256.cache_clear()
