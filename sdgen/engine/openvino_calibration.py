"""int8-hybrid's calibration set (--quantize int8-hybrid, docs/openvino.md): the float U-Net's inputs recorded in
sdgen's own loop for a few prompts, which NNCF's post-training quantization calibrates the U-Net's int8
activations on (sdgen/models/openvino.py's hybrid_quantize). Nothing is downloaded."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sdgen.engine.openvino_parts import as_numpy, ov_timestep, text_encoder_of
from sdgen.errors import GenerationError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from sdgen.engine.denoise import Conditioning, NoisePredictor
    from sdgen.engine.openvino_parts import OpenVINOParts

log = logging.getLogger("sdgen")

CALIBRATION_PROMPTS = (
    "a photo of a cat sitting on a windowsill, soft light",
    "a mountain lake at sunrise, mist over the water, detailed landscape",
    "portrait of an old fisherman, oil painting",
    "a futuristic city street at night, neon signs, rain",
)
CALIBRATION_STEPS = 4  # per prompt: 16 guided U-Net calls, the start to the end of the noise schedule


def calibration_inputs(runtime: OpenVINOParts, size: tuple[int, int], float_unet: NoisePredictor,
                       ) -> list[tuple[Any, ...]]:
    """int8-hybrid's calibration set: the float U-Net's inputs in sdgen's own loop (sdgen/engine/denoise.py),
    a few prompts at the run's size with guidance 7.5 and Euler; nothing downloaded. `float_unet`: the float
    converted U-Net (sdgen/engine/openvino_unet.py's unet_predictor with quantize "none")."""
    import diffusers
    import torch

    from sdgen.engine.denoise import Conditioning, denoise
    from sdgen.engine.latents import initial_noise, set_timesteps
    from sdgen.engine.text import encode_prompt

    parts = runtime.parts
    if parts.unet.config.in_channels != 4:
        raise GenerationError("--quantize int8-hybrid calibrates 4-channel U-Nets; use --quantize int8 for an "
                              "inpainting model.")
    log.info("OpenVINO: running %d calibration prompts for int8-hybrid (once; cached).", len(CALIBRATION_PROMPTS))
    samples: list[tuple[Any, ...]] = []

    def recording(model_input: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        timestep = ov_timestep(t)
        samples.append(tuple(as_numpy(x) for x in (model_input, timestep, cond.encoder_hidden_states())))
        return float_unet(model_input, t, cond)

    encoder = text_encoder_of(parts)
    empty = encode_prompt("", parts.tokenizer, encoder, "cpu")
    for seed, prompt in enumerate(CALIBRATION_PROMPTS):
        scheduler = diffusers.EulerDiscreteScheduler.from_config(parts.scheduler_config)
        timesteps = set_timesteps(scheduler, CALIBRATION_STEPS, "cpu")
        generators = [torch.Generator("cpu").manual_seed(seed)]
        scale = parts.vae_scale_factor
        latents = initial_noise(generators, (4, size[1] // scale, size[0] // scale), scheduler, "cpu", torch.float32)
        cond = Conditioning(encode_prompt(prompt, parts.tokenizer, encoder, "cpu"), empty)
        denoise(recording, latents, timesteps=timesteps, scheduler=scheduler, conditioning=cond,
                guidance_scale=7.5, generators=generators)
    return samples
