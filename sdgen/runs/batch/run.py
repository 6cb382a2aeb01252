"""run_batch: check, plan, see what is done, load once, generate chunk by chunk, write, record, summarise.

Several processes (`accelerate launch ... -m sdgen batch`) each take a share of the chunks, chosen with
accelerate's split_between_processes; the main process merges their manifest parts at the end.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sdgen.config.options import describe
from sdgen.config.specs import OutputSpec, PicturesSpec
from sdgen.engine.checking import check_request
from sdgen.engine.model_spec import ModelSpec
from sdgen.engine.pipeline import generate_batch
from sdgen.engine.prologue import require_hub_parts
from sdgen.engine.request import GenerationRequest
from sdgen.errors import (
    EXIT_FAILURE,
    NAME,
    GenerationError,
    InvalidRequestError,
    OutputError,
    SdgenError,
    UsageError,
    WriteError,
    os_reason,
)
from sdgen.interrupts import Interrupted, finishing
from sdgen.models.hub import canonical_model
from sdgen.pictures.watch import check_pictures, terminal_pictures, write_control_maps
from sdgen.record.metadata import png_info, read_image_metadata
from sdgen.record.output import DEFAULT_FOLDER, check_name_template, check_writable_folder, png_bytes, write_atomic
from sdgen.runs.batch.input import BatchItem, read_items, text_lines
from sdgen.runs.batch.manifest import Manifest, done_paths, is_done, other_input_note
from sdgen.runs.batch.plan import BatchPlanner, PlannedImage, arriving, chunks, chunks_as_they_arrive
from sdgen.runs.batch.processes import Processes
from sdgen.runs.progress import GenerationProgress
from sdgen.runs.prologue import Machine, check_model, open_model, prepare

log = logging.getLogger("sdgen")


@dataclass(frozen=True)
class BatchOptions:
    source: str  # a file path, or "-" for stdin
    fmt: str  # txt, jsonl, csv, tsv
    output: OutputSpec = field(default_factory=OutputSpec)  # output is the folder, batch_name the template
    pictures: PicturesSpec = field(default_factory=PicturesSpec)  # the live preview
    fail_fast: bool = False
    dry_run: bool = False
    quiet: bool = False
    typed: frozenset[str] = frozenset()  # keys of the flags typed: they win over a manifest fed back in

    @property
    def folder(self) -> Path:
        return Path(os.path.expanduser(self.output.output or DEFAULT_FOLDER))


@dataclass
class Summary:
    made: int = 0
    skipped: int = 0
    failed: int = 0
    started: float = field(default_factory=time.perf_counter)

    def line(self, stopped: str = "") -> str:
        """The summary; `stopped` says why a run ended early ("interrupted by SIGTERM")."""
        elapsed = time.perf_counter() - self.started
        rate = self.made / elapsed * 60 if elapsed > 0 else 0.0
        how = f"{stopped} after" if stopped else "in"
        return (
            f"sdgen batch: {self.made} made, {self.skipped} skipped, {self.failed} failed "
            f"{how} {elapsed:.1f} s ({rate:.1f} images/min)"
        )



def run_batch(
    options: BatchOptions,
    defaults: Mapping[str, Any],
    spec: ModelSpec,
    emit: Callable[[str], None],
    make_run: type[_Run] | None = None,
) -> Summary:
    """Generate every image of the input; returns the counts. Bad lines are reported, not fatal
    (unless fail_fast); raises InvalidRequestError for bad usage before any weights load. `make_run`: the
    class that makes the chunks (sdgen/runs/batch/ray_run.py's hands them to a Ray cluster)."""
    # 1. check the run's own settings, the output folder and the device, before reading any input
    processes = Processes.detect()
    checked_spec = check_model(spec, processes.device)  # each process on its own device
    check_request(GenerationRequest.from_settings({**defaults, "prompt": "(run defaults)", "seed": 0}), checked_spec)
    folder = options.output.output or DEFAULT_FOLDER
    if folder.lower().endswith(".png") or folder == "-":
        raise OutputError(f"Invalid {NAME} {folder!r}: a batch writes to a folder; use -o DIR/.", "output")
    check_writable_folder(options.folder, create=not options.dry_run)
    check_name_template(options.output.batch_name, batch=True)
    options = replace(options, pictures=check_pictures(options.pictures, overwrite=True, model=checked_spec))
    if options.source == "-" and processes.world > 1:
        raise InvalidRequestError("Reading stdin (-) with several processes is not possible; pass a file.")
    machine = None if options.dry_run else prepare(checked_spec)  # a dry run may plan for another machine
    if machine is None:
        require_hub_parts(checked_spec)  # the model, --vae, --decoder in the cache when only it may be used

    # 2. one run per folder at a time; plan, see what is done, generate
    lock = None if options.dry_run else processes.lock(options.folder)
    line_folder = Path(options.source).expanduser().parent if options.source != "-" else None
    planner = BatchPlanner(
        defaults, options.folder, options.output.batch_name, checked_spec, line_folder, typed=options.typed
    )
    run = (make_run or _Run)(options, checked_spec, machine, processes, planner, emit)
    try:
        _plan_and_generate(run, options, processes, int(defaults.get("batch_size", 1)))
    except BaseException as error:  # interrupted, disk full ...: keep what is done, say how far it got
        run.stop(error)
        raise
    finally:
        if lock is not None:
            lock.release()
    run.finish()
    return run.summary


def _plan_and_generate(run: _Run, options: BatchOptions, processes: Processes, batch_size: int) -> None:
    if options.source == "-" and not options.dry_run:  # streaming: each line is made as it arrives
        inbox = arriving(read_items(_stdin_lines(), options.fmt))
        run.generate(chunks_as_they_arrive(inbox, run.plan_or_report, batch_size))
        return
    images = [image for item in _read_all(options) for image in run.plan_or_report(item)]
    todo = run.todo = run.check_done(images)
    if options.dry_run:
        run.print_plan(images, todo)
    elif todo:
        run.generate(processes.my_share(list(chunks(images, batch_size))))
    else:
        run.summary.skipped = len(images) if processes.rank == 0 else 0


class _Run:
    """The state of one batch run in one process."""

    def __init__(
        self,
        options: BatchOptions,
        spec: ModelSpec,
        machine: Machine | None,
        processes: Processes,
        planner: BatchPlanner,
        emit: Callable[[str], None],
    ) -> None:
        self.options, self.spec, self.processes, self.planner, self.emit = options, spec, processes, planner, emit
        self.machine = machine  # decided once per run, before any input was read (None: a dry run)
        self.model = canonical_model(spec.model)
        self.manifest = Manifest(options.folder, processes.rank, processes.world, source=options.source)
        records = self.manifest.records()
        self.done = {} if options.output.overwrite else done_paths(self.manifest, records)
        if processes.rank == 0 and (note := other_input_note(self.manifest, records)):
            log.warning("%s", note)
        self.summary = Summary()
        self.todo: set[Path] | None = None  # known up front for files; None: decided per chunk (stdin)
        self.conflicts: set[Path] = set()  # files already there from other settings: failed, never replaced
        self.parts: Any = None
        self.progress: Any = None
        self.watchers: Any = None  # the live preview, once the model is loaded
        self.on_step: Any = None

    # --- problems: reported once (main process), counted everywhere -------------------------------------

    def problem(
        self, line: int, message: str, image: PlannedImage | None = None, usage: bool = True, everywhere: bool = True
    ) -> None:
        """Count a failed line or image; report it once. `everywhere`: every process finds it (the plan is
        the same in each), so only the main one reports it."""
        self.summary.failed += 1
        if self.options.fail_fast:
            error = InvalidRequestError if usage else GenerationError
            raise error(f"line {line}: {message}")
        if self.processes.rank == 0 or not everywhere:
            log.error("sdgen: line %d: %s", line, message)
            record = image.record(self.model) if image is not None else {"line": line}
            if not self.options.dry_run:
                self.manifest.append({**record, "status": "failed", "error": message})

    def plan_or_report(self, item: BatchItem) -> list[PlannedImage]:
        try:
            return self.planner.plan(item)
        except InvalidRequestError as error:
            self.problem(item.line, describe(error))
            return []

    def check_done(self, images: list[PlannedImage]) -> set[Path]:
        """Which images still need making; an existing file from other settings is a problem, not a skip."""
        todo: set[Path] = set()
        for image in images:
            try:
                if self.options.output.overwrite or not is_done(image, self.done, self.model):
                    todo.add(image.path)
            except InvalidRequestError as error:
                self.conflicts.add(image.path)
                self.problem(image.line, str(error), image)
        if not self.options.dry_run and self.processes.rank == 0:
            not_made = todo | self.conflicts
            self.record_found([image for image in images if image.path not in not_made])
        return todo

    def record_found(self, images: list[PlannedImage]) -> None:
        """A finished image the manifest lacks (written just before a stop: by a Ray worker whose result never
        came back, or between an image and its record) is recorded now from the image's own sdgen record, so
        the manifest lists the whole batch; its time is unknown."""
        for image in images:
            if image.path in self.done:
                continue
            try:
                own = read_image_metadata(image.path)[1]
            except SdgenError:
                continue  # is_done found it readable a moment ago; a file gone since is made next run
            if own is not None:
                record = {"line": image.line, "index": image.index, **own, "path": str(image.path)}
                self.manifest.append({**record, "status": "done", "seconds": None, "error": None})
                self.done[image.path] = record

    # --- the work -------------------------------------------------------------------------------------------

    def generate(self, work: Iterable[list[PlannedImage]]) -> None:
        total = len(self.todo) if self.todo is not None else 0
        # several processes share one terminal: their live displays would overwrite each other
        enabled = False if self.options.quiet or self.processes.world > 1 else None
        terminal = terminal_pictures(self.options.pictures, self.options.quiet) if enabled is None else None
        mode = "none" if enabled is False else self.options.output.progress
        with GenerationProgress(total, terminal_image=terminal, mode=mode) as self.progress:
            for chunk in work:
                todo = self._still_to_make(chunk)
                self.summary.skipped += sum(1 for i in chunk if i.path not in todo and i.path not in self.conflicts)
                if todo:
                    self._make(chunk, todo)
            self._handed_out()

    def _handed_out(self) -> None:
        """Every chunk is handed to _make (here: made); a run that only queues them makes them now."""

    def _still_to_make(self, chunk: list[PlannedImage]) -> set[Path]:
        if self.todo is not None:
            return {image.path for image in chunk if image.path in self.todo}
        return self.check_done(chunk)  # streaming: decided chunk by chunk

    def _make(self, chunk: list[PlannedImage], todo: set[Path]) -> None:
        """Run the whole chunk (so pixels match an uninterrupted run), write the images not yet on disk."""
        if self.parts is None:
            assert self.machine is not None, "a dry run makes nothing"
            opened = open_model(self.machine, self.progress, self.options.pictures)
            self.parts, self.watchers, self.on_step = opened.parts, opened.watchers, opened.on_step
        try:
            results = generate_batch(list(chunk), self.parts, self.on_step)  # a planned image is a task
        except GenerationError as error:
            for image in chunk:
                if image.path in todo:
                    self.problem(image.line, str(error), image, usage=False, everywhere=False)
            return
        for image, result in zip(chunk, results, strict=True):
            if image.path in todo:
                if self.progress is not None:
                    self.progress.phase("writing", str(image.path))
                data, record = made_image(image, result, self.parts, self.model, self.options.output)
                self.write(image, data, record, result)

    def write(self, image: PlannedImage, data: bytes | None, record: dict[str, Any], result: Any = None) -> None:
        """Write a made image (None: a worker wrote it already) and its record, count it, say it on stdout."""
        output = self.options.output
        with finishing():  # a stop signal waits until the image and its record are both written
            if data is not None:
                write_atomic(image.path, data, overwrite=output.overwrite)
            if output.save_control and result is not None:
                write_control_maps(result, image.path, output.overwrite)
            self.manifest.append(record)
            self.summary.made += 1
        if result is not None:
            self.watchers.finished(result)
        self.emit(json.dumps(record, ensure_ascii=False) if output.json else str(image.path))

    # --- dry run and the end ------------------------------------------------------------------------------

    def print_plan(self, images: list[PlannedImage], todo: set[Path]) -> None:
        passes = 0
        for image in images:
            request = image.request
            status = "todo" if image.path in todo else "done"
            steps = int(request.num_inference_steps * (request.strength if request.is_img2img else 1))
            if status == "todo":
                passes += steps * (2 if request.guidance_scale > 1 else 1)
            if self.options.output.json:
                self.emit(json.dumps({**image.record(self.model), "status": status}, ensure_ascii=False))
            else:
                self.emit(
                    f"{status}\tline {image.line}\tseed {image.seed}\t{request.width}x{request.height}\t"
                    f"{steps} steps\t{request.scheduler}\t{image.path}"
                )
        self.summary.skipped = len(images) - len(todo)
        log.warning(
            "sdgen batch --dry-run: %d items, %d images planned, %d already done, %d to make "
            "(%d U-Net image-passes); %d bad lines; no weights loaded.",
            len({image.line for image in images}),
            len(images),
            len(images) - len(todo),
            len(todo),
            passes,
            self.summary.failed,
        )

    def stop(self, error: BaseException) -> None:
        """The run ends early: close the manifest (records so far are kept) and print how far it got.
        No waiting for other processes: they may be gone. The next run merges any part files."""
        self.manifest.close()
        if self.options.dry_run or isinstance(error, UsageError):  # bad input: its one line says it all
            return
        if isinstance(error, Interrupted):
            stopped = f"interrupted{error.by}"
        elif isinstance(error, KeyboardInterrupt):
            stopped = "interrupted"
        elif isinstance(error, WriteError):
            stopped = "stopped: cannot write"
        else:
            stopped = "stopped"
        log.warning("%s%s", self._prefix(), self.summary.line(stopped))

    def _prefix(self) -> str:
        return f"[process {self.processes.rank}/{self.processes.world}] " if self.processes.world > 1 else ""

    def finish(self) -> None:
        self.manifest.close()
        try:
            self.processes.wait_for_everyone()
        except GenerationError:
            log.warning("%s%s", self._prefix(), self.summary.line("stopped"))
            raise
        if self.processes.rank == 0 and self.processes.world > 1 and not self.options.dry_run:
            self.manifest.merge_parts()
        if not self.options.dry_run:
            log.warning("%s%s", self._prefix(), self.summary.line())


def made_image(
    image: PlannedImage, result: Any, parts: Any, model: str, output: OutputSpec
) -> tuple[bytes, dict[str, Any]]:
    """A generated image's PNG bytes (with its metadata unless --no-metadata) and its manifest record."""
    info = png_info(result, parts) if output.metadata else None
    record = {**image.record(model, parts), "status": "done", "seconds": round(result.seconds, 3), "error": None}
    return png_bytes(result.image, info), record


def _read_all(options: BatchOptions) -> list[BatchItem]:
    if options.source == "-":
        return list(read_items(_stdin_lines(), options.fmt))
    path = Path(options.source)
    if not path.is_file():
        raise InvalidRequestError(f"Invalid batch input {options.source!r}: no such file; give a file or - for stdin.")
    try:
        with open(path, "rb") as handle:
            return list(read_items(text_lines(handle), options.fmt))
    except OSError as error:
        raise InvalidRequestError(f"Cannot read batch input {options.source!r}: {os_reason(error)}.") from None


def _stdin_lines() -> Iterable[str]:
    """stdin line by line as it arrives (iterating sys.stdin would read ahead in blocks on a pipe), as
    bytes, so a line that is not text is reported on its own."""
    stream = sys.stdin.buffer

    def raw() -> Iterable[bytes]:
        while line := stream.readline():
            yield line

    return text_lines(raw())


def exit_code(summary: Summary) -> int:
    return EXIT_FAILURE if summary.failed else 0


__all__ = ["BatchOptions", "Processes", "exit_code", "run_batch"]
