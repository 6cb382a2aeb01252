"""IP-Adapter (`--ip-adapter MODEL --ip-image IMAGE [--ip-image ...] [--ip-scale S] [--ip-encoder DIR]`): pictures
as a prompt. An image encoder (CLIP vision) embeds the images; the adapter's projection turns the embeddings into
extra tokens, and its own key/value weights in every cross-attention layer attend to them beside the text.

Loaded through diffusers' machinery on sdgen's U-Net (`_load_ip_adapter_weights`: IP-Adapter attention processors
and a MultiIPAdapterImageProjection), then taken off it again: the U-Net keeps its own processors, and each run
with --ip-adapter switches the adapter's on (with the run's scale, diffusers' `set_ip_adapter_scale`) and back
afterwards, so a later run without it makes the plain picture. The embeddings are made as diffusers'
`encode_image` makes them (base: the image embeddings, negative zeros; Plus: the encoder's penultimate hidden
states, negative those of a zeros image) and reach the U-Net as `added_cond_kwargs["image_embeds"]`, rows as the
text embeddings' ([negative, positive] when guiding). Several images are tokens of one adapter, as diffusers'
`ip_adapter_image=[[a, b]]`. Tested against diffusers' pipeline after `load_ip_adapter` in tests/test_ip_adapter.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdgen.engine.denoise import Conditioning, Guide, NoisePredictor
from sdgen.engine.plugins.base import Plugin, Run, plain_unet, weights_device
from sdgen.engine.plugins.control_units import CONTROL_MODES, DEFAULT_RESIZE, MAX_WEIGHT, RESIZE_MODES
from sdgen.errors import InvalidRequestError

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    import torch

    from sdgen.engine.loader import StableDiffusionParts
    from sdgen.engine.openvino_unet import UNetExtra
    from sdgen.engine.request import GenerationRequest

KEY = "ip_adapter"
A1111_MODULE = "ip-adapter_clip_sd15"  # the ControlNet extension's preprocessor for SD 1.5's IP-Adapters (ViT-H)
_IP_TYPE = "ip_image_proj"  # the U-Net config's encoder_hid_dim_type while an IP-Adapter is on


@dataclass(frozen=True)
class AdapterLayers:
    """What one adapter file becomes on the U-Net: its cross-attention processors and its image projection."""

    processors: dict[str, Any]  # IPAdapterAttnProcessor2_0 by processor name (the cross-attention ones)
    projection: Any  # MultiIPAdapterImageProjection


def _check(request: GenerationRequest) -> None:
    from sdgen.config.images import open_image
    from sdgen.models.ip_adapter import check_encoder_folder, find_ip_adapter

    if request.ip_images and not request.ip_adapter:
        raise InvalidRequestError("Invalid {name}: images for an IP-Adapter need --ip-adapter MODEL.", "ip_image")
    if not request.ip_adapter:
        return
    if not request.ip_images:
        raise InvalidRequestError(
            f"Invalid {{name}} {request.ip_adapter!r}: give the picture(s) to follow with --ip-image IMAGE.", KEY
        )
    scale = request.ip_scale
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 <= scale <= MAX_WEIGHT:
        raise InvalidRequestError(f"Invalid {{name}} {scale!r}: from 0 to {MAX_WEIGHT:g} (1 is full).", "ip_scale")
    for flag, value in (("--pag-scale", request.pag_scale), ("--sag-scale", request.sag_scale)):
        if value:
            raise InvalidRequestError(
                f"Invalid {{name}} with {flag}: its extra U-Net pass gets no image embeddings; leave one of them out.",
                KEY,
            )
    find_ip_adapter(request.ip_adapter)  # in the cache when only the cache may be used: engine/hub_parts.py
    if request.ip_encoder:
        check_encoder_folder(request.ip_encoder)
    for image in request.ip_images:
        open_image(image, f"IP-Adapter image {image!r}", "ip_image").close()


# ---- the U-Net with and without the adapter -----------------------------------------------------------


def _unet_state(unet: Any) -> tuple[dict[str, Any], Any, Any]:
    return dict(unet.attn_processors), unet.encoder_hid_proj, unet.config.encoder_hid_dim_type


def _set_unet_state(unet: Any, processors: dict[str, Any], projection: Any, kind: Any) -> None:
    unet.encoder_hid_proj = None  # first: a Plus projection has attention layers of its own, which the U-Net counts
    unet.set_attn_processor(processors)
    unet.encoder_hid_proj = projection
    unet.config.encoder_hid_dim_type = kind  # an attribute of diffusers' FrozenDict, as load_ip_adapter sets it


def loaded_layers(parts: StableDiffusionParts, file: Path) -> AdapterLayers:
    """The adapter in `file` made into U-Net layers by diffusers, once per loaded model (kept in parts.plugins),
    then taken off the U-Net again."""
    from sdgen.models.ip_adapter import load_ip_adapter_tensors

    kept: dict[Any, Any] = parts.plugins.setdefault("ip_adapter", {})
    if ("layers", str(file)) not in kept:
        unet = plain_unet(parts.unet)
        before = _unet_state(unet)
        try:
            unet._load_ip_adapter_weights([load_ip_adapter_tensors(file)], low_cpu_mem_usage=False)
            processors = {
                name: processor for name, processor in unet.attn_processors.items()
                if name in before[0] and not name.endswith("attn1.processor")
            }
            projection = unet.encoder_hid_proj
        finally:
            _set_unet_state(unet, *before)
        kept["layers", str(file)] = AdapterLayers(processors, projection)
    return kept["layers", str(file)]


def loaded_encoder(parts: StableDiffusionParts, folder: Path) -> tuple[Any, Any]:
    """The image encoder and its processor, once per loaded model, on the U-Net's device and in its dtype."""
    from sdgen.models.ip_adapter import load_image_encoder

    kept: dict[Any, Any] = parts.plugins.setdefault("ip_adapter", {})
    if ("encoder", str(folder)) not in kept:
        unet = plain_unet(parts.unet)
        encoder, processor = load_image_encoder(folder, unet.dtype)
        kept["encoder", str(folder)] = (encoder.to(weights_device(unet)), processor)
    return kept["encoder", str(folder)]


