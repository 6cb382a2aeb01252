"""A ControlNet unit and how it is written: `ControlUnit` (which ControlNet, which image, how strongly and when it
steers, which preprocessor with which settings), `--control`'s spelling read and written back
(`parse_control`, `spell_control`), and the ControlNet extension's `ControlNet N` text read back
(`units_from_a1111`). The plug-in that runs them: controlnet.py."""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdgen.engine.plugins.control_maps import PREPROCESSORS, check_settings, module_name, relevant_settings
from sdgen.errors import InvalidRequestError

if TYPE_CHECKING:  # pragma: no cover
    from sdgen.engine.request import GenerationRequest


# sdgen's names -> A1111's ControlNet extension's "Control Mode" names
CONTROL_MODES = {
    "balanced": "Balanced",
    "prompt": "My prompt is more important",
    "control": "ControlNet is more important",
}
# sdgen's names -> A1111's "Resize Mode" names (sdgen/engine/plugins/control_maps.py does them)
RESIZE_MODES = {"resize": "Just Resize", "crop": "Crop and Resize", "fill": "Resize and Fill"}
DEFAULT_RESIZE = "crop"  # the extension's default
SOFT_INJECTION_BASE = 0.825  # the extension's soft weights: weight * 0.825 ** (12 - i) for the 13 residuals
MAX_WEIGHT = 10.0
SPELLING = "MODEL=IMAGE[:WEIGHT[:START[:END]]][:MODE][:RESIZE][:PREPROCESSOR][:KEY=VALUE...]"
# the KEY=VALUE settings after the image -> ControlUnit's fields (the extension's unit fields)
SETTING_KEYS = {
    "res": "processor_res", "low": "threshold_a", "high": "threshold_b", "a": "threshold_a", "b": "threshold_b",
    "pixel_perfect": "pixel_perfect",
}
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
# The image of a unit read back from A1111's text, which holds none: --from asks for --control in its place.
IMAGE_NOT_RECORDED = "<the control image>"
SENT_IMAGE = "<image sent to the server>"  # a record's image of a server unit: the pixels came in the request


@dataclass(frozen=True)
class ControlUnit:
    """One --control: which ControlNet, which image, and how strongly and when it steers. The server's units
    carry the image it decoded (a PIL image) instead of a path: their record names no file to replay."""

    model: str
    image: Any  # a path, or a PIL image (sent to the server)
    weight: float = 1.0
    start: float = 0.0  # fraction of the steps before it acts
    end: float = 1.0  # fraction of the steps after which it stops
    mode: str = "balanced"  # a key of CONTROL_MODES
    resize: str = "crop"  # a key of RESIZE_MODES: how the image meets the picture's size
    module: str = "none"  # a key of PREPROCESSORS: what makes the control map from the image
    # the preprocessor's settings, as the extension's unit has them; -1: the preprocessor's default
    processor_res: int = -1  # the short side the map is made at (-1: the image's own; a detector's 512)
    threshold_a: float = -1
    threshold_b: float = -1
    pixel_perfect: bool = False  # processor_res from the picture's size, as the extension computes it

    def __str__(self) -> str:
        """The --control spelling (what the record keeps): spell_control's."""
        return spell_control(self)

    def __hash__(self) -> int:  # a PIL image is unhashable: its mode and size stand for it (equal images share them)
        image = self.image if isinstance(self.image, str) else (self.image.mode, self.image.size)
        others = (getattr(self, field.name) for field in dataclasses.fields(self) if field.name != "image")
        return hash((image, *others))


