"""Inpainting: repaint where the mask is white, keep the rest of the init image.

Two kinds of model, told apart by the U-Net's input channels:
- a standard 4-channel model (SD 1.5 itself): after every step, the known region's latents are put back
  from the init image, noised to the next step's level, as diffusers' StableDiffusionInpaintPipeline does;
- a 9-channel inpainting model (stable-diffusion-inpainting): the U-Net also sees the mask and the latents
  of the image with the masked region blanked, and repaints by itself.
The mask is read as diffusers reads it (grayscale, resized, binarized at 0.5), after --invert-mask and
--mask-blur (a Gaussian blur of that radius, diffusers' `blur`). Random draws follow diffusers' order, so
ancestral samplers match it too. The decoded picture is pasted over the init image through the (blurred)
mask, as A1111 does, so pixels outside the mask are the init image's own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sdgen.engine.latents import encode_image, image_to_tensor
from sdgen.engine.outpaint import fill_masked

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from diffusers import SchedulerMixin
    from PIL import Image

    from sdgen.engine.denoise import Conditioning, StepEnd
    from sdgen.engine.latents import NoiseDraw
    from sdgen.engine.loader import StableDiffusionParts
    from sdgen.engine.request import CheckedRequest

INPAINT_CHANNELS = 9  # 4 latents + 1 mask + 4 masked-image latents


@dataclass
class InpaintInputs:
    """The init image and mask of one request, at the image's size."""

    pixels: torch.Tensor  # (1, 3, H, W) in [-1, 1]
    mask: torch.Tensor  # (1, 1, H, W): 1 = repaint, 0 = keep (binarized)
    mask_image: Image.Image  # the blurred mask before binarizing: what the final paste uses
    init_image: Image.Image  # at the output size
    fill: str = "original"  # what the masked latents start from (sdgen/engine/outpaint.py): noise, nothing ...


def mask_image(request: CheckedRequest) -> Image.Image:
    """The mask as given, inverted and blurred if asked: white = repaint."""
    from diffusers.image_processor import VaeImageProcessor
    from PIL import ImageOps

    assert request.mask_pixels is not None
    mask = request.mask_pixels.pixels("L")  # decoded once, when the request was checked
    if request.invert_mask:
        mask = ImageOps.invert(mask)
    if request.mask_blur:
        mask = VaeImageProcessor.blur(mask, request.mask_blur)
    return mask


def inpaint_inputs(request: CheckedRequest, vae_scale_factor: int) -> InpaintInputs:
    from diffusers.image_processor import VaeImageProcessor

    assert request.init_pixels is not None
    init_image = request.init_pixels.pixels()
    mask = mask_image(request)
    processor = VaeImageProcessor(
        vae_scale_factor=vae_scale_factor, do_normalize=False, do_binarize=True, do_convert_grayscale=True
    )
    binary = processor.preprocess(mask, height=request.height, width=request.width)  # (1, 1, H, W)
    size = (request.width, request.height)
    resized = mask.resize(size) if mask.size != size else mask
    image = init_image.convert("RGB")
    image = image.resize(size) if image.size != size else image
    start = fill_masked(image, resized) if request.inpaint_fill == "fill" else init_image  # A1111's "fill"
    return InpaintInputs(image_to_tensor(start, *size), binary, resized, image, request.inpaint_fill)


