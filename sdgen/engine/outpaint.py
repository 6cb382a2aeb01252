"""Outpainting and what fills a masked region before it is repainted.

`--outpaint left=128,top=64` extends the init image's canvas by those pixels on those sides and makes the
mask itself: white over the new area and OVERLAP pixels into the old picture (so the seam is repainted too),
then the run is ordinary inpainting (sdgen/engine/inpaint.py) with either kind of model, and the old picture's
own pixels come back outside the mask's blurred edge. The new area starts as the picture's edge pixels
stretched outwards; `--inpaint-fill` says what the repainting starts from there, as A1111's "Masked content":
`original` (those pixels), `fill` (the colours around, blurred in as A1111's fill does), `noise` (latent
noise: the masked latents replaced by the run's own noise, which with A1111's seeds is the same tensor) or
`nothing` (latent zeros). The same fills apply to a --mask of any inpainting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sdgen.errors import NAME, InvalidRequestError

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

SIDES = ("left", "top", "right", "bottom")
OVERLAP = 8  # pixels of the old picture the mask also covers
MAX_EXTENSION = 2048
FILLS = {"fill": 0, "original": 1, "noise": 2, "nothing": 3}  # sdgen name -> A1111's inpainting_fill


def parse_outpaint(text: str) -> dict[str, int]:
    """'left=128,top=64' -> {'left': 128, 'top': 64, 'right': 0, 'bottom': 0}; InvalidRequestError otherwise."""
    sides = dict.fromkeys(SIDES, 0)
    for part in str(text).split(","):
        side, sep, amount = part.strip().partition("=")
        if not sep or side.strip() not in SIDES or not amount.strip().isdigit():
            raise InvalidRequestError(
                f"Invalid {NAME} {text!r}: give SIDE=PIXELS pairs, SIDE one of left, top, right, bottom "
                "(e.g. left=128,top=64).", "outpaint",
            )
        pixels = int(amount)
        if pixels % 8 or pixels > MAX_EXTENSION:
            raise InvalidRequestError(
                f"Invalid {NAME} {text!r}: {side.strip()}={pixels} must be a multiple of 8 up to {MAX_EXTENSION}.",
                "outpaint",
            )
        sides[side.strip()] = pixels
    if not any(sides.values()):
        raise InvalidRequestError(f"Invalid {NAME} {text!r}: extend at least one side.", "outpaint")
    return sides


def outpainted(picture: Image.Image, sides: dict[str, int]) -> tuple[Image.Image, Image.Image]:
    """(the larger canvas with the picture's edges stretched over the new area, the mask: white = repaint)."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(picture.convert("RGB"))
    canvas = np.pad(pixels, ((sides["top"], sides["bottom"]), (sides["left"], sides["right"]), (0, 0)), mode="edge")
    mask = np.full(canvas.shape[:2], 255, dtype=np.uint8)
    height, width = pixels.shape[:2]
    top = sides["top"] + (OVERLAP if sides["top"] else 0)
    left = sides["left"] + (OVERLAP if sides["left"] else 0)
    bottom = sides["top"] + height - (OVERLAP if sides["bottom"] else 0)
    right = sides["left"] + width - (OVERLAP if sides["right"] else 0)
    mask[top:bottom, left:right] = 0
    return Image.fromarray(canvas), Image.fromarray(mask, mode="L")


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """A1111's "fill": the masked region painted with the colours around it, from wide blurs to narrow ones,
    each composited over the last (premultiplied alpha, so only known pixels spread)."""
    import numpy as np
    from PIL import Image, ImageFilter

    keep = 255 - np.asarray(mask.convert("L").resize(image.size), dtype=np.uint8)
    known = Image.fromarray(np.dstack([np.asarray(image.convert("RGB")), keep]), mode="RGBA").convert("RGBa")
    result = Image.new("RGBA", image.size)
    for radius, repeats in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        blurred = known.filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
        for _ in range(repeats):
            result.alpha_composite(blurred)
    return result.convert("RGB")


def check_fill(fill: str) -> None:
    if fill not in FILLS:
        raise InvalidRequestError(f"Invalid {NAME} {fill!r}: choose {', '.join(FILLS)}.", "inpaint_fill")
