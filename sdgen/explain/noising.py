"""Forward noising: an image at chosen timesteps t, each reached in one jump with the model's own schedule,
x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise, i.e. a sample of q(x_t | x_0).

The model does this in the VAE's latent space (to make training pairs; img2img does it once): encode,
noise, decode for display. Pixel space shows the same idea on the picture itself. t = 0 is the image
unchanged; other t are diffusers' timestep numbers, the ones the denoising strip is labelled with. One
noise draw is used for every t, so the frames show one picture drowning, not several noises.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdgen.engine.checking import check_request
from sdgen.engine.request import GenerationRequest, ModelSpec, OutputSpec
from sdgen.errors import NAME, InvalidRequestError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from PIL import Image

log = logging.getLogger("sdgen")

SPACES = ("latent", "pixel")


@dataclass(frozen=True)
class NoiseRequest:
    image: str  # the picture to noise
    timesteps: str | None = None  # "0,100,500,999"; None: `frames` evenly spaced from 0 to T
    frames: int = 8
    space: str = "latent"
    seed: int | None = None
    width: int | None = None  # default: the image's size, rounded down to a multiple of 8
    height: int | None = None
    animation: str | None = None  # .gif or .webp

    def checked(self) -> NoiseRequest:
        if self.space not in SPACES:
            raise InvalidRequestError(f"Invalid {NAME} {self.space!r}: choose latent or pixel.", "space")
        if not 1 <= self.frames <= 100:
            raise InvalidRequestError(f"Invalid {NAME} {self.frames}: must be from 1 to 100.", "frames")
        if self.animation is not None and not str(self.animation).lower().endswith((".gif", ".webp")):
            raise InvalidRequestError(f"Invalid {NAME} {self.animation!r}: use .gif or .webp.", "animation")
        # the image, its size and the seed follow the rules of an image-to-image request
        as_request = check_request(GenerationRequest(
            prompt="", init_image=self.image, seed=self.seed, width=self.width, height=self.height, strength=1.0
        ))
        return replace(self, seed=as_request.seed, width=as_request.width, height=as_request.height)


def chosen_timesteps(text: str | None, frames: int, train_steps: int) -> list[int]:
    """The timesteps to show: the list given, or `frames` evenly spaced from 0 to T (= train_steps - 1)."""
    if text is None:
        if frames == 1:
            return [train_steps - 1]
        return sorted({round(i * (train_steps - 1) / (frames - 1)) for i in range(frames)})
    try:
        values = [int(value) for value in text.replace(" ", "").split(",") if value]
    except ValueError:
        values = []
    if not values or any(not 0 <= t < train_steps for t in values):
        raise InvalidRequestError(
            f"Invalid {NAME} {text!r}: give whole numbers from 0 to {train_steps - 1}, "
            f"e.g. 0,100,500,{train_steps - 1}.",
            "timesteps",
        )
    return values


def forward_noise(
    x0: torch.Tensor, timesteps: list[int], scheduler_config: dict[str, Any], seed: int
) -> list[torch.Tensor]:
    """x_t for each t from x_0 (any shape (1, C, H, W)), with the schedule's add_noise and one noise draw."""
    import torch
    from diffusers import DDPMScheduler
    from diffusers.utils.torch_utils import randn_tensor

    schedule = DDPMScheduler.from_config(scheduler_config)  # the model's betas; add_noise is q(x_t | x_0)
    generator = torch.Generator("cpu").manual_seed(seed)
    noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return [x0 if t == 0 else schedule.add_noise(x0, noise, torch.tensor([t], device=x0.device)) for t in timesteps]


def noise_pictures(
    request: NoiseRequest, spec: ModelSpec, timesteps_for: Callable[[int], list[int]]
) -> tuple[list[Image.Image], list[int], dict[str, Any]]:
    """Load what the space needs (the schedule; the VAE for latent space), noise, and return the frames,
    the timesteps and the facts for the picture's record."""
    import torch

    from sdgen.config.images import open_user_image
    from sdgen.engine.latents import image_to_tensor
    from sdgen.engine.loader import load_scheduler_config, load_vae
    from sdgen.hardware.devices import choose_placement, torch_dtype
    from sdgen.pictures.previews import to_images, vae_pixels

    scheduler_config, model = load_scheduler_config(spec)
    timesteps = timesteps_for(int(scheduler_config.get("num_train_timesteps", 1000)))
    assert request.width is not None and request.height is not None and request.seed is not None
    image = open_user_image(request.image, "init_image")
    pixels = image_to_tensor(image, request.width, request.height)  # (1, 3, H, W)
    with torch.inference_mode():
        if request.space == "pixel":
            frames = [to_images(x)[0] for x in forward_noise(pixels, timesteps, scheduler_config, request.seed)]
        else:
            placement = choose_placement(spec.device, spec.dtype, spec.rng)
            vae, source = load_vae(spec, placement)
            model = source.model
            image = pixels.to(device=placement.device, dtype=torch_dtype(placement.vae_dtype))
            x0 = vae.encode(image).latent_dist.mode() * vae.config.scaling_factor  # the mean: no sampling noise
            decode = vae_pixels(vae)
            frames = [
                to_images(decode(x))[0] for x in forward_noise(x0.float(), timesteps, scheduler_config, request.seed)
            ]
    from diffusers import DDPMScheduler

    alphas = DDPMScheduler.from_config(scheduler_config).alphas_cumprod
    facts = {"model": model, "alphas_cumprod": [1.0 if t == 0 else round(float(alphas[t]), 6) for t in timesteps]}
    return frames, timesteps, facts


def run_noise(request: NoiseRequest, spec: ModelSpec, output: OutputSpec, emit: Callable[[str], None]) -> Path | None:
    """`sdgen noise IMAGE`: check everything, noise the image, write the strip (and the animation)."""
    from sdgen.pictures.sequence import same_size
    from sdgen.pictures.sheets import Cell, animation_bytes, labelled_grid, picture_png
    from sdgen.record.output import fixed_target, picture_target

    request, spec = request.checked(), spec.checked()
    name = Path(request.image).stem
    target = picture_target(output, "{index:05d}-noise-{slug}", name)
    animation = fixed_target(Path(request.animation), output.overwrite) if request.animation else None
    frames, timesteps, facts = noise_pictures(
        request, spec, lambda train_steps: chosen_timesteps(request.timesteps, request.frames, train_steps)
    )
    captions = [f"t={t}\nsignal {a:.3f}" for t, a in zip(timesteps, facts["alphas_cumprod"], strict=True)]
    title = f"{name}: forward noising q(x_t | x_0) in {request.space} space, seed {request.seed}"
    sheet, _ = labelled_grid([[Cell(f, c) for f, c in zip(frames, captions, strict=True)]], title=title, max_side=256)
    record = {
        "picture": "forward noising",
        "image": str(request.image),
        "space": request.space,
        "seed": request.seed,
        "timesteps": timesteps,
        "width": request.width,
        "height": request.height,
        **facts,
    }
    data = picture_png(sheet, None, record if output.metadata else None)
    path = target.write(data, overwrite=output.overwrite)
    if animation is not None:
        pictures = same_size(
            [labelled_grid([[Cell(f, c)]], max_side=512)[0] for f, c in zip(frames, captions, strict=True)]
        )
        animation.write(
            animation_bytes(pictures, Path(request.animation).suffix.lower(), json.dumps(record)),
            overwrite=output.overwrite,
        )
    if path is not None:
        emit(str(path))
    return path
