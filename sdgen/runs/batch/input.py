"""Reading batch input: plain text, JSON Lines, CSV and TSV, line by line (so stdin can stream).

Each input line becomes a BatchItem: its line number, the options it sets (prompt plus any generation
option under its CLI name), or the reason it cannot be used. Nothing here loads a model.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdgen.config import options, settings
from sdgen.errors import NAME, InvalidRequestError
from sdgen.record.metadata import RECORD_FACTS

FORMATS = ("txt", "jsonl", "csv", "tsv")
_EXTENSIONS = {".txt": "txt", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv"}


def line_kinds() -> dict[str, tuple[str, type]]:
    """What one line may set, by its name there: the prompt and the per-image options of the table (their
    `batch_line` names), each with its settings key and type."""
    rows = options.table().line_rows()
    return {name: ("prompt", str) if row is None else (row.key, row.kind) for name, row in rows.items()}


def record_keys() -> frozenset[str]:
    """Fields of sdgen's own --json lines and manifest records that describe a result or the run, not a
    line: accepted (so those files can be fed back in) and ignored. The model, VAE, dtype ... belong to the
    run, set by flags."""
    rows = options.table().recorded()
    return frozenset(RECORD_FACTS) | {str(row.record) for row in rows if row.batch_line is None}


@dataclass(frozen=True)
class BatchItem:
    """One usable input line, or the reason it is not usable (then `error` is set)."""

    line: int  # 1-based line number in the input: names and derived seeds hang on it
    values: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    replayed: bool = False  # a record fed back in (a manifest's or --json's line): the flags typed win over it


def detect_format(source: str, explicit: str | None) -> str:
    """--format when given, else the file extension; stdin and unknown extensions read as plain text."""
    if explicit is not None:
        if explicit not in FORMATS:
            raise InvalidRequestError(f"Invalid {NAME} {explicit!r}: choose one of {', '.join(FORMATS)}.", "format")
        return explicit
    return _EXTENSIONS.get(Path(source).suffix.lower(), "txt") if source != "-" else "txt"


class Unreadable(str):
    """A line that is not text (invalid UTF-8, a NUL byte): empty, with the reason it was not read."""

    reason: str

    def __new__(cls, reason: str) -> Unreadable:
        line = super().__new__(cls, "\n")
        line.reason = reason
        return line


def text_lines(raw: Iterable[bytes]) -> Iterator[str]:
    """Bytes lines as text, one at a time: a UTF-8 byte order mark is dropped and CRLF endings are read
    like LF (by read_items). A line that is not UTF-8 or holds a NUL byte becomes Unreadable, so it is
    reported with its line number while the other lines are made."""
    for number, data in enumerate(raw, start=1):
        if number == 1 and data.startswith(b"\xef\xbb\xbf"):
            data = data[3:]
        nul = data.find(b"\x00")
        if nul >= 0:
            yield Unreadable(f"holds a NUL byte (column {nul + 1}); is this a text file?")
            continue
        try:
            yield data.decode("utf-8")
        except UnicodeDecodeError as error:
            yield Unreadable(f"not UTF-8 text ({error.reason} at byte {error.start + 1}); save the file as UTF-8")


def read_items(lines: Iterable[str], fmt: str) -> Iterator[BatchItem]:
    """Yield items as lines arrive (nothing is read ahead), skipping blank lines and # comments."""
    if fmt in ("csv", "tsv"):
        yield from _table_items(lines, "\t" if fmt == "tsv" else ",")
        return
    for number, text in enumerate(lines, start=1):
        if isinstance(text, Unreadable):
            yield BatchItem(number, error=text.reason)
            continue
        text = text.rstrip("\r\n")
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        if fmt == "txt":
            yield BatchItem(number, {"prompt": text.strip()})
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            yield BatchItem(number, error=f"invalid JSON ({error.msg} at column {error.colno})")
            continue
        if not isinstance(data, dict):
            yield BatchItem(number, error='expected a JSON object like {"prompt": "a fox", "seed": 7}')
            continue
        yield _typed_item(number, data, from_text=False)


def _table_items(lines: Iterable[str], delimiter: str) -> Iterator[BatchItem]:
    unreadable: list[BatchItem] = []  # lines csv saw as blank because they were not text

    def noting(lines: Iterable[str]) -> Iterator[str]:
        for number, text in enumerate(lines, start=1):
            if isinstance(text, Unreadable):
                unreadable.append(BatchItem(number, error=text.reason))
            yield text

    reader = csv.reader(noting(lines), delimiter=delimiter)
    header: list[str] | None = None
    for row in reader:
        yield from unreadable
        unreadable.clear()
        number = reader.line_num
        if not row or not any(cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        if header is None:
            header = [cell.strip().replace("-", "_") for cell in row]
            known, ignored = line_kinds(), record_keys()
            unknown = [name for name in header if name not in known and name not in ignored]
            if unknown or "prompt" not in header:
                problem = f"unknown column {unknown[0]!r}" if unknown else "no 'prompt' column"
                raise InvalidRequestError(
                    f"Invalid header on line {number}: {problem}; columns are prompt and any of "
                    f"{', '.join(sorted(set(known) - {'prompt'}))}."
                )
            continue
        if len(row) != len(header):
            yield BatchItem(number, error=f"{len(row)} cells, but the header has {len(header)} columns")
            continue
        yield _typed_item(number, {name: cell for name, cell in zip(header, row, strict=True) if cell != ""}, True)
    yield from unreadable


def _unknown_key(raw_key: str, known: dict[str, Any]) -> str:
    """The key's likely meaning, or where every key is listed (there are too many to name on one line)."""
    import difflib

    close = difflib.get_close_matches(raw_key.replace("-", "_"), sorted(known), n=3)
    hint = f"did you mean {' or '.join(close)}?" if close else "every key is in docs/reference.md"
    return f"unknown key {raw_key!r}; {hint}"


def _typed_item(number: int, data: dict[str, Any], from_text: bool) -> BatchItem:
    """Check keys and value types; text cells (CSV) are converted, JSON values must have the right type."""
    values: dict[str, Any] = {}
    known, ignored = line_kinds(), record_keys()
    for raw_key, value in data.items():
        name = raw_key.replace("-", "_")
        if name in ignored or value is None:
            continue
        if name not in known:
            return BatchItem(number, error=_unknown_key(raw_key, known))
        key, kind = known[name]
        if from_text:
            try:
                value = settings.parse_text(value, kind, key)
            except InvalidRequestError as error:
                return BatchItem(number, error=str(error))
        try:
            values[key] = settings.as_kind(value, kind)
        except TypeError:
            return BatchItem(number, error=f"invalid {key} {value!r}: must be {settings.kind_name(kind)}")
    if not isinstance(values.get("prompt"), str):
        return BatchItem(number, error="no prompt")
    return BatchItem(number, values, replayed="status" in data)
