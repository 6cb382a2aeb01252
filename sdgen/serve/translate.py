"""A1111's API in sdgen's terms: a request body -> the settings of a GenerationRequest, and the images made
-> A1111's response (base64 PNGs with their metadata, `parameters`, and `info` as a JSON string)."""

from __future__ import annotations

import base64
import binascii
import io
import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sdgen.config.schedulers import AUTOMATIC, a1111_names, resolve
from sdgen.engine import plugins
from sdgen.engine.outpaint import FILLS
from sdgen.engine.request import HIRES_UPSCALERS, load_checked_image
from sdgen.errors import NAME, InvalidRequestError, UsageError
from sdgen.models.upscalers import upscaler_name
from sdgen.record.metadata import a1111_parameters
from sdgen.serve.listings import listed_upscaler
from sdgen.serve.schema import GenerationBody, Img2ImgBody, Txt2ImgBody
from sdgen.version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image

    from sdgen.engine.loader import StableDiffusionParts
    from sdgen.engine.pipeline import GeneratedImage

# sdgen's setting -> the A1111 field that sets it, so that an error names what the client sent
A1111_FIELDS = {
    "prompt": "prompt", "negative_prompt": "negative_prompt", "seed": "seed", "steps": "steps",
    "guidance_scale": "cfg_scale", "scheduler": "sampler_name", "schedule": "scheduler",
    "width": "width", "height": "height",
    "num_images": "n_iter", "batch_size": "batch_size", "strength": "denoising_strength",
    "init_image": "init_images[0]", "mask": "mask", "mask_blur": "mask_blur",
    "clip_skip": "CLIP_stop_at_last_layers", "hires_scale": "hr_scale", "hires_steps": "hr_second_pass_steps",
    "hires_strength": "denoising_strength", "hires_upscaler": "hr_upscaler", "model": "sd_model_checkpoint",
    "vae": "sd_vae", "subseed": "subseed", "subseed_strength": "subseed_strength",
    "seed_resize_from": "seed_resize_from_w", "tiling": "tiling", "style": "styles", "tcd_eta": "eta",
    # the guidance modifiers' settings come from alwayson_scripts
    **{key: "alwayson_scripts" for plugin in plugins.PLUGINS.values() if plugin.from_script for key in plugin.options},
    "control": "alwayson_scripts.controlnet.args",  # ControlNet units (sdgen/serve/controlnet.py)
}


def named(error: UsageError) -> str:
    """An sdgen usage error, its setting named by the A1111 field a client sent."""
    return str(error.named(A1111_FIELDS.get(error.key or "", error.key or "value")))


