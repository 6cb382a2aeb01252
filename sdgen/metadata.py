"""What an image remembers of how it was made: A1111's `parameters` text and sdgen's own JSON chunk.

The A1111 text is what A1111, sd-parsers and sd-prompt-reader read; the JSON chunk is lossless and is
what sdgen replays first.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import sdgen
from sdgen.schedulers import scheduler_spec

if TYPE_CHECKING:  # pragma: no cover
    from PIL.PngImagePlugin import PngInfo

    from sdgen.models import StableDiffusionParts
    from sdgen.pipeline import GeneratedImage

A1111_KEY = "parameters"
SDGEN_KEY = "sdgen"


def _quote(value: object) -> str:
    """A1111 quotes values holding `,` `:` or a newline as JSON strings, so its parser can split them."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ',:\n"') else text


def a1111_parameters(result: GeneratedImage, parts: StableDiffusionParts) -> str:
    """`prompt \\n Negative prompt: ... \\n Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, ...`"""
    request = result.request
    spec = scheduler_spec(request.scheduler)
    fields: list[tuple[str, object]] = [
        ("Steps", request.num_inference_steps),
        ("Sampler", spec.a1111_sampler),
    ]
    if spec.a1111_schedule_type:
        fields.append(("Schedule type", spec.a1111_schedule_type))
    fields += [
        ("CFG scale", _number(request.guidance_scale)),
        ("Seed", result.seed),
        ("Size", f"{request.width}x{request.height}"),
        ("Model", parts.source.model.rsplit("/", 1)[-1]),
    ]
    if request.is_img2img:
        fields.append(("Denoising strength", _number(request.strength)))
    fields.append(("Version", f"sdgen {sdgen.__version__}"))
    lines = [request.prompt.replace("\n", " ")]
    if request.negative_prompt:
        lines.append("Negative prompt: " + request.negative_prompt.replace("\n", " "))
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in fields))
    return "\n".join(lines)


def sdgen_record(result: GeneratedImage, parts: StableDiffusionParts) -> dict[str, Any]:
    """Every parameter needed to make the image again, losslessly."""
    request = result.request
    spec = scheduler_spec(request.scheduler)
    return {
        "sdgen_version": sdgen.__version__,
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "seed": result.seed,
        "steps": request.num_inference_steps,
        "guidance_scale": request.guidance_scale,
        "scheduler": request.scheduler,
        "scheduler_class": spec.class_name,
        "scheduler_options": spec.options,
        "width": request.width,
        "height": request.height,
        "strength": request.strength if request.is_img2img else None,
        "init_image": str(request.init_image)
        if isinstance(request.init_image, (str, bytes)) or hasattr(request.init_image, "__fspath__")
        else None,
        "model": parts.source.model,
        "revision": parts.source.revision,
        "commit": parts.source.commit,
        "unet_sha256": parts.source.unet_sha256,
        "device": parts.placement.device,
        "dtype": parts.placement.dtype,
        "vae_dtype": parts.placement.vae_dtype,
        "rng": parts.placement.rng,
    }


def png_info(result: GeneratedImage, parts: StableDiffusionParts) -> PngInfo:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(A1111_KEY, a1111_parameters(result, parts))
    info.add_text(SDGEN_KEY, json.dumps(sdgen_record(result, parts), ensure_ascii=False, sort_keys=True))
    return info


def _number(value: float) -> str:
    """7.5 -> '7.5', 7.0 -> '7': A1111 writes CFG scale and strength without a trailing .0."""
    return f"{value:g}"
