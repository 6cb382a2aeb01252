"""The denoising loop: predict the noise, guide it, let the scheduler step. Repeat.

A plain function over a model callable (k-diffusion style), so it can be tested with a fake model.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from diffusers import SchedulerMixin

# (latent_model_input (N, 4, h, w), timestep, encoder_hidden_states (N, 77, D)) -> noise (N, 4, h, w)
NoisePredictor = Callable[["torch.Tensor", "torch.Tensor", "torch.Tensor"], "torch.Tensor"]


@dataclass(frozen=True)
class StepInfo:
    """What the per-step callback sees: enough for progress bars and pictures of the process."""

    index: int  # 0-based position in `timesteps`
    total: int  # len(timesteps): second-order schedulers call the U-Net about twice per step
    timestep: torch.Tensor
    latents: torch.Tensor  # x_{t-1} after this step: (B, 4, h, w)
    pred_x0: torch.Tensor  # the model's current guess of the clean latents: (B, 4, h, w)
    seeds: tuple[int, ...] = ()  # the images in this batch


StepCallback = Callable[[StepInfo], None]


class StopDenoising(Exception):  # noqa: N818 (a signal to the loop, not an error)
    """A step callback raises this to end the loop after the step it saw: the loop returns the latents so far,
    which are decoded like finished ones (the server's Interrupt and Skip, as A1111 does)."""


def denoise(
    predict_noise: NoisePredictor,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    scheduler: SchedulerMixin,
    prompt_embeds: torch.Tensor,
    negative_prompt_embeds: torch.Tensor | None,
    guidance_scale: float,
    generators: list[torch.Generator] | None = None,
    on_step: StepCallback | None = None,
    seeds: tuple[int, ...] = (),
    after_step: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    guided_steps: int | None = None,
) -> torch.Tensor:
    """Run the reverse diffusion from `latents` (B, 4, h, w) over `timesteps`; return clean latents.

    Classifier-free guidance runs when `negative_prompt_embeds` is given: one U-Net call on the batch
    [unconditional, conditional], then noise = uncond + guidance_scale * (cond - uncond); with
    `guided_steps` only for that many first steps, the rest on the conditional half alone (--cfg-end).
    `after_step` may change each step's result (inpainting puts the known region back).
    """
    import torch

    batch = latents.shape[0]
    conditional = prompt_embeds.expand(batch, -1, -1)  # (B, 77, D): one prompt per image, or one for all
    guided = None  # (2B, 77, D): [unconditional, conditional]
    if negative_prompt_embeds is not None:
        guided = torch.cat([negative_prompt_embeds.expand(batch, -1, -1), conditional])
    step_kwargs = _step_kwargs(scheduler, generators)

    for index, t in enumerate(timesteps):
        do_guidance = guided is not None and (guided_steps is None or index < guided_steps)
        embeds = guided if do_guidance else conditional
        # 1. the same latents twice when guiding: once for each half of the batch
        model_input = torch.cat([latents] * 2) if do_guidance else latents
        model_input = scheduler.scale_model_input(model_input, t)  # sigma schedulers divide by sqrt(sigma^2+1)
        # 2. predict the noise in the latents
        noise_pred = predict_noise(model_input, t, embeds)
        # 3. classifier-free guidance: push away from the unconditional prediction
        if do_guidance:
            noise_uncond, noise_text = noise_pred.chunk(2)
            noise_pred = noise_uncond + guidance_scale * (noise_text - noise_uncond)
        # 4. one scheduler step: x_t -> x_{t-1}
        output = scheduler.step(noise_pred, t, latents, **step_kwargs)
        stepped = output.prev_sample if after_step is None else after_step(index, output.prev_sample)
        if on_step is not None:
            pred_x0 = predicted_clean_latents(scheduler, output, latents, noise_pred, t)
            try:
                on_step(StepInfo(index, len(timesteps), t, stepped, pred_x0, seeds))
            except StopDenoising:
                return stepped
        latents = stepped
    return latents


def _step_kwargs(scheduler: SchedulerMixin, generators: list[torch.Generator] | None) -> dict[str, Any]:
    """Ancestral and SDE schedulers draw fresh noise each step: give them each image's generator."""
    accepts = inspect.signature(scheduler.step).parameters
    return {"generator": generators} if "generator" in accepts and generators is not None else {}


def predicted_clean_latents(
    scheduler: SchedulerMixin, output: Any, latents: torch.Tensor, noise_pred: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """x0: the scheduler's own estimate where it reports one, else x0 = (x_t - sqrt(1-a_t) eps) / sqrt(a_t)
    (or sqrt(a_t) x_t - sqrt(1-a_t) v for v-prediction models).

    Only PNDM, DPM-Solver and UniPC report none; all three work in the VP parameterization with integer
    timesteps, where that formula holds.
    """
    for name in ("pred_original_sample", "denoised"):
        value = getattr(output, name, None)
        if value is not None:
            return value
    alpha_bar = scheduler.alphas_cumprod[int(t)].to(device=latents.device, dtype=latents.dtype)
    if scheduler.config.get("prediction_type") == "v_prediction":  # SD 2.x 768-v: v = sqrt(a) eps - sqrt(1-a) x0
        return alpha_bar.sqrt() * latents - (1 - alpha_bar).sqrt() * noise_pred
    return (latents - (1 - alpha_bar).sqrt() * noise_pred) / alpha_bar.sqrt()
