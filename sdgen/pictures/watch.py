"""What a generation run draws besides its images, set up from PicturesSpec: the per-step callbacks (the
denoising sequence, the live preview) and the pictures written at the end (contact sheet, animation,
grid of the run). Every destination is checked before any weights load."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdgen.engine.request import PicturesSpec
from sdgen.errors import InvalidRequestError
from sdgen.pictures.sheets import Cell, animation_bytes, labelled_grid, picture_png, square_rows
from sdgen.record.output import check_writable_folder, fixed_target

if TYPE_CHECKING:  # pragma: no cover
    from sdgen.engine.denoise import StepInfo
    from sdgen.engine.loader import StableDiffusionParts
    from sdgen.engine.model_spec import ModelSpec
    from sdgen.engine.pipeline import GeneratedImage
    from sdgen.pictures.live import LivePreview, Show
    from sdgen.pictures.sequence import SequenceRecorder


def check_pictures(spec: PicturesSpec, overwrite: bool, model: ModelSpec | None = None) -> PicturesSpec:
    """Validate, and prove each picture's file can be written, before loading; offline, the tiny preview's
    Hub id must be in the cache (`model`: the run's model spec, which says whether it is offline)."""
    spec = spec.checked()
    if spec.preview == "none" and (spec.records_steps or spec.preview_file):
        raise InvalidRequestError(
            "Invalid {name} 'none': --save-steps, --animation and --preview-file need previews; "
            "use auto, approx, tiny or full.",
            "preview",
        )
    for path in (spec.save_steps, spec.animation, spec.grid):
        if path is not None:
            fixed_target(Path(path), overwrite)
    if spec.preview_file is not None:
        check_writable_folder(Path(spec.preview_file).parent)
    if model is not None and "tiny" in qualities(spec):
        from sdgen.models.hub import require_cached

        require_cached(spec.preview_model, "Preview model (--preview-model of --preview tiny)", model)
    return spec


def qualities(spec: PicturesSpec) -> tuple[str, str]:
    """(the sequence's preview quality, the live preview's): auto means full for the one-off pictures of the
    sequence, approx (free) for the live preview."""
    if spec.preview != "auto":
        return spec.preview, spec.preview
    return "full", "approx"


@dataclass
class Watchers:
    """The run's per-step callbacks besides progress, and what they collect."""

    spec: PicturesSpec
    recorder: SequenceRecorder | None = None
    live: LivePreview | None = None
    results: list[GeneratedImage] = field(default_factory=list)

    @property
    def callbacks(self) -> list[Any]:
        return [w.on_step for w in (self.recorder, self.live) if w is not None]

    def on_step(self, info: StepInfo) -> None:
        for callback in self.callbacks:
            callback(info)

    def finished(self, result: GeneratedImage) -> None:
        self.results.append(result)
        if self.live is not None:
            self.live.update(result.image)


def start_watching(
    spec: PicturesSpec,
    parts: StableDiffusionParts,
    size: tuple[int, int] | None,
    show: Show | None,
    offline: bool = False,
) -> Watchers:
    """The callbacks the spec asks for, on the loaded model (the tiny autoencoder loads here if needed)."""
    from sdgen.engine.loader import load_tiny_autoencoder
    from sdgen.pictures.live import LivePreview
    from sdgen.pictures.previews import make_previewer
    from sdgen.pictures.sequence import SequenceRecorder

    watchers = Watchers(spec)
    sequence_quality, live_quality = qualities(spec)
    wanted = ([sequence_quality] if spec.records_steps else []) + ([live_quality] if spec.preview_file or show else [])
    tiny = None
    if "tiny" in wanted:
        tiny = load_tiny_autoencoder(spec.preview_model, parts.placement, offline)
    if spec.records_steps:
        previewer = make_previewer(sequence_quality, parts, size, tiny)
        watchers.recorder = SequenceRecorder(previewer, spec.every, spec.frames)
    if spec.preview_file or show:
        path = Path(spec.preview_file) if spec.preview_file else None
        watchers.live = LivePreview(make_previewer(live_quality, parts, size, tiny), spec.preview_every, path, show)
    return watchers


def write_pictures(watchers: Watchers, parts: StableDiffusionParts, overwrite: bool, metadata: bool) -> list[Path]:
    """The contact sheet, the animation and the grid of the run, as the spec asks; returns the files."""
    from sdgen.pictures.sequence import animation_frames, contact_sheet
    from sdgen.record.metadata import a1111_parameters, result_record

    spec, results = watchers.spec, watchers.results
    if not results:
        return []
    parameters = a1111_parameters(results[0], parts) if metadata else None
    records = [result_record(result, parts) for result in results]
    finals = {result.seed: result.image for result in results}
    written = []
    if watchers.recorder is not None:
        kept = watchers.recorder.kept
        steps = [{"step": f.step + 1, "timestep": f.timestep} for f in next(iter(kept.values()))]
        about = {"frames": steps, "preview": watchers.recorder.previewer.quality, "images": records}
        if spec.save_steps is not None:
            sheet, _ = contact_sheet(kept, finals, title=results[0].job.prompt, controls=_control_maps(results))
            record = {"picture": "denoising sequence", **about} if metadata else None
            written.append(_write(spec.save_steps, picture_png(sheet, parameters, record), overwrite))
        if spec.animation is not None:
            frames = animation_frames(kept, finals)
            suffix = Path(spec.animation).suffix.lower()
            written.append(_write(spec.animation, animation_bytes(frames, suffix, parameters), overwrite))
    if spec.grid is not None:
        first_maps = _control_maps(results[:1]).get(results[0].seed, [])  # one request: the same for every image
        steering = [Cell(image, f"control {i}") for i, image in enumerate(first_maps)]
        cells = [*steering, *(Cell(result.image, f"seed {result.seed}") for result in results)]
        sheet, _ = labelled_grid(square_rows(cells), title=results[0].job.prompt)
        record = {"picture": "grid of a run", "images": records} if metadata else None
        written.append(_write(spec.grid, picture_png(sheet, parameters, record), overwrite))
    return written


def _control_maps(results: list[GeneratedImage]) -> dict[int, list[Any]]:
    """The control maps each image (by seed) steered with, at its size: first columns of the pictures."""
    from sdgen.engine.plugins.control_text import control_maps

    return {r.seed: control_maps(r.request, r.image.size) for r in results if r.request.controls}


def write_control_maps(result: GeneratedImage, image_path: Path, overwrite: bool) -> list[Path]:
    """--save-control: each control map of the image's request beside it, IMAGE-control-N.png."""
    from sdgen.record.output import png_bytes, write_atomic

    maps = _control_maps([result]).get(result.seed, [])
    return [
        write_atomic(image_path.with_name(f"{image_path.stem}-control-{i}.png"), png_bytes(image), overwrite)
        for i, image in enumerate(maps)
    ]


def _write(path: str, data: bytes, overwrite: bool) -> Path:
    from sdgen.record.output import write_atomic

    return write_atomic(Path(path), data, overwrite)


def terminal_pictures(pictures: PicturesSpec, quiet: bool) -> object | None:
    """The renderable class for previews in the progress display, where the terminal shows images."""
    if quiet or pictures.preview == "none":
        return None
    from sdgen.pictures.live import terminal_image_class

    return terminal_image_class()


def chain(*callbacks: Callable[..., None]) -> Callable[..., None]:
    """One per-step callback that calls each in turn."""

    def on_step(info: object) -> None:
        for callback in callbacks:
            callback(info)

    return on_step
