"""`sdgen upscale IMAGE...`: pictures enlarged with an upscaler model, tile by tile (sdgen/engine/upscaling.py).

Everything is checked before the model loads: the upscaler found and recognised, each input an image, each
output free (or --overwrite). Then the model loads once and each picture is written as soon as it is done, so
a failure never loses the ones before it. A picture's A1111 text (a PNG made by A1111 or sdgen) is kept, with
A1111's `Postprocess upscale by` and `Postprocess upscaler` fields added, as its Extras tab writes them.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdgen.config.specs import OutputSpec, UpscaleSpec
from sdgen.errors import NAME, InvalidRequestError, OutputError

STDIN = "-"
MAX_OUTPUT_SIDE = 16384  # 805 MB of 8-bit RGB
SUFFIX = "-upscaled.png"


@dataclass(frozen=True)
class UpscaleJob:
    source: str  # a file, or - for stdin
    target: str  # a file, or - for stdout


def plan_jobs(images: list[str], output: OutputSpec) -> list[UpscaleJob]:
    """Where each picture goes: -o FILE (one picture), -o DIR/ (NAME-upscaled.png there), -o - (stdout, one
    picture), or beside each input; an existing file is refused unless --overwrite."""
    if not images:
        raise InvalidRequestError(f"Invalid {NAME}: no image; give one or more files, or - for stdin.", "images")
    if images.count(STDIN) > 1:
        raise InvalidRequestError(f"Invalid {NAME}: stdin (-) can be read once.", "images")
    target = output.output
    folder = target is not None and target != STDIN and (target.endswith("/") or Path(target).is_dir())
    if target is not None and not folder and len(images) > 1:
        raise InvalidRequestError(
            f"Invalid {NAME} {target!r}: {len(images)} images need a folder; end it with /.", "output"
        )
    jobs = []
    for source in images:
        name = "stdin" if source == STDIN else Path(source).stem
        if target is None:
            place = STDIN if source == STDIN else str(Path(source).with_name(name + SUFFIX))
        else:
            place = str(Path(target) / (name + SUFFIX)) if folder else target
        if place != STDIN and Path(place).exists() and not output.overwrite:
            raise OutputError(f"{place!r} already exists; pass --overwrite to replace it or choose another name.")
        jobs.append(UpscaleJob(source, place))
    return jobs


def run_upscale(
    images: list[str], spec: UpscaleSpec, upscaler_dir: str | None, device: str, dtype: str, allow_pickle: bool,
    output: OutputSpec, echo: Callable[[str], None], quiet: bool = False,
) -> list[str]:
    """Upscale each picture; returns the files written (- for stdout)."""
    from sdgen.config.images import load_checked_image
    from sdgen.engine.upscaling import upscale_image, upscaler_dtype
    from sdgen.hardware.devices import choose_placement
    from sdgen.models.upscalers import find_upscaler, identify, load_upscaler

    spec = spec.checked()
    found = identify(find_upscaler(str(spec.upscaler), upscaler_dir, allow_pickle))
    jobs = plan_jobs(images, output)
    stdin = sys.stdin.buffer.read() if any(job.source == STDIN for job in jobs) else None
    pictures = {job.source: _read(job.source, stdin, load_checked_image) for job in jobs}  # all checked first
    if spec.upscale_by is not None:  # the output is kept whole in 8 bits: bounded before the model loads
        _check_sizes(jobs, pictures, spec.upscale_by)
    placement = choose_placement(device, dtype)
    model = load_upscaler(found, placement.device, upscaler_dtype(placement.device, placement.dtype))
    _check_sizes(jobs, pictures, spec.upscale_by or model.scale)  # the model's own scale, known now
    written = []
    with _TileProgress(not quiet) as progress:
        for job in jobs:
            picture, parameters = pictures[job.source]
            by = spec.upscale_by or model.scale
            width, height = round(picture.width * by), round(picture.height * by)
            progress.start(job.source)
            result = upscale_image(
                model, picture, width, height, spec.upscale_tile, spec.upscale_overlap, progress.on_tile
            )
            written.append(_write(result, job.target, _postprocess_text(parameters, by, found.name), output))
            if job.target != STDIN:
                echo(job.target)
    return written


def _check_sizes(jobs: list[UpscaleJob], pictures: dict[str, Any], by: float) -> None:
    for job in jobs:
        picture = pictures[job.source][0]
        if max(picture.size) * by > MAX_OUTPUT_SIDE:
            raise InvalidRequestError(
                f"Invalid {NAME} {by:g}: {job.source} ({picture.width}x{picture.height}) would become more than "
                f"{MAX_OUTPUT_SIDE} a side; upscale less.", "upscale_by",
            )


def _read(source: str, stdin: bytes | None, load: Callable[..., Any]) -> tuple[Any, str | None]:
    """The picture (RGB) and the A1111 text it carries, if any."""
    label = "stdin" if source == STDIN else repr(source)
    raw = io.BytesIO(stdin or b"") if source == STDIN else source
    picture = load(raw, label, "images")
    parameters = picture.info.get("parameters")
    return picture.convert("RGB"), parameters if isinstance(parameters, str) else None


def _postprocess_text(parameters: str | None, by: float, upscaler: str) -> str:
    fields = f"Postprocess upscale by: {by:g}, Postprocess upscaler: {upscaler}"
    return f"{parameters}, {fields}" if parameters else fields


def _write(picture: Any, target: str, parameters: str, output: OutputSpec) -> str:
    from PIL.PngImagePlugin import PngInfo

    from sdgen.record.output import png_bytes, write_atomic

    info = None
    if output.metadata:
        info = PngInfo()
        info.add_text("parameters", parameters)
    data = png_bytes(picture, info)
    if target == STDIN:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    else:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        write_atomic(Path(target), data, overwrite=output.overwrite)
    return target


class _TileProgress:
    """Tile k of N for each picture, on a terminal only (pipes and logs stay clean)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> _TileProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                console=Console(stderr=True), transient=True,
            )
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def start(self, source: str) -> None:
        if self._progress is not None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._task = self._progress.add_task(f"Upscaling {source}", total=None)

    def on_tile(self, done: int, total: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=done, total=total)