def _bad(text: str, why: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid {{name}} {text!r}: {why} ({SPELLING}, e.g. canny=edges.png:0.8).", "control")


def _number(token: str) -> float | None:
    try:
        value = float(token)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def parse_control(text: str) -> ControlUnit:
    """'canny=edges.png:0.8:0:0.6:prompt:fill' -> ControlUnit; an image path may itself hold ':' (C:\\...), so
    the words (a control mode, a resize mode) and the numbers are read from the right."""
    model, sep, rest = str(text).partition("=")
    if not sep or not model.strip() or not rest:
        raise _bad(text, "a ControlNet and an image joined by '='")
    tokens = rest.split(":")
    words: dict[str, str] = {}
    settings: dict[str, object] = {}
    while len(tokens) > 1:
        word = tokens[-1].strip()
        if _setting(text, word, settings):
            tokens.pop()
            continue
        kinds = {"mode": CONTROL_MODES, "resize": RESIZE_MODES}
        kind = next((name for name, words_of in kinds.items() if word in words_of), None)
        if kind is None and module_name(word) is not None:
            kind, word = "module", module_name(word) or word
        if kind is None or kind in words:
            break
        words[kind] = word
        tokens.pop()
    numbers: list[float] = []
    while len(tokens) > 1 and _number(tokens[-1].strip()) is not None:
        numbers.insert(0, float(tokens.pop()))
    if len(numbers) > 3:
        raise _bad(text, "at most three numbers: weight, start and end")
    weight, start, end = [*numbers, *(1.0, 0.0, 1.0)[len(numbers):]]
    unit = ControlUnit(
        model.strip(), ":".join(tokens), weight, start, end, words.get("mode", "balanced"),
        words.get("resize", DEFAULT_RESIZE), words.get("module", "none"), **settings,  # type: ignore[arg-type]
    )
    if not 0 <= unit.weight <= MAX_WEIGHT:
        raise _bad(text, f"the weight must be from 0 to {MAX_WEIGHT:g}")
    if not 0 <= unit.start < unit.end <= 1:
        raise _bad(text, "start and end are fractions of the steps, 0 <= start < end <= 1")
    try:
        check_settings(unit)
    except InvalidRequestError as error:
        raise _bad(text, str(error).removeprefix("Invalid control ").rstrip(".")) from None
    return unit


def _setting(text: str, token: str, settings: dict[str, object]) -> bool:
    """Read a KEY=VALUE token (or the bare word pixel_perfect) into `settings`; False if it is none."""
    key, sep, value = token.partition("=")
    key, value = key.strip().lower(), value.strip().lower()
    if key not in SETTING_KEYS or (not sep and key != "pixel_perfect"):
        return False
    field = SETTING_KEYS[key]
    if field in settings:
        raise _bad(text, f"{key} is given twice")
    if field == "pixel_perfect":
        if sep and value not in TRUE_WORDS + FALSE_WORDS:
            raise _bad(text, f"pixel_perfect is true or false, not {value!r}")
        settings[field] = not sep or value in TRUE_WORDS
    elif field == "processor_res":
        if not value.isdigit():
            raise _bad(text, f"res is a whole number of pixels, not {value!r}")
        settings[field] = int(value)
    else:
        number = _number(value)
        if number is None:
            raise _bad(text, f"{key} is a number, not {value!r}")
        settings[field] = number
    return True


def spell_control(unit: ControlUnit) -> str:
    """The --control text of a unit (what parse_control reads back to it), its defaults left out; a sent image
    (the server's units carry a PIL image) has no path to name: SENT_IMAGE stands for it."""
    def number(value: float) -> str:  # exact: what it reads back is the same float
        return f"{value:g}" if float(f"{value:g}") == value else repr(float(value))

    image = unit.image if isinstance(unit.image, str) else SENT_IMAGE
    parts = [f"{unit.model}={image}", *(number(v) for v in (unit.weight, unit.start, unit.end)), unit.mode,
             unit.resize, unit.module]
    settings = {"res": unit.processor_res, "low": unit.threshold_a, "high": unit.threshold_b}
    parts += [f"{key}={number(value)}" for key, value in settings.items() if value != -1]
    return ":".join(parts + (["pixel_perfect"] if unit.pixel_perfect else []))



def control_units(request: GenerationRequest) -> list[ControlUnit]:
    """The request's units: --control texts parsed, the server's ControlUnits as they are."""
    return [text if isinstance(text, ControlUnit) else parse_control(text) for text in request.controls]


def soft_scales(weight: float, count: int) -> list[float]:
    """The extension's soft injection: the deepest residual (the middle block's, last) keeps the weight, each
    shallower one 0.825 times the one below it."""
    return [weight * SOFT_INJECTION_BASE ** float(count - 1 - i) for i in range(count)]


def acts_at(unit: ControlUnit, index: int, total: int) -> bool:
    """Whether a unit steers step `index` of `total`, as diffusers' controlnet_keep counts it."""
    return not (index / total < unit.start or (index + 1) / total > unit.end)


# ---- A1111's text read back -------------------------------------------------------------------------


# The extension's older names of its resize modes, and its names of sdgen's preprocessors where they differ
OLD_RESIZE_NAMES = {"Scale to Fit (Inner Fit)": "crop", "Envelope (Outer Fit)": "fill"}
A1111_MODULES = {"invert (from white bg & black line)": "invert"}
_HASH = re.compile(r"\s*\[[0-9a-fA-F]{8,10}\]$")


def _unit_from_a1111(label: str, text: str) -> str:
    """One `ControlNet N` field ('Module: canny, Model: name [hash], Weight: 1, ...') as sdgen's spelling; ''
    for an unused unit (Model None)."""
    fields = dict(part.partition(": ")[::2] for part in text.split(", ") if ": " in part)
    model = _HASH.sub("", fields.get("Model", "")).strip()
    if not model or model == "None":
        return ""
    given = A1111_MODULES.get(fields.get("Module", "none"), fields.get("Module", "none"))
    module = module_name(given)
    if module is None:
        raise InvalidRequestError(
            f"Invalid {{name}}: {label} was made with the preprocessor {given!r}, which sdgen does not have; pass "
            "--control with the map it made and preprocessor none.", "control",
        )
    modes = {name: key for key, name in CONTROL_MODES.items()}
    resizes = {name: key for key, name in RESIZE_MODES.items()} | OLD_RESIZE_NAMES
    unit = ControlUnit(
        model, IMAGE_NOT_RECORDED, float(fields.get("Weight", 1)), float(fields.get("Guidance Start", 0)),
        float(fields.get("Guidance End", 1)), modes.get(fields.get("Control Mode", ""), "balanced"),
        resizes.get(fields.get("Resize Mode", ""), DEFAULT_RESIZE), module,
        **relevant_settings(module, float(fields.get("Processor Res", -1)), float(fields.get("Threshold A", -1)),
                            float(fields.get("Threshold B", -1))),  # those the module has, as the extension reads
        pixel_perfect=fields.get("Pixel Perfect") == "True" and PREPROCESSORS[module].uses_resolution,
    )
    return spell_control(unit)


def units_from_a1111(fields: Mapping[str, str]) -> dict[str, Any]:
    """The extension's `ControlNet 0`, `ControlNet 1` ... units, each with IMAGE_NOT_RECORDED for its image (the
    text holds none: --from asks for --control); the model is found by its name, in --control-dir."""
    labels = sorted((key for key in fields if re.fullmatch(r"ControlNet \d+", key)), key=lambda k: int(k[11:]))
    units = [text for text in (_unit_from_a1111(label, fields[label]) for label in labels) if text]
    return {"control": units} if units else {}
