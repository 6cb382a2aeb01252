"""A1111's ControlNet extension API (Mikubill/sd-webui-controlnet: its api.py and external_code.py) over sdgen's
ControlNet plug-in: the units of `alwayson_scripts.controlnet.args` in txt2img and img2img bodies, as webuiapi's
ControlNetUnit and other clients send them, become ControlUnits carrying the decoded image; GET
/controlnet/version, /controlnet/model_list (the ControlNets in --control-dir and the Hugging Face cache, spelt
`name [hash]` as the extension spells them), /controlnet/module_list (sdgen's preprocessors under the extension's
names) and POST /controlnet/detect (a preprocessor's map). Only listed ControlNets can be chosen: a request never
makes the server open an arbitrary path or download from the Hub."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from sdgen.engine.plugins.control_maps import (
    DETECTOR_RESOLUTION,
    MAX_RESOLUTION,
    MIN_RESOLUTION,
    PREPROCESSORS,
    MapSettings,
    make_control_map,
    missing_library,
    relevant_settings,
)
from sdgen.engine.plugins.control_units import ControlUnit
from sdgen.errors import NAME, InvalidRequestError
from sdgen.models.hashes import legacy_model_hash
from sdgen.serve.schema import STRICT, Text

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

API_VERSION = 3  # external_code.get_api_version() of the extension's current API
MAX_UNITS = 8  # units of one request: each is one more network call a step
MAX_WEIGHT = 2.0  # the extension's bound on a unit's weight
SCRIPT = "controlnet"  # the alwayson_scripts title (lower case; webuiapi sends "ControlNet")
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
SETTINGS = ("processor_res", "threshold_a", "threshold_b")  # a unit's preprocessor settings (ControlUnit's too)
_HASH_SUFFIX = re.compile(r"\s*\[[0-9a-fA-F]{8,64}\]$")  # "control_v11p_sd15_canny [abcd1234]"

# the extension's resize modes (its ResizeMode, by value, by position, and the old names it still reads)
RESIZE_NAMES = {
    "just resize": "resize", "crop and resize": "crop", "resize and fill": "fill",
    "inner fit (scale to fit)": "crop", "scale to fit (inner fit)": "crop",
    "outer fit (shrink to fit)": "fill", "envelope (outer fit)": "fill",
}
# by number; 3, the old "Just Resize (Latent upscale)", is read as Just Resize, as the extension reads it
RESIZE_LABELS = ("Just Resize", "Crop and Resize", "Resize and Fill", "Just Resize")
CONTROL_NAMES = {"balanced": "balanced", "my prompt is more important": "prompt",
                 "controlnet is more important": "control"}
CONTROL_LABELS = ("Balanced", "My prompt is more important", "ControlNet is more important")
# the extension's labels (what module_list?alias_names=true lists) where they are not its module names
MODULE_LABELS = {
    "invert": "invert (from white bg & black line)", "depth": "depth_midas", "lineart": "lineart_realistic",
    "lineart_standard": "lineart_standard (from white bg & black line)", "normal_map": "normal_midas",
    "hed": "softedge_hed", "hed_safe": "softedge_hedsafe", "pidinet": "softedge_pidinet",
    "pidinet_safe": "softedge_pidisafe", "pidinet_scribble": "scribble_pidinet", "segmentation": "seg_ufade20k",
    "oneformer_ade20k": "seg_ofade20k", "oneformer_coco": "seg_ofcoco", "anime_face_segment": "seg_anime_face",
    "color": "t2ia_color_grid", "pidinet_sketch": "t2ia_sketch_pidi", "clip_vision": "t2ia_style_clipvision",
}


# ---- what the server offers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Listed:
    """One ControlNet the server can load: its name as the extension lists it, and where it is."""

    name: str  # the file's or folder's stem, or the Hub id
    short_hash: str  # the extension's 8 hex digits (A1111's old model hash)
    source: str  # what ControlUnit.model gets: a path or a Hub id

    @property
    def title(self) -> str:
        return f"{self.name} [{self.short_hash}]"


def controlnets(settings: Mapping[str, Any]) -> list[Listed]:
    """--control-dir's .safetensors files and diffusers folders, then the Hub cache's ControlNets."""
    found = []
    folder = Path(settings.get("control_dir") or "").expanduser()
    if settings.get("control_dir") and folder.is_dir():
        for path in sorted(folder.iterdir()):
            weights = path / WEIGHTS_FILE if path.is_dir() else path
            loadable = (path / "config.json").is_file() if path.is_dir() else _controlnet_file(path)
            if loadable and weights.is_file():
                found.append(Listed(path.stem if path.is_file() else path.name, legacy_model_hash(weights), str(path)))
    found += _cached_controlnets(settings.get("cache_dir"))
    unique: dict[str, Listed] = {}
    for listed in found:
        unique.setdefault(listed.name.lower(), listed)
    return list(unique.values())


def _controlnet_file(path: Path) -> bool:
    """Whether a file is a ControlNet in A1111's layout, from its .safetensors header alone (its control-image
    encoder, input_hint_block): other files of A1111's models/ControlNet (T2I-Adapters, pickles) are not listed."""
    import json

    if path.suffix != ".safetensors":
        return False
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(min(size, 100_000_000)))
    except (OSError, ValueError):
        return False
    return isinstance(header, dict) and any("input_hint_block." in key for key in header)


