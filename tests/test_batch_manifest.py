"""The batch manifest: merging process parts, what counts as done, conflicts with foreign files."""

from __future__ import annotations

import json

import pytest

from sdgen.batch.input import BatchItem
from sdgen.batch.manifest import Manifest, done_paths, is_done
from sdgen.errors import InvalidRequestError

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
