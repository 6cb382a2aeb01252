"""manifest.jsonl: one record per image, appended and flushed as each finishes; what counts as done.

With several processes each appends to its own part file and the main process merges them at the end.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sdgen.batch.plan import PlannedImage
from sdgen.errors import InvalidRequestError, SdgenError
from sdgen.metadata import read_image_metadata
from sdgen.request import IMAGE_KEYS

MANIFEST = "manifest.jsonl"
# What must match for an image on disk to count as done on a re-run.
_SAME_IMAGE_KEYS = (*IMAGE_KEYS, "model")


class Manifest:
    """manifest.jsonl in the output folder; with several processes each appends to its own part file and
    the main process merges them at the end."""

    def __init__(self, folder: Path, rank: int = 0, world: int = 1) -> None:
        self.folder = folder
        self.path = folder / MANIFEST
        self.write_path = self.path if world == 1 else folder / f".{MANIFEST}.rank{rank}"
        self._handle: Any = None

    def append(self, record: Mapping[str, Any]) -> None:
        if self._handle is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._handle = open(self.write_path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for the run
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def records(self) -> list[dict[str, Any]]:
        """Every record so far, the merged file first, then any part files left by processes."""
        found = []
        for path in [self.path, *sorted(self.folder.glob(f".{MANIFEST}.rank*"))]:
            if path.is_file():
                for text in path.read_text(encoding="utf-8").splitlines():
                    try:
                        found.append(json.loads(text))
                    except json.JSONDecodeError:
                        continue  # a line cut by a crash: that image is simply not done
        return found

    def merge_parts(self) -> None:
        """Main process: move the part files' records into manifest.jsonl, in line order."""
        parts = sorted(self.folder.glob(f".{MANIFEST}.rank*"))
        records = []
        for path in parts:
            records += [json.loads(t) for t in path.read_text(encoding="utf-8").splitlines() if t.strip()]
        if not records:
            for path in parts:
                path.unlink()
            return
        records.sort(key=lambda r: (r.get("line", 0), r.get("index", 0)))
        with open(self.path, "a", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        for path in parts:
            path.unlink()


def done_paths(manifest: Manifest) -> dict[Path, dict[str, Any]]:
    """Images a previous run finished: a 'done' record whose file is still there, by path."""
    done: dict[Path, dict[str, Any]] = {}
    for record in manifest.records():
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
    return all(record.get(key) == wanted[key] for key in _SAME_IMAGE_KEYS)
