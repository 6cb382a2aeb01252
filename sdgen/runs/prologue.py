"""The start of a run on the command line: the engine's prologue (sdgen/engine/prologue.py: check the model
spec, choose the device, plan speed, load), then progress and the pictures of the process that watch each
step (the live preview, the denoising sequence)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdgen.engine.prologue import Machine, check_model, load, prepare
from sdgen.pictures.watch import Watchers, chain, start_watching

if TYPE_CHECKING:  # pragma: no cover
    from sdgen.config.specs import PicturesSpec
    from sdgen.engine.loader import StableDiffusionParts
    from sdgen.runs.progress import GenerationProgress

__all__ = ["Machine", "OpenModel", "check_model", "open_model", "prepare"]


@dataclass
class OpenModel:
    """A loaded model and the run's per-step watchers (progress first)."""

    parts: StableDiffusionParts
    watchers: Watchers
    on_step: Any  # the steps' callback: progress, then the pictures watching the steps


def open_model(
    machine: Machine,
    progress: GenerationProgress | None = None,
    pictures: PicturesSpec | None = None,
    size: tuple[int, int] | None = None,
) -> OpenModel:
    """Load the model (each part reported to `progress`), then start the pictures that watch each step at
    `size` (None: the size of each batch as it comes)."""
    from sdgen.config.specs import PicturesSpec

    if progress is not None:
        progress.phase("importing", "torch, diffusers, transformers")
        import diffusers  # noqa: F401 - the slow imports, shown and timed as their own phase
        import torch  # noqa: F401
        import transformers  # noqa: F401
    parts = load(machine, progress.on_part if progress is not None else None)
    show = progress.show if progress is not None and progress.shows_pictures else None
    watchers = start_watching(pictures or PicturesSpec(), parts, size, show, machine.spec.offline)
    callbacks = [progress.on_step] if progress is not None else []
    return OpenModel(parts, watchers, chain(*callbacks, *watchers.callbacks))
