"""generate(request) -> images: the stages, numbered, in order. Text-to-image and image-to-image."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sdgen.config import GenerationRequest, ModelSpec
from sdgen.denoise import StepCallback, denoise
from sdgen.errors import GenerationError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

    from sdgen.models import StableDiffusionParts


@dataclass(frozen=True)
class GeneratedImage:
    image: Image.Image
    seed: int
    index: int  # position in the run: image i has seed request.seed + i
    request: GenerationRequest  # validated: seed, size and scheduler filled in
    seconds: float  # this image's share of its batch's wall time (encode, denoise, decode)


def generate(
    request: GenerationRequest,
    model: StableDiffusionParts | ModelSpec | None = None,
    on_step: StepCallback | None = None,
) -> list[GeneratedImage]:
    """Make `request.num_images` images; `model` is a loaded model, or a spec to load (default SD1.5)."""
    # 1. check inputs: every rule, before any weights load
    request = request.validated()

    # 2. load the model (once per process when the caller keeps the parts)
    from sdgen.models import StableDiffusionParts, load_model

    parts = model if isinstance(model, StableDiffusionParts) else load_model(model)

    import torch

    with torch.inference_mode():
        return _generate(request, parts, on_step)


def _generate(
    request: GenerationRequest, parts: StableDiffusionParts, on_step: StepCallback | None
) -> list[GeneratedImage]:
    from sdgen.devices import make_generator, torch_dtype
    from sdgen.latents import (
        decode_latents,
        encode_image,
        image_to_tensor,
        initial_noise,
        noised_image_latents,
        set_timesteps,
    )
    from sdgen.schedulers import make_scheduler
    from sdgen.text import encode_prompts

    device = parts.placement.device
    dtype = torch_dtype(parts.placement.dtype)
    assert request.width is not None and request.height is not None and request.seed is not None

    # 3. encode the prompt and the negative prompt; guidance <= 1 needs no unconditional pass
    do_guidance = request.guidance_scale > 1.0
    prompt_embeds, negative_prompt_embeds = encode_prompts(
        request.prompt, request.negative_prompt, parts.tokenizer, parts.text_encoder, device, do_guidance
    )  # (1, 77, D) each

    # 4. img2img: the init image as a (1, 3, H, W) tensor in [-1, 1]
    init_pixels = None
    if request.is_img2img:
        init_pixels = image_to_tensor(_open_image(request.init_image), request.width, request.height)

    scale = parts.vae_scale_factor
    latent_shape = (parts.unet.config.in_channels, request.height // scale, request.width // scale)
    results: list[GeneratedImage] = []
    for start in range(0, request.num_images, request.batch_size):
        started = time.perf_counter()
        seeds = request.seeds[start : start + request.batch_size]
        generators = [make_generator(seed, parts.placement) for seed in seeds]
        scheduler = make_scheduler(request.scheduler, parts.scheduler_config)  # fresh: schedulers keep state

        # 5. timesteps, and the starting latents: pure noise, or the init image noised to the start step
        strength = request.strength if request.is_img2img else None
        timesteps = set_timesteps(scheduler, request.num_inference_steps, device, strength)
        if init_pixels is None:
            latents = initial_noise(generators, latent_shape, scheduler, device, dtype)  # (B, 4, h, w)
        else:
            image_latents = encode_image(parts.vae, init_pixels, generators, dtype)
            latents = noised_image_latents(image_latents, generators, scheduler, timesteps[:1])

        # 6. the denoising loop
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

        # 7. decode to RGB
        images = decode_latents(parts.vae, latents)
        seconds = (time.perf_counter() - started) / len(images)
        for offset, (seed, image) in enumerate(zip(seeds, images, strict=True)):
            results.append(GeneratedImage(image, seed, start + offset, request, seconds))
    return results


def _unet_predictor(parts: StableDiffusionParts):  # -> NoisePredictor
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
