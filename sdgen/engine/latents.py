"""The latent space: initial noise, the img2img starting point, and the VAE's encode/decode.

SD1.x works on latents of shape (B, 4, H/8, W/8): the VAE compresses each 8x8 RGB block to 4 numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from diffusers import AutoencoderKL, SchedulerMixin
    from PIL import Image

    from sdgen.hardware.devices import Placement

from sdgen.errors import GenerationError

log = logging.getLogger("sdgen")

NoiseDraw = Callable[[tuple[int, ...]], "torch.Tensor"]  # (B, C, h, w) -> each image's noise, in place of a plain draw


def set_timesteps(
    scheduler: SchedulerMixin, num_inference_steps: int, device: str, strength: float | None = None
) -> torch.Tensor:
    """The timesteps to run, high noise first. Image-to-image skips the noisiest (1 - strength) part.

    With strength 0.6 and 50 steps, the image is noised to the level of step 20 and denoised from there,
    so 30 steps run. Second-order schedulers (Heun, DPM2) list most timesteps twice: `scheduler.order`.
    """
    scheduler.set_timesteps(num_inference_steps, device=device)
    timesteps = scheduler.timesteps
    if strength is None:
        return timesteps
    init_timestep = min(int(num_inference_steps * strength), num_inference_steps)
    t_start = max(num_inference_steps - init_timestep, 0)
    if hasattr(scheduler, "start_at_step"):  # sdgen's k-diffusion samplers (engine/samplers): a call per timestep
        return scheduler.start_at_step(t_start)
    timesteps = timesteps[t_start * scheduler.order :]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(t_start * scheduler.order)
    return timesteps


def initial_noise(
    generators: list[torch.Generator],
    latent_shape: tuple[int, int, int],
    scheduler: SchedulerMixin,
    device: str,
    dtype: torch.dtype,
    draw: NoiseDraw | None = None,
) -> torch.Tensor:
    """Pure Gaussian noise x_T, one draw per image from its own generator, scaled for the scheduler.

    Sigma-based schedulers (Euler, LMS, ...) start at sigma_max ~ 14.6, not 1: `init_noise_sigma`.
    `draw` replaces the plain draw (variation seeds: sdgen/engine/variation.py).
    """
    from diffusers.utils.torch_utils import randn_tensor

    shape = (len(generators), *latent_shape)  # (B, 4, H/8, W/8)
    latents = draw(shape) if draw is not None else randn_tensor(shape, generator=generators, device=device, dtype=dtype)
    return latents * scheduler.init_noise_sigma


def _decode(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    latents = latents.to(dtype=vae.dtype) / vae.config.scaling_factor
    return vae.decode(latents, return_dict=False)[0]


def image_to_tensor(image: Image.Image, width: int, height: int) -> torch.Tensor:
    """PIL image -> (1, 3, H, W) in [-1, 1], resized with Lanczos when its size differs (as diffusers does)."""
    import numpy as np
    import torch
    from PIL import Image

    image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), resample=Image.Resampling.LANCZOS)
    array = np.asarray(image).astype(np.float32) / 255.0  # (H, W, 3) in [0, 1]
    tensor = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)  # (1, 3, H, W)
    return tensor * 2.0 - 1.0


def encode_image(
    vae: AutoencoderKL, image: torch.Tensor, generators: list[torch.Generator], dtype: torch.dtype, device: str
) -> torch.Tensor:
    """VAE-encode the init image once, then sample its latent distribution with each image's generator.

    The encoder gives a mean and a variance per latent; sampling draws from the image's generator first,
    before the noise that img2img adds, the same order as diffusers' img2img pipeline.
    """
    import torch

    image = image.to(device=device, dtype=vae.dtype)  # not vae.device: offloaded weights sit on the CPU
    encoded = vae.encode(image)
    if not hasattr(encoded, "latent_dist"):  # a tiny autoencoder as the model's VAE (SDXS): one latent, no draw
        return (encoded.latents.repeat(len(generators), 1, 1, 1) * vae.config.scaling_factor).to(dtype)
    distribution = encoded.latent_dist  # mean, std: (1, 4, H/8, W/8)
    samples = [distribution.sample(generator) for generator in generators]
    return (torch.cat(samples) * vae.config.scaling_factor).to(dtype)  # (B, 4, H/8, W/8)


def noised_image_latents(
    image_latents: torch.Tensor,
    generators: list[torch.Generator],
    scheduler: SchedulerMixin,
    first_timestep: torch.Tensor,
    draw: NoiseDraw | None = None,
) -> torch.Tensor:
    """Forward diffusion to the start step: x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) noise (img2img)."""
    from diffusers.utils.torch_utils import randn_tensor

    if draw is not None:
        noise = draw(tuple(image_latents.shape)).to(image_latents.device, image_latents.dtype)
    else:
        noise = randn_tensor(
            image_latents.shape, generator=generators, device=image_latents.device, dtype=image_latents.dtype
        )
    timesteps = first_timestep.repeat(image_latents.shape[0])
    return scheduler.add_noise(image_latents, noise, timesteps)


def decode_latents(vae: AutoencoderKL, latents: torch.Tensor) -> tuple[list[Image.Image], str]:
    """Clean latents -> RGB images: undo the VAE's scaling, decode, map [-1, 1] to 0..255. Returns the
    images and the dtype the VAE decoded them in.

    NaN guard: the SD1.5 VAE can overflow in float16 (the "black image" bug). A non-finite decode is
    retried once with the VAE upcast to float32, with a warning, and the VAE goes back to its dtype after
    (so later images run as planned, and each image records the dtype that really decoded it); if the
    float32 decode fails too, no image is made.
    """
    import torch
    from PIL import Image

    dtype = vae.dtype
    decoded = _decode(vae, latents)  # (B, 3, H, W) in about [-1, 1]
    if not bool(torch.isfinite(decoded).all()) and dtype != torch.float32:
        log.warning("The VAE gave NaN or infinite values in %s; decoding again in float32.", dtype)
        vae.to(torch.float32)
        try:
            decoded = _decode(vae, latents)
        finally:
            vae.to(dtype)
        dtype = torch.float32
    if not bool(torch.isfinite(decoded).all()):
        raise GenerationError(
            "The VAE decoded NaN or infinite values even in float32 (the latents are broken); no image written. "
            "Try --dtype float32 or another --scheduler."
        )
    decoded = (decoded / 2 + 0.5).clamp(0, 1)
    pixels = (decoded.permute(0, 2, 3, 1).float().cpu().numpy() * 255).round().astype("uint8")  # (B, H, W, 3)
    return [Image.fromarray(array) for array in pixels], str(dtype).removeprefix("torch.")


StartLatents = Callable[[list["torch.Generator"]], "torch.Tensor"]  # each image's generator -> x0 latents


def encoded_start(pixels: torch.Tensor | list[torch.Tensor], vae: AutoencoderKL, placement: Placement) -> StartLatents:
    """The clean latents an image-to-image run starts from: the VAE's latent distribution of the image (one
    for all, or one per image), sampled with each image's generator first, as diffusers' img2img does."""
    import torch

    from sdgen.hardware.devices import torch_dtype

    dtype, device = torch_dtype(placement.dtype), placement.device

    def start(generators: list[torch.Generator]) -> torch.Tensor:
        if not isinstance(pixels, list):
            return encode_image(vae, pixels, generators, dtype, device)
        pairs = zip(pixels, generators, strict=True)
        return torch.cat([encode_image(vae, one, [generator], dtype, device) for one, generator in pairs])

    return start
