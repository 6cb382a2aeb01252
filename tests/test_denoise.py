"""The loop itself, driven by a fake noise predictor and a recording scheduler."""

from __future__ import annotations

import torch

from sdgen.engine.denoise import Conditioning, StopDenoising, denoise, predicted_clean_latents


class RecordingScheduler:
    """Stands in for a diffusers scheduler: records what the loop hands it; x_{t-1} = x_t - noise."""

    order = 1

    def __init__(self) -> None:
        self.steps: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.scaled: list[torch.Tensor] = []

    def scale_model_input(self, sample: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.scaled.append(t)
        return sample * 0.5

    def step(self, noise: torch.Tensor, t: torch.Tensor, sample: torch.Tensor, generator=None):
        self.steps.append((noise.clone(), t))
        self.generator = generator

        class Output:
            prev_sample = sample - noise
            pred_original_sample = sample * 0

        return Output()


def fake_predictor(calls: list):
    """Unconditional half predicts 1, conditional half predicts 3, so guidance is easy to check."""

    def predict(model_input: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        embeds = cond.encoder_hidden_states()
        calls.append((model_input.shape[0], embeds[:, 0, 0].tolist(), float(model_input.abs().max())))
        half = model_input.shape[0] // 2
        out = torch.full_like(model_input, 3.0)
        if embeds.shape[0] == 2 * half and half and embeds[0, 0, 0] == -1:
            out[:half] = 1.0
        return out

    return predict


def test_guidance_runs_one_batched_call_and_combines_the_halves() -> None:
    calls: list = []
    scheduler = RecordingScheduler()
    latents = torch.ones(2, 4, 8, 8)
    prompt = torch.ones(1, 77, 32)
    negative = -torch.ones(1, 77, 32)
    generators = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)]
    result = denoise(
        fake_predictor(calls), latents, timesteps=torch.tensor([900, 500]), scheduler=scheduler,
        conditioning=Conditioning(prompt, negative), guidance_scale=7.5, generators=generators,
    )
    assert [c[0] for c in calls] == [4, 4], "one U-Net call per step on [uncond, cond]"
    assert calls[0][1] == [-1, -1, 1, 1], "unconditional embeddings first, as diffusers does"
    assert calls[0][2] == 0.5, "the scheduler's scale_model_input is applied before the U-Net"
    noise, t = scheduler.steps[0]
    assert torch.all(noise == 1 + 7.5 * (3 - 1))  # uncond + g * (cond - uncond)
    assert int(t) == 900
    assert scheduler.generator is generators, "each image's generator reaches the scheduler"
    assert torch.all(result == 1 - 2 * 16.0)


def test_no_guidance_runs_the_conditional_half_only() -> None:
    calls: list = []
    scheduler = RecordingScheduler()
    denoise(
        fake_predictor(calls),
        torch.zeros(3, 4, 8, 8),
        timesteps=torch.tensor([10]),
        scheduler=scheduler,
        conditioning=Conditioning(torch.ones(1, 77, 32)),
        guidance_scale=1.0,
    )
    assert [c[0] for c in calls] == [3]
    assert torch.all(scheduler.steps[0][0] == 3)


def test_callback_gets_index_timestep_latents_and_x0() -> None:
    seen = []
    denoise(
        fake_predictor([]),
        torch.ones(1, 4, 8, 8),
        timesteps=torch.tensor([30, 20, 10]),
        scheduler=RecordingScheduler(),
        conditioning=Conditioning(torch.ones(1, 77, 32)),
        guidance_scale=1.0,
        on_step=seen.append,
        seeds=(5,),
    )
    assert [(s.index, s.total, int(s.timestep)) for s in seen] == [(0, 3, 30), (1, 3, 20), (2, 3, 10)]
    assert torch.all(seen[-1].latents == 1 - 9) and torch.all(seen[-1].pred_x0 == 0)
    assert seen[0].seeds == (5,)


def test_a_callback_can_end_the_loop_early_with_the_latents_so_far() -> None:
    seen = []

    def stop_after_two(info) -> None:
        seen.append(info.index)
        if info.index == 1:
            raise StopDenoising

    scheduler = RecordingScheduler()
    result = denoise(
        fake_predictor([]), torch.ones(1, 4, 8, 8), timesteps=torch.tensor([30, 20, 10, 5]), scheduler=scheduler,
        conditioning=Conditioning(torch.ones(1, 77, 32)), guidance_scale=1.0, on_step=stop_after_two,
    )
    assert seen == [0, 1] and len(scheduler.steps) == 2
    assert torch.all(result == 1 - 2 * 3)  # two steps of x - 3


def test_x0_from_the_vp_formula_when_the_scheduler_reports_none() -> None:
    from diffusers import DPMSolverMultistepScheduler

    scheduler = DPMSolverMultistepScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    x0 = torch.randn(1, 4, 8, 8)
    eps = torch.randn(1, 4, 8, 8)
    a = scheduler.alphas_cumprod[700]
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps  # forward diffusion to t = 700

    class Output:
        prev_sample = x_t

    assert torch.allclose(predicted_clean_latents(scheduler, Output(), x_t, eps, torch.tensor(700)), x0, atol=1e-5)


def test_a_step_end_hook_replaces_the_latents_and_conditioning_of_the_next_step() -> None:
    import dataclasses

    calls: list = []
    scheduler = RecordingScheduler()
    seen = []

    def drop_guidance_and_reset(step):  # after step 0: guidance off, latents back to 10
        if step.index == 0:
            latents = torch.full_like(step.latents, 10.0)
            return dataclasses.replace(step, latents=latents, conditioning=step.conditioning.conditional())
        return None

    result = denoise(
        fake_predictor(calls), torch.ones(2, 4, 8, 8), timesteps=torch.tensor([30, 20, 10]), scheduler=scheduler,
        conditioning=Conditioning(torch.ones(1, 77, 32), -torch.ones(1, 77, 32)), guidance_scale=2.0,
        on_step=seen.append, on_step_end=drop_guidance_and_reset,
    )
    assert [c[0] for c in calls] == [4, 2, 2], "a guided call, then the conditional half only"
    assert calls[1][1] == [1, 1] and calls[1][2] == 5.0, "the next call sees the hook's conditioning and latents"
    assert torch.all(seen[0].latents == 10), "the watchers see what the hook returned"
    assert torch.all(result == 10 - 2 * 3)
