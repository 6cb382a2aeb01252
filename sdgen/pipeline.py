"""generate(request) -> images: the stages, numbered, in order. Text-to-image and image-to-image."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sdgen import models
from sdgen.denoise import NoisePredictor, StepCallback, denoise
from sdgen.devices import make_generator, torch_dtype
from sdgen.errors import GenerationError
from sdgen.latents import (
    decode_latents,
    encode_image,
    image_to_tensor,
    initial_noise,
    noised_image_latents,
    set_timesteps,
)
from sdgen.models import StableDiffusionParts
from sdgen.request import GenerationRequest, ModelSpec
from sdgen.schedulers import make_scheduler
from sdgen.text import encode_prompt

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image


@dataclass(frozen=True)
class GeneratedImage:
    image: Image.Image
    seed: int
    index: int  # position in the run: image i has seed request.seed + i
    request: GenerationRequest  # validated: seed, size and scheduler filled in
    seconds: float  # this image's share of its batch's wall time (encode, denoise, decode)
    vae_dtype: str | None = None  # the dtype that decoded it (float32 after the NaN guard's retry)


@dataclass(frozen=True)
class ImageTask:
    """One image to make: image `index` of a validated request, with seed request.seed + index."""

    request: GenerationRequest
    index: int = 0

    @property
    def seed(self) -> int:
        assert self.request.seed is not None, "validate the request first"
        return self.request.seed + self.index


def batch_key(request: GenerationRequest) -> tuple:
    """Images whose requests agree on all of this can share U-Net calls (prompts and seeds may differ)."""
    return (
        request.width,
        request.height,
        request.num_inference_steps,
        request.scheduler,
        request.guidance_scale > 1.0,
        request.guidance_scale,
        str(request.init_image) if request.is_img2img else None,
        request.strength if request.is_img2img else None,
    )


def generate(
    request: GenerationRequest,
    model: StableDiffusionParts | ModelSpec | None = None,
    on_step: StepCallback | None = None,
) -> list[GeneratedImage]:
    """Make `request.num_images` images; `model` is a loaded model, or a spec to load (default SD1.5)."""
    return list(iter_generate(request, model, on_step))


def iter_generate(
    request: GenerationRequest,
    model: StableDiffusionParts | ModelSpec | None = None,
    on_step: StepCallback | None = None,
) -> Iterator[GeneratedImage]:
    """Like generate(), but yields each batch's images as soon as they are decoded (write them at once)."""
    # 1. check inputs: every rule, before any weights load
    request = request.validated()

    # 2. load the model (once per process when the caller keeps the parts)
    parts = model if isinstance(model, StableDiffusionParts) else models.load_model(model)
    tasks = [ImageTask(request, index) for index in range(request.num_images)]
    for start in range(0, len(tasks), request.batch_size):
        yield from generate_batch(tasks[start : start + request.batch_size], parts, on_step)


