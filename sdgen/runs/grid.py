"""X/Y grids: one image per combination of an X and a Y value of any generation option (guidance scale,
steps, scheduler, seed, prompt, negative prompt, strength, size ...), from one model load, every other
setting the same, the seed too unless it is an axis. Guidance 1 against 7.5 shows what classifier-free
guidance does. Cells that can share U-Net calls (same size, steps, scheduler, guidance) go through it
together, --batch-size at a time."""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdgen.config.options import OPTIONS, table
from sdgen.config.settings import parse_text
from sdgen.config.specs import OutputSpec, PicturesSpec
from sdgen.engine.checking import check_request
from sdgen.engine.model_spec import CheckedModelSpec, ModelSpec
from sdgen.engine.request import CheckedRequest, GenerationRequest
from sdgen.errors import NAME, UsageError

if TYPE_CHECKING:  # pragma: no cover
    from sdgen.engine.loader import StableDiffusionParts
    from sdgen.engine.pipeline import GeneratedImage

log = logging.getLogger("sdgen")

# The options an axis may vary: the prompt and every request option that shapes the picture (the table's
# `shapes_picture`), not how many images, how they are batched or where files are found.
# The first --control's weight and guidance start/end are axes too (the unit a grid changes: the first one).
CONTROL_AXES = {"control_weight": "weight", "control_start": "start", "control_end": "end"}
AXIS_KINDS: dict[str, type] = {
    "prompt": str, **{o.key: o.kind for o in table().picture_rows()}, **dict.fromkeys(CONTROL_AXES, float)
}
ALIASES = {
    "cfg": "guidance_scale", "sampler": "scheduler", "init": "init_image", "control_guidance_start": "control_start",
    "control_guidance_end": "control_end",
}
MAX_VALUES = 64


@dataclass(frozen=True)
class Axis:
    key: str  # an option key: guidance_scale, steps, prompt ...
    values: tuple[Any, ...]

    @property
    def name(self) -> str:
        return self.key.replace("_", "-")

    def label(self, value: Any) -> str:
        if isinstance(value, (list, tuple)):  # a LoRA or embedding axis: file names, not whole paths
            value = ", ".join(item.replace("\\", "/").rsplit("/", 1)[-1] for item in value)
        return f"{self.name}: {value}"


def parse_axis(text: str, which: str) -> Axis:
    """`guidance-scale=1,3,7.5` -> Axis("guidance_scale", (1.0, 3.0, 7.5)). Values are comma separated;
    quote one that holds a comma: prompt="a fox, red","a cat"."""
    name, sep, values = text.partition("=")
    key = name.strip().lstrip("-").replace("-", "_")
    key = ALIASES.get(key, key)
    if not sep or key not in AXIS_KINDS:
        known = ", ".join(k.replace("_", "-") for k in AXIS_KINDS)
        raise UsageError(f"Invalid {NAME} {text!r}: write NAME=V1,V2,... with NAME one of {known}.", which)
    items = [item.strip() for item in next(csv.reader([values], skipinitialspace=True), [])]
    if not items or "" in items or len(items) > MAX_VALUES:
        raise UsageError(f"Invalid {NAME} {text!r}: give 1 to {MAX_VALUES} values, separated by commas.", which)
    kind = AXIS_KINDS[key]
    return Axis(key, tuple(parse_text(item, kind, f"--{which} {name.strip()}") for item in items))


def _field(key: str) -> str:
    return OPTIONS[key].target_field if key in OPTIONS else key


def cell_requests(
    base: GenerationRequest, x: Axis, y: Axis | None, model: CheckedModelSpec | None = None
) -> list[list[CheckedRequest]]:
    """One checked request per cell, rows by Y and columns by X; a bad value is named with its axis."""
    checked = check_request(base, model)  # the seed, when random, is drawn once here: the same in every cell
    decided = {field.name: getattr(checked, field.name) for field in fields(GenerationRequest)}
    rows = []
    for y_value in y.values if y is not None else (None,):
        row = []
        for x_value in x.values:
            try:
                changes = _cell_changes(decided, [(x, x_value)] + ([(y, y_value)] if y is not None else []))
                cell = GenerationRequest(**decided | {"num_images": 1} | changes)
                row.append(check_request(cell, model, like=checked))  # its wildcards, LoRAs, embeddings
            except UsageError as error:
                axis = "--x" if x.key in error.template or error.key == x.key else "--y"
                raise type(error)(error.template + f" (a value of {axis})", error.key) from None
        rows.append(row)
    return rows


def _cell_changes(decided: dict[str, Any], values: list[tuple[Axis, Any]]) -> dict[str, Any]:
    """A cell's fields: each axis's value, a ControlNet axis's in the first --control."""
    changes = {_field(axis.key): value for axis, value in values if axis.key not in CONTROL_AXES}
    unit = {CONTROL_AXES[axis.key]: value for axis, value in values if axis.key in CONTROL_AXES}
    if unit:
        from sdgen.engine.plugins.control_text import with_changes

        controls = changes.get("controls", decided["controls"])  # a --control axis's value, else the run's
        if not controls:
            name = next(axis.name for axis, _ in values if axis.key in CONTROL_AXES)
            raise UsageError(f"The grid axis {name!r} changes the first --control; give one.", "control")
        changes["controls"] = (with_changes(controls[0], **unit), *controls[1:])
    return changes


