"""Batch planning: derived seeds, stable names, chunks, streaming chunks."""

from __future__ import annotations

import hashlib
import queue
from pathlib import Path

import pytest

from sdgen.config.options import describe
from sdgen.errors import InvalidRequestError
from sdgen.runs.batch.input import BatchItem
from sdgen.runs.batch.plan import _END, BatchPlanner, chunks, chunks_as_they_arrive, derived_seed

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
    with pytest.raises(InvalidRequestError) as caught:
        planner(tmp_path).plan(BatchItem(1, {"prompt": "a fox", "width": 65}))
    assert "Invalid --width 65" in describe(caught.value)
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


def test_a_typed_flag_wins_over_a_manifest_line_and_a_line_of_ones_own_over_the_flag(tmp_path, caplog) -> None:
    plan = BatchPlanner({**DEFAULTS, "steps": 6}, tmp_path, typed=frozenset({"steps"}))
    from sdgen.runs.batch.input import read_items

    record = '{"prompt": "a fox", "steps": 2, "status": "done", "path": "out/00001-1-a-fox.png", "seed": 1}'
    [replayed] = list(read_items([record], "jsonl"))
    assert replayed.replayed
    [image] = plan.plan(replayed)
    assert image.request.num_inference_steps == 6
    assert caplog.messages == [
        "Note: --steps 6 replaces the steps the fed-back records carry (line 1 has 2): the flag you typed wins "
        "over a manifest line."
    ]
    plan.plan(replayed)
    assert len(caplog.messages) == 1  # once per key
    [own] = list(read_items(['{"prompt": "an owl", "steps": 3}'], "jsonl"))
    [image] = BatchPlanner({**DEFAULTS, "steps": 6}, tmp_path, typed=frozenset({"steps"})).plan(own)
    assert image.request.num_inference_steps == 3
    assert caplog.messages[-1] == "Note: line 1 sets steps 3, which wins over --steps 6 (flags are defaults)."
    [image] = planner(tmp_path / "untyped").plan(replayed)  # --steps not typed: the record's own value
    assert image.request.num_inference_steps == 2 and len(caplog.messages) == 2
