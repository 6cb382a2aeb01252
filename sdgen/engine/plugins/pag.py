"""Perturbed-attention guidance (`--pag-scale S`, Ahn et al. 2024): a second prediction from the U-Net with
the self-attention map of its mid-block replaced by the identity (each token attends to itself only, so the
layer passes on its values), and the prediction pushed away from it:
noise = uncond + g (cond - uncond) + S (cond - perturbed); without guidance, cond + S (cond - perturbed).
Those are the layers and the formula of diffusers' StableDiffusionPAGPipeline (pag_applied_layers=["mid"],
no adaptive scale); tested against it in tests/test_guidance.py. Cost: one more U-Net pass on B images a step
(diffusers runs it in the same call, 3B instead of 2B).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sdgen.engine.denoise import Guide, Guided
from sdgen.engine.plugins.attention import check_scale, extra_pass, processors, self_attention_layers
from sdgen.engine.plugins.base import Plugin, Run, plain_unet

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from sdgen.engine.request import GenerationRequest

LAYERS = "mid"  # diffusers' default pag_applied_layers
MAX_SCALE = 100.0  # Forge's slider


class IdentityAttention:
    """An attention processor whose attention map is the identity: the output is the layer's values."""

    def __call__(self, attn: Any, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args: Any, **kwargs: Any) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        image = hidden_states.ndim == 4
        if image:
            batch, channels, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        hidden_states = attn.to_out[1](attn.to_out[0](attn.to_v(hidden_states)))  # linear, then dropout
        if image:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@contextmanager
def _in_run(run: Run) -> Iterator[Guide | None]:
    scale = run.request.pag_scale
    if not scale:
        yield None
        return
    unet = plain_unet(run.parts.unet)
    layers = self_attention_layers(unet, LAYERS)
    identity = IdentityAttention()

    def guide(step: Guided) -> torch.Tensor:
        cond = step.conditioning
        batch = step.noise_text.shape[0]
        sample = step.model_input[-batch:]  # the conditional half
        with processors(layers, identity):
            perturbed = extra_pass(unet, sample, step.timestep, cond.conditional())
        return step.noise + scale * (step.noise_text - perturbed)

    yield guide


def _check(request: GenerationRequest) -> None:
    check_scale("pag_scale", request.pag_scale, MAX_SCALE, request.cache_interval, "3")


def _a1111_fields(request: GenerationRequest) -> list[tuple[str, object]]:
    """Forge's Perturbed Attention Guidance Integrated fields."""
    if not request.pag_scale:
        return []
    return [("PerturbedAttentionGuidance_enabled", "True"), ("PerturbedAttentionGuidance_scale", request.pag_scale)]


def _from_a1111(fields: Mapping[str, str]) -> dict[str, Any]:
    if fields.get("PerturbedAttentionGuidance_enabled", "").lower() != "true":
        return {}
    return {"pag_scale": float(fields.get("PerturbedAttentionGuidance_scale", "3"))}


def _from_script(args: Sequence[Any]) -> dict[str, Any]:
    """Forge's args: [enabled, scale, ...]."""
    return {"pag_scale": args[1] if len(args) > 1 and args[0] is True else 0.0}


PLUGIN = Plugin(
    "pag", options=("pag_scale",), in_run=_in_run, check=_check, a1111_fields=_a1111_fields, from_a1111=_from_a1111,
    scripts=("perturbed attention guidance",), from_script=_from_script,
)
