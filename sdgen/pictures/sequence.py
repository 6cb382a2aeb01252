"""The denoising sequence: at chosen steps, the current latents x_t and the network's estimate of the clean
image (predicted x0), kept by a per-step callback, drawn as a contact sheet and as an animation.

Row 1 shows what the loop holds (noise turning into a picture); row 2 what the network thinks the final
picture will be at that moment (blurry early, sharp late). The last column is the final image: at the
end of the process both are the picture.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sdgen.pictures.sheets import Cell, labelled_grid

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from sdgen.engine.denoise import StepInfo
    from sdgen.pictures.previews import Previewer


def chosen_steps(total: int, every: int | None = None, frames: int = 8) -> list[int]:
    """0-based loop steps to keep: every K-th (K, 2K, ...) or `frames` evenly spaced; the last always."""
    if every is not None:
        steps = set(range(every - 1, total, every))
    else:
        count = min(frames, total)
        steps = {round((i + 1) * total / count) - 1 for i in range(count)}
    return sorted(steps | {total - 1})


@dataclass(frozen=True)
class Frame:
    step: int  # 0-based loop step
    total: int  # steps the loop runs
    timestep: float
    noisy: Image.Image  # x_t after this step
    clean: Image.Image  # predicted x0 at this step

    @property
    def caption(self) -> str:
        return f"step {self.step + 1}/{self.total}\nt={_timestep_text(self.timestep)}"


def _timestep_text(timestep: float) -> str:
    return str(int(timestep)) if float(timestep).is_integer() else f"{timestep:.1f}"


@dataclass
class SequenceRecorder:
    """A per-step callback that keeps each image's frames (by seed) at the chosen steps."""

    previewer: Previewer
    every: int | None = None
    frames: int = 8
    kept: dict[int, list[Frame]] = field(default_factory=dict)

    def on_step(self, info: StepInfo) -> None:
        if info.index not in chosen_steps(info.total, self.every, self.frames):
            return
        noisy, clean = self.previewer(info.latents), self.previewer(info.pred_x0)
        for seed, noisy_image, clean_image in zip(info.seeds, noisy, clean, strict=True):
            frame = Frame(info.index, info.total, float(info.timestep), noisy_image, clean_image)
            self.kept.setdefault(seed, []).append(frame)


def contact_sheet(
    kept: dict[int, list[Frame]],
    finals: dict[int, Image.Image],
    title: str,
    max_side: int = 192,
    controls: dict[int, list[Image.Image]] | None = None,
) -> tuple[Image.Image, list[list[tuple[int, int, int, int]]]]:
    """Two rows per image (x_t, predicted x0), a column per kept step, the final image last; first, the
    control maps an image steered with (`controls`, by seed), when it had a ControlNet."""
    rows, labels = [], []
    for seed, frames in kept.items():
        final = Cell(finals[seed], "final")
        steering = [Cell(image, f"control {i}") for i, image in enumerate((controls or {}).get(seed, []))]
        rows.append([*steering, *(Cell(frame.noisy, frame.caption) for frame in frames), final])
        rows.append([*steering, *(Cell(frame.clean, frame.caption) for frame in frames), final])
        labels += [f"seed {seed}: x_t (the latents now)", "predicted x0 (the network's guess of the end)"]
    return labelled_grid(rows, row_labels=labels, title=title, max_side=max_side)


def animation_frames(
    kept: dict[int, list[Frame]], finals: dict[int, Image.Image], max_side: int = 384
) -> list[Image.Image]:
    """The same frames in time: each shows x_t and predicted x0 side by side (a row per image), captioned;
    the last shows the final image."""
    steps = max(len(frames) for frames in kept.values())
    pictures = []
    for k in range(steps + 1):
        rows = []
        for seed, frames in kept.items():
            if k < len(frames):
                frame = frames[k]
                rows.append([Cell(frame.noisy, f"x_t, {frame.caption}"), Cell(frame.clean, "predicted x0")])
            else:
                rows.append([Cell(finals[seed], "final"), Cell(finals[seed], "")])
        pictures.append(labelled_grid(rows, max_side=max_side)[0])
    return same_size(pictures)


def same_size(pictures: list[Image.Image]) -> list[Image.Image]:
    """Every frame on a canvas of the largest one's size (captions of one or two lines differ in height)."""
    from PIL import Image

    from sdgen.pictures.sheets import BACKGROUND

    size = (max(p.width for p in pictures), max(p.height for p in pictures))
    framed = []
    for picture in pictures:
        canvas = Image.new("RGB", size, BACKGROUND)
        canvas.paste(picture, (0, 0))
        framed.append(canvas)
    return framed
