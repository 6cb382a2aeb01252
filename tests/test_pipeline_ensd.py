"""A1111's eta noise seed delta (ENSD, issue 24): the starting noise comes from the seed, the sampler's own
noise (ancestral and SDE samplers) from seed + ENSD, as A1111's rng.py reseeds after the first draw. The
reference is diffusers' pipeline given that starting noise as `latents` and a generator seeded with
seed + ENSD, which it then uses for the ancestral noise only."""

from __future__ import annotations

import numpy as np
import pytest

from sdgen.engine.pipeline import generate
from sdgen.engine.request import GenerationRequest

from .conftest import SIZE
from .test_pipeline import PROMPT, STEPS, pixels, reference_pipeline


def reference_with_ensd(parts, scheduler: str, seed: int, ensd: int) -> np.ndarray:
    import torch

    pipe = reference_pipeline(parts, scheduler)
    side = SIZE // parts.vae_scale_factor
    shape = (1, parts.unet.config.in_channels, side, side)
    latents = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))
    image = pipe(PROMPT, num_inference_steps=STEPS, width=SIZE, height=SIZE, latents=latents,
                 generator=torch.Generator("cpu").manual_seed(seed + ensd)).images[0]
    return pixels(image)


@pytest.mark.parametrize("scheduler", ["euler-a", "dpm++2m-sde"])
def test_ensd_equals_diffusers_with_the_sampler_noise_seeded_apart(tiny_parts, scheduler) -> None:
    request = GenerationRequest(PROMPT, seed=21, num_inference_steps=STEPS, width=SIZE, height=SIZE,
                                scheduler=scheduler, eta_noise_seed_delta=31337)
    [result] = generate(request, tiny_parts)
    assert np.abs(pixels(result.image) - reference_with_ensd(tiny_parts, scheduler, 21, 31337)).max() <= 1
    [plain] = generate(GenerationRequest(PROMPT, seed=21, num_inference_steps=STEPS, width=SIZE, height=SIZE,
                                         scheduler=scheduler), tiny_parts)
    assert not np.array_equal(pixels(plain.image), pixels(result.image))


def test_ensd_leaves_a_sampler_without_noise_alone(tiny_parts) -> None:
    def image(ensd: int) -> np.ndarray:
        request = GenerationRequest(PROMPT, seed=5, num_inference_steps=STEPS, width=SIZE, height=SIZE,
                                    scheduler="euler", eta_noise_seed_delta=ensd)
        return pixels(generate(request, tiny_parts)[0].image)

    assert np.array_equal(image(0), image(31337))
