"""A `--control` everywhere a request goes besides the command line: one unit with its weight or guidance
start/end changed (a grid axis), its image read from a prompts file's folder (a batch line), whether the images
a record names are there (--from), and the control maps a request steers with (--save-control, the strip of
the denoising and the grid)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdgen.engine.plugins.control_units import IMAGE_NOT_RECORDED, control_units, parse_control, spell_control

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from sdgen.engine.request import GenerationRequest


def with_changes(text: str, **changes: Any) -> str:
    """`text` with some of its unit's fields changed (weight, start, end: a grid axis), checked again."""
    unit = dataclasses.replace(parse_control(text), **changes)
    return spell_control(parse_control(spell_control(unit)))


def with_image_folder(text: str, folder: Path) -> str:
    """`text` with a relative image path read from `folder` (a batch line's image beside its prompts file);
    the rest of the text as written."""
    unit = parse_control(text)
    image = Path(unit.image).expanduser()
    if image.is_absolute():
        return text
    model, _, rest = text.partition("=")
    return f"{model}={folder / image}{rest[len(unit.image):]}"


def control_maps(request: GenerationRequest, size: tuple[int, int]) -> list[Image.Image]:
    """Each unit's control map as the ControlNet sees it: the image preprocessed, then fitted to `size`
    (width, height) by the unit's resize mode, as the run's predictor does it."""
    from sdgen.config.images import load_checked_image
    from sdgen.engine.plugins.control_maps import fit_control_image
    from sdgen.engine.plugins.controlnet import control_map

    maps = []
    for unit in control_units(request):
        image = unit.image if not isinstance(unit.image, (str, Path)) else load_checked_image(
            unit.image, f"control image {unit.image!r}", "control", mode="RGB")
        # the map the run makes (the unit's settings, the picture's seed and mask), fitted as the predictor fits it
        maps.append(fit_control_image(control_map(image, unit, request).convert("RGB"), *size, unit.resize))
    return maps


def missing_images(controls: list[str]) -> str | None:
    """The first recorded unit whose image is not there (A1111's text holds none; a file may be gone), as
    the line to say with --from; None: all there."""
    for index, text in enumerate(controls):
        unit = parse_control(text)
        if unit.image == IMAGE_NOT_RECORDED:
            return (
                f"was made with ControlNet {index} ({text}), whose control image A1111's text does not hold; "
                "pass --control with your image in its place"
            )
        if not Path(unit.image).expanduser().is_file():
            return f"was made with control image {unit.image!r}, which is gone; pass --control"
    return None
