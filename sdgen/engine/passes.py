"""Passes over whole pictures, after or instead of one run of the loop: SD upscale (sdgen/engine/sd_upscale.py:
the init image enlarged and repainted tile by tile), detail repair (sdgen/engine/detail.py: found regions
inpainted again) and face restoration (sdgen/engine/face_restore.py). Each tile or region is a request of
its own, which `run_part` checks and runs; the pipeline hands it in, so nothing here imports the pipeline."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from sdgen.engine.loader import StableDiffusionParts
    from sdgen.engine.request import GenerationRequest
    from sdgen.engine.tasks import GeneratedImage, ImageTask


def run_passes(
    tasks: list[ImageTask], parts: StableDiffusionParts, run_part: Callable[[GenerationRequest], GeneratedImage],
    run_batch: Callable[[], list[GeneratedImage]],
) -> list[GeneratedImage]:
    """The batch's pictures: tile by tile for SD upscale, else the batch as usual; then each --detail pass."""
    from sdgen.engine.detail import repaired
    from sdgen.engine.face_restore import restored
    from sdgen.engine.sd_upscale import sd_upscaled

    request = tasks[0].request
    tiled = request.sd_upscale is not None
    results = [sd_upscaled(task, parts, run_part) for task in tasks] if tiled else run_batch()
    if request.details:
        results = [repaired(result, run_part) for result in results]
    if request.restore_faces:  # A1111 restores faces last, after every other pass
        results = [restored(result, parts) for result in results]
    return results