def _layers_of(run: Run) -> AdapterLayers:
    from sdgen.models.ip_adapter import adapter_file, find_ip_adapter

    assert run.request.ip_adapter is not None
    return loaded_layers(run.parts, adapter_file(find_ip_adapter(run.request.ip_adapter)))


@contextmanager
def _in_run(run: Run) -> Iterator[Guide | None]:
    """The adapter's processors and projection on the U-Net for this run, its own ones back afterwards."""
    if not run.request.ip_adapter:
        yield None
        return
    runtime = getattr(run.parts, "openvino", None)
    if runtime is not None:  # --backend openvino: the converted U-Net takes the embeddings and the scale
        runtime.unet_extra = openvino_inputs(run)
        try:
            yield None
        finally:
            runtime.unet_extra = None
        return
    with _adapter_on(plain_unet(run.parts.unet), _layers_of(run), float(run.request.ip_scale)):
        yield None


@contextmanager
def _adapter_on(unet: Any, layers: AdapterLayers, scale: Any) -> Iterator[None]:
    """The adapter's processors (at `scale`) and projection on the U-Net, its own ones back afterwards."""
    before = _unet_state(unet)
    for processor in layers.processors.values():
        processor.scale = [scale]
    try:
        _set_unet_state(unet, {**before[0], **layers.processors}, layers.projection, _IP_TYPE)
        yield
    finally:
        _set_unet_state(unet, *before)


def openvino_inputs(run: Run) -> UNetExtra:
    """IP-Adapter on --backend openvino: the converted U-Net (part "unet-ip", keyed by the adapter's file) takes
    the image embeddings and the scale as inputs, so one converted model serves every scale and picture. The
    adapter's projection and attention processors are traced into it, loaded onto the torch U-Net only when it
    is converted: a warm cache loads neither, nor the U-Net's weights."""
    import torch

    from sdgen.engine.openvino_unet import UNetExtra
    from sdgen.models.ip_adapter import adapter_file, find_ip_adapter
    from sdgen.models.openvino import file_identity

    assert run.request.ip_adapter is not None
    file = adapter_file(find_ip_adapter(run.request.ip_adapter))
    scale = torch.tensor([float(run.request.ip_scale)])

    def inputs(added: Any) -> tuple[torch.Tensor, ...]:
        [embeds] = added["image_embeds"]
        return embeds, scale

    def modules() -> list[Any]:
        layers = loaded_layers(run.parts, file)
        return [*layers.processors.values(), layers.projection]

    @contextmanager
    def patched(unet: Any, tensors: tuple[Any, ...]) -> Iterator[dict[str, Any]]:
        embeds, traced_scale = tensors
        layers = loaded_layers(run.parts, file)
        try:  # the scale a traced input: `hidden + scale * ip_hidden` in every layer
            with _adapter_on(unet, layers, traced_scale):
                yield {"added_cond_kwargs": {"image_embeds": [embeds]}}
        finally:
            for processor in layers.processors.values():
                processor.scale = [1.0]

    # traced at scale 1: diffusers' processor skips its image branch at scale 0, which a trace would keep
    return UNetExtra("-ip", {"ip_adapter": file_identity(file)}, inputs, lambda given: (given[0], torch.ones(1)),
                     patched, modules)


