"""The denoising loop: predict the noise, guide it, let the scheduler step. Repeat.

A plain function over a model callable (k-diffusion style), so it can be tested with a fake model. Three
extension points let new inputs reach the U-Net and new guidance shape each step without changing the loop:

- the noise predictor gets one `Conditioning` per call and the loop passes it through untouched
  (k-diffusion's `extra_args`); a plug-in wraps the predictor to add inputs that depend on the step's
  latents (ControlNet's residuals) or to call the U-Net differently (DeepCache, inpainting's extra channels);
- `on_step_end` sees each step's result and may replace the latents or the conditioning of the next step,
  as diffusers' `callback_on_step_end` does (inpainting's blend, the guidance cut-off, prompt editing).
- a `guide` sees each step's predictions after classifier-free guidance combined them and returns the noise
  the scheduler gets (guidance rescale, perturbed- and self-attention guidance).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from diffusers import SchedulerMixin, UNet2DConditionModel

# The U-Net's keyword inputs besides encoder_hidden_states (UNet2DConditionModel.forward's names)
_EXTRA_INPUTS = (
    "timestep_cond",
    "added_cond_kwargs",
    "cross_attention_kwargs",
    "down_block_additional_residuals",
    "mid_block_additional_residual",
    "down_intrablock_additional_residuals",
)


@dataclass(frozen=True, eq=False)
class Conditioning:
    """Everything the U-Net is conditioned on besides x_t and t, as one value the loop hands on untouched.

    Classifier-free guidance is on when `negative_prompt_embeds` is given: a call then runs on the batch
    [unconditional, conditional] (2B), and the extra inputs are shaped for that batch, as diffusers builds
    them (ControlNet's residuals of the doubled latents, IP-Adapter's [negative, positive] image embeddings).
    Besides the U-Net's keyword inputs, `concat_channels` is added to the model input on the channel axis
    (LDM's c_concat: a 9-channel inpainting U-Net's mask and masked image).
    """

    prompt_embeds: torch.Tensor  # (B or 1, 77 k, D)
    negative_prompt_embeds: torch.Tensor | None = None  # (B or 1, 77 k, D); None: no guidance
    timestep_cond: torch.Tensor | None = None  # (N, C): LCM's guidance embedding
    added_cond_kwargs: Mapping[str, Any] | None = None  # e.g. {"image_embeds": [...]} (IP-Adapter)
    cross_attention_kwargs: Mapping[str, Any] | None = None  # handed to every attention processor
    down_block_additional_residuals: tuple[torch.Tensor, ...] | None = None  # ControlNet: one per skip
    mid_block_additional_residual: torch.Tensor | None = None  # ControlNet: (N, C, h', w')
    down_intrablock_additional_residuals: tuple[torch.Tensor, ...] | None = None  # T2I-Adapter
    concat_channels: torch.Tensor | None = None  # (N, C', h, w), after the latents' channels

    @property
    def guided(self) -> bool:
        return self.negative_prompt_embeds is not None

    def for_batch(self, batch: int) -> Conditioning:
        """The embeddings expanded to `batch` images: one prompt per image, or one for all."""
        negative = self.negative_prompt_embeds
        return dataclasses.replace(
            self,
            prompt_embeds=self.prompt_embeds.expand(batch, -1, -1),
            negative_prompt_embeds=None if negative is None else negative.expand(batch, -1, -1),
        )

    def encoder_hidden_states(self) -> torch.Tensor:
        """(2B, 77 k, D) [unconditional, conditional] when guiding, else (B, 77 k, D)."""
        import torch

        if self.negative_prompt_embeds is None:
            return self.prompt_embeds
        return torch.cat([self.negative_prompt_embeds, self.prompt_embeds])

    def unet_input(self, model_input: torch.Tensor) -> torch.Tensor:
        """What the U-Net itself takes: (N, 4 + C', h, w) with `concat_channels`, else the model input."""
        import torch

        if self.concat_channels is None:
            return model_input
        return torch.cat([model_input, self.concat_channels.to(model_input.dtype)], dim=1)

    def unet_kwargs(self) -> dict[str, Any]:
        """The U-Net's keyword arguments: the embeddings and every extra input that is set."""
        extra = {name: getattr(self, name) for name in _EXTRA_INPUTS if getattr(self, name) is not None}
        if "down_intrablock_additional_residuals" in extra:  # the U-Net pops from this list: a fresh one each call
            extra["down_intrablock_additional_residuals"] = list(extra["down_intrablock_additional_residuals"])
        return {"encoder_hidden_states": self.encoder_hidden_states(), **extra}

    def conditional(self) -> Conditioning:
        """Guidance off: the conditional half of everything (diffusers' SDCFGCutoffCallback keeps
        prompt_embeds[-1:], its SDXL one the last half of the added inputs too)."""
        if self.negative_prompt_embeds is None:
            return self
        batch = 2 * self.prompt_embeds.shape[0]
        halves = {name: _second_half(getattr(self, name), batch) for name in (*_EXTRA_INPUTS, "concat_channels")}
        return dataclasses.replace(self, negative_prompt_embeds=None, **halves)


def _second_half(value: Any, batch: int) -> Any:
    """The conditional half of a guided input: tensors of `batch` rows (also inside tuples, lists and dicts)."""
    if isinstance(value, Mapping):
        return {key: _second_half(item, batch) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_second_half(item, batch) for item in value)
    if getattr(value, "ndim", 0) and value.shape[0] == batch:
        return value[batch // 2 :]
    return value


class NoisePredictor(Protocol):
    """(model input (N, C, h, w), timestep, this call's conditioning) -> noise (N, 4, h, w); N = 2B when
    conditioning.guided."""

    def __call__(self, model_input: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor: ...


def unet_predictor(unet: UNet2DConditionModel) -> NoisePredictor:
    """The U-Net as a NoisePredictor: every input of the conditioning reaches it."""

    def predict_noise(model_input: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        return unet(cond.unet_input(model_input), t, **cond.unet_kwargs(), return_dict=False)[0]

    return predict_noise


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


@dataclass(frozen=True, eq=False)
class StepEnd:
    """What a step-end hook sees, and returns changed (dataclasses.replace) to steer the next step."""

    index: int  # 0-based position in `timesteps`
    total: int
    timestep: torch.Tensor
    latents: torch.Tensor  # x_{t-1} after this step: (B, 4, h, w)
    conditioning: Conditioning  # what the next step's U-Net call gets (already expanded to B)


StepEndHook = Callable[[StepEnd], "StepEnd | None"]  # None: nothing changed


@dataclass(frozen=True, eq=False)
class Guided:
    """What a guidance modifier sees of one step, after classifier-free guidance combined the predictions."""

    index: int
    timestep: torch.Tensor
    latents: torch.Tensor  # x_t, before the scheduler's input scaling: (B, 4, h, w)
    model_input: torch.Tensor  # what the U-Net got: scaled, (2B, ...) [uncond, cond] when guided
    conditioning: Conditioning  # this call's
    guidance_scale: float
    scheduler: SchedulerMixin
    noise: torch.Tensor  # the combined prediction so far (uncond + scale (cond - uncond), or the conditional one)
    noise_text: torch.Tensor  # the conditional prediction
    noise_uncond: torch.Tensor | None = None  # the unconditional prediction; None without guidance


Guide = Callable[[Guided], "torch.Tensor"]  # a guidance modifier: the step's new combined noise


def chain_step_end(*hooks: StepEndHook | None) -> StepEndHook | None:
    """Several hooks as one, in order: each sees what the one before returned."""
    present = [hook for hook in hooks if hook is not None]
    if len(present) <= 1:
        return present[0] if present else None

    def chained(step: StepEnd) -> StepEnd:
        for hook in present:
            step = hook(step) or step
        return step

    return chained


class StopDenoising(Exception):  # noqa: N818 (a signal to the loop, not an error)
    """A step callback raises this to end the loop after the step it saw: the loop returns the latents so far,
    which are decoded like finished ones (the server's Interrupt and Skip, as A1111 does)."""


def denoise(
    predict_noise: NoisePredictor,
    latents: torch.Tensor,
    *,
    timesteps: torch.Tensor,
    scheduler: SchedulerMixin,
    conditioning: Conditioning,
    guidance_scale: float,
    generators: list[torch.Generator] | None = None,
    on_step: StepCallback | None = None,
    on_step_end: StepEndHook | None = None,
    seeds: tuple[int, ...] = (),
    guide: Guide | None = None,
) -> torch.Tensor:
    """Run the reverse diffusion from `latents` (B, 4, h, w) over `timesteps`; return clean latents.

    Classifier-free guidance runs while the conditioning has negative embeddings: one U-Net call on the
    batch [unconditional, conditional], then noise = uncond + guidance_scale * (cond - uncond).
    `guide` may change the combined prediction (guidance modifiers: rescale, PAG, SAG); `on_step_end` may
    replace the latents and the conditioning after each step; `on_step` only watches.
    """
    import torch

    cond = conditioning.for_batch(latents.shape[0])
    step_kwargs = _step_kwargs(scheduler, generators)
    for index, t in enumerate(timesteps):
        # 1. the same latents twice when guiding: once for each half of the batch
        model_input = torch.cat([latents] * 2) if cond.guided else latents
        model_input = scheduler.scale_model_input(model_input, t)  # sigma schedulers divide by sqrt(sigma^2+1)
        # 2. predict the noise in the latents
        noise_pred = predict_noise(model_input, t, cond)
        # 3. classifier-free guidance: push away from the unconditional prediction
        noise_uncond, noise_text = noise_pred.chunk(2) if cond.guided else (None, noise_pred)
        if noise_uncond is not None:
            noise_pred = noise_uncond + guidance_scale * (noise_text - noise_uncond)
        if guide is not None:  # 3b. guidance modifiers (sdgen/engine/plugins) see every part of it
            guided = Guided(index, t, latents, model_input, cond, guidance_scale, scheduler, noise_pred, noise_text,
                            noise_uncond)
            noise_pred = guide(guided)
        # 4. one scheduler step: x_t -> x_{t-1}
        output = scheduler.step(noise_pred, t, latents, **step_kwargs)
        stepped = output.prev_sample
        # 5. the step-end hook may steer the next step: other latents, other conditioning
        if on_step_end is not None:
            changed = on_step_end(StepEnd(index, len(timesteps), t, stepped, cond))
            if changed is not None:
                stepped, cond = changed.latents, changed.conditioning
        # 6. watchers: progress, pictures of the process, the server's interrupt
        if on_step is not None:
            pred_x0 = predicted_clean_latents(scheduler, output, latents, noise_pred, t)
            try:
                on_step(StepInfo(index, len(timesteps), t, stepped, pred_x0, seeds))
            except StopDenoising:
                return stepped
        latents = stepped
    return latents


def _step_kwargs(scheduler: SchedulerMixin, generators: list[torch.Generator] | None) -> dict[str, Any]:
    """Ancestral and SDE schedulers draw fresh noise each step: give them each image's generator; a scheduler's
    own step options (TCD's eta: sdgen/engine/samplers' make_sampler) go with it."""
    accepts = inspect.signature(scheduler.step).parameters
    kwargs = dict(getattr(scheduler, "step_options", {}))
    return kwargs | ({"generator": generators} if "generator" in accepts and generators is not None else {})


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
