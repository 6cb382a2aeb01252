"""Batches: many prompts, one model load, stable names and seeds, a manifest, resume, many processes.

The plan is fixed by the input alone: each line's images get a seed (given, or derived from the run's base
seed and the line number) and a file name (from the line number and slug), and consecutive images that
can share U-Net calls are grouped into chunks of up to --batch-size. So re-running, resuming and splitting
the chunks over processes (accelerate) all make the same files with the same pixels.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdgen.batchfile import BatchItem
from sdgen.config import IMAGE_KEYS, MODEL_ALIASES, GenerationRequest
from sdgen.errors import InvalidRequestError, SdgenError
from sdgen.output import render_name

log = logging.getLogger("sdgen")

DEFAULT_BATCH_NAME = "{line:05d}-{seed}-{slug}"
MANIFEST = "manifest.jsonl"
# What must match for an image on disk to count as done on a re-run.
_SAME_IMAGE_KEYS = (*IMAGE_KEYS, "model")


def derived_seed(base_seed: int, line: int) -> int:
    """Seed of a line that gives none: the first 4 bytes of sha256("BASE:LINE"), big-endian.

    Depends only on the base seed (--seed, default 0) and the line number, so any process can compute it.
    """
    return int.from_bytes(hashlib.sha256(f"{base_seed}:{line}".encode()).digest()[:4], "big")


@dataclass(frozen=True)
class PlannedImage:
    """One image of the plan: which line, which task (request + image index), where it goes."""

    line: int
    request: GenerationRequest  # validated: seed, size and scheduler filled in
    index: int  # image index within the line: seed = request.seed + index
    path: Path

    @property
    def seed(self) -> int:
        assert self.request.seed is not None
        return self.request.seed + self.index

    def record(self, model: str) -> dict[str, Any]:
        """The request fields of the manifest record (and of the done check on a re-run)."""
        request = self.request
        return {
            "line": self.line,
            "index": self.index,
            "prompt": request.prompt,
            "negative_prompt": request.negative_prompt,
            "seed": self.seed,
            "steps": request.num_inference_steps,
            "guidance_scale": request.guidance_scale,
            "scheduler": request.scheduler,
            "width": request.width,
            "height": request.height,
            "strength": request.strength if request.is_img2img else None,
            "init_image": str(request.init_image) if request.is_img2img else None,
            "model": model,
            "path": str(self.path),
        }


@dataclass
class BatchPlanner:
    """Turns items into planned images: run defaults (flags, env, config) + the line's own values."""

    defaults: Mapping[str, Any]  # effective settings values (sdgen.settings keys)
    folder: Path
    name_template: str = DEFAULT_BATCH_NAME
    _names: dict[Path, int] = field(default_factory=dict)

    @property
    def base_seed(self) -> int:
        return int(self.defaults.get("seed") or 0)

    def plan(self, item: BatchItem) -> list[PlannedImage]:
        """The item's images; raises InvalidRequestError (message without the line number) when unusable."""
        if item.error is not None:
            raise InvalidRequestError(item.error)
        values = {key: value for key, value in self.defaults.items() if key != "seed"}
        values.update(item.values)
        values.setdefault("seed", derived_seed(self.base_seed, item.line))
        request = GenerationRequest.from_settings(values).validated()
        images = []
        for index in range(request.num_images):
            name = render_name(
                self.name_template,
                index=index,
                seed=request.seed + index,
                prompt=request.prompt,
                steps=request.num_inference_steps,
                scheduler=request.scheduler,
                line=item.line,
            )
            path = self.folder / name
            if self._names.setdefault(path, item.line) != item.line:
                raise InvalidRequestError(
                    f"file name {name!r} is also used by line {self._names[path]}; put {{line}} or {{seed}} in --name"
                )
            images.append(PlannedImage(item.line, request, index, path))
        return images


def chunks(images: Iterable[PlannedImage], batch_size: int) -> Iterator[list[PlannedImage]]:
    """Consecutive images that can share U-Net calls, up to batch_size each (a fixed, input-only grouping)."""
    from sdgen.pipeline import batch_key

    chunk: list[PlannedImage] = []
    for image in images:
        if chunk and (len(chunk) == batch_size or batch_key(chunk[0].request) != batch_key(image.request)):
            yield chunk
            chunk = []
        chunk.append(image)
    if chunk:
        yield chunk


# --- the manifest: one JSON record per image, appended and flushed as each finishes ------------------


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
        from sdgen.metadata import read_image_metadata

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


def canonical_model(model: str) -> str:
    return MODEL_ALIASES.get(model, model)


# --- streaming: items as they arrive -------------------------------------------------------------------

_END = object()


def arriving(items: Iterable[Any]) -> queue.Queue:
    """Read `items` on a thread into a queue, so the loop can take whatever has already arrived."""
    inbox: queue.Queue = queue.Queue()

    def pump() -> None:
        try:
            for item in items:
                inbox.put(item)
        except BaseException as error:  # a read error ends the input; report it in order
            inbox.put(error)
        inbox.put(_END)

    threading.Thread(target=pump, daemon=True, name="sdgen-input").start()
    return inbox


def chunks_as_they_arrive(
    inbox: queue.Queue, plan: Callable[[Any], list[PlannedImage]], batch_size: int
) -> Iterator[list[PlannedImage]]:
    """Group images into chunks from what has already arrived; never wait for more input while holding work."""
    from sdgen.pipeline import batch_key

    pending: list[PlannedImage] = []
    ended = False

    def take(block: bool) -> bool:
        nonlocal ended
        try:
            got = inbox.get(block=block)
        except queue.Empty:
            return False
        if got is _END:
            ended = True
            return False
        if isinstance(got, BaseException):
            raise got
        pending.extend(plan(got))
        return True

    while True:
        while not pending and not ended:
            take(block=True)  # nothing to do: wait for the producer
        if not pending:
            return
        while len(pending) < batch_size and not ended and take(block=False):
            pass  # whatever is already here may join this chunk
        key = batch_key(pending[0].request)
        size = 1
        while size < min(batch_size, len(pending)) and batch_key(pending[size].request) == key:
            size += 1
        chunk, pending[:] = pending[:size], pending[size:]
        yield chunk


@dataclass
class Summary:
    made: int = 0
    skipped: int = 0
    failed: int = 0
    started: float = field(default_factory=time.perf_counter)

    def line(self) -> str:
        elapsed = time.perf_counter() - self.started
        rate = self.made / elapsed * 60 if elapsed > 0 else 0.0
        return (
            f"sdgen batch: {self.made} made, {self.skipped} skipped, {self.failed} failed "
            f"in {elapsed:.1f} s ({rate:.1f} images/min)"
        )