def _cached_controlnets(cache_dir: str | None) -> list[Listed]:
    from huggingface_hub import constants, try_to_load_from_cache

    from sdgen.models.catalog import list_models

    cache = Path(cache_dir or constants.HF_HUB_CACHE)
    found = []
    for entry in list_models(cache, None):
        if entry.where == "cache" and entry.kind == "ControlNet":
            weights = try_to_load_from_cache(entry.name, WEIGHTS_FILE, cache_dir=cache)
            if isinstance(weights, str):
                found.append(Listed(entry.name, legacy_model_hash(Path(weights)), entry.name))
    return found


def find_listed(value: str, settings: Mapping[str, Any], key: str) -> str:
    """The source of the listed ControlNet a client names: by its name (with or without its [hash], a Hub id
    by its last part too), else the shortest name holding the text, as the extension finds `canny`;
    InvalidRequestError naming `key` for none."""
    wanted = _HASH_SUFFIX.sub("", value.strip()).lower()
    listed = controlnets(settings)
    for entry in listed:
        if wanted in {entry.name.lower(), entry.name.rsplit("/", 1)[-1].lower()}:
            return entry.source
    holding = sorted((entry for entry in listed if wanted and wanted in entry.name.lower()), key=lambda e: len(e.name))
    if holding:
        return holding[0].source
    names = ", ".join(entry.title for entry in listed) or "none: start the server with --control-dir"
    raise InvalidRequestError(
        f"Invalid {NAME} {value!r}: not one of this server's ControlNets ({names}); GET /controlnet/model_list "
        "lists them.", key,
    )


def module_name(value: Any, key: str) -> str:
    """sdgen's preprocessor for an extension module name or label; InvalidRequestError naming `key` else."""
    text = str(value).strip() if isinstance(value, str) else ""
    names = {label: name for name, label in MODULE_LABELS.items()}
    for candidate in (text, names.get(text), MODULE_LABELS.get(text)):
        if candidate in PREPROCESSORS:
            return candidate
    raise InvalidRequestError(
        f"Invalid {NAME} {value!r}: not one of sdgen's preprocessors ({', '.join(module_list())}); GET "
        "/controlnet/module_list lists them.", key,
    )


def module_list(alias_names: bool = False) -> list[str]:
    """sdgen's preprocessors under the extension's names (or its labels); "none" first, as it lists them."""
    names = {label: name for name, label in MODULE_LABELS.items()}
    listed = [names.get(key, key) for key in PREPROCESSORS]
    return [MODULE_LABELS.get(name, name) for name in listed] if alias_names else listed


