"""check_request: a GenerationRequest as given -> a CheckedRequest, every rule checked before any weights load.

Each input is read once here: the init image and mask are decoded (and kept on the checked request), each
image's wildcards are expanded from its seed, and the LoRAs and embeddings its prompt names are found on disk
(each folder listed once). Raises InvalidRequestError naming the value and the fix.
"""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass, fields, replace
from pathlib import Path

from sdgen.config.images import UserImage, image_label
from sdgen.config.options import REQUEST
from sdgen.config.schedulers import resolve
from sdgen.config.specs import MAX_STEPS, check_int
from sdgen.engine import plugins
from sdgen.engine.detail import check_details
from sdgen.engine.face_restore import check_face_restorer
from sdgen.engine.model_spec import DEFAULT_SIZE, CheckedModelSpec
from sdgen.engine.openvino_parts import check_request as check_backend_request
from sdgen.engine.outpaint import check_fill, outpainted, parse_outpaint
from sdgen.engine.request import (
    HIRES_UPSCALERS,
    MAX_SEED,
    MAX_SIZE,
    MIN_SIZE,
    CheckedRequest,
    GenerationRequest,
    ImageJob,
    InitImage,
)
from sdgen.engine.sd_upscale import check_sd_upscale
from sdgen.errors import NAME, InvalidRequestError
from sdgen.prompts import wildcards
from sdgen.prompts.editing import check_composable
from sdgen.prompts.limits import check_networks, check_text, quoted
from sdgen.prompts.networks import FolderListing, lora_tags, resolve_embeddings, resolve_loras


def check_request(
    request: GenerationRequest, model: CheckedModelSpec | None = None, like: CheckedRequest | None = None
) -> CheckedRequest:
    """Check every rule and decide what was left open (the seed, the size, each image's prompt and networks).
    `model` gives the model's own size for a request without one; `like`, a checked request whose decoded
    init image and mask are used again where this one names the same (a grid's cells). A checked request is
    returned as it is."""
    if isinstance(request, CheckedRequest):
        return request
    applied = request.styles
    if applied:  # first: a style's text is checked, and its wildcards expanded, as if typed
        request = _styled(request)
    _check_numbers(request)
    _check_texts(request)
    scheduler, schedule = resolve(request.scheduler, request.schedule)
    resolved = replace(request, scheduler=scheduler, schedule=schedule)
    plugins.check_options(resolved, REQUEST)  # --cache-interval, --pag-scale ...: each plug-in checks its own
    check_backend_request(resolved, model)  # what --backend openvino cannot run
    seed = request.seed
    if seed is None:
        seed = secrets.randbelow(2**32)  # A1111-sized, so the seed is easy to retype
    check_int("seed", seed, 0, MAX_SEED - request.num_images + 1)
    prompts = _image_prompts(request, seed)
    check_int("seed", seed, 0, MAX_SEED - len(prompts) + 1)
    if request.weighting:  # AND needs the unconditional prediction at every step (sdgen/prompts/editing.py)
        for prompt in dict.fromkeys(prompts):
            check_composable(prompt, request.guidance_scale, request.cfg_end)
    init_pixels, mask_pixels = _check_images(request, like)
    width, height = request.width, request.height
    check_fill(request.inpaint_fill)
    check_details(request, model is not None and model.allow_unsafe_pickle)
    check_face_restorer(request, model is not None and model.allow_unsafe_pickle)
    default_size = model.native_size if model is not None else DEFAULT_SIZE
    if request.outpaint is not None:
        if request.sd_upscale is not None:
            raise InvalidRequestError(f"Invalid {NAME} {request.sd_upscale!r} with --outpaint: SD upscale repaints "
                                      "an init image as it is; outpaint first, then SD-upscale the result.",
                                      "sd_upscale")
        init_pixels, mask_pixels = _outpainted(request, init_pixels, mask_pixels)
        width, height = init_pixels.size
    elif request.sd_upscale is not None:
        allow_pickle = model is not None and model.allow_unsafe_pickle
        width, height = check_sd_upscale(request, init_pixels, mask_pixels, default_size, allow_pickle)
    elif init_pixels is not None:
        width, height = sides_from_image(request.init_image, init_pixels.size, width, height)
    width, height = _checked_side("width", width, default_size), _checked_side("height", height, default_size)
    _check_hires(request, width, height, model is not None and model.allow_unsafe_pickle)
    given = {field.name: getattr(request, field.name) for field in fields(request)}
    checked = _checked_type(type(request))(
        **given | {
            "seed": seed, "scheduler": scheduler, "schedule": schedule, "width": width, "height": height,
            "num_images": len(prompts),
            "loras": tuple(request.loras), "embeddings": tuple(request.embeddings),
            **_checked_noise(request, len(prompts)),
        },
        applied_styles=tuple(applied),
        init_pixels=init_pixels,
        mask_pixels=mask_pixels,
    )
    jobs = _jobs(checked, prompts)
    if model is not None:  # each Hub-hosted part in the cache when only the cache may be used
        from sdgen.engine.hub_parts import require_request_hub_parts

        require_request_hub_parts(checked, jobs, model)
    return replace(checked, jobs=jobs)


