"""T2I-Adapter (`--adapter MODEL=IMAGE[:WEIGHT][:RESIZE][:PREPROCESSOR]`, repeatable): a small network turns a
control image (a sketch, an edge map, a depth map) into one feature map per U-Net down block, added inside those
blocks (diffusers' `down_intrablock_additional_residuals`).

The features do not depend on the step, so each adapter runs once per size of the run (the hires pass has
another), as diffusers' StableDiffusionAdapterPipeline runs it once (tested against it in
tests/test_t2i_adapter.py): WEIGHT scales the features (its `adapter_conditioning_scale`), several adapters' are
summed (its MultiAdapter), and both halves of a guided call get them. RESIZE and PREPROCESSOR are ControlNet's
(sdgen/engine/plugins/control_maps.py). An adapter trained on one channel (sketch, canny) gets the map in grey.
Each adapter is loaded once per loaded model and kept in `parts.plugins["t2i_adapter"]`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdgen.engine.denoise import Conditioning, NoisePredictor
from sdgen.engine.plugins.base import Plugin, Run, kept_model, weights_device
from sdgen.engine.plugins.control_maps import PREPROCESSORS, fit_control_image, missing_library, preprocess
from sdgen.engine.plugins.control_units import CONTROL_MODES, DEFAULT_RESIZE, MAX_WEIGHT, RESIZE_MODES, _number
from sdgen.errors import InvalidRequestError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from sdgen.engine.loader import StableDiffusionParts
    from sdgen.engine.request import GenerationRequest

SPELLING = "MODEL=IMAGE[:WEIGHT][:RESIZE][:PREPROCESSOR]"
KEY = "adapter"


@dataclass(frozen=True)
class AdapterUnit:
    """One --adapter: which T2I-Adapter, which image, how strongly, and how the image becomes its map."""

    model: str
    image: str
    weight: float = 1.0
    resize: str = DEFAULT_RESIZE  # a key of RESIZE_MODES
    module: str = "none"  # a key of PREPROCESSORS


def _bad(text: str, why: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid {{name}} {text!r}: {why} ({SPELLING}, e.g. sketch=lines.png:0.8).", KEY)


def parse_adapter(text: str) -> AdapterUnit:
    """'canny=edges.png:0.8:fill:canny' -> AdapterUnit; the words and the weight are read from the right (an
    image path may hold ':')."""
    model, sep, rest = str(text).partition("=")
    if not sep or not model.strip() or not rest:
        raise _bad(text, "a T2I-Adapter and an image joined by '='")
    tokens = rest.split(":")
    words: dict[str, str] = {}
    while len(tokens) > 1:
        word = tokens[-1].strip()
        kind = "resize" if word in RESIZE_MODES else "module" if word in PREPROCESSORS else None
        if kind is None or kind in words:
            break
        words[kind] = word
        tokens.pop()
    weight = 1.0
    if len(tokens) > 1 and (number := _number(tokens[-1].strip())) is not None:
        weight = number
        tokens.pop()
    if len(tokens) > 1 and _number(tokens[-1].strip()) is not None:
        raise _bad(text, "one number only: the weight")
    if not 0 <= weight <= MAX_WEIGHT:
        raise _bad(text, f"the weight must be from 0 to {MAX_WEIGHT:g}")
    return AdapterUnit(
        model.strip(), ":".join(tokens), weight, words.get("resize", DEFAULT_RESIZE), words.get("module", "none")
    )


def adapter_units(request: GenerationRequest) -> list[AdapterUnit]:
    return [parse_adapter(text) for text in request.adapters]


def _check(request: GenerationRequest) -> None:
    from sdgen.config.images import open_image
    from sdgen.models.t2i_adapter import find_t2i_adapter

    units = adapter_units(request)
    if units and request.cache_interval > 1:
        raise InvalidRequestError(
            "Invalid {name}: --cache-interval skips the U-Net's down blocks, where a T2I-Adapter's features go; "
            "leave one of them out.", KEY,
        )
    for unit in units:
        missing = missing_library(unit.module)
        if missing:
            raise InvalidRequestError(f"Invalid {{name}} {unit.module!r}: {missing}.", KEY)
        find_t2i_adapter(unit.model, request.adapter_dir)
        open_image(unit.image, f"adapter image {unit.image!r}", KEY).close()


def loaded_t2i_adapter(parts: StableDiffusionParts, name: str, adapter_dir: str | None) -> Any:
    """The T2I-Adapter `name`, loaded once per loaded model (kept in parts.plugins) on the U-Net's device and
    in its dtype."""
    from sdgen.models.t2i_adapter import find_t2i_adapter, load_t2i_adapter

    source = find_t2i_adapter(name, adapter_dir)
    return kept_model(
        parts, "t2i_adapter", source, lambda unet: load_t2i_adapter(source, dtype=unet.dtype).to(weights_device(unet))
    )


def adapter_input(image: Any, adapter: Any, width: int, height: int, resize: str) -> torch.Tensor:
    """The map as diffusers' adapter pipeline hands it over: (1, C, H, W) in [0, 1], grey for a one-channel
    adapter."""
    import numpy as np
    import torch

    fitted = fit_control_image(image, width, height, resize)
    grey = adapter.config.in_channels == 1
    array = np.asarray(fitted.convert("L" if grey else "RGB"), dtype=np.float32) / 255.0
    array = array[None, None] if grey else array.transpose(2, 0, 1)[None]
    return torch.from_numpy(np.ascontiguousarray(array))


class AdapterPredictor:
    """A NoisePredictor for one denoising run: the adapters' summed features passed to `inner`."""

    def __init__(self, inner: NoisePredictor, run: Run, units: list[tuple[AdapterUnit, Any, Any]]) -> None:
        self.inner, self.units = inner, units  # (unit, T2IAdapter, PIL image)
        self.vae_scale = 2 ** (len(run.parts.vae.config.block_out_channels) - 1)
        self.features: dict[tuple[int, ...], tuple[torch.Tensor, ...]] = {}

    def _features(self, model_input: torch.Tensor) -> tuple[torch.Tensor, ...]:
        size = tuple(model_input.shape[-2:])
        if size not in self.features:
            import torch

            height, width = (side * self.vae_scale for side in size)
            total: list[torch.Tensor] | None = None
            for unit, adapter, image in self.units:
                step = adapter.total_downscale_factor
                if width % step or height % step:
                    raise InvalidRequestError(
                        f"Invalid {{name}} {unit.model!r} at {width}x{height}: this T2I-Adapter needs a width and "
                        f"height that are multiples of {step}.", KEY,
                    )
                hint = adapter_input(image, adapter, width, height, unit.resize).to(adapter.device, adapter.dtype)
                with torch.no_grad():
                    features = [feature * unit.weight for feature in adapter(hint)]
                total = features if total is None else [a + b for a, b in zip(total, features, strict=True)]
            assert total is not None
            self.features[size] = tuple(feature.to(model_input.dtype) for feature in total)
        return self.features[size]

    def __call__(self, model_input: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        rows = model_input.shape[0]  # every row of the call gets them: both halves of a guided call
        features = tuple(feature.expand(rows, -1, -1, -1) for feature in self._features(model_input))
        return self.inner(model_input, t, dataclasses.replace(cond, down_intrablock_additional_residuals=features))


def _wrap(predictor: NoisePredictor, run: Run) -> NoisePredictor:
    if not run.request.adapters:
        return predictor
    from sdgen.config.images import load_checked_image

    units = []
    for unit in adapter_units(run.request):
        adapter = loaded_t2i_adapter(run.parts, unit.model, run.request.adapter_dir)
        image = load_checked_image(unit.image, f"adapter image {unit.image!r}", KEY, mode="RGB")
        units.append((unit, adapter, preprocess(image, unit.module)))
    return AdapterPredictor(predictor, run, units)


def _a1111_fields(request: GenerationRequest) -> list[tuple[str, object]]:
    """A1111's ControlNet extension runs T2I-Adapters as its units: `ControlNet N: "..."`, numbered after the
    ControlNets."""
    from sdgen.models.t2i_adapter import t2i_adapter_name

    fields: list[tuple[str, object]] = []
    for index, unit in enumerate(adapter_units(request), start=len(request.controls)):
        values = {
            "Module": unit.module, "Model": t2i_adapter_name(unit.model), "Weight": unit.weight,
            "Resize Mode": RESIZE_MODES[unit.resize], "Guidance Start": 0.0, "Guidance End": 1.0,
            "Control Mode": CONTROL_MODES["balanced"],
        }
        fields.append((f"ControlNet {index}", ", ".join(f"{key}: {value}" for key, value in values.items())))
    return fields


PLUGIN = Plugin(
    "t2i_adapter", options=("adapter", "adapter_dir"), wrap_predictor=_wrap, check=_check,
    a1111_fields=_a1111_fields,
)