def module_detail(alias_names: bool = False) -> dict[str, Any]:
    """The extension's module_detail: sdgen's preprocessors all need a ControlNet (model_free false); their
    sliders in the extension's order, processor_res, threshold_a, threshold_b (None where one has none)."""
    return {listed: {"model_free": False, "sliders": _sliders(module)}  # module_list keeps PREPROCESSORS' order
            for module, listed in zip(PREPROCESSORS, module_list(alias_names), strict=True)}


def _sliders(module: str) -> list[dict[str, Any] | None]:
    spec = PREPROCESSORS[module]
    res = {"name": "Preprocessor Resolution", "value": DETECTOR_RESOLUTION, "min": MIN_RESOLUTION,
           "max": MAX_RESOLUTION} if spec.uses_resolution else None
    sliders = [res, *({"name": s.label, "value": s.default, "min": s.low, "max": s.high} if s else None
                      for s in (spec.a, spec.b))]
    while sliders and sliders[-1] is None:
        sliders.pop()
    return sliders


def map_settings(module: str, given: Mapping[str, Any], keys: Mapping[str, str]) -> dict[str, Any]:
    """The processor_res, threshold_a and threshold_b of `given` that `module` has (`keys`: their fields):
    webuiapi sends its 512 and 64s to every module, and the extension ignores those a preprocessor has no
    slider for (relevant_settings); a negative value is the preprocessor's default, as the extension's bound
    check resets it. A value out of the slider's range is refused naming its field."""
    numbers = {name: _number({keys[name]: given.get(name)}, keys[name], -1.0, -math.inf, math.inf, "")
               for name in SETTINGS}
    kept = relevant_settings(module, **{name: -1 if value < 0 else value for name, value in numbers.items()})
    spec = PREPROCESSORS[module]
    ranges = {"processor_res": (MIN_RESOLUTION, MAX_RESOLUTION), "threshold_a": spec.a and (spec.a.low, spec.a.high),
              "threshold_b": spec.b and (spec.b.low, spec.b.high)}
    for name, value in kept.items():
        if value != -1:
            _number({keys[name]: value}, keys[name], -1, *ranges[name], "")  # type: ignore[misc]
    return kept


# ---- the units of a generation request ---------------------------------------------------------------


