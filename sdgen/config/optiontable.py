"""What a row of the option table says, and what is derived from the rows (the rows are in sdgen/config/options.py).

A row names its key, type, default, help, commands and target, and also what the picture has to do with it:
whether it shapes the picture, its name in a batch line, in sdgen's record and in A1111's text, the row it
means nothing without, and whether images that differ in it may share one U-Net call. `OptionTable` turns
the rows into the lists the rest of sdgen needs (a request's picture keys, a batch line's keys, the record's
fields, what an older record means by leaving a field out, the key of a U-Net call), so that adding an option
is one row plus the code that uses it. Only the standard library is imported here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# What a row feeds: the request (one prompt's images), the model spec (weights, device, speed), the output
# (where and how images are written), the pictures of the process (strips, previews, grids), or the run
# itself (logging, the batch reader).
REQUEST, MODEL, OUTPUT, PICTURES, RUN = "request", "model", "output", "pictures", "run"
UPSCALING = "upscaling"  # what `sdgen upscale` does to each picture (sdgen/config/specs.py's UpscaleSpec)
GENERATE, BATCH, GRID, NOISE, SCHEDULE, SERVE = "generate", "batch", "grid", "noise", "schedule", "serve"
UPSCALE = "upscale"
BOTH = frozenset({GENERATE, BATCH})
MAKERS = frozenset({GENERATE, BATCH, GRID, SERVE})  # the commands that generate images
RUNS = MAKERS - {SERVE}  # ... from prompts on their own command line or file (`serve` takes them per request)
LOADERS = MAKERS | {NOISE, SCHEDULE}  # the commands that read a model

KEY = "<key>"  # the default of `batch_line` and `record`: the row's own key where it applies (Option.__post_init__)
PROMPT = "prompt"  # the one input of an image that is an argument, not a row: first in every list below


@dataclass(frozen=True)
class Option:
    key: str  # settings key and Python name: steps, guidance_scale ...
    kind: type  # int, float, bool, str or list (of texts, a repeatable flag): what config files, SDGEN_* and
    # batch lines must give
    default: Any  # the built-in value; None means no value (then `empty` says what happens)
    help: str
    target: str  # REQUEST, MODEL, OUTPUT, PICTURES, RUN or UPSCALING
    short: str | None = None  # one-letter flag, e.g. "-g"
    flag: str | None = None  # the long flag when it is not --key-with-dashes
    field_name: str | None = None  # the target's field when it is not the key (steps -> num_inference_steps)
    empty: str | None = None  # what no value means, for --help and `sdgen config` ("random")
    commands: frozenset[str] = MAKERS
    layered: bool = True  # settable by presets, the config file and SDGEN_*; False: command line only
    path: bool = False  # a file the command line should expand (~) and show as <path>
    help_for: Mapping[str, str] = field(default_factory=dict)  # a command's own help text, in full
    # --- the picture and its records (docs/reference.md lists them all) ---
    shapes_picture: bool = False  # the pixels depend on it: recorded, replayed by --from, matched on resume
    shares_unet_call: bool = False  # images that differ in it may still share a U-Net call (text side, seed)
    batch_line: str | None = KEY  # its key in a batch line; KEY: the key, for a request row that shapes the picture
    record: str | None = KEY  # its field in sdgen's record (replayed by --from); KEY: the key, if it shapes the picture
    a1111: str | None = None  # its field in A1111's `parameters` text, where A1111 has one
    needs: str | None = None  # the row without whose value it means nothing (strength: init_image): then None
    unet_field: str | None = None  # what a U-Net call must share instead of the row's own field (lora: the LoRAs
    # found, prompt tags included)

    def __post_init__(self) -> None:
        if self.batch_line == KEY:
            object.__setattr__(self, "batch_line", self.key if self.shapes_picture and self.target == REQUEST else None)
        if self.record == KEY:
            object.__setattr__(self, "record", self.key if self.shapes_picture else None)

    @property
    def long_flag(self) -> str:
        return self.flag or "--" + self.key.replace("_", "-")

    @property
    def target_field(self) -> str:
        return self.field_name or self.key

    def help_text(self, command: str) -> str:
        """The help `command` shows; the default is added where Typer would not show it well."""
        if command in self.help_for:
            return self.help_for[command]
        if self.kind is bool and self.layered:
            return f"{self.help} [default: {'on' if self.default else 'off'}]"
        return self.help + (f" [default: {self.empty}]" if self.empty else "")

    def record_form(self, value: Any) -> Any:
        """A value as sdgen's JSON record writes it: lists of texts, paths as text, an image given as pixels
        (no file to name) as None."""
        if value is None:
            return None
        if self.kind is list:
            return [str(item) for item in value]
        if self.kind is str:
            return str(value) if isinstance(value, (str, os.PathLike)) else None
        return value


@dataclass(frozen=True)
class OptionTable:
    """The lists derived from the rows; `sdgen.config.options.table()` gives the current one."""

    rows: Mapping[str, Option]

    def picture_rows(self, target: str = REQUEST) -> list[Option]:
        """The rows of `target` that shape the picture, in table order."""
        return [row for row in self.rows.values() if row.shapes_picture and row.target == target]

    def recorded(self, target: str | None = None) -> list[Option]:
        """The rows (of `target`) with a field in sdgen's record: what `--from IMAGE` replays."""
        return [row for row in self.rows.values() if row.record and target in (None, row.target)]

    def image_fields(self) -> tuple[str, ...]:
        """The record's fields that make one image from a request: what must match for an image on disk
        to count as done on a re-run (with the model)."""
        return (PROMPT, *(str(row.record) for row in self.picture_rows()))

    def line_rows(self) -> dict[str, Option | None]:
        """What one batch line may set, by its name there: the prompt (no row) and the per-image options."""
        return {PROMPT: None, **{row.batch_line: row for row in self.rows.values() if row.batch_line}}

    def value(self, row: Option, request: Any, job: Any = None) -> Any:
        """The row's value in `request` (its target), None where the row it needs has none (None, or an empty
        list); an image's `job` holds its own value of the rows it has a field for (its seed, its variation seed)."""
        if row.needs is not None and self.value(self.rows[row.needs], request, job) in (None, (), []):
            return None
        if job is not None and hasattr(job, row.target_field):
            return getattr(job, row.target_field)
        return getattr(request, row.target_field)

    def record_value(self, row: Option, request: Any, job: Any = None) -> Any:
        return row.record_form(self.value(row, request, job))

    def unrecorded(self) -> dict[str, Any]:
        """What a record written before a field existed means by leaving it out: the field as a request
        with the built-in values records it (so an older batch resumes)."""
        found = {}
        for row in self.picture_rows():
            needed = self.rows[row.needs] if row.needs is not None else None
            unused = needed is not None and needed.default is None
            found[str(row.record)] = None if unused else row.record_form(_built_in(row))
        return found

    def unet_key(self, request: Any, job: Any) -> tuple:
        """What images must agree on to share U-Net calls: every picture row of the request but those
        that may differ within one call (prompts, seeds, text-side options); a row with a `unet_field`
        compares that field of the image's job instead (the LoRAs its prompt found)."""
        key = []
        for row in self.picture_rows():
            if row.shares_unet_call:
                continue
            value = getattr(job, row.unet_field) if row.unet_field else self.value(row, request)
            key.append(_comparable(value))
        return tuple(key)

    def a1111_names(self) -> dict[str, str]:
        """key -> the row's field in A1111's text."""
        return {row.key: row.a1111 for row in self.rows.values() if row.a1111}


def _built_in(row: Option) -> Any:
    """The value a request holds when nothing sets the row: its default (a list row's is empty)."""
    return () if row.default is None and row.kind is list else row.default


def _comparable(value: Any) -> Any:
    """A value a U-Net call's key can hold: lists as tuples, a path or an image by its text."""
    if isinstance(value, list):
        return tuple(value)
    if value is None or isinstance(value, (bool, int, float, str, tuple)):
        return value
    return str(value)
