"""Labelled pictures made of pictures: contact sheets and X/Y grids (one function for both), animations,
and the metadata that says how each was made."""

from __future__ import annotations

import io
import json
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image, ImageFont

BACKGROUND, INK = (255, 255, 255), (20, 20, 20)
PAD = 6
FONT_SIZE = 14
Box = tuple[int, int, int, int]  # left, top, width, height of a picture inside the sheet


@dataclass(frozen=True)
class Cell:
    image: Image.Image | None  # None: an empty place
    caption: str = ""  # under the picture; may hold a newline


def font(size: int = FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's own font at `size` (FreeType builds); the small bitmap font elsewhere."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType
        return ImageFont.load_default()


def _text_size(text: str, face: Any) -> tuple[int, int]:
    from PIL import Image, ImageDraw

    if not text:
        return 0, 0
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).multiline_textbbox((0, 0), text, font=face)
    return right - left, bottom - top


def labelled_grid(
    rows: list[list[Cell]],
    col_labels: list[str] | None = None,
    row_labels: list[str] | None = None,
    title: str = "",
    max_side: int | None = None,
) -> tuple[Image.Image, list[list[Box]]]:
    """Cells in rows and columns, every picture at one size (the first picture's, shrunk to fit
    `max_side`), a caption under each, labels above the columns and left of the rows, a title on top.
    Returns the sheet and where each picture went."""
    from PIL import Image, ImageDraw

    face = font()
    first = next(cell.image for row in rows for cell in row if cell.image is not None)
    scale = min(1.0, max_side / max(first.size)) if max_side else 1.0
    cell_w, cell_h = max(1, round(first.width * scale)), max(1, round(first.height * scale))
    columns = max(len(row) for row in rows)
    wrap = max(14, cell_w // 7)  # characters per caption line; a column widens for a longer word
    captions = [
        [textwrap.fill(line, wrap, break_long_words=False) for line in (c.caption for c in row)] for row in rows
    ]
    caption_h = max((_text_size(text, face)[1] for row in captions for text in row), default=0)
    caption_h += PAD if caption_h else 0
    col_texts = [textwrap.fill(label, wrap, break_long_words=False) for label in (col_labels or [])]
    col_h = max((_text_size(text, face)[1] for text in col_texts), default=0) + (PAD if col_texts else 0)
    row_texts = [textwrap.fill(label, 22) for label in (row_labels or [])]
    row_w = max((_text_size(text, face)[0] for text in row_texts), default=0) + (2 * PAD if row_texts else 0)
    title_h = _text_size(title, face)[1] + PAD if title else 0
    texts = [text for row in captions for text in row] + col_texts
    column_w = max([cell_w, *(_text_size(text, face)[0] for text in texts)])
    step_x, step_y = column_w + PAD, cell_h + caption_h + PAD
    width = PAD + row_w + columns * step_x
    height = PAD + title_h + col_h + len(rows) * step_y
    sheet = Image.new("RGB", (max(width, _text_size(title, face)[0] + 2 * PAD), height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.multiline_text((PAD, PAD), title, fill=INK, font=face)
    top = PAD + title_h
    for c, text in enumerate(col_texts):
        draw.multiline_text((PAD + row_w + c * step_x, top), text, fill=INK, font=face)
    top += col_h
    boxes: list[list[Box]] = []
    for r, row in enumerate(rows):
        y = top + r * step_y
        if r < len(row_texts):
            draw.multiline_text(
                (PAD, y + cell_h // 2 - _text_size(row_texts[r], face)[1] // 2), row_texts[r], fill=INK, font=face
            )
        boxes.append([])
        for c, cell in enumerate(row):
            x = PAD + row_w + c * step_x
            boxes[-1].append((x, y, cell_w, cell_h))
            if cell.image is not None:
                picture = cell.image.convert("RGB")
                if picture.size != (cell_w, cell_h):
                    picture = picture.resize((cell_w, cell_h), Image.Resampling.LANCZOS)
                sheet.paste(picture, (x, y))
            if captions[r][c]:
                draw.multiline_text((x, y + cell_h + PAD // 2), captions[r][c], fill=INK, font=face)
    return sheet, boxes


def square_rows(cells: list[Cell]) -> list[list[Cell]]:
    """Cells in as square an arrangement as they allow (A1111's grid of a run): 8 -> 3 rows of 3, 3, 2."""
    import math

    columns = max(1, math.ceil(math.sqrt(len(cells))))
    return [cells[i : i + columns] for i in range(0, len(cells), columns)]


def picture_png(sheet: Image.Image, parameters: str | None, record: dict[str, Any] | None) -> bytes:
    """PNG bytes with A1111 `parameters` (a picture's first image's, so A1111 readers see how it was made)
    and sdgen's record of the picture."""
    from PIL.PngImagePlugin import PngInfo

    from sdgen.record.output import png_bytes

    info = PngInfo()
    if parameters:
        info.add_text("parameters", parameters)
    if record is not None:
        info.add_text("sdgen", json.dumps(record, ensure_ascii=False, sort_keys=True))
    return png_bytes(sheet, info if (parameters or record) else None)


def animation_bytes(frames: list[Image.Image], suffix: str, parameters: str | None, seconds: float = 0.4) -> bytes:
    """An animated GIF or WebP that loops, the last frame held 4 times as long; `parameters` in the GIF's
    comment or the WebP's EXIF UserComment (where A1111 puts it)."""
    from PIL import Image

    durations = [round(seconds * 1000)] * (len(frames) - 1) + [round(seconds * 4000)]
    buffer = io.BytesIO()
    options: dict[str, Any] = {"save_all": True, "append_images": frames[1:], "duration": durations, "loop": 0}
    if suffix == ".gif":
        if parameters:
            options["comment"] = parameters.encode("utf-8")
        frames[0].save(buffer, format="GIF", **options)
    else:
        if parameters:
            exif = Image.Exif()
            exif[0x8769] = {0x9286: b"UNICODE\0" + parameters.encode("utf-16-be")}
            options["exif"] = exif.tobytes()
        frames[0].save(buffer, format="WEBP", quality=90, **options)
    return buffer.getvalue()
