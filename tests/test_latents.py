"""Initial noise, the img2img start step and the VAE helpers."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from sdgen.config.schedulers import make_scheduler
from sdgen.engine.latents import decode_latents, image_to_tensor, initial_noise, set_timesteps
from sdgen.testing.tiny_model import SD15_SCHEDULER_CONFIG

CONFIG = {"_class_name": "PNDMScheduler", **SD15_SCHEDULER_CONFIG}


def test_initial_noise_is_one_draw_per_generator_scaled_by_init_noise_sigma() -> None:
    scheduler = make_scheduler("euler", CONFIG)
    scheduler.set_timesteps(10)
    gens = [torch.Generator().manual_seed(7), torch.Generator().manual_seed(8)]
    latents = initial_noise(gens, (4, 8, 8), scheduler, "cpu", torch.float32)
    assert latents.shape == (2, 4, 8, 8)
    assert scheduler.init_noise_sigma > 10  # Euler starts at sigma_max
    expected = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(8)) * scheduler.init_noise_sigma
    assert torch.allclose(latents[1:], expected)


def test_strength_skips_the_noisiest_part_of_the_schedule() -> None:
    full = set_timesteps(make_scheduler("ddim", CONFIG), 50, "cpu")
    scheduler = make_scheduler("ddim", CONFIG)
    partial = set_timesteps(scheduler, 50, "cpu", strength=0.6)
    assert len(full) == 50 and len(partial) == 30
    assert torch.equal(partial, full[20:])
    # second order: 19 timesteps for 10 steps; strength 0.5 starts at step 5, i.e. position 10
    heun_full = set_timesteps(make_scheduler("heun", CONFIG), 10, "cpu")
    heun = set_timesteps(make_scheduler("heun", CONFIG), 10, "cpu", strength=0.5)
    assert len(heun_full) == 19 and torch.equal(heun, heun_full[10:])


def test_image_to_tensor_range_shape_and_resize() -> None:
    image = Image.fromarray(np.array([[[0, 255, 128]] * 16] * 8, dtype=np.uint8))  # 16x8 RGB
    tensor = image_to_tensor(image, 16, 8)
    assert tensor.shape == (1, 3, 8, 16)
    assert float(tensor[0, 0].min()) == -1.0 and float(tensor[0, 1].max()) == 1.0
    assert image_to_tensor(image, 32, 16).shape == (1, 3, 16, 32)


def test_decode_maps_minus_one_to_one_onto_0_255(tiny_parts) -> None:
    latents = torch.zeros(1, 4, 8, 8)
    [image], vae_dtype = decode_latents(tiny_parts.vae, latents)
    assert vae_dtype == "float32"
    assert image.size == (16, 16) and image.mode == "RGB"
