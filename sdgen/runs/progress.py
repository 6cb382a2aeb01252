"""Progress on stderr with rich: which part is loading, then step k of N with it/s and ETA per batch, and
under it the live preview where the terminal can show images (sdgen.pictures.live).

Shown only when stderr is a terminal, so logs and pipelines stay clean.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from sdgen.engine.denoise import StepInfo

PREVIEW_ROWS = 12  # terminal lines the preview picture takes


class GenerationProgress:
    """Callbacks for load_model(on_part=...) and generate(on_step=...), drawing one rich display."""

    def __init__(self, num_images: int, enabled: bool | None = None, terminal_image: Any | None = None) -> None:
        self.num_images = num_images
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.terminal_image = terminal_image  # a rich renderable class for pictures (textual-image), or None
        self.preview: Any | None = None
        self._progress = None
        self._load_task = None
        self._step_task = None
        self._images_done = 0
        self._batch: tuple[int, ...] = ()

    def __enter__(self) -> GenerationProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            owner = self

            class WithPreview(Progress):
                def get_renderables(self) -> Any:
                    yield self.make_tasks_table(self.tasks)
                    if owner.preview is not None:
                        yield owner.preview

            self._progress = WithPreview(
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
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    @property
    def shows_pictures(self) -> bool:
        return self.enabled and self.terminal_image is not None

    def show(self, picture: Image.Image) -> None:
        """The live preview's picture under the bars (sdgen.pictures.live.LivePreview calls this)."""
        if self.shows_pictures:
            self.preview = self.terminal_image(picture, height=PREVIEW_ROWS)
            if self._progress is not None:
                self._progress.refresh()

    def on_part(self, part: str, size: int) -> None:
        if self._progress is None:
            return
        label = f"Loading {part}" + (f" ({size / 2**20:,.0f} MiB)" if size else "")
        if self._load_task is None:
            self._load_task = self._progress.add_task(label, total=4, rate="")
        else:
            self._progress.update(self._load_task, description=label, advance=1)

    def on_step(self, info: StepInfo) -> None:
        if self._progress is None:
            return
        if self._load_task is not None:
            self._progress.remove_task(self._load_task)
            self._load_task = None
        if info.seeds != self._batch or self._step_task is None:
            if self._step_task is not None:
                self._images_done += len(self._batch)
                self._progress.remove_task(self._step_task)
            self._batch = info.seeds
            first = self._images_done + 1
            last = self._images_done + len(info.seeds)
            which = f"image {first}" if first == last else f"images {first}-{last}"
            of = f" of {self.num_images}" if self.num_images else ""  # 0: not known (streaming input)
            self._step_task = self._progress.add_task(f"Denoising {which}{of}", total=info.total, rate="")
        task = self._progress.tasks[-1]
        speed = task.speed
        # total again: a hires pass is a second run of other length for the same images
        rate = f"{speed:.2f} it/s" if speed else ""
        self._progress.update(self._step_task, completed=info.index + 1, total=info.total, rate=rate)
