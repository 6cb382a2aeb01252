"""A1111's DDIM CFG++ (Chung et al., 2024: manifold-constrained classifier-free guidance), as a scheduler
the loop steps.

DDIM moves x_t to x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps. CFG++ takes x0 from the guided noise
but renoises along the *unconditional* noise, with the guidance scale divided by 12.5 (A1111 maps CFG
0..12.5 to 0..1). It runs on A1111's timesteps 1, 1 + 1000 // n, ... and, as A1111's timestep samplers do,
calls the U-Net n - 1 times, stopping at timestep 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sdgen.engine.samplers.stepper import SamplerOutput

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from sdgen.engine.denoise import Conditioning, NoisePredictor

GUIDANCE_MULTIPLIER = 1 / 12.5


class DDIMCFGPlusPlus:
    order = 1
    init_noise_sigma = 1.0
    guidance_multiplier = GUIDANCE_MULTIPLIER

    def __init__(self, model_config: dict[str, Any]) -> None:
        from diffusers import DDPMScheduler

        self.config = dict(model_config)
        self.alphas_cumprod = DDPMScheduler.from_config(model_config).alphas_cumprod
        self.noise_uncond: torch.Tensor | None = None

    def set_timesteps(self, num_inference_steps: int, device: str | None = None) -> None:
        import torch

        ladder = (torch.arange(0, 1000, 1000 // num_inference_steps) + 1).clamp(0, 999)
        self.ladder = ladder
        self.timesteps = ladder.flip(0)[:-1].to(device or "cpu")  # each call's t; the last lands on t = 1

    def start_at_step(self, step: int) -> torch.Tensor:
        self.timesteps = self.timesteps[step:]
        return self.timesteps

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        return sample

    def _alphas(self, timestep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        position = int((self.ladder == int(timestep)).nonzero()[0])
        return self.alphas_cumprod[int(self.ladder[position])], self.alphas_cumprod[int(self.ladder[position - 1])]

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        alpha = self.alphas_cumprod[int(timesteps.flatten()[0])].to(original.dtype)
        return alpha.sqrt() * original + (1 - alpha).sqrt() * noise

    def watch_predictor(self, predict_noise: NoisePredictor) -> NoisePredictor:
        """The loop's U-Net call, keeping the unconditional half of each guided prediction for step()."""

        def predict(model_input: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
            noise = predict_noise(model_input, t, cond)
            self.noise_uncond = noise.chunk(2)[0] if cond.guided else noise
            return noise

        return predict

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, **_: Any) -> SamplerOutput:
        alpha, alpha_prev = (a.to(sample.device, sample.dtype) for a in self._alphas(timestep))
        pred_x0 = (sample - (1 - alpha).sqrt() * model_output) / alpha.sqrt()
        uncond = model_output if self.noise_uncond is None else self.noise_uncond
        return SamplerOutput(alpha_prev.sqrt() * pred_x0 + (1 - alpha_prev).sqrt() * uncond, pred_x0)
