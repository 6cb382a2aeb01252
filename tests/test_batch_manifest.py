"""The batch manifest: merging process parts, what counts as done, conflicts with foreign files."""

from __future__ import annotations

import json

import pytest

from sdgen.errors import InvalidRequestError
from sdgen.runs.batch.input import BatchItem
from sdgen.runs.batch.manifest import Manifest, done_paths, is_done

from .test_batch_plan import planner


def test_manifest_parts_merge_in_line_order_and_done_needs_the_file(tmp_path) -> None:
    for rank, lines in ((0, (1, 3)), (1, (2,))):
        part = Manifest(tmp_path, rank, 2)
        for line in lines:
            (tmp_path / f"{line}.png").write_bytes(b"png")
            part.append({"line": line, "index": 0, "path": str(tmp_path / f"{line}.png"), "status": "done"})
        part.close()
    merged = Manifest(tmp_path)
    assert len(merged.records()) == 3  # parts are read before merging too (resume after a crash)
    merged.merge_parts()
    assert [json.loads(t)["line"] for t in (tmp_path / "manifest.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert not list(tmp_path.glob(".manifest.jsonl.rank*"))
    (tmp_path / "2.png").unlink()
    assert sorted(p.name for p in done_paths(merged)) == ["1.png", "3.png"]


def test_done_means_same_request_and_a_foreign_file_is_a_conflict(tmp_path) -> None:
    plan = planner(tmp_path)
    [image] = plan.plan(BatchItem(1, {"prompt": "a fox", "seed": 1}))
    assert not is_done(image, {}, "m")
    image.path.write_bytes(b"not made by sdgen")
    with pytest.raises(InvalidRequestError, match="exists but was not made from this line's settings"):
        is_done(image, {}, "m")
    record = {**image.record("m"), "status": "done"}
    assert is_done(image, {image.path: record}, "m")
    with pytest.raises(InvalidRequestError, match="exists but was not made"):
        is_done(image, {image.path: {**record, "steps": 99}}, "m")  # the line was edited: never overwrite


def test_a_torn_last_line_is_skipped_and_the_next_record_starts_a_new_line(tmp_path) -> None:
    """A process killed while writing a record leaves half a line (no newline). Reading skips it, merging
    process parts skips it, and appending after it starts on a fresh line."""
    (tmp_path / "a.png").write_bytes(b"png")
    good = {"line": 1, "index": 0, "path": str(tmp_path / "a.png"), "status": "done"}
    part = tmp_path / ".manifest.jsonl.rank1"
    part.write_text(json.dumps(good) + '\n{"line": 2, "ind')
    manifest = Manifest(tmp_path)
    assert manifest.records() == [good]
    manifest.merge_parts()  # used to crash on the torn line
    assert [json.loads(t) for t in (tmp_path / "manifest.jsonl").read_text().splitlines()] == [good]
    (tmp_path / "manifest.jsonl").write_text(json.dumps(good) + '\n{"line": 3, "in')
    manifest = Manifest(tmp_path)
    manifest.append({**good, "line": 4})
    manifest.close()
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert lines[1] == '{"line": 3, "in' and json.loads(lines[2])["line"] == 4
    assert [r["line"] for r in manifest.records()] == [1, 4]


def test_the_folder_lock_names_its_holder_and_goes_with_it(tmp_path) -> None:
    import os
    import subprocess
    import sys

    from sdgen.runs.batch.manifest import FolderLock

    holder = subprocess.Popen(
        [sys.executable, "-c", f"from sdgen.runs.batch.manifest import FolderLock; from pathlib import Path; "
         f"lock = FolderLock(Path({str(tmp_path)!r})); lock.acquire(); print('locked', flush=True); input()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(InvalidRequestError) as caught:
            FolderLock(tmp_path).acquire()
        assert f"Another sdgen batch (process {holder.pid}) is writing to" in str(caught.value)
        assert ".sdgen-batch.lock" in str(caught.value)
    finally:
        holder.kill()  # no chance to clean up: the operating system releases the lock
        holder.wait()
    lock = FolderLock(tmp_path)
    lock.acquire()
    assert (tmp_path / ".sdgen-batch.lock").read_text() == f"{os.getpid()}\n"
    lock.release()
    assert not (tmp_path / ".sdgen-batch.lock").exists()


def test_each_record_says_its_input_and_another_input_is_noted(tmp_path, monkeypatch) -> None:
    from sdgen.runs.batch.manifest import other_input_note

    (tmp_path / "a.txt").write_text("a fox\n")
    first = Manifest(tmp_path, source=str(tmp_path / "a.txt"))
    first.append({"line": 1, "status": "done"})
    first.close()
    assert Manifest(tmp_path).records() == [{"line": 1, "status": "done", "input": str(tmp_path / "a.txt")}]
    monkeypatch.chdir(tmp_path)
    same = Manifest(tmp_path, source="a.txt")  # the same file, spelled otherwise
    assert other_input_note(same, same.records()) is None
    stdin = Manifest(tmp_path, source="-")
    note = other_input_note(stdin, stdin.records())
    assert note is not None and f"input {str(tmp_path / 'a.txt')!r}" in note and "of '-'" in note
    assert other_input_note(stdin, [{"line": 1, "status": "done"}]) is None  # an older record does not say
