"""Self-attention guidance (`--sag-scale S`, Hong et al. 2023): where the mid-block's self-attention looks
most (its map, averaged over heads, sums to more than 1 for a token), the predicted clean latents are blurred
and noised again to the step's level; the U-Net's prediction for those degraded latents is what the step is
pushed away from: noise += S (uncond - degraded) with guidance (the unconditional half's map and prediction),
S (cond - degraded) without. As diffusers' StableDiffusionSAGPipeline does it (Gaussian blur 9x9, sigma 1;
x0 and the re-noising from the scheduler's alphas_cumprod and add_noise); tested against it in
tests/test_guidance.py. Cost: one more U-Net pass on B images a step.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sdgen.config.schedulers import AUTOMATIC, SCHEDULERS
from sdgen.engine.denoise import Guide, Guided, NoisePredictor
from sdgen.engine.plugins.attention import check_scale, extra_pass, processors, unconditional
from sdgen.engine.plugins.base import Plugin, Run, plain_unet, uncompiled
from sdgen.errors import NAME, InvalidRequestError

if TYPE_CHECKING:  # pragma: no cover
    import torch

MAX_SCALE = 10.0
BLUR_SIZE, BLUR_SIGMA, THRESHOLD = 9, 1.0, 1.0  # diffusers' (Forge's defaults: sigma 2, threshold 1)
# The schedulers diffusers' SAG pipeline takes: x0 and the re-noising come from alphas_cumprod, which holds for
# schedulers that work on x_t itself (not k-diffusion's sigma-scaled latents: Euler, Heun, LMS, DPM2 ...)
SCHEDULER_CLASSES = frozenset({
    "DDIMScheduler", "PNDMScheduler", "DDPMScheduler", "DEISMultistepScheduler", "UniPCMultistepScheduler",
    "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler",
})


class AttentionMapKeeper:
    """An attention processor that computes attention as a plain softmax(q k^T / sqrt(d)) v and keeps the map."""

    def __init__(self) -> None:
        self.probs: torch.Tensor | None = None  # (N * heads, tokens, tokens)

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        import torch

        batch, tokens, _ = hidden_states.shape
        mask = attn.prepare_attention_mask(attention_mask, tokens, batch)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        query, key, value = (attn.head_to_batch_dim(x) for x in (attn.to_q(hidden_states), attn.to_k(context),
                                                                 attn.to_v(context)))
        self.probs = attn.get_attention_scores(query, key, mask)
        out = attn.batch_to_head_dim(torch.bmm(self.probs, value))
        return attn.to_out[1](attn.to_out[0](out))


def gaussian_blur(images: torch.Tensor, size: int = BLUR_SIZE, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Each channel blurred by a size x size Gaussian kernel, the edges reflected."""
    import torch

    offsets = torch.linspace(-(size - 1) / 2, (size - 1) / 2, steps=size)
    weights = torch.exp(-0.5 * (offsets / sigma) ** 2)
    weights = (weights / weights.sum()).to(device=images.device, dtype=images.dtype)
    channels = images.shape[1]
    kernel = (weights[:, None] * weights[None, :]).expand(channels, 1, size, size)
    padded = torch.nn.functional.pad(images, [size // 2] * 4, mode="reflect")
    return torch.nn.functional.conv2d(padded, kernel, groups=channels)


def _alpha_bar(scheduler: Any, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return scheduler.alphas_cumprod[int(t)].to(device=like.device, dtype=like.dtype)


def clean_and_noise(scheduler: Any, latents: torch.Tensor, output: torch.Tensor, t: torch.Tensor) -> tuple:
    """(x0, eps) from x_t and the model's output, DDIM's way (epsilon or v-prediction models)."""
    alpha_bar = _alpha_bar(scheduler, t, latents)
    if scheduler.config.get("prediction_type") == "v_prediction":
        return alpha_bar.sqrt() * latents - (1 - alpha_bar).sqrt() * output, \
            (1 - alpha_bar).sqrt() * latents + alpha_bar.sqrt() * output
    return (latents - (1 - alpha_bar).sqrt() * output) / alpha_bar.sqrt(), output


def degraded_latents(step: Guided, output: torch.Tensor, probs: torch.Tensor, heads: int, map_size) -> torch.Tensor:
    """x0 blurred where the attention map is strong, noised again to the step's timestep."""
    import torch

    clean, eps = clean_and_noise(step.scheduler, step.latents, output, step.timestep)
    batch, channels, height, width = clean.shape
    strong = probs.reshape(batch, heads, *probs.shape[1:]).mean(1).sum(1) > THRESHOLD  # (B, tokens)
    mask = strong.reshape(batch, 1, *map_size).to(probs.dtype).expand(batch, channels, *map_size)
    mask = torch.nn.functional.interpolate(mask, (height, width))  # nearest
    blurred = gaussian_blur(clean) * mask + clean * (1 - mask)
    return step.scheduler.add_noise(blurred, eps, step.timestep[None])


@contextmanager
def _in_run(run: Run) -> Iterator[Guide | None]:
    scale = run.request.sag_scale
    if not scale:
        yield None
        return
    unet = plain_unet(run.parts.unet)
    attention = unet.mid_block.attentions[0]
    layer = attention.transformer_blocks[0].attn1
    keeper = AttentionMapKeeper()
    map_size: list = []

    def keep_size(module, args, output):
        map_size[:] = [output[0].shape[-2:]]

    def guide(step: Guided) -> torch.Tensor:
        assert keeper.probs is not None and map_size
        probs, cond = keeper.probs, step.conditioning
        if step.noise_uncond is not None:  # the unconditional half: its map, its prediction
            output, cond = step.noise_uncond, unconditional(cond)
            probs = probs[: probs.shape[0] // 2]
        else:
            output = step.noise_text
        degraded = degraded_latents(step, output, probs, layer.heads, map_size[0])
        return step.noise + scale * (output - extra_pass(unet, degraded, step.timestep, cond))

    hook = attention.register_forward_hook(keep_size)
    try:
        with processors([layer], keeper):
            yield guide
    finally:
        hook.remove()


def _check(request: Any) -> None:
    check_scale("sag_scale", request.sag_scale, MAX_SCALE, request.cache_interval, "0.75")
    diffusers = request.scheduler in SCHEDULERS and request.schedule == AUTOMATIC  # else an sdgen port
    class_name = SCHEDULERS[request.scheduler].class_name if diffusers else None
    if request.sag_scale and class_name not in SCHEDULER_CLASSES:  # sdgen's own samplers (k-diffusion ports): no
        usable = sorted(s.name for s in SCHEDULERS.values() if s.class_name in SCHEDULER_CLASSES)
        raise InvalidRequestError(
            f"Invalid {NAME} {request.sag_scale!r} with --scheduler {request.scheduler}: self-attention guidance "
            f"works on x_t as DDIM does (diffusers' rule); choose one of {', '.join(usable)}.",
            "sag_scale",
        )


def _a1111_fields(request: Any) -> list[tuple[str, object]]:
    """Forge's SelfAttentionGuidance Integrated fields."""
    if not request.sag_scale:
        return []
    return [("sag_enabled", "True"), ("sag_scale", request.sag_scale), ("sag_blur_sigma", BLUR_SIGMA),
            ("sag_threshold", THRESHOLD)]


def _from_a1111(fields: Mapping[str, str]) -> dict[str, Any]:
    if fields.get("sag_enabled", "").lower() != "true":
        return {}
    _same_blur(fields.get("sag_blur_sigma", BLUR_SIGMA), fields.get("sag_threshold", THRESHOLD))
    return {"sag_scale": float(fields.get("sag_scale", "0.5"))}


def _same_blur(sigma: object, threshold: object) -> None:
    try:
        same = float(sigma) == BLUR_SIGMA and float(threshold) == THRESHOLD  # type: ignore[arg-type]
    except (TypeError, ValueError):
        same = False
    if not same:
        raise InvalidRequestError(
            f"Invalid {NAME} blur sigma {sigma} / threshold {threshold}: sdgen's SAG blurs as diffusers does "
            f"(sigma {BLUR_SIGMA:g}, threshold {THRESHOLD:g}); send those.", "sag_scale"
        )


def _from_script(args: Sequence[Any]) -> dict[str, Any]:
    """Forge's args: [enabled, scale, blur sigma, threshold]."""
    if not args or args[0] is not True:
        return {"sag_scale": 0.0}
    _same_blur(*(list(args[2:4]) + [BLUR_SIGMA, THRESHOLD][len(args[2:4]):]))
    return {"sag_scale": args[1] if len(args) > 1 else 0.75}


def _wrap(predictor: NoisePredictor, run: Run) -> NoisePredictor:
    return uncompiled(predictor, run, "--sag-scale") if run.request.sag_scale else predictor


PLUGIN = Plugin(
    "sag", options=("sag_scale",), wrap_predictor=_wrap, in_run=_in_run, check=_check,
    a1111_fields=_a1111_fields, from_a1111=_from_a1111,
    scripts=("selfattentionguidance", "self attention guidance"), from_script=_from_script,
)