class Inpainting:
    """One batch's inpainting state: builds the starting latents, and uses the loop's two extension points:
    the conditioning (the 9-channel U-Net's extra input channels) and a step-end hook (the 4-channel blend)."""

    def __init__(self, inputs: InpaintInputs, parts: StableDiffusionParts, batch: int, guidance: bool) -> None:
        import torch

        from sdgen.hardware.devices import torch_dtype

        self.parts = parts
        self.inputs = inputs
        self.channels = parts.unet.config.in_channels
        self.dtype = torch_dtype(parts.placement.dtype)
        self.device = parts.placement.device
        scale = parts.vae_scale_factor
        size = (inputs.mask.shape[-2] // scale, inputs.mask.shape[-1] // scale)
        mask = torch.nn.functional.interpolate(inputs.mask, size=size)  # nearest, as diffusers
        self.mask = mask.to(self.device, self.dtype).expand(batch, -1, -1, -1)  # (B, 1, h, w)
        self.guidance = guidance
        self.image_latents: torch.Tensor | None = None
        self.noise: torch.Tensor | None = None
        self.masked_latents: torch.Tensor | None = None
        self.scheduler: SchedulerMixin | None = None
        self.timesteps: torch.Tensor | None = None

    def start(
        self,
        generators: list[torch.Generator],
        scheduler: SchedulerMixin,
        timesteps: torch.Tensor,
        strength: float,
        draw: NoiseDraw | None = None,
    ) -> torch.Tensor:
        """x_T: noise (strength 1) or the init image noised to the first step; draws in diffusers' order:
        image latents (4-channel models always, 9-channel when strength < 1), noise, masked-image latents."""
        from diffusers.utils.torch_utils import randn_tensor

        self.scheduler, self.timesteps = scheduler, timesteps  # the blend noises to the next step's level
        full = strength >= 1.0
        if self.channels == 4 or not full:
            self.image_latents = encode_image(self.parts.vae, self.inputs.pixels, generators, self.dtype, self.device)
        shape = tuple(self.mask.shape[:1]) + (4,) + tuple(self.mask.shape[2:])
        if draw is not None:  # variation seeds
            self.noise = draw(shape).to(self.device, self.dtype)
        else:
            self.noise = randn_tensor(shape, generator=generators, device=self.device, dtype=self.dtype)
        masked = self.inputs.pixels * (self.inputs.mask < 0.5)
        self.masked_latents = encode_image(self.parts.vae, masked, generators, self.dtype, self.device)
        if full:
            return self.noise * scheduler.init_noise_sigma
        assert self.image_latents is not None
        if self.inputs.fill in ("noise", "nothing"):  # A1111's latent noise (its seeds' noise) and latent nothing
            fill = self.noise if self.inputs.fill == "noise" else 0.0
            self.image_latents = self.image_latents * (1 - self.mask) + self.mask * fill
        return scheduler.add_noise(self.image_latents, self.noise, timesteps[:1].repeat(shape[0]))

    def conditioning(self, cond: Conditioning) -> Conditioning:
        """A 9-channel U-Net also sees the mask and the masked image's latents: (N, 5, h, w) added to its
        input on channels, for each half of a guided batch."""
        import torch

        if self.channels != INPAINT_CHANNELS:
            return cond
        assert self.masked_latents is not None, "call start() first"
        extra = torch.cat([self.mask, self.masked_latents], dim=1)  # (B, 5, h, w)
        return dataclasses.replace(cond, concat_channels=extra.repeat(2 if cond.guided else 1, 1, 1, 1))

    def on_step_end(self, step: StepEnd) -> StepEnd | None:
        """4-channel models (a step-end hook): the known region back from the init image, at the next step's
        noise level."""
        if self.channels == INPAINT_CHANNELS:
            return None
        assert self.image_latents is not None and self.noise is not None
        assert self.scheduler is not None and self.timesteps is not None, "call start() first"
        known, timesteps = self.image_latents, self.timesteps
        if step.index < len(timesteps) - 1:
            known = self.scheduler.add_noise(known, self.noise, timesteps[step.index + 1 : step.index + 2])
        return dataclasses.replace(step, latents=(1 - self.mask) * known + self.mask * step.latents)

    def paste(self, images: list[Image.Image]) -> list[Image.Image]:
        """A1111's overlay: the init image outside the (blurred) mask, the new picture inside."""
        from PIL import Image

        return [Image.composite(image, self.inputs.init_image, self.inputs.mask_image) for image in images]
