"""ControlNet (`--control MODEL=IMAGE[:WEIGHT[:START[:END]]][:MODE][:RESIZE][:PREPROCESSOR][:KEY=VALUE...]`,
repeatable): a control image (an edge map, a pose, a depth map) steers the picture through a second network's
residuals, added to the U-Net's skip connections and middle block.

A predictor wrapper runs each ControlNet on the step's input and hands the sum of their residuals to the U-Net
call below it in the conditioning (`down_block_additional_residuals`, `mid_block_additional_residual`), as
diffusers' StableDiffusionControlNetPipeline and its MultiControlNetModel do (tested against them in
tests/test_controlnet.py). START and END are the fraction of the steps a ControlNet acts in, counted as
diffusers' `control_guidance_start/end` count them. MODE is A1111's ControlNet extension's control mode
(Mikubill/sd-webui-controlnet): `balanced` (the weight on every residual), `prompt` ("My prompt is more
important": soft injection, the residual of depth i of 13 weighted 0.825^(12 - i)), `control` ("ControlNet is
more important": soft injection, and the unconditional half of a guided call gets no residuals, which diffusers
calls guess mode). RESIZE is how the image meets the picture's size, as the extension does it: `resize` (just
resize), `crop` (crop and resize, the default) or `fill` (resize and fill); PREPROCESSOR makes the map from the
image first (`none`, `invert`, `canny`, ... and the detectors) with its settings (KEY=VALUE: `res`, the
processor resolution; `low`/`high` or `a`/`b`, its thresholds; `pixel_perfect`): control_maps.py does both. Each
ControlNet is loaded once per loaded model and kept in `parts.plugins["controlnet"]`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdgen.engine.denoise import Conditioning, NoisePredictor
from sdgen.engine.plugins.base import Plugin, Run
from sdgen.engine.plugins.control_maps import (
    check_detector_weights,
    check_settings,
    control_hint,
    make_control_map,
    missing_library,
    module_name,
    thresholds,
)
from sdgen.errors import InvalidRequestError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from sdgen.engine.loader import StableDiffusionParts
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


# ---- the check, before any weights load ------------------------------------------------------------


def _check(request: GenerationRequest) -> None:
    from sdgen.config.images import open_image
    from sdgen.models.controlnet import find_controlnet

    units = control_units(request)
    if units and request.cache_interval > 1:
        raise InvalidRequestError(
            "Invalid {name}: --cache-interval skips the U-Net's deep blocks, where ControlNet's residuals go; "
            "leave one of them out.", "control",
        )
    for unit in units:
        missing = missing_library(unit.module)
        if missing:
            raise InvalidRequestError(f"Invalid {{name}} {unit.module!r}: {missing}.", "control")
        check_detector_weights(unit.module)
        if unit.module in ("inpaint", "inpaint_only") and request.mask is None:
            raise InvalidRequestError(
                f"Invalid {{name}} {unit.module!r}: the inpaint preprocessors mark the region --mask gives; "
                "give --init-image and --mask.", "control",
            )
        find_controlnet(unit.model, request.control_dir)
        if isinstance(unit.image, str):  # a sent image was decoded and checked already
            open_image(unit.image, f"control image {unit.image!r}", "control").close()


# ---- one run ---------------------------------------------------------------------------------------


def loaded_controlnet(parts: StableDiffusionParts, name: str, control_dir: str | None) -> Any:
    """The ControlNet `name`, loaded once per loaded model (kept in parts.plugins) on the U-Net's device and
    in its dtype."""
    from sdgen.models.controlnet import find_controlnet, load_controlnet

    source = find_controlnet(name, control_dir)
    kept: dict[str, Any] = parts.plugins.setdefault("controlnet", {})
    if source not in kept:
        unet = getattr(parts.unet, "_orig_mod", parts.unet)
        kept[source] = load_controlnet(source, dtype=unet.dtype, unet_config=dict(unet.config)).to(unet.device)
    return kept[source]


class ControlNetPredictor:
    """A NoisePredictor for one denoising run: the ControlNets' summed residuals passed to `inner`."""

    def __init__(self, inner: NoisePredictor, run: Run, units: list[tuple[ControlUnit, Any, Any]]) -> None:
        self.inner, self.units = inner, units  # (unit, ControlNetModel, PIL image)
        self.timesteps = [float(t) for t in run.timesteps]
        self.next_index = 0
        self.vae_scale = 2 ** (len(run.parts.vae.config.block_out_channels) - 1)
        self.hints: dict[tuple[int, tuple[int, ...]], torch.Tensor] = {}

    def _index(self, t: torch.Tensor) -> int:
        """The step of this call: the first step from the last one on with this timestep (several calls a
        step share it)."""
        value = float(t)
        for index in range(max(self.next_index - 1, 0), len(self.timesteps)):
            if self.timesteps[index] == value:
                self.next_index = index + 1
                return index
        return min(range(len(self.timesteps)), key=lambda i: abs(self.timesteps[i] - value))

    def _hint(self, position: int, image: Any, model_input: torch.Tensor) -> torch.Tensor:
        """The control image at the run's size, as diffusers prepares it: RGB in [0, 1], one per row."""
        key = (position, tuple(model_input.shape))
        if key not in self.hints:
            height, width = (size * self.vae_scale for size in model_input.shape[-2:])
            hint = control_hint(image, width, height, self.units[position][0].resize, self.vae_scale)
            self.hints[key] = hint.to(model_input.device, model_input.dtype).repeat(model_input.shape[0], 1, 1, 1)
        return self.hints[key]

    def __call__(self, model_input: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        index = self._index(t)
        down_sum: list[torch.Tensor] | None = None
        mid_sum = None
        for position, (unit, controlnet, image) in enumerate(self.units):
            down, mid = self._residuals(position, unit, controlnet, image, model_input, t, cond, index)
            down_sum = down if down_sum is None else [a + b for a, b in zip(down_sum, down, strict=True)]
            mid_sum = mid if mid_sum is None else mid_sum + mid
        if down_sum is None:
            return self.inner(model_input, t, cond)
        with_residuals = dataclasses.replace(
            cond, down_block_additional_residuals=tuple(down_sum), mid_block_additional_residual=mid_sum
        )
        return self.inner(model_input, t, with_residuals)

    def _residuals(self, position, unit, controlnet, image, model_input, t, cond, index) -> tuple[list, Any]:
        import torch

        weight = unit.weight if acts_at(unit, index, len(self.timesteps)) else 0.0
        soft = unit.mode != "balanced"
        down, mid = controlnet(
            model_input, t, encoder_hidden_states=cond.encoder_hidden_states(),
            controlnet_cond=self._hint(position, image, model_input),
            conditioning_scale=1.0 if soft else weight, return_dict=False,
        )
        down = list(down)
        if soft:
            scales = soft_scales(weight, len(down) + 1)
            down = [residual * scale for residual, scale in zip(down, scales, strict=False)]
            mid = mid * scales[-1]
        if unit.mode == "control" and cond.negative_prompt_embeds is not None:  # no residuals for the unconditional
            half = cond.negative_prompt_embeds.shape[0]  # rows; after them the prompt's (or AND's parts)
            down = [torch.cat([torch.zeros_like(r[:half]), r[half:]]) for r in down]
            mid = torch.cat([torch.zeros_like(mid[:half]), mid[half:]])
        return down, mid


def _wrap(predictor: NoisePredictor, run: Run) -> NoisePredictor:
    if not run.request.controls:
        return predictor
    from sdgen.config.images import load_checked_image

    request = run.request
    units = []
    for unit in control_units(request):
        controlnet = loaded_controlnet(run.parts, unit.model, request.control_dir)
        if isinstance(unit.image, str):
            image = load_checked_image(unit.image, f"control image {unit.image!r}", "control", mode="RGB")
        else:  # a server unit's decoded image
            image = unit.image.convert("RGB")
        units.append((unit, controlnet, _control_map(image, unit, request)))
    return ControlNetPredictor(predictor, run, units)


def _control_map(image: Any, unit: ControlUnit, request: Any) -> Any:
    """The unit's map, made for the request's picture: its size (pixel perfect), its mask (inpaint), its seed
    (shuffle: NumPy seeded as the extension seeds it, (seed + subseed) & 0xFFFFFFFF, the subseed being the
    seed where there is none, as A1111's -1)."""
    mask = None
    if unit.module in ("inpaint", "inpaint_only") and getattr(request, "mask_pixels", None) is not None:
        from sdgen.engine.inpaint import mask_image

        mask = mask_image(request)
    seed = int(getattr(request, "seed", 0) or 0)
    subseed = getattr(request, "subseed", None)
    numpy_seed = (seed + (seed if subseed is None else int(subseed))) & 0xFFFFFFFF
    return make_control_map(image, unit, size=(request.width, request.height), seed=numpy_seed, mask=mask)


# ---- the record ------------------------------------------------------------------------------------


def _a1111_fields(request: GenerationRequest) -> list[tuple[str, object]]:
    """The ControlNet extension's fields: `ControlNet 0: "Module: none, Model: ..., Weight: 1.0, ..."`."""
    from sdgen.models.controlnet import controlnet_name

    fields: list[tuple[str, object]] = []
    for index, unit in enumerate(control_units(request)):
        values: dict[str, object] = {
            "Module": unit.module, "Model": controlnet_name(unit.model), "Weight": unit.weight,
            "Resize Mode": RESIZE_MODES[unit.resize],
        }
        if unit.module != "none":  # the preprocessor's settings, where the extension writes them
            threshold_a, threshold_b = thresholds(unit)
            values.update({"Processor Res": unit.processor_res, "Threshold A": threshold_a,
                           "Threshold B": threshold_b})
        values.update({"Guidance Start": unit.start, "Guidance End": unit.end})
        if unit.module != "none":
            values["Pixel Perfect"] = unit.pixel_perfect
        values["Control Mode"] = CONTROL_MODES[unit.mode]
        fields.append((f"ControlNet {index}", ", ".join(f"{key}: {value}" for key, value in values.items())))
    return fields


PLUGIN = Plugin(
    "controlnet", options=("control", "control_dir"), wrap_predictor=_wrap, check=_check,
    a1111_fields=_a1111_fields,
)
