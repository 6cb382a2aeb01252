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
import hashlib
from typing import TYPE_CHECKING, Any

from sdgen.engine.denoise import Conditioning, NoisePredictor
from sdgen.engine.plugins.base import Plugin, Run, kept_model, weights_device
from sdgen.engine.plugins.control_maps import (
    check_detector_weights,
    check_map_size,
    control_hint,
    make_control_map,
    missing_library,
    thresholds,
)
from sdgen.engine.plugins.control_units import (  # noqa: F401 (the unit's names, as the plug-in's users know them)
    CONTROL_MODES,
    DEFAULT_RESIZE,
    IMAGE_NOT_RECORDED,
    MAX_WEIGHT,
    RESIZE_MODES,
    SENT_IMAGE,
    SOFT_INJECTION_BASE,
    SPELLING,
    ControlUnit,
    acts_at,
    control_units,
    parse_control,
    soft_scales,
    spell_control,
    units_from_a1111,
)
from sdgen.errors import InvalidRequestError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from sdgen.engine.loader import StableDiffusionParts
    from sdgen.engine.request import GenerationRequest

# ---- the check, before any weights load ------------------------------------------------------------

# The options that cannot steer with a ControlNet, and why (docs/controlnet.md lists what works with it)
REFUSED_WITH = (
    ("sag_scale", "--sag-scale", "makes its extra U-Net pass without the ControlNet's residuals"),
    ("pag_scale", "--pag-scale", "makes its extra U-Net pass without the ControlNet's residuals"),
)


def _check(request: GenerationRequest) -> None:
    from sdgen.config.images import open_image
    from sdgen.models.controlnet import find_controlnet

    units = control_units(request)
    if units and request.cache_interval > 1:
        raise InvalidRequestError(
            "Invalid {name}: --cache-interval skips the U-Net's deep blocks, where ControlNet's residuals go; "
            "leave one of them out.", "control",
        )
    for key, flag, why in REFUSED_WITH:
        if units and getattr(request, key):
            raise InvalidRequestError(f"Invalid {{name}}: {flag} {why}; leave one of them out.", "control")
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
            with open_image(unit.image, f"control image {unit.image!r}", "control") as image:
                size = image.size
        else:
            size = unit.image.size
        check_map_size(size, unit)


# ---- one run ---------------------------------------------------------------------------------------


def loaded_controlnet(parts: StableDiffusionParts, name: str, control_dir: str | None) -> Any:
    """The ControlNet `name`, loaded once per loaded model (kept in parts.plugins) on the U-Net's device and
    in its dtype."""
    from sdgen.models.controlnet import find_controlnet, load_controlnet

    source = find_controlnet(name, control_dir)
    return kept_model(parts, "controlnet", source, lambda unet: load_controlnet(
        source, dtype=unet.dtype, unet_config=dict(unet.config)).to(weights_device(unet)))


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
    from sdgen.models.controlnet import find_controlnet

    request = run.request
    runtime = getattr(run.parts, "openvino", None)
    units = []
    for unit in control_units(request):
        controlnet = loaded_controlnet(run.parts, unit.model, request.control_dir)
        if runtime is not None:  # --backend openvino: the converted ControlNet
            controlnet = OpenVINOControlNet(controlnet, runtime, find_controlnet(unit.model, request.control_dir))
        if isinstance(unit.image, str):
            image = load_checked_image(unit.image, f"control image {unit.image!r}", "control", mode="RGB")
        else:  # a server unit's decoded image
            image = unit.image.convert("RGB")
        units.append((unit, controlnet, control_map(image, unit, request)))
    return ControlNetPredictor(predictor, run, units)


def control_map(image: Any, unit: ControlUnit, request: Any) -> Any:
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


# ---- on the OpenVINO back end ------------------------------------------------------------------------
# The converted U-Net takes the residuals as inputs (sdgen/engine/openvino_unet.py); each ControlNet is converted
# too, from its loaded torch module, cached under its file's identity. It runs at weight 1 and its residuals are
# scaled here, so one converted ControlNet serves every weight, soft-injection mode and step range.


class OpenVINOControlNet:
    """Called as ControlNetModel is by sdgen/engine/plugins/controlnet.py: `(sample, t, encoder_hidden_states=,
    controlnet_cond=, conditioning_scale=, return_dict=False)` -> (down residuals, middle residual)."""

    def __init__(self, module: Any, runtime: Any, source: str) -> None:
        from sdgen.models.openvino import file_identity

        self.module, self.runtime, self.source = module, runtime, source
        self.key = {"controlnet": str(source), "files": file_identity(source)}
        self.instance = hashlib.sha256(str(source).encode()).hexdigest()[:12]

    def __call__(
        self, sample: torch.Tensor, timestep: Any, encoder_hidden_states: torch.Tensor, controlnet_cond: torch.Tensor,
        conditioning_scale: float = 1.0, return_dict: bool = False,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        from sdgen.engine.openvino_parts import ov_timestep, run_part
        from sdgen.models.openvino import size_factor, traced_part

        inputs = (sample, ov_timestep(timestep), encoder_hidden_states, controlnet_cond)
        module = self.module
        conversion = traced_part("controlnet", lambda: _controlnet_forward(module), inputs, self.key,
                                 size_factor(module.config), instance=self.instance)
        outputs = run_part(self.runtime.model(conversion, inputs), *inputs)
        dtype = sample.dtype
        # diffusers multiplies every residual by conditioning_scale at the end of ControlNetModel.forward
        down = [(residual * conditioning_scale).to(dtype) for residual in outputs[:-1]]
        return down, (outputs[-1] * conditioning_scale).to(dtype)


def _controlnet_forward(controlnet: Any) -> Any:
    from sdgen.engine.openvino_parts import traceable

    def forward(controlnet: Any, sample: Any, timestep: Any, encoder_hidden_states: Any, controlnet_cond: Any) -> Any:
        down, mid = controlnet(sample, timestep, encoder_hidden_states=encoder_hidden_states,
                               controlnet_cond=controlnet_cond, conditioning_scale=1.0, return_dict=False)
        return (*down, mid)

    return traceable(controlnet, forward)


# ---- the record ------------------------------------------------------------------------------------


def _a1111_fields(request: GenerationRequest) -> list[tuple[str, object]]:
    """The ControlNet extension's fields: `ControlNet 0: "Module: none, Model: ..., Weight: 1.0, ..."`."""
    fields: list[tuple[str, object]] = []
    for index, unit in enumerate(control_units(request)):
        values: dict[str, object] = {
            "Module": unit.module, "Model": _a1111_model(unit.model, request.control_dir),
            "Weight": unit.weight,
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


def _a1111_model(model: str, control_dir: str | None) -> str:
    """The extension's name of a unit's model ('name [hash]'), or its plain name where it cannot be found now."""
    from sdgen.models.controlnet import a1111_model_name, controlnet_name, find_controlnet

    try:
        return a1111_model_name(find_controlnet(model, control_dir))
    except InvalidRequestError:
        return controlnet_name(model)


PLUGIN = Plugin(
    "controlnet", options=("control", "control_dir"), wrap_predictor=_wrap, check=_check,
    a1111_fields=_a1111_fields, from_a1111=units_from_a1111,
)
