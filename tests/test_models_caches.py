"""sdgen's own cache folder (sdgen/models/caches.py) and `sdgen cache list|prune`, on a cache folder laid out as
the OpenVINO back end and --compile write it (the real back end's entries: tests/test_openvino.py)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sdgen.cli import app
from sdgen.errors import InvalidRequestError
from sdgen.models.caches import LAST_USED, choose_pruned, list_caches, mark_used, remove, size_text

runner = CliRunner()
DAY = 86400.0
OV = "openvino/ov-{version}/{part}/{key}"


def _installed(package: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(package)


def _entry(root: Path, relative: str, size: int, days_ago: float, key: dict | None = None) -> Path:
    folder = root / relative
    folder.mkdir(parents=True)
    (folder / "model.bin").write_bytes(os.urandom(size))
    if key is not None:
        (folder / "key.json").write_text(json.dumps(key))
    mark_used(folder)
    when = time.time() - days_ago * DAY
    os.utime(folder / LAST_USED, (when, when))
    return folder


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """Five entries: a current U-Net (used today, its static copy a hard link), a current text encoder (40 days
    unused), one for an older OpenVINO, a --compile cache of the installed torch, a crashed conversion."""
    ov = _installed("openvino")
    unet = _entry(tmp_path, OV.format(version=ov, part="unet", key="a1"), 300_000, 0,
                  {"model": "someone/sd15", "commit": "0123456789abcdef", "quantize": "f16"})
    os.link(unet / "model.bin", unet / "static-1.bin")
    _entry(tmp_path, OV.format(version=ov, part="text_encoder", key="b2"), 100_000, 40,
           {"files": ["/models/local-sd"], "quantize": "none"})
    _entry(tmp_path, OV.format(version="2024.0.0", part="unet", key="c3"), 200_000, 1, {"quantize": "none"})
    _entry(tmp_path, f"compile/torch-{_installed('torch')}/sd15-0123456789/cpu-bfloat16", 50_000, 10)
    crashed = _entry(tmp_path, OV.format(version=ov, part="unet", key=".tmp-x"), 10_000, 3)
    os.utime(crashed / "model.bin", (time.time() - 3 * DAY,) * 2)
    return tmp_path


def test_each_entry_is_found_with_its_model_form_size_and_staleness(cache: Path) -> None:
    entries = {Path(entry.path).name: entry for entry in list_caches(cache)}
    assert set(entries) == {"a1", "b2", "c3", "cpu-bfloat16", ".tmp-x"}
    unet = entries["a1"]
    assert (unet.kind, unet.part, unet.model, unet.form) == ("openvino", "unet", "someone/sd15@0123456789", "f16")
    assert not unet.stale and 300_000 <= unet.size < 300_000 + 16384  # the hard-linked copy counted once
    assert entries["b2"].model == "/models/local-sd" and not entries["b2"].stale
    assert entries["c3"].stale and entries["c3"].version == "openvino 2024.0.0"
    assert entries["cpu-bfloat16"].kind == "torch-compile" and entries["cpu-bfloat16"].model == "sd15"
    assert not entries["cpu-bfloat16"].stale
    assert entries[".tmp-x"].kind == "unfinished"  # three days old: no conversion still running
    assert [Path(entry.path).name for entry in list_caches(cache)][0] == "a1"  # most recently used first


def test_prune_chooses_stale_unfinished_unused_then_least_recently_used(cache: Path) -> None:
    def names(**options) -> set[str]:
        return {Path(entry.path).name for entry in choose_pruned(list_caches(cache), **options)}

    assert names() == {"c3", ".tmp-x"}  # what the installed versions can never read, a crash's leftover
    assert names(unused_days=30) == {"c3", ".tmp-x", "b2"}
    # the rest (a1 300 KB, cpu-bfloat16 50 KB, b2 100 KB, each and its key on disk) to 0.0004 GB (430 KB): b2 goes,
    # used longest ago; to 0.0003 GB (322 KB) the --compile cache too
    assert names(max_size_gb=0.0004) == {"c3", ".tmp-x", "b2"}
    assert names(max_size_gb=0.0003) == {"c3", ".tmp-x", "b2", "cpu-bfloat16"}
    assert names(everything=True) == {"a1", "b2", "c3", "cpu-bfloat16", ".tmp-x"}
    with pytest.raises(InvalidRequestError, match="--max-size -1 is negative"):
        names(max_size_gb=-1)


def test_a_conversion_still_running_is_never_pruned(tmp_path: Path) -> None:
    # a temporary folder younger than a day may be another process converting right now
    _entry(tmp_path, OV.format(version=_installed("openvino"), part="unet", key=".tmp-new"), 1000, 0)
    [entry] = list_caches(tmp_path)
    assert entry.kind == "converting"
    assert choose_pruned([entry], unused_days=0, max_size_gb=0) == []


def test_remove_deletes_the_folder_empty_parents_and_records_left_without_models(cache: Path) -> None:
    old = next(entry for entry in list_caches(cache) if entry.stale)
    recent = cache / "openvino" / "recent"
    recent.mkdir()
    (recent / "gone.json").write_text(json.dumps({"unet": {"xml": f"{old.path}/model.xml", "shapes": []}}))
    kept = next(entry for entry in list_caches(cache) if Path(entry.path).name == "a1")
    (Path(kept.path) / "model.xml").write_text("<net/>")
    (recent / "kept.json").write_text(json.dumps({"unet": {"xml": f"{kept.path}/model.xml", "shapes": []}}))
    (Path(old.path) / "model.xml").write_text("<net/>")
    remove([old], cache)
    assert not (cache / "openvino" / "ov-2024.0.0").exists()  # its part and version folders were left empty
    assert not (recent / "gone.json").exists() and (recent / "kept.json").exists()
    assert (cache / "openvino").is_dir()


def test_each_shape_a_model_ran_at_is_an_entry_of_its_own_that_goes_before_the_model(tmp_path: Path) -> None:
    # a converted model's static-shape forms (shapes/DIGEST/: the model at one size and batch, its .bin a hard
    # link to the model's, and OpenVINO's compiled blobs, the bulk): a size no longer run can go on its own
    unet = _entry(tmp_path, OV.format(version=_installed("openvino"), part="unet", key="a1"), 300_000, 0,
                  {"model": "someone/sd15", "commit": "0123456789abcdef", "quantize": "f16-padded"})  # each run
    for name, days_ago, shapes in (("s-old", 30, [[2, 4, 64, 64], [], [2, 77, 768]]), ("s-new", 1, [[1, 4, 96, 96]])):
        shape = unet / "shapes" / name
        (shape / "compiled").mkdir(parents=True)
        os.link(unet / "model.bin", shape / "model.bin")
        (shape / "shapes.json").write_text(json.dumps(shapes))
        (shape / "compiled" / "blob.blob").write_bytes(os.urandom(150_000))
        mark_used(shape)
        os.utime(shape / LAST_USED, (time.time() - days_ago * DAY,) * 2)
    (unet / "compiled").mkdir()  # an older sdgen's blobs of every shape, beside the model: never read again
    (unet / "compiled" / "old.blob").write_bytes(os.urandom(50_000))
    entries = {Path(entry.path).name: entry for entry in list_caches(tmp_path)}
    assert set(entries) == {"a1", "s-old", "s-new", "compiled"}
    old = entries["s-old"]
    assert (old.kind, old.part, old.model, old.form) == ("openvino", "unet", "someone/sd15@0123456789", "f16-padded")
    assert old.shapes == "2x4x64x64 () 2x77x768" and entries["s-new"].shapes == "1x4x96x96"
    assert 150_000 <= old.size < 150_000 + 16384  # its .bin is the model's weights: freed with the model only
    assert 300_000 <= entries["a1"].size < 300_000 + 16384  # without its shapes' or the old blobs' bytes
    assert entries["compiled"].stale and not entries["a1"].stale and not old.stale

    def names(**options) -> set[str]:
        return {Path(entry.path).name for entry in choose_pruned(list_caches(tmp_path), **options)}

    assert names() == {"compiled"}
    assert names(unused_days=10) == {"compiled", "s-old"}  # the size not run for a month; the model stays
    assert names(max_size_gb=0.00045) == {"compiled", "s-old"}  # 600 KB to 480: the least recently used shape
    older = [replace(entry, last_used=0.0) if entry.path == str(unet) else entry for entry in list_caches(tmp_path)]
    assert {Path(entry.path).name for entry in choose_pruned(older, unused_days=10)} == set(entries)  # with it
    assert {Path(entry.path).name for entry in choose_pruned(older, max_size_gb=0.00045)} == set(entries)
    removed, failed = remove(choose_pruned(list_caches(tmp_path), unused_days=10), tmp_path)
    assert not failed and not (unet / "shapes" / "s-old").exists() and not (unet / "compiled").exists()
    assert (unet / "model.bin").stat().st_nlink == 2 and (unet / "shapes" / "s-new" / "model.xml").parent.is_dir()


def test_the_cli_lists_asks_before_removing_and_prunes(cache: Path, monkeypatch) -> None:
    monkeypatch.setenv("SDGEN_CACHE_DIR", str(cache))
    listed = runner.invoke(app, ["cache", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    assert len(listed.stdout.splitlines()) == 5
    table = runner.invoke(app, ["cache", "list"])
    assert "stale" in table.stdout and "5 entries" in table.stdout and str(cache) in table.stdout
    dry = runner.invoke(app, ["cache", "prune", "--unused-days", "30", "--dry-run"])
    assert dry.exit_code == 0 and "Would remove 3 entries" in dry.stderr
    assert len(list_caches(cache)) == 5
    asked = runner.invoke(app, ["cache", "prune"], input="n\n")
    assert asked.exit_code == 2 and "pass --yes" in asked.stderr
    assert len(list_caches(cache)) == 5
    done = runner.invoke(app, ["cache", "prune", "--yes"])
    assert done.exit_code == 0 and "Removed 2 entries" in done.stderr, done.output
    assert {Path(entry.path).name for entry in list_caches(cache)} == {"a1", "b2", "cpu-bfloat16"}
    bad = runner.invoke(app, ["cache", "prune", "--unused-days", "-2"])
    assert bad.exit_code == 2 and "--unused-days -2 is negative" in bad.stderr
    nothing = runner.invoke(app, ["cache", "prune"])
    assert nothing.exit_code == 0 and "Nothing to remove" in nothing.stderr


def test_an_entry_that_cannot_be_removed_is_named_and_what_was_removed_is_said(cache: Path, monkeypatch) -> None:
    import shutil

    from sdgen.models import caches

    monkeypatch.setenv("SDGEN_CACHE_DIR", str(cache))
    real = shutil.rmtree

    def refuse_the_old_version(path, *args, **kwargs):
        if "ov-2024.0.0" in str(path):
            raise PermissionError(13, "Permission denied")
        return real(path, *args, **kwargs)

    monkeypatch.setattr(caches.shutil, "rmtree", refuse_the_old_version)
    result = runner.invoke(app, ["cache", "prune", "--all", "--yes"])
    assert result.exit_code == 1, result.output
    assert "Could not remove" in result.stderr and "ov-2024.0.0" in result.stderr
    assert "Permission denied" in result.stderr
    assert "Traceback" not in result.output
    left = list_caches(cache)
    assert [Path(entry.path).name for entry in left] == ["c3"]  # the ones after it were removed too
    assert "Removed 4 entries" in result.stderr


def test_an_empty_or_missing_cache_lists_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SDGEN_CACHE_DIR", str(tmp_path / "none"))
    assert list_caches(tmp_path / "none") == []
    (tmp_path / "stray" / "openvino").mkdir(parents=True)
    (tmp_path / "stray" / "openvino" / "ov-notes.txt").write_text("not a folder")  # skipped, not a traceback
    assert list_caches(tmp_path / "stray") == []
    result = runner.invoke(app, ["cache", "list"])
    assert result.exit_code == 0 and "The cache is empty" in result.stdout


def test_sizes_read_as_people_read_them() -> None:
    assert [size_text(n) for n in (812, 4096, 3_006_464, 7.9 * 1024**3)] == ["812 B", "4.0 KB", "2.9 MB", "7.9 GB"]