def generate_batch(
    tasks: list[ImageTask], parts: StableDiffusionParts, on_step: StepCallback | None = None
) -> list[GeneratedImage]:
    """Make several images in one pass through the U-Net. Their requests must share batch_key()."""
    import torch

    if len({batch_key(task.request) for task in tasks}) != 1:
        raise ValueError("generate_batch: the tasks differ in size, steps, scheduler, guidance or init image")
    try:
        with torch.inference_mode():
            return _generate_batch(tasks, parts, on_step)
    except (MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        if parts.placement.device.startswith("cuda"):
            torch.cuda.empty_cache()  # give the next chunk of a batch its chance
        request = tasks[0].request
        raise GenerationError(
            f"Out of memory making {len(tasks)} image(s) at {request.width}x{request.height} on "
            f"{parts.placement.device} ({_first_line(error)}); try --batch-size 1, --vae-tiling, "
            "--offload model (CUDA) or a smaller size."
        ) from error


# What running out of memory says: torch.OutOfMemoryError (CUDA), MPS, the CPU allocator, oneDNN.
_OUT_OF_MEMORY = ("out of memory", "can't allocate memory", "could not allocate", "failed to allocate")


def is_out_of_memory(error: BaseException) -> bool:
    return isinstance(error, MemoryError) or any(text in str(error).lower() for text in _OUT_OF_MEMORY)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


def _generate_batch(
    tasks: list[ImageTask], parts: StableDiffusionParts, on_step: StepCallback | None
) -> list[GeneratedImage]:
    import torch

    started = time.perf_counter()
    request = tasks[0].request  # size, steps, scheduler, guidance and init image are shared
    device = parts.placement.device
    dtype = torch_dtype(parts.placement.dtype)
    assert request.width is not None and request.height is not None

    # 3. encode each prompt and negative prompt (once per distinct text); guidance <= 1 needs no negatives
    do_guidance = request.guidance_scale > 1.0
    prompt_embeds = torch.cat([_embedding(task.request.prompt, parts, device) for task in tasks])  # (B, 77, D)
    negative_prompt_embeds = None
    if do_guidance:
        negative_prompt_embeds = torch.cat([_embedding(task.request.negative_prompt, parts, device) for task in tasks])

    seeds = [task.seed for task in tasks]
    generators = [make_generator(seed, parts.placement) for seed in seeds]
    scheduler = make_scheduler(request.scheduler, parts.scheduler_config)  # fresh: schedulers keep state

    # 4. timesteps, and the starting latents: pure noise, or the init image noised to the start step
    strength = request.strength if request.is_img2img else None
    timesteps = set_timesteps(scheduler, request.num_inference_steps, device, strength)
    if not request.is_img2img:
        scale = parts.vae_scale_factor
        latent_shape = (parts.unet.config.in_channels, request.height // scale, request.width // scale)
        latents = initial_noise(generators, latent_shape, scheduler, device, dtype)  # (B, 4, h, w)
    else:
        init_pixels = image_to_tensor(_open_image(request.init_image), request.width, request.height)
        image_latents = encode_image(parts.vae, init_pixels, generators, dtype, device)
        latents = noised_image_latents(image_latents, generators, scheduler, timesteps[:1])

    # 5. the denoising loop
    latents = denoise(
        _unet_predictor(parts),
        latents,
        timesteps,
        scheduler,
        prompt_embeds,
        negative_prompt_embeds,
        request.guidance_scale,
        generators,
        on_step,
        tuple(seeds),
    )
    if not torch_isfinite(latents):
        raise GenerationError(
            f"The denoising loop produced NaN or infinite latents for seed {seeds[0]}; "
            "try --dtype float32 or another --scheduler."
        )

    # 6. decode to RGB
    images, vae_dtype = decode_latents(parts.vae, latents)
    seconds = (time.perf_counter() - started) / len(images)
    return [
        GeneratedImage(image, task.seed, task.index, task.request, seconds, vae_dtype)
        for task, image in zip(tasks, images, strict=True)
    ]


def _embedding(text: str, parts: StableDiffusionParts, device: str) -> torch.Tensor:
    """(1, 77, D) CLIP embedding of one text, remembered: batches repeat the same prompt and "" a lot."""
    cache = parts.embedding_cache
    if text not in cache:
        if len(cache) > 256:
            cache.clear()
        cache[text] = encode_prompt(text, parts.tokenizer, parts.text_encoder, device)
    return cache[text]


def _unet_predictor(parts: StableDiffusionParts) -> NoisePredictor:
    unet = parts.unet

    def predict_noise(latent_model_input: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        return unet(latent_model_input, t, encoder_hidden_states=embeds, return_dict=False)[0]

    return predict_noise


def torch_isfinite(tensor: torch.Tensor) -> bool:
    import torch

    return bool(torch.isfinite(tensor).all())


def _open_image(init_image: object) -> Image.Image:
    from PIL import Image

    if isinstance(init_image, Image.Image):
        return init_image
    with Image.open(init_image) as image:  # type: ignore[arg-type]
        image.load()
        return image.copy()
