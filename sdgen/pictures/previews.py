"""Latents -> RGB pictures for watching the process, at three qualities and costs.

- approx: each latent cell's 4 numbers times a fixed 4x3 matrix (A1111's "Approx cheap" factors for
  SD1.x), upscaled. No network; about a millisecond per frame. Colours and shapes only.
- tiny:   a tiny autoencoder (diffusers' AutoencoderTiny, TAESD weights): close to the VAE's picture
  at a few percent of its cost.
- full:   the model's own VAE decoder: the real picture, at the cost of a full decode per frame.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

    from sdgen.engine.loader import StableDiffusionParts

# How much each of SD1.x's 4 latent channels adds to R, G and B (A1111, modules/sd_vae_approx.py).
LATENT_TO_RGB = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)
QUALITIES = ("approx", "tiny", "full")


@dataclass(frozen=True)
class Previewer:
    """latents (B, 4, h, w), scaled as the loop holds them -> B RGB images of the run's size."""

    quality: str
    to_pixels: Callable[[torch.Tensor], torch.Tensor]  # -> (B, 3, H, W) in about [-1, 1]
    size: tuple[int, int] | None = None  # (width, height) to resize to; None: as decoded

    def __call__(self, latents: torch.Tensor) -> list[Image.Image]:
        import torch

        with torch.inference_mode():
            pixels = self.to_pixels(latents)
        return to_images(pixels, self.size)


def to_images(pixels: torch.Tensor, size: tuple[int, int] | None = None) -> list[Image.Image]:
    """(B, 3, H, W) in [-1, 1] -> PIL images (NaN shown as black: a preview never stops a run)."""
    import torch
    from PIL import Image

    pixels = torch.nan_to_num(pixels.float(), nan=-1.0).clamp(-1, 1)
    arrays = ((pixels / 2 + 0.5).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype("uint8")
    images = [Image.fromarray(array) for array in arrays]
    if size is not None:
        images = [image if image.size == size else image.resize(size, Image.Resampling.BILINEAR) for image in images]
    return images


def approx_pixels(latents: torch.Tensor) -> torch.Tensor:
    """The cheap linear map: (B, 4, h, w) -> (B, 3, h, w), at latent resolution."""
    import torch

    weights = torch.tensor(LATENT_TO_RGB, dtype=torch.float32, device=latents.device)  # (4, 3)
    return torch.einsum("bchw,cr->brhw", latents.float(), weights)


def vae_pixels(vae: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """Decode with a VAE or a tiny autoencoder, each undoing its own latent scaling (TAESD's is 1)."""

    def decode(latents: torch.Tensor) -> torch.Tensor:
        # the latents' device, not the VAE's: offloaded weights sit on the CPU until their hook moves them
        scaled = latents.to(dtype=vae.dtype) / vae.config.scaling_factor
        return vae.decode(scaled, return_dict=False)[0]

    return decode


def upscaled(to_pixels: Callable[[torch.Tensor], torch.Tensor], factor: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The approximation is per latent cell: stretch it to the image's size, as the VAE would."""
    import torch.nn.functional as F  # noqa: N812

    return lambda latents: F.interpolate(to_pixels(latents), scale_factor=factor, mode="bilinear")


def make_previewer(
    quality: str,
    parts: StableDiffusionParts,
    size: tuple[int, int] | None = None,
    tiny_decoder: torch.nn.Module | None = None,
) -> Previewer:
    """The previewer of a quality; `tiny` needs the loaded tiny autoencoder (models.load_tiny_autoencoder)."""
    if quality == "approx":
        return Previewer(quality, upscaled(approx_pixels, parts.vae_scale_factor), size)
    if quality == "tiny":
        assert tiny_decoder is not None, "load the tiny autoencoder first"
        return Previewer(quality, vae_pixels(tiny_decoder), size)
    if quality == "full":
        return Previewer(quality, vae_pixels(parts.vae), size)
    raise ValueError(f"unknown preview quality {quality!r}; choose one of {', '.join(QUALITIES)}")
