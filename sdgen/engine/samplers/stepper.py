"""A k-diffusion sampler as a scheduler the loop can step: one U-Net call per `step()`.

sdgen's loop (engine/denoise.py) calls `scale_model_input`, the U-Net, then `step` once per entry of
`timesteps`, as it does with diffusers' schedulers. `SamplerStepper` turns a step generator (euler.py,
dpmpp.py, ...) into that: each `step` turns the U-Net's noise prediction into the clean-latents estimate
at the current noise level (A1111's CompVisDenoiser: denoised = x - sigma * eps), sends it to the
generator, and returns the point of its next model call. Second-order samplers call the model twice a
step, so `timesteps` lists one entry per call, found by a dry run with zero latents (the levels a sampler
visits depend on the schedule only).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdgen.engine.samplers.euler import Noise, Steps
from sdgen.engine.samplers.sigmas import ModelSigmas, schedule_sigmas

if TYPE_CHECKING:  # pragma: no cover
    import torch

SamplerFn = Callable[..., Steps]


@dataclass
class SamplerOutput:
    prev_sample: torch.Tensor  # the point of the next model call (or the final latents)
    pred_original_sample: torch.Tensor  # this call's estimate of the clean latents


class SamplerStepper:
    """Scheduler-shaped driver of one k-diffusion sampler over one A1111 schedule type."""

    order = 1  # timesteps already list every model call

    def __init__(
        self, sampler: SamplerFn, schedule: str, model_config: dict[str, Any], discard_next_to_last: bool = False
    ) -> None:
        from diffusers import DDPMScheduler

        self.sampler, self.schedule, self.discard_next_to_last = sampler, schedule, discard_next_to_last
        self.config = dict(model_config)
        self.alphas_cumprod = DDPMScheduler.from_config(model_config).alphas_cumprod  # the model's own betas
        self.model = ModelSigmas(self.alphas_cumprod)
        self.v_prediction = self.config.get("prediction_type") == "v_prediction"

    def set_timesteps(self, num_inference_steps: int, device: str | None = None) -> None:
        self.device = device or "cpu"
        self.sigmas = schedule_sigmas(self.schedule, num_inference_steps, self.model, self.discard_next_to_last)
        self.start_at_step(0)

    def start_at_step(self, step: int) -> torch.Tensor:
        """Image-to-image: run the schedule from its `step`-th level; returns the timesteps to run."""
        self.sigmas = self.sigmas[step:]
        self.call_sigmas = self._dry_run()
        self.timesteps = self.model.sigma_to_t(self.call_sigmas).to(self.device)
        self.steps: Steps | None = None
        self.index = 0
        return self.timesteps

    def _dry_run(self) -> torch.Tensor:
        import torch

        zero = torch.zeros(1)
        steps = self.sampler(zero, self.sigmas, lambda sigma, sigma_next: zero)
        levels = []
        try:
            _, sigma = next(steps)
            while True:
                levels.append(sigma)
                _, sigma = steps.send((zero, zero))
        except StopIteration:
            pass
        return torch.stack([torch.as_tensor(level, dtype=torch.float32) for level in levels])

    @property
    def init_noise_sigma(self) -> float:
        return float(self.sigmas[0])

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        """The U-Net sees x / sqrt(sigma^2 + 1): the variance-preserving latents of its training."""
        return sample / (self._sigma() ** 2 + 1) ** 0.5

    def _sigma(self) -> torch.Tensor:
        return self.call_sigmas[self.index]

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x = x0 + sigma * noise at the level of `timesteps` (one of this run's)."""
        position = int((self.timesteps == timesteps.flatten()[0].to(self.timesteps.device)).nonzero()[0])
        return original + noise * self.call_sigmas[position].to(original.dtype)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        generator: list[torch.Generator] | None = None,
    ) -> SamplerOutput:
        sigma = self._sigma().to(sample.dtype)
        if self.v_prediction:  # CompVisVDenoiser's scalings
            denoised = sample / (sigma**2 + 1) - model_output * sigma / (sigma**2 + 1) ** 0.5
        else:
            denoised = sample - model_output * sigma
        if self.steps is None:
            self.steps = self.sampler(sample, self.sigmas.to(sample.device, sample.dtype), _noise(sample, generator))
            next(self.steps)
        self.index += 1
        try:
            latents, _ = self.steps.send((sample, denoised))
        except StopIteration as finished:
            latents = finished.value
        return SamplerOutput(latents, denoised)


def _noise(sample: torch.Tensor, generators: list[torch.Generator] | None) -> Noise:
    """Fresh noise from each image's own generator, drawn as diffusers' ancestral schedulers draw it."""
    from diffusers.utils.torch_utils import randn_tensor

    def draw(sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        return randn_tensor(sample.shape, generator=generators, device=sample.device, dtype=sample.dtype)

    return draw
