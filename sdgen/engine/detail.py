"""Detail repair, as ADetailer does it: `--detail face` finds each face in a finished picture
(sdgen/models/detectors.py), crops it with `--detail-padding` pixels around it (widened to the picture's
aspect, as A1111's "inpaint only masked" widens it), inpaints the crop at the generation's size with its own
prompt, denoising strength and steps, and pastes it back through the box's blurred mask. Pixels outside the
masks are the picture's own. Several detectors are several passes, in order; a face is found in the picture
as the pass before left it. Off unless asked for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from sdgen.engine.request import GenerationRequest
    from sdgen.engine.tasks import GeneratedImage

MAX_BOXES = 8  # per pass: a crowd is not repaired face by face
DILATE = 4  # pixels the box's mask grows by (ADetailer's "mask dilate")


def widened(box: tuple[int, int, int, int], padding: int, picture: tuple[int, int],
            aspect: tuple[int, int]) -> tuple[int, int, int, int]:
    """The region to repaint: the box with `padding` around it, widened to `aspect` (width, height) and kept
    inside the picture by shifting, as A1111 widens an "only masked" crop."""
    width, height = picture
    left, top = max(box[0] - padding, 0), max(box[1] - padding, 0)
    right, bottom = min(box[2] + padding, width), min(box[3] + padding, height)
    ratio = aspect[0] / aspect[1]
    if (right - left) / (bottom - top) > ratio:  # too wide: taller
        left, top, right, bottom = _grow(top, bottom, round((right - left) / ratio), height, left, right)
    else:  # too tall: wider
        top, left, bottom, right = _grow(left, right, round((bottom - top) * ratio), width, top, bottom)
    return left, top, right, bottom


def _grow(low: int, high: int, want: int, limit: int, other_low: int, other_high: int) -> tuple[int, ...]:
    """Grow [low, high) to `want` pixels around its middle, shifted back inside [0, limit)."""
    want = min(want, limit)
    low = max(min((low + high - want) // 2, limit - want), 0)
    return other_low, low, other_high, low + want


def box_mask(size: tuple[int, int], box: tuple[int, int, int, int], blur: int) -> Image.Image:
    """White over the box (grown by DILATE), blurred by `blur` pixels: what is repainted and pasted."""
    from PIL import Image, ImageDraw, ImageFilter

    mask = Image.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle((box[0] - DILATE, box[1] - DILATE, box[2] + DILATE, box[3] + DILATE), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(blur)) if blur else mask


def repaired(result: GeneratedImage, run_part: Callable[[GenerationRequest], GeneratedImage]) -> GeneratedImage:
    """The picture after each --detail pass (a pass that finds nothing leaves it as it is)."""
    from sdgen.models.detectors import detect, find_detector

    picture, seconds = result.image.convert("RGB"), result.seconds
    for name in result.request.details:
        for box in detect(find_detector(name), picture)[:MAX_BOXES]:
            picture, took = _repaint(picture, box, result, run_part)
            seconds += took
    return dataclasses.replace(result, image=picture, seconds=seconds)


def _repaint(picture: Image.Image, box: tuple[int, int, int, int], result: GeneratedImage,
             run_part: Callable[[GenerationRequest], GeneratedImage]) -> tuple[Image.Image, float]:
    from PIL import Image

    from sdgen.engine.request import GenerationRequest

    request = result.request
    size = (request.width, request.height)
    region = widened(box, request.detail_padding, picture.size, size)
    mask = box_mask(picture.size, box, request.detail_blur)
    given = {field.name: getattr(request, field.name) for field in dataclasses.fields(GenerationRequest)}
    changes = {
        "prompt": request.detail_prompt or result.job.prompt, "styles": (), "seed": result.seed,
        "subseed": result.job.subseed, "num_images": 1, "batch_size": 1,
        "init_image": picture.crop(region).resize(size, Image.Resampling.LANCZOS),
        "mask": mask.crop(region).resize(size, Image.Resampling.LANCZOS), "mask_blur": 0, "inpaint_fill": "original",
        "strength": request.detail_strength, "num_inference_steps": request.detail_steps or request.num_inference_steps,
        # a ControlNet's or T2I-Adapter's map is the whole picture's: it would steer the crop wrongly
        "details": (), "hires_scale": None, "sd_upscale": None, "outpaint": None, "controls": (), "adapters": (),
        "restore_faces": None,
    }
    done = run_part(GenerationRequest(**given | {key: value for key, value in changes.items() if key in given}))
    patch = done.image.convert("RGB").resize((region[2] - region[0], region[3] - region[1]), Image.Resampling.LANCZOS)
    pasted = picture.copy()
    pasted.paste(patch, region[:2])
    return Image.composite(pasted, picture, mask), done.seconds  # outside the mask: the picture's own pixels


def check_details(request: GenerationRequest, allow_pickle: bool = False) -> None:
    """Every rule of detail repair before loading: each detector found (and what it needs installed)."""
    from sdgen.config.specs import check_int
    from sdgen.errors import NAME, InvalidRequestError
    from sdgen.models.detectors import find_detector

    if not request.details:
        return
    for name in request.details:
        find_detector(str(name), allow_pickle=allow_pickle)
    strength = request.detail_strength
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 < strength <= 1:
        raise InvalidRequestError(f"Invalid {NAME} {strength!r}: must be more than 0 and at most 1.", "detail_strength")
    steps = request.detail_steps or request.num_inference_steps
    check_int("detail_steps", steps, 1, 1000)
    if int(steps * strength) < 1:
        raise InvalidRequestError(f"Invalid {NAME} {strength!r} with {steps} steps: that runs no step; raise one so "
                                  "that steps x strength >= 1.", "detail_strength")
    check_int("detail_padding", request.detail_padding, 0, 512)
    check_int("detail_blur", request.detail_blur, 0, 64)