def generate_cells(
    rows: list[list[CheckedRequest]], parts: StableDiffusionParts, batch_size: int, on_step: Any
) -> dict[tuple[int, int], GeneratedImage]:
    """Each cell's image; cells that share batch_key go through the U-Net together, batch_size at a time."""
    from sdgen.engine.pipeline import ImageTask, batch_key, generate_batch

    groups: dict[tuple, list[tuple[int, int]]] = {}
    for r, row in enumerate(rows):
        for c, request in enumerate(row):
            groups.setdefault(batch_key(ImageTask.of(request)), []).append((r, c))
    made = {}
    for places in groups.values():
        for start in range(0, len(places), batch_size):
            chunk = places[start : start + batch_size]
            tasks = [ImageTask.of(rows[r][c]) for r, c in chunk]
            for place, result in zip(chunk, generate_batch(tasks, parts, on_step), strict=True):
                made[place] = result
    return made


def run_grid(
    base: GenerationRequest,
    axes: tuple[Axis, Axis | None],
    spec: ModelSpec,
    output: OutputSpec,
    emit: Callable[[str], None],
    pictures: PicturesSpec | None = None,
    quiet: bool = False,
) -> Path | None:
    """`sdgen grid PROMPT --x ... --y ...`: check every cell, load once, make the cells, write the grid."""
    from sdgen.pictures.watch import check_pictures, terminal_pictures
    from sdgen.record.output import picture_target
    from sdgen.runs.progress import GenerationProgress
    from sdgen.runs.prologue import check_model, open_model, prepare

    x, y = axes
    checked_spec = check_model(spec)
    rows = cell_requests(base, x, y, checked_spec)
    target = picture_target(output, "{index:05d}-grid-{slug}", base.prompt)
    pictures = check_pictures(pictures or PicturesSpec(), output.overwrite, checked_spec)
    machine = prepare(checked_spec)
    count = sum(len(row) for row in rows)
    terminal = terminal_pictures(pictures, quiet)
    mode = "none" if quiet else output.progress
    with GenerationProgress(count, terminal_image=terminal, mode=mode) as progress:
        first = rows[0][0]
        run = open_model(machine, progress, pictures, (first.width, first.height))
        made = generate_cells(rows, run.parts, base.batch_size, run.on_step)
    return _write_grid(rows, made, axes, run.parts, target, output, emit)


def _control_cells(rows: list[list[CheckedRequest]], size: tuple[int, int]) -> list[Any]:
    """The control maps every cell steers with, as the grid's first columns (none when the cells' control
    images differ: a --control axis)."""
    from sdgen.engine.plugins.control_text import control_maps
    from sdgen.engine.plugins.control_units import control_units
    from sdgen.pictures.sheets import Cell

    steering = {tuple((u.image, u.module, u.resize) for u in control_units(cell)) for row in rows for cell in row}
    if not rows[0][0].controls or len(steering) != 1:
        return []
    return [Cell(image, f"control {i}") for i, image in enumerate(control_maps(rows[0][0], size))]


def _write_grid(
    rows: list[list[CheckedRequest]],
    made: dict[tuple[int, int], GeneratedImage],
    axes: tuple[Axis, Axis | None],
    parts: StableDiffusionParts,
    target: Any,
    output: OutputSpec,
    emit: Callable[[str], None],
) -> Path | None:
    from sdgen.pictures.sheets import Cell, labelled_grid, picture_png
    from sdgen.record.metadata import a1111_parameters, result_record

    x, y = axes
    records = []
    for (r, c), result in sorted(made.items()):
        place = {"x": x.values[c], **({"y": y.values[r]} if y is not None else {})}
        records.append({**place, **result_record(result, parts)})
    if output.json:
        for record in records:
            emit(json.dumps(record, ensure_ascii=False))
    controls = _control_cells(rows, made[(0, 0)].image.size)
    cells = [[*controls, *(Cell(made[(r, c)].image) for c in range(len(row)))] for r, row in enumerate(rows)]
    sheet, _ = labelled_grid(
        cells,
        col_labels=[""] * len(controls) + [x.label(v) for v in x.values],
        row_labels=[y.label(v) for v in y.values] if y is not None else None,
        title=rows[0][0].jobs[0].prompt if x.key != "prompt" and (y is None or y.key != "prompt") else "",
    )
    axes_record = {"x": {"key": x.key, "values": list(x.values)}}
    if y is not None:
        axes_record["y"] = {"key": y.key, "values": list(y.values)}
    record = {"picture": "grid", **axes_record, "cells": records}
    parameters = a1111_parameters(made[(0, 0)], parts)
    data = picture_png(sheet, parameters if output.metadata else None, record if output.metadata else None)
    path = target.write(data, overwrite=output.overwrite)
    if path is not None and not output.json:
        emit(str(path))
    return path
