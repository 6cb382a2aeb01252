"""The live preview: the picture forming, every K steps, in a PNG file an image viewer can watch and, in a
terminal that can show images (sixel or kitty graphics), under the progress bar.

The file is replaced in one step (a temporary file, then a rename), so a viewer never reads half a PNG.
It shows the network's current estimate of the final picture (predicted x0), as A1111's live preview does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdgen.record.output import png_bytes, write_atomic

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from sdgen.engine.denoise import StepInfo
    from sdgen.pictures.previews import Previewer

log = logging.getLogger("sdgen")

Show = Callable[["Image.Image"], None]  # hands a picture to the progress display


@dataclass
class LivePreview:
    """A per-step callback: every `every` steps (and at the last), preview the batch's estimate of the final
    picture, side by side for a batch, into `path` and/or `show`."""

    previewer: Previewer
    every: int = 1
    path: Path | None = None
    show: Show | None = None
    writes: int = 0

    def on_step(self, info: StepInfo) -> None:
        if (info.index + 1) % self.every and info.index + 1 != info.total:
            return
        self.update(side_by_side(self.previewer(info.pred_x0)))

    def update(self, picture: Image.Image) -> None:
        """Show a picture now; the run calls this with each finished image too."""
        if self.path is not None:
            write_atomic(self.path, png_bytes(picture), overwrite=True)
            self.writes += 1
        if self.show is not None:
            self.show(picture)


def side_by_side(pictures: list[Image.Image]) -> Image.Image:
    from PIL import Image

    if len(pictures) == 1:
        return pictures[0]
    row = Image.new("RGB", (sum(p.width for p in pictures), max(p.height for p in pictures)))
    x = 0
    for picture in pictures:
        row.paste(picture, (x, 0))
        x += picture.width
    return row


def terminal_image_class() -> Any | None:
    """textual-image's renderable for a terminal that shows real images (sixel or the kitty graphics
    protocol), or None: no terminal on both stdout and stderr, the `terminal` extra not installed, or a
    terminal that can only draw coloured blocks. Asked only when stdout and stderr are terminals, because
    the library probes the terminal with escape sequences."""
    import sys

    if not (sys.stdout.isatty() and sys.stderr.isatty() and sys.stdin.isatty()):
        return None
    try:
        from textual_image import renderable
    except ImportError:
        log.debug('No terminal previews: pip install "sdgen[terminal]" for sixel/kitty pictures.')
        return None
    if renderable.Image in (renderable.SixelImage, renderable.TGPImage):
        return renderable.Image
    return None