@functools.cache
def _checked_type(given: type[GenerationRequest]) -> type[CheckedRequest]:
    """CheckedRequest, or for a request class with fields of its own (a plug-in's test), both in one type."""
    if given is GenerationRequest:
        return CheckedRequest
    return dataclass(frozen=True)(type(f"Checked{given.__name__}", (CheckedRequest, given), {}))


def _jobs(request: CheckedRequest, prompts: tuple[str, ...]) -> tuple[ImageJob, ...]:
    """Image i: seed + i (any image can be made again on its own), its prompt, and the LoRAs and embeddings
    that prompt names, found once per distinct prompt, before any weights load."""
    files = FolderListing()
    found: dict[str, tuple] = {}
    jobs = []
    for index, prompt in enumerate(prompts):
        if prompt not in found:
            named = len(request.loras) + len(lora_tags(prompt)) + len(request.embeddings)
            check_networks(named, request.max_networks, prompt)  # before any folder is searched
            loras = resolve_loras(request.loras, prompt, request.lora_dir, files)
            texts = (prompt, request.negative_prompt)
            embeddings = resolve_embeddings(request.embeddings, texts, request.embedding_dir, files)
            check_networks(len(loras) + len(embeddings), request.max_networks, prompt)
            found[prompt] = (loras, embeddings)
        loras, embeddings = found[prompt]
        varied = request.subseed is not None and bool(request.subseed_strength)
        seed = request.seed + (0 if varied else index)  # A1111: a variation keeps the seed, moves the subseed
        subseed = request.subseed + index if varied and request.subseed is not None else None
        jobs.append(ImageJob(index, seed, prompt, request.prompt, loras, embeddings, subseed))
    return tuple(jobs)


def _styled(request: GenerationRequest) -> GenerationRequest:
    """The prompts with --style's styles applied (A1111's way); the names are kept as applied_styles."""
    from sdgen.prompts.styles import apply_styles

    prompt, negative = apply_styles(request.prompt, request.negative_prompt, request.styles, request.styles_file)
    return replace(request, prompt=prompt, negative_prompt=negative, styles=())


def _checked_noise(request: GenerationRequest, num_images: int) -> dict[str, object]:
    """The variation seed, the size the noise is drawn at, and the tiling, checked and spelled one way."""
    from sdgen.engine.tiling import checked_tiling
    from sdgen.engine.variation import checked_variation

    subseed, resize_from = checked_variation(
        request.subseed, request.subseed_strength, request.seed_resize_from, num_images
    )
    return {"subseed": subseed, "seed_resize_from": resize_from, "tiling": checked_tiling(request.tiling)}


def _check_numbers(request: GenerationRequest) -> None:
    check_int("steps", request.num_inference_steps, 1, MAX_STEPS)
    check_int("num_images", request.num_images, 1, 10_000)
    check_int("batch_size", request.batch_size, 1, 1024)
    if not _number_in(request.guidance_scale, 0, 100):
        raise InvalidRequestError(
            f"Invalid {NAME} {request.guidance_scale!r}: must be between 0 and 100 (7.5 is typical).",
            "guidance_scale",
        )
    check_int("clip_skip", request.clip_skip, 1, 12)
    check_int("eta_noise_seed_delta", request.eta_noise_seed_delta, 0, MAX_SEED)
    if not _number_in(request.tcd_eta, 0, 1):
        raise InvalidRequestError(
            f"Invalid {NAME} {request.tcd_eta!r}: must be between 0 and 1 (0.3 is TCD's default).", "tcd_eta"
        )