def request_values(body: GenerationBody, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of the request a body asks for: the server's own settings, then what the body gives."""
    values = dict(defaults)
    values["prompt"] = body.prompt
    if body.negative_prompt is not None:
        values["negative_prompt"] = body.negative_prompt
    values["seed"] = None if body.seed < 0 else body.seed  # A1111: -1 = random
    given = {"steps": body.steps, "guidance_scale": body.cfg_scale, "width": body.width, "height": body.height}
    values |= {key: value for key, value in given.items() if value is not None}
    values["scheduler"], values["schedule"] = _scheduler(body, values.get("scheduler"), values.get("schedule"))
    if body.eta is not None and values["scheduler"] == "tcd":  # A1111's eta: TCD's gamma; others keep their own
        values["tcd_eta"] = body.eta
    values |= _variation_and_styles(body)
    for key, value in (("batch_size", body.batch_size), ("n_iter", body.n_iter)):
        if not 1 <= value <= 10_000:
            raise InvalidRequestError(f"Invalid {key} {value}: must be a whole number from 1 up.", "batch_size")
    values["batch_size"], values["num_images"] = body.batch_size, body.batch_size * body.n_iter
    clip_skip = body.override_settings.CLIP_stop_at_last_layers
    if clip_skip is not None:
        values["clip_skip"] = clip_skip
    values |= plugins.values_from_scripts(body.alwayson_scripts)  # guidance modifiers, as Forge's scripts
    values |= {"init_image": None, "mask": None, "hires_scale": None}
    values["restore_faces"] = _face_restorer(body, defaults)
    if isinstance(body, Txt2ImgBody):
        values |= _hires(body, values)
    elif isinstance(body, Img2ImgBody):
        values |= _img2img(body)
    return values


def _face_restorer(body: GenerationBody, defaults: Mapping[str, Any]) -> str | None:
    """restore_faces: the server's --restore-faces model when a body asks (off unless it asks, as A1111)."""
    if not body.restore_faces:
        return None
    if not defaults.get("restore_faces"):
        raise InvalidRequestError(f"Invalid {NAME} true: this server has no face restorer; start sdgen serve with "
                                  "--restore-faces MODEL (a GFPGAN file).", "restore_faces")
    return defaults["restore_faces"]


def _variation_and_styles(body: GenerationBody) -> dict[str, Any]:
    """Variation seeds (-1: random), the noise's size (both sides > 0, as A1111 needs), tiling and styles."""
    values: dict[str, Any] = {"subseed": None if body.subseed < 0 else body.subseed,
                              "subseed_strength": body.subseed_strength}
    if body.styles:  # clients send [] for none: the server's own styles setting then stays
        values["style"] = list(body.styles)
    if body.seed_resize_from_w > 0 and body.seed_resize_from_h > 0:
        values["seed_resize_from"] = f"{body.seed_resize_from_w}x{body.seed_resize_from_h}"
    if body.tiling is not None:
        values["tiling"] = "both" if body.tiling else None
    return values


def _scheduler(body: GenerationBody, default: str | None, default_schedule: str | None) -> tuple[str, str]:
    """(scheduler, schedule) from A1111's sampler_name and scheduler (its schedule type), else the server's."""
    sampler = body.sampler_name or body.sampler_index
    if sampler:
        return resolve(sampler, body.scheduler)
    name = default or "euler"  # no sampler: the server's, with the schedule type asked for
    if body.scheduler and body.scheduler.lower() != AUTOMATIC:
        return resolve(a1111_names(*resolve(name, default_schedule))[0], body.scheduler)
    return name, default_schedule or AUTOMATIC


def _hires(body: Txt2ImgBody, settings: Mapping[str, Any]) -> dict[str, Any]:
    if not body.enable_hr:
        return {}
    if body.hr_resize_x or body.hr_resize_y:
        raise InvalidRequestError(
            f"Invalid {NAME} {body.hr_resize_x}x{body.hr_resize_y}: sdgen's hires pass scales by hr_scale; "
            "send hr_resize_x and hr_resize_y as 0 and set hr_scale.",
            "hr_resize",
        )
    upscaler = (body.hr_upscaler or "Latent").strip()
    known = {a1111.lower(): name for name, a1111 in HIRES_UPSCALERS.items()}
    values: dict[str, Any] = {
        "hires_scale": body.hr_scale,
        "hires_steps": body.hr_second_pass_steps or None,
        "hires_upscaler": known.get(upscaler.lower()) or str(listed_upscaler(upscaler, settings, "hires_upscaler")),
    }
    if body.denoising_strength is not None:
        values["hires_strength"] = body.denoising_strength
    return values


def _img2img(body: Img2ImgBody) -> dict[str, Any]:
    if len(body.init_images) != 1:
        raise InvalidRequestError(
            f"Invalid {NAME}: {len(body.init_images)} images; send exactly one init image (base64).", "init_images"
        )
    values: dict[str, Any] = {"init_image": decode_image(body.init_images[0], "init_image")}
    if body.denoising_strength is not None:
        values["strength"] = body.denoising_strength
    if body.mask:
        values["mask"] = decode_image(body.mask, "mask")
        values["invert_mask"] = bool(body.inpainting_mask_invert)
        if body.mask_blur is not None:
            values["mask_blur"] = body.mask_blur
        if body.inpainting_fill is not None:  # A1111's numbers -> sdgen's names (sdgen/engine/outpaint.py)
            values["inpaint_fill"] = {number: name for name, number in FILLS.items()}[body.inpainting_fill]
    return values


def decode_image(text: str, key: str) -> Image.Image:
    """A base64 image, with or without a `data:image/png;base64,` prefix, decoded whole and checked."""
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(
            f"Invalid {NAME}: not valid base64 (send the image's bytes base64-encoded).", key
        ) from None
    if not data:
        raise InvalidRequestError(f"Invalid {NAME}: empty image.", key)
    # converted inside the loader's bounded pool, so the copy a conversion makes is bounded too
    return load_checked_image(io.BytesIO(data), f"({len(data)} bytes)", key, mode="L" if key == "mask" else "RGB")


def a1111_response(
    body: GenerationBody, results: list[GeneratedImage], pngs: list[bytes], parts: StableDiffusionParts
) -> dict[str, Any]:
    """{"images": [base64 PNG], "parameters": the body as understood, "info": JSON text of the run}."""
    parameters = body.model_dump()
    if isinstance(body, Img2ImgBody):  # as A1111 does: the request's images are not sent back
        parameters |= {"init_images": None, "mask": None}
    images = [base64.b64encode(png).decode("ascii") for png in pngs] if body.send_images else []
    return {"images": images, "parameters": parameters, "info": json.dumps(run_info(results, parts, body))}


def run_info(results: list[GeneratedImage], parts: StableDiffusionParts, body: GenerationBody) -> dict[str, Any]:
    """A1111's `info`: the run's prompts, seeds, size, sampler and each image's infotext."""
    if not results:
        return {"prompt": body.prompt, "all_prompts": [], "seed": body.seed, "all_seeds": [], "infotexts": []}
    request = results[0].request
    sampler_name, schedule_type = a1111_names(request.scheduler, request.schedule)
    seeds = [result.seed for result in results]
    subseeds = [result.job.subseed if result.job.subseed is not None else result.seed for result in results]
    resize = [int(side) for side in request.seed_resize_from.split("x")] if request.seed_resize_from else [-1, -1]
    strength = request.strength if request.is_img2img else request.hires_strength if request.hires_scale else None
    return {
        "prompt": results[0].job.prompt, "all_prompts": [result.job.prompt for result in results],
        "negative_prompt": request.negative_prompt,
        "all_negative_prompts": [result.request.negative_prompt for result in results],
        "seed": seeds[0], "all_seeds": seeds, "subseed": subseeds[0], "all_subseeds": subseeds,
        "subseed_strength": request.subseed_strength,
        "width": request.width, "height": request.height, "sampler_name": sampler_name,
        "scheduler": schedule_type, "cfg_scale": request.guidance_scale,
        "steps": request.num_inference_steps, "batch_size": body.batch_size,
        "restore_faces": request.restore_faces is not None,
        "face_restoration_model": upscaler_name(request.restore_faces) if request.restore_faces else None,
        "sd_model_name": parts.source.model,
        "sd_model_hash": _model_hash(parts), "sd_vae_name": parts.vae_name,
        "sd_vae_hash": parts.vae_hash, "seed_resize_from_w": resize[0], "seed_resize_from_h": resize[1],
        "denoising_strength": strength, "extra_generation_params": {}, "index_of_first_image": 0,
        "infotexts": [a1111_parameters(result, parts) for result in results], "styles": list(request.applied_styles),
        "job_timestamp": time.strftime("%Y%m%d%H%M%S"), "clip_skip": request.clip_skip,
        "is_using_inpainting_conditioning": parts.unet.config.in_channels == 9,
        "version": f"sdgen {__version__}",
    }


def _model_hash(parts: StableDiffusionParts) -> str | None:
    """A1111's short hash of a single-file checkpoint; for a diffusers folder, its U-Net's sha256 (short)."""
    from sdgen.models.hashes import model_short_hash
    from sdgen.models.single_file import is_checkpoint_file

    if is_checkpoint_file(parts.source.model):
        return model_short_hash(parts.source.model)
    return (parts.source.unet_sha256 or "")[:10] or None


def samplers() -> list[dict[str, Any]]:
    """GET /sdapi/v1/samplers: each A1111 sampler sdgen runs, its aliases (sdgen's names among them) and
    its A1111 options (the schedule type its Automatic means)."""
    from sdgen.config.schedulers import A1111_SAMPLERS, SCHEDULERS
    from sdgen.errors import InvalidRequestError

    listed = []
    for sampler in A1111_SAMPLERS:
        try:
            resolve(sampler.label)
        except InvalidRequestError:
            continue  # not in sdgen yet
        own = [name for name, spec in SCHEDULERS.items() if spec.a1111_sampler == sampler.label]
        aliases = list(dict.fromkeys([*sampler.aliases, sampler.name, *own]))
        default = sampler.default_schedule  # A1111 names it only where it is not the model's own (uniform)
        options = {"scheduler": default} if default not in (None, "uniform") else {}
        listed.append({"name": sampler.label, "aliases": aliases, "options": options})
    return listed
