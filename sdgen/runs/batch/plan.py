"""The batch plan: items -> planned images (seed, name) -> chunks of images that share U-Net calls.

The plan is fixed by the input alone: each line's images get a seed (given, or derived from the run's base
seed and the line number) and a file name (from the line number and slug), and consecutive images that
can share U-Net calls are grouped into chunks of up to --batch-size. So re-running, resuming and splitting
the chunks over processes (accelerate) all make the same files with the same pixels.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdgen.config.options import default, flag_of
from sdgen.engine.checking import check_request
from sdgen.engine.loader import StableDiffusionParts
from sdgen.engine.model_spec import CheckedModelSpec
from sdgen.engine.pipeline import batch_key, consecutive_batches
from sdgen.engine.request import GenerationRequest
from sdgen.engine.tasks import ImageTask
from sdgen.errors import InvalidRequestError, OutputError
from sdgen.record.metadata import image_record
from sdgen.record.output import check_file_name, render_name
from sdgen.runs.batch.input import BatchItem

log = logging.getLogger("sdgen")


def derived_seed(base_seed: int, line: int) -> int:
    """Seed of a line that gives none: the first 4 bytes of sha256("BASE:LINE"), big-endian.

    Depends only on the base seed (--seed, default 0) and the line number, so any process can compute it.
    """
    return int.from_bytes(hashlib.sha256(f"{base_seed}:{line}".encode()).digest()[:4], "big")


@dataclass(frozen=True)
class PlannedImage(ImageTask):
    """One image of the plan: its task (the line's checked request + the image's job: its index within the
    line, seed, prompt and networks), which line it came from, where it goes."""

    line: int
    path: Path

    def record(self, model: str, parts: StableDiffusionParts | None = None) -> dict[str, Any]:
        """Its manifest record: the image's record (sdgen.record.metadata.image_record) with line, index and path."""
        return {"line": self.line, "index": self.index, **image_record(self.request, self.job, model, parts),
                "path": str(self.path)}


@dataclass
class BatchPlanner:
    """Turns items into planned images: run defaults (flags, env, config) + the line's own values."""

    defaults: Mapping[str, Any]  # effective settings values (sdgen.config.settings keys)
    folder: Path
    name_template: str = default("batch_name")
    model: CheckedModelSpec | None = None  # the run's model: its own size for lines that give none
    line_folder: Path | None = None  # the prompts file's folder: a line's control images are read from there
    typed: frozenset[str] = frozenset()  # the keys of the flags typed on the command line
    _names: dict[Path, int] = field(default_factory=dict)
    _noted: set[str] = field(default_factory=set)

    @property
    def base_seed(self) -> int:
        return int(self.defaults.get("seed") or 0)

    def plan(self, item: BatchItem) -> list[PlannedImage]:
        """The item's images; raises InvalidRequestError (message without the line number) when unusable."""
        if item.error is not None:
            raise InvalidRequestError(item.error)
        values = {key: value for key, value in self.defaults.items() if key != "seed"}
        values.update(self._line_paths(self._against_flags(item)))
        values.setdefault("seed", derived_seed(self.base_seed, item.line))
        request = check_request(GenerationRequest.from_settings(values), self.model)
        images = []
        for job in request.jobs:  # wildcards expanded: each image its own prompt
            try:
                name = render_name(
                    self.name_template,
                    index=job.index,
                    seed=job.seed,
                    prompt=job.prompt,
                    steps=request.num_inference_steps,
                    scheduler=request.scheduler,
                    line=item.line,
                )
                path = self.folder / name
                check_file_name(path, self.name_template, "batch_name")
            except OutputError as error:  # this line's name: a problem of the line, not of the run
                raise InvalidRequestError(error.template, error.key) from None
            if self._names.setdefault(path, item.line) != item.line:
                raise InvalidRequestError(
                    f"file name {name!r} is also used by line {self._names[path]}; put {{line}} or {{seed}} in --name"
                )
            images.append(PlannedImage(request, job, line=item.line, path=path))
        return images


    def _against_flags(self, item: BatchItem) -> dict[str, Any]:
        """The line's values and the flags typed: a line of one's own wins (flags are its defaults); a record
        fed back in (a manifest) gives way to the flag just typed. Either way a note, once per key."""
        line = dict(item.values)
        for key in sorted(self.typed & line.keys()):
            if line[key] == self.defaults.get(key):
                continue
            flag = f"{flag_of(key) or key} {self.defaults.get(key)!r}"
            if item.replayed:
                note = (f"Note: {flag} replaces the {key} the fed-back records carry (line {item.line} has "
                        f"{line.pop(key)!r}): the flag you typed wins over a manifest line.")
            else:
                note = f"Note: line {item.line} sets {key} {line[key]!r}, which wins over {flag} (flags are defaults)."
            if key not in self._noted:
                self._noted.add(key)
                log.warning("%s", note)
        return line

    def _line_paths(self, values: dict[str, Any]) -> dict[str, Any]:
        """A line's values with the relative image paths of its --control read from the prompts file's folder."""
        if self.line_folder is None or not values.get("control"):
            return values
        from sdgen.engine.plugins.control_text import with_image_folder

        return {**values, "control": [with_image_folder(text, self.line_folder) for text in values["control"]]}


def chunks(images: Iterable[PlannedImage], batch_size: int) -> Iterator[list[PlannedImage]]:
    """Consecutive images that can share U-Net calls, up to batch_size each (a fixed, input-only grouping)."""
    return consecutive_batches(images, batch_size)


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
        key = batch_key(pending[0])
        size = 1
        while size < min(batch_size, len(pending)) and batch_key(pending[size]) == key:
            size += 1
        chunk, pending[:] = pending[:size], pending[size:]
        yield chunk