def _number_in(value: object, low: float, high: float) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and low <= value <= high


def _check_images(request: GenerationRequest, like: CheckedRequest | None) -> tuple[UserImage | None, UserImage | None]:
    """The init image and mask, decoded once (the whole file: a bad one fails now), with their own rules."""
    if request.mask is not None and request.init_image is None:
        raise InvalidRequestError(
            f"Invalid {NAME} {str(request.mask)!r}: a mask says what to repaint of an --init-image; give one.", "mask"
        )
    if request.init_image is None:
        return None, None
    if not 0 < request.strength <= 1:
        raise InvalidRequestError(
            f"Invalid {NAME} {request.strength!r}: must be greater than 0 and at most 1.", "strength"
        )
    if int(request.num_inference_steps * request.strength) < 1:
        raise InvalidRequestError(
            f"Invalid {NAME} {request.strength!r} with {request.num_inference_steps} steps: that runs no "
            "denoising step; raise the strength or the steps so that steps x strength >= 1.",
            "strength",
        )
    init = _decoded(request.init_image, "init_image", like)
    mask = None
    if request.mask is not None:
        mask = _decoded(request.mask, "mask", like)
        check_int("mask_blur", request.mask_blur, 0, 256)
    return init, mask


def _outpainted(
    request: GenerationRequest, init: UserImage | None, mask: UserImage | None
) -> tuple[UserImage, UserImage]:
    """The larger canvas and its mask (sdgen/engine/outpaint.py) in place of the init image and a mask."""
    sides = parse_outpaint(request.outpaint)
    if init is None:
        raise InvalidRequestError(f"Invalid {NAME} {request.outpaint!r}: outpainting extends an --init-image; "
                                  "give one.", "outpaint")
    if mask is not None or request.width is not None or request.height is not None:
        given = "--mask" if mask is not None else "--width/--height"
        raise InvalidRequestError(f"Invalid {NAME} {request.outpaint!r} with {given}: outpainting makes its own "
                                  "mask and size; leave it out.", "outpaint")
    canvas, made = outpainted(init.pixels(), sides)
    for side in (canvas.width, canvas.height):
        if side > MAX_SIZE:
            raise InvalidRequestError(f"Invalid {NAME} {request.outpaint!r}: the canvas would be "
                                      f"{canvas.width}x{canvas.height}, more than {MAX_SIZE}.", "outpaint")
    if init.size[0] % 8 or init.size[1] % 8:
        raise InvalidRequestError(f"Invalid {NAME} {request.outpaint!r}: the init image is {init.size[0]}x"
                                  f"{init.size[1]}; outpaint a picture whose sides are multiples of 8.", "outpaint")
    check_int("mask_blur", request.mask_blur, 0, 256)
    return UserImage(canvas, "init_image"), UserImage(made, "mask")


def _decoded(source: InitImage, key: str, like: CheckedRequest | None) -> UserImage:
    known = getattr(like, key) if like is not None else None
    if known is not None and known is source or (isinstance(source, (str, Path)) and known == source):
        decoded = getattr(like, "init_pixels" if key == "init_image" else "mask_pixels")
        if decoded is not None:
            return decoded
    return UserImage(source, key)


def _checked_side(key: str, value: int | None, default_size: int) -> int:
    value = default_size if value is None else value
    check_int(key, value, MIN_SIZE, MAX_SIZE)
    if value % 8:
        raise InvalidRequestError(
            f"Invalid {NAME} {value}: must be a multiple of 8 (the VAE works on 8x8 pixel blocks); "
            f"try {value // 8 * 8 or 8} or {value // 8 * 8 + 8}.",
            key,
        )
    return value


