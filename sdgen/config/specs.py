"""Where images go and which pictures of the process a run draws: frozen dataclasses fed by the option table
(sdgen/config/options.py), checked before any weights load."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sdgen.config import options
from sdgen.config.options import OUTPUT, PICTURES, default
from sdgen.config.optiontable import UPSCALING
from sdgen.errors import NAME, InvalidRequestError

MAX_STEPS = 1000
PROGRESS_MODES = ("auto", "rich", "plain", "none")  # sdgen.runs.progress draws them


@dataclass(frozen=True)
class OutputSpec:
    """Where and how images are written."""

    output: str | None = default("output")  # FILE.png, DIR/, or - for stdout; None: the outputs/ folder
    name: str = default("name")  # file name template of `sdgen PROMPT`
    batch_name: str = default("batch_name")  # file name template of `sdgen batch`
    overwrite: bool = default("overwrite")
    json: bool = default("json")  # one JSON record per image on stdout instead of its path
    metadata: bool = default("metadata")  # A1111 parameters and sdgen's record in each PNG
    save_control: bool = default("save_control")  # each ControlNet's map beside the image
    progress: str = default("progress")  # on stderr: auto, rich, plain or none (sdgen.runs.progress)

    def __post_init__(self) -> None:
        if self.progress not in PROGRESS_MODES:
            choices = ", ".join(PROGRESS_MODES)
            raise InvalidRequestError(f"Invalid {NAME} {self.progress!r}: choose one of {choices}.", "progress")

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> OutputSpec:
        return cls(**fields_for(cls, OUTPUT, values))


PREVIEW_KINDS = ("auto", "approx", "tiny", "full", "none")
ANIMATION_SUFFIXES = (".gif", ".webp")


@dataclass(frozen=True)
class PicturesSpec:
    """The pictures of the process a run makes besides its images: the denoising sequence as a contact
    sheet and an animation, a live preview file, and a grid of the run's images."""

    save_steps: str | None = default("save_steps")  # contact sheet PNG
    every: int | None = default("every")  # a frame every K steps, else `frames` evenly spaced frames
    frames: int = default("frames")
    animation: str | None = default("animation")  # .gif or .webp
    preview: str = default("preview")  # auto, approx, tiny, full or none
    preview_model: str = default("preview_model")  # AutoencoderTiny weights: Hub id or folder
    preview_file: str | None = default("preview_file")  # live preview PNG, rewritten atomically
    preview_every: int = default("preview_every")
    grid: str | None = default("grid")  # the run's images in one labelled PNG

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> PicturesSpec:
        return cls(**fields_for(cls, PICTURES, values))

    @property
    def records_steps(self) -> bool:
        return self.save_steps is not None or self.animation is not None

    def checked(self) -> PicturesSpec:
        """Every check that needs no weights, with paths expanded (a config file's ~ is not a shell's)."""
        if self.preview not in PREVIEW_KINDS:
            choices = ", ".join(PREVIEW_KINDS)
            raise InvalidRequestError(f"Invalid {NAME} {self.preview!r}: choose one of {choices}.", "preview")
        if self.every is not None:
            check_int("every", self.every, 1, MAX_STEPS)
        check_int("frames", self.frames, 1, MAX_STEPS)
        check_int("preview_every", self.preview_every, 1, MAX_STEPS)
        keys = ("save_steps", "animation", "preview_file", "grid")
        paths = {key: str(getattr(self, key)) for key in keys if getattr(self, key) is not None}  # Path from Typer
        for key, path in paths.items():
            suffixes = ANIMATION_SUFFIXES if key == "animation" else (".png",)
            if not path.lower().endswith(suffixes) or path == "-":
                raise InvalidRequestError(
                    f"Invalid {NAME} {path!r}: use a file name ending in {' or '.join(suffixes)}.", key
                )
        expanded = {key: str(Path(path).expanduser()) for key, path in paths.items()}
        return replace(self, **expanded)


def fields_for(cls: type, target: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that feed `target` (a row's target in sdgen/config/options.py), under `cls`'s field names."""
    names = {field.name for field in dataclasses.fields(cls)}
    chosen: dict[str, Any] = {}
    for key, value in values.items():
        option = options.OPTIONS.get(key)
        if option is None or option.target != target:
            continue
        if option.target_field not in names:
            missing = option.target_field
            raise TypeError(f"option {key!r} feeds the {target}, but {cls.__name__} has no field {missing!r}")
        chosen[option.target_field] = value
    return chosen


def check_int(key: str, value: object, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequestError(f"Invalid {NAME} {value!r}: must be a whole number from {low} to {high}.", key)


@dataclass(frozen=True)
class UpscaleSpec:
    """What `sdgen upscale` does to each picture: which upscaler model, by how much, in which tiles."""

    upscaler: str | None = default("upscaler")  # a file, or a name in --upscaler-dir
    upscale_by: float | None = default("upscale_by")  # None: the model's own scale
    upscale_tile: int = default("upscale_tile")  # input pixels a side; 0: the whole picture at once
    upscale_overlap: int = default("upscale_overlap")  # context pixels around each tile

    @classmethod
    def from_settings(cls, values: Mapping[str, Any]) -> UpscaleSpec:
        return cls(**fields_for(cls, UPSCALING, values))

    def checked(self) -> UpscaleSpec:
        if not self.upscaler:
            raise InvalidRequestError(
                f"Invalid {NAME}: no upscaler; pass --upscaler FILE (e.g. 4x-UltraSharp.safetensors), or a name with "
                "--upscaler-dir.", "upscaler",
            )
        by = self.upscale_by
        if by is not None and (isinstance(by, bool) or not isinstance(by, (int, float)) or not 0 < by <= MAX_UPSCALE):
            raise InvalidRequestError(f"Invalid {NAME} {by!r}: must be more than 0 and at most {MAX_UPSCALE}.",
                                      "upscale_by")
        if self.upscale_tile != 0:
            check_int("upscale_tile", self.upscale_tile, MIN_TILE, MAX_TILE)
        check_int("upscale_overlap", self.upscale_overlap, 0, MAX_TILE // 4)
        return self


MAX_UPSCALE = 16
MIN_TILE, MAX_TILE = 32, 4096
