"""Batch planning: derived seeds, stable names, chunks, streaming chunks, the manifest and what counts as done."""

from __future__ import annotations

import hashlib
import json
import queue
from pathlib import Path

import pytest

from sdgen.batch import (
    _END,
    BatchPlanner,
    Manifest,
    chunks,
    chunks_as_they_arrive,
    derived_seed,
    done_paths,
    is_done,
)
from sdgen.batchfile import BatchItem
from sdgen.errors import InvalidRequestError

DEFAULTS = {"steps": 4, "guidance_scale": 7.5, "scheduler": "euler", "width": 64, "height": 64, "model": "m"}


def planner(tmp_path: Path, **defaults) -> BatchPlanner:
    return BatchPlanner({**DEFAULTS, **defaults}, tmp_path)


def test_derived_seed_is_the_documented_hash() -> None:
    expected = int.from_bytes(hashlib.sha256(b"0:5").digest()[:4], "big")
    assert derived_seed(0, 5) == expected
    assert derived_seed(0, 5) != derived_seed(0, 6) != derived_seed(1, 6)


def test_lines_override_run_defaults_and_seeds_follow_the_line(tmp_path) -> None:
    plan = planner(tmp_path, seed=9)
    [image] = plan.plan(BatchItem(3, {"prompt": "a fox", "steps": 6}))
    assert image.request.num_inference_steps == 6 and image.request.scheduler == "euler"
    assert image.seed == derived_seed(9, 3)  # --seed is the base seed, not every line's seed
    assert image.path == tmp_path / f"00003-{image.seed}-a-fox.png"
    two = plan.plan(BatchItem(4, {"prompt": "an owl", "seed": 70, "num_images": 2}))
    assert [(i.seed, i.index, i.path.name) for i in two] == [
        (70, 0, "00004-70-an-owl.png"),
        (71, 1, "00004-71-an-owl.png"),
    ]


def test_bad_lines_and_clashing_names_are_errors(tmp_path) -> None:
    with pytest.raises(InvalidRequestError, match="Invalid --width 65"):
        planner(tmp_path).plan(BatchItem(1, {"prompt": "a fox", "width": 65}))
    with pytest.raises(InvalidRequestError, match="invalid JSON"):
        planner(tmp_path).plan(BatchItem(1, error="invalid JSON"))
    plan = BatchPlanner(DEFAULTS, tmp_path, "{slug}")
    plan.plan(BatchItem(1, {"prompt": "a fox"}))
    with pytest.raises(InvalidRequestError, match="file name 'a-fox.png' is also used by line 1"):
        plan.plan(BatchItem(2, {"prompt": "a fox"}))


def test_chunks_group_consecutive_compatible_images_up_to_the_batch_size(tmp_path) -> None:
    plan = planner(tmp_path)
    images = [
        *plan.plan(BatchItem(1, {"prompt": "a", "num_images": 3})),
        *plan.plan(BatchItem(2, {"prompt": "b"})),
        *plan.plan(BatchItem(3, {"prompt": "c", "steps": 5})),  # other steps: a new chunk
        *plan.plan(BatchItem(4, {"prompt": "d"})),
    ]
    grouped = [[(i.line, i.index) for i in chunk] for chunk in chunks(images, 2)]
    assert grouped == [[(1, 0), (1, 1)], [(1, 2), (2, 0)], [(3, 0)], [(4, 0)]]


def test_streaming_chunks_take_what_has_arrived_and_never_wait_while_holding_work(tmp_path) -> None:
    plan = planner(tmp_path)
    inbox: queue.Queue = queue.Queue()
    for line in (1, 2, 3):
        inbox.put(BatchItem(line, {"prompt": f"p{line}"}))
    stream = chunks_as_they_arrive(inbox, plan.plan, 2)
    assert [i.line for i in next(stream)] == [1, 2]
    assert [i.line for i in next(stream)] == [3]  # line 4 has not arrived: go with what is here
    inbox.put(BatchItem(4, {"prompt": "p4"}))
    inbox.put(_END)
    assert [[i.line for i in chunk] for chunk in stream] == [[4]]


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
