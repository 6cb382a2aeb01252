"""Batch input formats: text, JSON Lines, CSV, TSV; line numbers, types and per-line errors."""

from __future__ import annotations

import json
import re

import pytest

from sdgen.config.options import describe
from sdgen.errors import InvalidRequestError
from sdgen.runs.batch.input import BatchItem, detect_format, read_items


def items(text: str, fmt: str) -> list[BatchItem]:
    return list(read_items(text.splitlines(keepends=True), fmt))


def test_plain_text_skips_blank_lines_and_comments_and_keeps_line_numbers() -> None:
    assert items("a red fox\n\n# not a prompt\n  a blue whale  \n", "txt") == [
        BatchItem(1, {"prompt": "a red fox"}),
        BatchItem(4, {"prompt": "a blue whale"}),
    ]


def test_json_lines_with_every_option_and_typed_values() -> None:
    line = {
        "prompt": "a fox",
        "seed": 7,
        "steps": 30,
        "negative_prompt": "blurry",
        "scheduler": "euler-a",
        "num_images": 2,
        "guidance-scale": 5,
        "width": 64,
        "height": 64,
        "strength": 0.5,
        "init_image": "in.png",
    }
    [item] = items(json.dumps(line) + "\n", "jsonl")
    assert item.values["guidance_scale"] == 5.0 and isinstance(item.values["guidance_scale"], float)
    assert item.values["seed"] == 7 and item.values["init_image"] == "in.png" and item.error is None


def test_sdgen_records_are_valid_input() -> None:
    record = {
        "path": "out/1.png",
        "seed": 3,
        "prompt": "a fox",
        "model": "m",
        "device": "cpu",
        "dtype": "float32",
        "seconds": 1.2,
        "status": "done",
        "error": None,
        "line": 4,
        "index": 0,
        "strength": None,
    }
    [item] = items(json.dumps(record), "jsonl")
    assert item == BatchItem(1, {"prompt": "a fox", "seed": 3}, replayed=True)  # a record: the flags typed win over it


@pytest.mark.parametrize(
    "text, error",
    [
        ('{"prompt": "a fox"', "invalid JSON (Expecting ',' delimiter at column 19)"),
        ('["a fox"]', 'expected a JSON object like {"prompt": "a fox", "seed": 7}'),
        ('{"prompt": "a fox", "stpes": 3}', "unknown key 'stpes'; did you mean steps"),
        ('{"prompt": "a fox", "steps": "30"}', "invalid steps '30': must be a whole number"),
        ('{"prompt": "a fox", "seed": true}', "invalid seed True: must be a whole number"),
        ('{"seed": 3}', "no prompt"),
    ],
)
def test_bad_json_lines_are_items_with_an_error(text: str, error: str) -> None:
    [item] = items("\n" + text + "\n", "jsonl")
    assert item.line == 2 and item.error is not None and item.error.startswith(error)


def test_csv_and_tsv_with_a_header_row() -> None:
    csv_text = 'prompt,seed,steps,negative-prompt\n"a fox, red",3,,blurry\nan owl,,12,\n'
    assert items(csv_text, "csv") == [
        BatchItem(2, {"prompt": "a fox, red", "seed": 3, "negative_prompt": "blurry"}),
        BatchItem(3, {"prompt": "an owl", "steps": 12}),
    ]
    assert items("prompt\tguidance_scale\na fox\t5.5\n", "tsv") == [
        BatchItem(2, {"prompt": "a fox", "guidance_scale": 5.5})
    ]
    [bad_cell, short_row] = items("prompt,steps\na fox,many\nan owl\n", "csv")
    assert bad_cell.error == "Invalid steps='many': must be a whole number."
    assert short_row.error == "1 cells, but the header has 2 columns"


def test_a_bad_csv_header_stops_the_run() -> None:
    with pytest.raises(InvalidRequestError, match="Invalid header on line 1: unknown column 'size'"):
        items("prompt,size\na fox,3\n", "csv")
    with pytest.raises(InvalidRequestError, match="no 'prompt' column"):
        items("seed\n3\n", "csv")


def test_format_from_extension_or_flag() -> None:
    assert [detect_format(name, None) for name in ("a.txt", "a.JSONL", "a.csv", "a.tsv", "a.prompts", "-")] == [
        "txt",
        "jsonl",
        "csv",
        "tsv",
        "txt",
        "txt",
    ]
    assert detect_format("-", "jsonl") == "jsonl"
    with pytest.raises(InvalidRequestError) as caught:
        detect_format("a.txt", "yaml")
    assert re.search("Invalid --format 'yaml': choose one of txt, jsonl, csv, tsv.", describe(caught.value))


def test_items_are_read_lazily_so_stdin_can_stream() -> None:
    consumed = []

    def producer():
        for text in ("a fox\n", "an owl\n"):
            consumed.append(text)
            yield text

    reader = read_items(producer(), "txt")
    assert next(reader).values["prompt"] == "a fox" and consumed == ["a fox\n"]


def test_a_bom_and_crlf_endings_are_read_transparently() -> None:
    from sdgen.runs.batch.input import text_lines

    raw = [b"\xef\xbb\xbfa red fox\r\n", b"an owl\r\n"]
    assert list(read_items(text_lines(raw), "txt")) == [
        BatchItem(1, {"prompt": "a red fox"}),
        BatchItem(2, {"prompt": "an owl"}),
    ]
    table = [b"\xef\xbb\xbfprompt,seed\r\n", b"a fox,7\r\n"]
    assert list(read_items(text_lines(table), "csv")) == [BatchItem(2, {"prompt": "a fox", "seed": 7})]


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "csv"])
def test_lines_that_are_not_text_are_reported_with_their_numbers(fmt) -> None:
    from sdgen.runs.batch.input import text_lines

    good = {"txt": b"a fox\n", "jsonl": b'{"prompt": "a fox"}\n', "csv": b"a fox\n"}[fmt]
    raw = [b"prompt\n"] if fmt == "csv" else []
    raw += [good, b"caf\xe9 latin-1\n", b"a\x00b\n", good]
    found = list(read_items(text_lines(raw), fmt))
    first = 2 if fmt == "csv" else 1
    assert [(item.line, item.error is None) for item in found] == [
        (first, True),
        (first + 1, False),
        (first + 2, False),
        (first + 3, True),
    ]
    assert found[1].error.startswith("not UTF-8 text (invalid continuation byte at byte 4)")
    assert found[2].error == "holds a NUL byte (column 2); is this a text file?"
