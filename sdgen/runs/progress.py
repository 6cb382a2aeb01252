"""Progress on stderr through every phase of a run: importing, loading each part, each step of each batch,
decoding, writing. Three ways to show it (`--progress`):

- rich: a live display (which part is loading, then step k of N with it/s and ETA per batch, and under it the
  live preview where the terminal can show images, sdgen.pictures.live); sdgen's log lines print above it;
- plain: one timestamped line per phase and per step, for logs, pipes and scripts;
- none: nothing; auto (the default): rich when stderr is a terminal, plain otherwise.

Each phase's time is kept; `-v` prints them when the run ends.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from sdgen.engine.denoise import StepInfo

log = logging.getLogger("sdgen")

PREVIEW_ROWS = 12  # terminal lines the preview picture takes


def resolved_mode(mode: str, stream: Any = None) -> str:
    """rich, plain or none: auto is rich on a terminal, plain otherwise."""
    if mode != "auto":
        return mode
    stream = sys.stderr if stream is None else stream
    return "rich" if getattr(stream, "isatty", lambda: False)() else "plain"


class GenerationProgress:
    """Callbacks for load_model(on_part=...) and generate(on_step=...), and the phases in between
    (`phase`), drawn as `mode` says (enabled=False: none, True: rich)."""

    def __init__(
        self, num_images: int, enabled: bool | None = None, terminal_image: Any | None = None, mode: str = "auto"
    ) -> None:
        self.num_images = num_images
        if enabled is not None:
            mode = ("rich" if mode == "auto" else mode) if enabled else "none"
        self.mode = resolved_mode(mode)
        self.enabled = self.mode == "rich"
        self.terminal_image = terminal_image  # a rich renderable class for pictures (textual-image), or None
        self.preview: Any | None = None
        self.timings: dict[str, float] = {}  # seconds per phase, in the order first met
        self._phase: tuple[str, float] | None = None
        self._progress: Any = None
        self._status_task = None
        self._load_task = None
        self._step_task = None
        self._images_done = 0
        self._batch: tuple[int, ...] = ()
        self._batch_started = 0.0

    def __enter__(self) -> GenerationProgress:
        if self.enabled:
            self._progress = _rich_display(self)
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._end_phase()
        if self._progress is not None:
            self._progress.stop()
        if self.timings:
            log.debug("Timings: %s", ", ".join(f"{name} {seconds:.2f} s" for name, seconds in self.timings.items()))

    @property
    def shows_pictures(self) -> bool:
        return self.enabled and self.terminal_image is not None

    def show(self, picture: Image.Image) -> None:
        """The live preview's picture under the bars (sdgen.pictures.live.LivePreview calls this)."""
        if self.shows_pictures:
            self.preview = self.terminal_image(picture, height=PREVIEW_ROWS)
            if self._progress is not None:
                self._progress.refresh()

    # --- phases ---------------------------------------------------------------------------------------------

    def phase(self, name: str, detail: str = "") -> None:
        """A phase begins (importing, loading, denoising, decoding, writing): timed, and shown."""
        if self._phase is None or self._phase[0] != name:
            self._end_phase()
            self._phase = (name, time.perf_counter())
        text = name.capitalize() + (f" {detail}" if detail else "")
        if self.mode == "plain":
            self._line(text)
        elif self._progress is not None and name not in ("loading", "denoising"):
            if self._status_task is None:
                self._status_task = self._progress.add_task(text, total=None, rate="")
            else:
                self._progress.update(self._status_task, description=text)

    def _end_phase(self) -> None:
        if self._phase is not None:
            name, started = self._phase
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - started
            self._phase = None

    def _line(self, text: str) -> None:
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} {text}\n")
        sys.stderr.flush()

    def _drop_status(self) -> None:
        if self._status_task is not None:
            self._progress.remove_task(self._status_task)
            self._status_task = None

    def on_part(self, part: str, size: int) -> None:
        label = f"{part}" + (f" ({size / 2**20:,.0f} MiB)" if size else "")
        self.phase("loading", label)
        if self._progress is None:
            return
        self._drop_status()
        if self._load_task is None:
            self._load_task = self._progress.add_task(f"Loading {label}", total=4, rate="")
        else:
            self._progress.update(self._load_task, description=f"Loading {label}", advance=1)

    def on_step(self, info: StepInfo) -> None:
        if self.mode == "none":
            return
        new_batch = info.seeds != self._batch or (self._step_task is None and self.mode == "rich")
        if self.mode == "plain":
            new_batch = new_batch or info.index == 0
        if new_batch and self._batch and info.seeds != self._batch:
            self._images_done += len(self._batch)
        if new_batch:
            self._batch = info.seeds
        which = self._which()
        self._phase_of_step(info, which, new_batch)
        if self._progress is None:
            return
        self._drop_status()
        if self._load_task is not None:
            self._progress.remove_task(self._load_task)
            self._load_task = None
        if new_batch:
            if self._step_task is not None:
                self._progress.remove_task(self._step_task)
            self._step_task = self._progress.add_task(f"Denoising {which}", total=info.total, rate="")
        speed = self._progress.tasks[-1].speed
        # total again: a hires pass is a second run of other length for the same images
        rate = f"{speed:.2f} it/s" if speed else ""
        self._progress.update(self._step_task, completed=info.index + 1, total=info.total, rate=rate)

    def _which(self) -> str:
        first = self._images_done + 1
        last = self._images_done + max(len(self._batch), 1)
        which = f"image {first}" if first == last else f"images {first}-{last}"
        return which + (f" of {self.num_images}" if self.num_images else "")  # 0: not known (streaming input)

    def _phase_of_step(self, info: StepInfo, which: str, new_batch: bool) -> None:
        now = time.perf_counter()
        if self._phase is None or self._phase[0] != "denoising":
            self._end_phase()
            self._phase = ("denoising", now)
        if new_batch or info.index == 0:
            self._batch_started = now
        if self.mode == "plain":
            elapsed = now - self._batch_started
            rate = f", {info.index / elapsed:.2f} it/s" if elapsed > 0 and info.index else ""
            self._line(f"Denoising {which}: step {info.index + 1}/{info.total}{rate}")
        if info.index + 1 == info.total:
            self.phase("decoding", which)


def _rich_display(owner: GenerationProgress) -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    class WithPreview(Progress):
        def get_renderables(self) -> Any:
            yield self.make_tasks_table(self.tasks)
            if owner.preview is not None:
                yield owner.preview

    return WithPreview(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