def unit_values(scripts: Mapping[str, Any], settings: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """{"control": (ControlUnit, ...)} for the enabled units of a body's ControlNet script (none: {}); `values`
    are the request's settings so far (its init image, its hires pass)."""
    for title, script in scripts.items():
        if str(title).lower().startswith(SCRIPT):
            where = f"alwayson_scripts.{title}.args"
            args = script.get("args", []) if isinstance(script, Mapping) else None
            if not isinstance(args, list):
                raise InvalidRequestError(f"Invalid {NAME}: send a list of ControlNet units.", where)
            if len(args) > MAX_UNITS:
                raise InvalidRequestError(f"Invalid {NAME}: {len(args)} units; at most {MAX_UNITS}.", where)
            units = [_unit(arg, f"{where}[{index}]", settings, values) for index, arg in enumerate(args)
                     if arg is not None]  # the extension skips empty places
            return {"control": tuple(unit for unit in units if unit is not None)}
    return {}


def _unit(arg: Any, where: str, settings: Mapping[str, Any], values: Mapping[str, Any]) -> ControlUnit | None:
    """One unit (a JSON object of the extension's ControlNetUnit fields); None when disabled or acting on no
    step (guidance_start = guidance_end: no residuals, the same picture)."""
    if not isinstance(arg, Mapping):
        raise InvalidRequestError(f"Invalid {NAME}: a ControlNet unit is a JSON object.", where)
    if arg.get("enabled", True) is not True:
        return None
    weight = _number(arg, "weight", 1.0, 0.0, MAX_WEIGHT, where)
    start = _number(arg, "guidance_start", 0.0, 0.0, 1.0, where)
    end = _number(arg, "guidance_end", 1.0, 0.0, 1.0, where)
    if start > end:
        raise InvalidRequestError(
            f"Invalid {NAME} {start:g}: guidance_start must not be after guidance_end ({end:g}).",
            f"{where}.guidance_start",
        )
    resize = _choice(arg, "resize_mode", "Crop and Resize", RESIZE_NAMES, RESIZE_LABELS, where)
    mode = _choice(arg, "control_mode", "Balanced", CONTROL_NAMES, CONTROL_LABELS, where)
    module = module_name(arg.get("module", "none"), f"{where}.module")
    missing = missing_library(module)
    if missing:
        raise InvalidRequestError(f"Invalid {NAME} {module!r}: {missing}.", f"{where}.module")
    settings_of_map = map_settings(module, arg, {name: f"{where}.{name}" for name in SETTINGS})
    pixel_perfect = arg.get("pixel_perfect", False)
    if not isinstance(pixel_perfect, bool):
        raise InvalidRequestError(f"Invalid {NAME} {pixel_perfect!r}: true or false.", f"{where}.pixel_perfect")
    model = arg.get("model")
    if not isinstance(model, str) or not model.strip() or model.strip() == "None":
        raise InvalidRequestError(
            f"Invalid {NAME} {model!r}: name a ControlNet of GET /controlnet/model_list.", f"{where}.model"
        )
    source = find_listed(model, settings, f"{where}.model")
    image = _image(arg, where, values.get("init_image"))
    hr_option = arg.get("hr_option", "Both")
    if values.get("hires_scale") and hr_option != "Both":  # the extension's "Low res only", "High res only"
        raise InvalidRequestError(
            f"Invalid {NAME} {hr_option!r}: sdgen's ControlNets steer both passes of the hires pass; send Both.",
            f"{where}.hr_option",
        )
    if start == end:
        return None
    pixel_perfect = pixel_perfect and PREPROCESSORS[module].uses_resolution  # the others use the image as it is
    return ControlUnit(source, image, weight, start, end, mode, resize, module, **settings_of_map,
                       pixel_perfect=pixel_perfect)


def _number(arg: Mapping[str, Any], name: str, default: float, low: float, high: float, where: str) -> float:
    """arg[name], a number from low to high; InvalidRequestError naming `where.name` (`name` alone without
    `where`) else."""
    value, key = arg.get(name, default), f"{where}.{name}" if where else name
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequestError(f"Invalid {NAME} {value!r}: must be a number.", key)
    number = float(value) if abs(value) < 1e300 else math.inf  # a JSON integer may have any number of digits
    if not low <= number <= high or not math.isfinite(number):
        shown = f"{number:g}" if math.isfinite(number) else "(a number too large)"
        raise InvalidRequestError(f"Invalid {NAME} {shown}: must be from {low:g} to {high:g}.", key)
    return number


def _choice(arg: Mapping[str, Any], name: str, default: str, names: Mapping[str, str], labels: tuple[str, ...],
            where: str) -> str:
    """A mode given by the extension's name (any case; `labels` are its names by number) or its number."""
    value = arg.get(name, default)
    if isinstance(value, str) and value.strip().lower() in names:
        return names[value.strip().lower()]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(labels):
        return names[labels[value].lower()]
    choices = ", ".join(f"{number} ({label})" for number, label in enumerate(labels))
    raise InvalidRequestError(f"Invalid {NAME} {value!r}: one of {choices}, by number or name.", f"{where}.{name}")


def _image(arg: Mapping[str, Any], where: str, init_image: Any) -> Image.Image:
    """The unit's image: `image` (base64, or the extension's {"image": ..., "mask": ...}) or the old
    `input_image`; none given: img2img's init image, as the extension does. A mask (`mask`, Forge's
    `mask_image`, or the dict's) is decoded to check it; no preprocessor of sdgen's takes one yet."""
    from sdgen.serve.translate import decode_image

    name = "image" if arg.get("image") or "input_image" not in arg else "input_image"
    value, key = arg.get(name), f"{where}.{name}"
    masks = [(arg.get(field), f"{where}.{field}") for field in ("mask", "mask_image")]
    if isinstance(value, Mapping):
        masks.append((value.get("mask"), f"{key}.mask"))
        value, key = value.get("image"), f"{key}.image"
    for mask, mask_key in masks:
        if mask:
            decode_image(_text(mask, mask_key), mask_key)
    if not value:
        if init_image is not None:
            return init_image
        raise InvalidRequestError(f"Invalid {NAME}: no image; send the control image (base64).", key)
    return decode_image(_text(value, key), key)


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequestError(f"Invalid {NAME}: an image is a base64 text.", key)
    return value


# ---- POST /controlnet/detect --------------------------------------------------------------------------


class DetectBody(BaseModel):
    """POST /controlnet/detect, with the extension's field names (webuiapi sends controlnet_images)."""

    model_config = STRICT

    controlnet_module: Text = Field("none", description="A name of GET /controlnet/module_list.")
    controlnet_input_images: list[Text] = Field(default_factory=list, description="Base64 images.")
    controlnet_images: list[Text] = Field(default_factory=list, description="webuiapi's name of the images.")
    controlnet_processor_res: float = Field(-1, description="The short side the map is made at (-1: the default).")
    controlnet_threshold_a: float = Field(-1, description="The preprocessor's threshold A (-1: its default).")
    controlnet_threshold_b: float = Field(-1, description="The preprocessor's threshold B (-1: its default).")
    controlnet_masks: list[Text] = Field(default_factory=list, description="Base64 masks, one an image (inpaint).")
    low_vram: bool = False


def detect_inputs(body: DetectBody) -> tuple[MapSettings, list[Image.Image], list[Image.Image | None]]:
    """The map settings, the decoded images and their masks of a detect body: InvalidRequestError naming the
    field. The settings a preprocessor has not are left out, as for a unit."""
    from sdgen.engine.plugins.control_maps import check_detector_weights
    from sdgen.serve.translate import decode_image

    module = module_name(body.controlnet_module, "controlnet_module")
    missing = missing_library(module)
    if missing:
        raise InvalidRequestError(f"Invalid {NAME} {module!r}: {missing}.", "controlnet_module")
    check_detector_weights(module, "controlnet_module")
    given = {name: getattr(body, f"controlnet_{name}") for name in SETTINGS}
    settings = MapSettings(module, **map_settings(module, given, {name: f"controlnet_{name}" for name in SETTINGS}))
    key = "controlnet_input_images" if body.controlnet_input_images else "controlnet_images"
    images = body.controlnet_input_images or body.controlnet_images
    if not images:
        raise InvalidRequestError(f"Invalid {NAME}: no image; send a list of base64 images.", key)
    if len(images) > MAX_UNITS:
        raise InvalidRequestError(f"Invalid {NAME}: {len(images)} images; at most {MAX_UNITS} at once.", key)
    if len(body.controlnet_masks) > len(images):
        raise InvalidRequestError(f"Invalid {NAME}: {len(body.controlnet_masks)} masks for {len(images)} images; "
                                  "send at most one a picture.", "controlnet_masks")
    masks: list[Image.Image | None] = [decode_image(mask, f"controlnet_masks[{index}]")
                                        for index, mask in enumerate(body.controlnet_masks)]
    masks += [None] * (len(images) - len(masks))
    if module in ("inpaint", "inpaint_only") and None in masks[:len(images)]:
        raise InvalidRequestError(f"Invalid {NAME}: the {module} preprocessor marks a mask; send one an image.",
                                  "controlnet_masks")
    return settings, [decode_image(image, f"{key}[{index}]") for index, image in enumerate(images)], masks


def detect(settings: MapSettings, images: list[Image.Image], masks: list[Image.Image | None]) -> dict[str, Any]:
    """The maps `settings` make from `images` (make_control_map, as a unit's) as the extension answers:
    {"images": [base64 PNG], "info"}."""
    import base64

    from sdgen.record.output import png_bytes

    maps = [make_control_map(image, settings, mask=mask) for image, mask in zip(images, masks, strict=False)]
    return {"images": [base64.b64encode(png_bytes(image)).decode("ascii") for image in maps], "info": "Success"}