def _check_hires(request: GenerationRequest, width: int, height: int, allow_pickle: bool = False) -> None:
    scale = request.hires_scale
    if scale is None:
        return
    if not isinstance(scale, (int, float)) or not 1 < scale <= 8:
        raise InvalidRequestError(
            f"Invalid {NAME} {scale!r}: must be more than 1 and at most 8 (2 is typical).", "hires_scale"
        )
    if request.init_image is not None:
        raise InvalidRequestError(
            f"Invalid {NAME} {scale!r} with --init-image: the hires pass follows text-to-image; "
            "for image-to-image give the large --width/--height instead.",
            "hires_scale",
        )
    big = max(int(width * scale), int(height * scale))
    if big > MAX_SIZE:
        raise InvalidRequestError(
            f"Invalid {NAME} {scale!r}: {width}x{height} scaled up is {big} pixels on a side, more "
            f"than {MAX_SIZE}; use a smaller scale or size.",
            "hires_scale",
        )
    steps = request.hires_steps if request.hires_steps is not None else request.num_inference_steps
    check_int("hires_steps", steps, 1, MAX_STEPS)
    if not isinstance(request.hires_strength, (int, float)) or not 0 <= request.hires_strength <= 1:
        raise InvalidRequestError(
            f"Invalid {NAME} {request.hires_strength!r}: must be from 0 (upscale only, as A1111) to 1.",
            "hires_strength",
        )
    if request.hires_strength and int(steps * request.hires_strength) < 1:
        raise InvalidRequestError(
            f"Invalid {NAME} {request.hires_strength!r} with {steps} hires steps: that runs no step; raise one "
            "so that hires steps x strength >= 1.",
            "hires_strength",
        )
    if request.hires_upscaler not in HIRES_UPSCALERS:  # an upscaler model: found and recognised now
        from sdgen.models.upscalers import find_upscaler, identify

        upscaler = str(request.hires_upscaler)
        identify(find_upscaler(upscaler, request.upscaler_dir, allow_pickle, "hires_upscaler"), "hires_upscaler")


def _check_texts(request: GenerationRequest) -> None:
    """The prompt and negative prompt as typed, before wildcards, tokenizer or weights: valid Unicode,
    within the limits, with finite and bounded emphasis weights."""
    limits = request.prompt_limits
    check_text(request.prompt, "prompt", limits, request.weighting)
    check_text(request.negative_prompt, "negative_prompt", limits, request.weighting)


def _image_prompts(request: GenerationRequest, seed: int) -> tuple[str, ...]:
    """Each image's prompt: wildcards expanded from the image's seed, or every combination."""
    if not wildcards.has_wildcards(request.prompt):
        return (request.prompt,) * request.num_images
    if request.combinatorial:  # each combination num_images times; image j still has seed + j
        combinations = wildcards.expand_all(request.prompt, request.wildcard_dir, request.max_wildcards)
        _check_expansions(request, combinations)
        return tuple(prompt for prompt in combinations for _ in range(request.num_images))
    seeds = [seed + index for index in range(request.num_images)]
    expansions = wildcards.expand_random(request.prompt, seeds, request.wildcard_dir, request.max_wildcards)
    _check_expansions(request, expansions)
    return tuple(expansions)


def _check_expansions(request: GenerationRequest, prompts: list[str]) -> None:
    """Each expanded prompt within the same limits as a typed one (a wildcard line may add emphasis)."""
    limits = request.prompt_limits
    for prompt in dict.fromkeys(prompts):
        check_text(
            prompt, "prompt", limits, request.weighting, f"{quoted(request.prompt)}, expanded to {quoted(prompt)}"
        )


def sides_from_image(image: InitImage, size: tuple[int, int], width: int | None, height: int | None) -> tuple[int, int]:
    """The output size: an unset side follows the image's aspect ratio, rounded down to a multiple of 8. A
    side made so must be one sdgen makes; the message then names the image (its size is what the user chose)."""
    image_width, image_height = size
    if width is not None and height is not None:
        return width, height
    if width is None and height is None:
        width, height = image_width // 8 * 8, image_height // 8 * 8
        derived = (width, height)
        other = f"an image at least {MIN_SIZE}x{MIN_SIZE}" if min(size) < MIN_SIZE else "a smaller image"
    else:
        if width is None:
            width = derived_side = max(8, round(image_width * height / image_height) // 8 * 8)
        else:
            height = derived_side = max(8, round(image_height * width / image_width) // 8 * 8)
        derived, other = (derived_side,), "an image of another shape"
    if not all(MIN_SIZE <= side <= MAX_SIZE for side in derived):  # a side given is checked as given
        shown = f" {image_label(image)}" if isinstance(image, (str, Path)) else ""  # a path, or one in memory
        raise InvalidRequestError(
            f"Invalid {NAME}{shown}: a {image_width}x{image_height} image makes a {width}x{height} one, but each "
            f"side must be from {MIN_SIZE} to {MAX_SIZE} pixels; give the width and height (the image is resized "
            f"to them) or use {other}.",
            "init_image",
        )
    return width, height