# ---- the image embeddings ------------------------------------------------------------------------------


def image_embeds(encoder: Any, processor: Any, images: list[Any], plus: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive, negative) embeddings of `images`, (1, images, ...) each, as diffusers' encode_image makes them."""
    import torch

    pixels = processor(images, return_tensors="pt").pixel_values.to(encoder.device, encoder.dtype)
    with torch.no_grad():
        if plus:
            positive = encoder(pixels, output_hidden_states=True).hidden_states[-2]
            negative = encoder(torch.zeros_like(pixels), output_hidden_states=True).hidden_states[-2]
        else:
            positive = encoder(pixels).image_embeds
            negative = torch.zeros_like(positive)
    return positive[None], negative[None]


class IPAdapterPredictor:
    """A NoisePredictor for one run: the image embeddings passed to `inner`, a row per row of the call."""

    def __init__(self, inner: NoisePredictor, positive: torch.Tensor, negative: torch.Tensor) -> None:
        self.inner, self.positive, self.negative = inner, positive, negative

    def __call__(self, model_input: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        import torch

        rows = model_input.shape[0]
        ones = [1] * (self.positive.ndim - 1)
        if cond.guided:  # [negative, positive], as the text embeddings
            embeds = torch.cat([self.negative.repeat(rows // 2, *ones), self.positive.repeat(rows // 2, *ones)])
        else:
            embeds = self.positive.repeat(rows, *ones)
        added = {**(cond.added_cond_kwargs or {}), "image_embeds": [embeds.to(model_input.dtype)]}
        return self.inner(model_input, t, dataclasses.replace(cond, added_cond_kwargs=added))


def _wrap(predictor: NoisePredictor, run: Run) -> NoisePredictor:
    if not run.request.ip_adapter:
        return predictor
    from sdgen.config.images import load_checked_image
    from sdgen.models.ip_adapter import adapter_file, encoder_folder, find_ip_adapter, reads_hidden_states

    if plain_unet(run.parts.unet) is not run.parts.unet:
        raise InvalidRequestError(
            "Invalid {name}: it changes the U-Net's attention for the run, which a compiled U-Net does not see; "
            "leave out --compile.", KEY,
        )
    source = find_ip_adapter(run.request.ip_adapter)
    encoder, processor = loaded_encoder(run.parts, encoder_folder(source, run.request.ip_encoder))
    images = [load_checked_image(path, f"IP-Adapter image {path!r}", "ip_image", mode="RGB")
              for path in run.request.ip_images]
    file = adapter_file(source)
    plus = run.parts.plugins.setdefault("ip_adapter", {}).setdefault(("plus", str(file)), reads_hidden_states(file))
    return IPAdapterPredictor(predictor, *image_embeds(encoder, processor, images, plus))


def _a1111_fields(request: GenerationRequest) -> list[tuple[str, object]]:
    """A1111's ControlNet extension runs IP-Adapters as its units: one `ControlNet N: "..."` after the
    ControlNets and T2I-Adapters (the extension's unit has one image; the record keeps them all)."""
    if not request.ip_adapter:
        return []
    from sdgen.models.ip_adapter import find_ip_adapter

    values = {
        "Module": A1111_MODULE, "Model": find_ip_adapter(request.ip_adapter).name, "Weight": request.ip_scale,
        "Resize Mode": RESIZE_MODES[DEFAULT_RESIZE], "Guidance Start": 0.0, "Guidance End": 1.0,
        "Control Mode": CONTROL_MODES["balanced"],
    }
    index = len(request.controls) + len(request.adapters)
    return [(f"ControlNet {index}", ", ".join(f"{key}: {value}" for key, value in values.items()))]


PLUGIN = Plugin(
    "ip_adapter", options=("ip_adapter", "ip_image", "ip_scale", "ip_encoder"), wrap_predictor=_wrap,
    in_run=_in_run, check=_check, a1111_fields=_a1111_fields,
)
