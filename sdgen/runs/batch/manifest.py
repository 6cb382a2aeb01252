"""manifest.jsonl: one record per image, appended and flushed as each finishes; what counts as done.

With several processes each appends to its own part file and the main process merges them at the end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sdgen.config import options
from sdgen.errors import InvalidRequestError, SdgenError, WriteError, os_reason
from sdgen.record.metadata import read_image_metadata
from sdgen.runs.batch.plan import PlannedImage

MANIFEST = "manifest.jsonl"


class Manifest:
    """manifest.jsonl in the output folder; with several processes each appends to its own part file and
    the main process merges them at the end."""

    def __init__(self, folder: Path, rank: int = 0, world: int = 1, source: str | None = None) -> None:
        self.folder = folder
        self.path = folder / MANIFEST
        self.write_path = self.path if world == 1 else folder / f".{MANIFEST}.rank{rank}"
        self.input = input_name(source) if source is not None else None  # each record's "input"
        self._handle: Any = None

    def append(self, record: Mapping[str, Any]) -> None:
        """One record, flushed at once; a disk that fails is one line naming the file (WriteError)."""
        if self.input is not None:
            record = {**record, "input": self.input}
        try:
            if self._handle is None:
                self._handle = _open_for_append(self.write_path)
            self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
            self._handle.flush()
        except OSError as error:
            raise WriteError(f"Cannot write {str(self.write_path)!r}: {os_reason(error)}.") from None

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def records(self) -> list[dict[str, Any]]:
        """Every record so far, the merged file first, then any part files left by processes."""
        return [record for path in [self.path, *self.part_files()] for record in read_records(path)]

    def part_files(self) -> list[Path]:
        return sorted(self.folder.glob(f".{MANIFEST}.rank*"))

    def merge_parts(self) -> None:
        """Main process: move the part files' records into manifest.jsonl, in line order."""
        parts = self.part_files()
        records = sorted(
            (record for path in parts for record in read_records(path)),
            key=lambda r: (r.get("line", 0), r.get("index", 0)),
        )
        if records:
            with _open_for_append(self.path) as handle:
                handle.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
        for path in parts:
            path.unlink()


def input_name(source: str) -> str:
    """What a record says of the input it came from: - for stdin, else the file's absolute path."""
    return source if source == "-" else str(Path(source).expanduser().resolve())


def other_input_note(manifest: Manifest, records: list[dict[str, Any]]) -> str | None:
    """One line when the folder's manifest already holds records of another input (two inputs would mix in
    one manifest); None for a resumed or repeated run of the same input, or records that do not say."""
    others = [str(r["input"]) for r in records if r.get("input") not in (None, manifest.input)]
    if manifest.input is None or not others:
        return None
    return (
        f"Note: {str(manifest.path)!r} already holds records of the input {others[-1]!r}; this run's, of "
        f"{manifest.input!r}, go into the same manifest: use -o NEW/ to keep them apart."
    )


def read_records(path: Path) -> list[dict[str, Any]]:
    """A manifest file's records. A line cut by a crash (a process killed mid-write) is skipped: that image
    is simply not done, and the next run makes it again."""
    if not path.is_file():
        return []
    found = []
    for text in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            found.append(record)
    return found


def _open_for_append(path: Path) -> Any:
    """Open for appending, first ending a line cut by a crash, so the next record starts on its own line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torn = False
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as existing:
            existing.seek(-1, os.SEEK_END)
            torn = existing.read(1) != b"\n"
    handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - the caller keeps it open for the run
    if torn:
        handle.write("\n")
    return handle


def done_paths(manifest: Manifest, records: list[dict[str, Any]] | None = None) -> dict[Path, dict[str, Any]]:
    """Images a previous run finished: a 'done' record whose file is still there, by path."""
    done: dict[Path, dict[str, Any]] = {}
    for record in manifest.records() if records is None else records:
        if record.get("path") is None:
            continue
        path = Path(record["path"])
        if record.get("status") == "done" and path.is_file():
            done[path] = record
        else:
            done.pop(path, None)
    return done


def is_done(image: PlannedImage, done: Mapping[Path, Mapping[str, Any]], model: str) -> bool:
    """Done means: the file exists and was made from exactly this request, by its manifest record or else
    the PNG's own sdgen record (an image written just before a crash). Any other file there is a conflict."""
    if not image.path.is_file():
        return False
    record = done.get(image.path)
    if record is None:
        try:
            record = read_image_metadata(image.path)[1]
        except SdgenError:
            record = None
    if record is not None and _same(record, image.record(model)):
        return True
    raise InvalidRequestError(
        f"{str(image.path)!r} exists but was not made from this line's settings; "
        "pass --overwrite to replace it or use another -o folder"
    )


def _same(record: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """The same image: the request's picture fields and the model match (sdgen/config/options.py says which), a
    field that an older record leaves out counting as its built-in value."""
    table = options.table()
    unrecorded = table.unrecorded()
    return all(record.get(key, unrecorded.get(key)) == wanted[key] for key in (*table.image_fields(), "model"))


LOCK = ".sdgen-batch.lock"


class FolderLock:
    """DIR/.sdgen-batch.lock, held by the one batch run writing to DIR: a second run refuses at once,
    naming the lock and the process that holds it. The operating system lets go of the lock when that
    process ends, however it ends (SIGKILL included), so a crash never leaves the folder locked."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK
        self._handle: Any = None

    def acquire(self) -> None:
        while True:
            handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held for the whole run
            try:
                _lock_file(handle)
            except OSError:
                handle.seek(0)
                owner = handle.read().strip() or "unknown"
                handle.close()
                raise InvalidRequestError(
                    f"Another sdgen batch (process {owner}) is writing to {str(self.path.parent)!r} "
                    f"(lock {str(self.path)!r}); wait for it to finish, or use another -o folder."
                ) from None
            if _same_file(handle, self.path):
                break
            handle.close()  # the holder removed the file as we opened it: lock the new one
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        """Remove the file while still holding the lock, then let go (a run that opened the old file
        meanwhile sees it is gone and locks a new one)."""
        if self._handle is not None:
            self.path.unlink(missing_ok=True)
            self._handle.close()  # closing the file releases the lock
            self._handle = None


def _same_file(handle: Any, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


def _lock_file(handle: Any) -> None:
    """An exclusive lock that fails at once (OSError) when another process holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
