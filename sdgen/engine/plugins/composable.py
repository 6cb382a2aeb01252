"""Composable diffusion (`a cat :1.2 AND a dog :0.8`), A1111's way: one U-Net call, many parts.

A1111 (modules/sd_samplers_cfg_denoiser.py, combine_denoised) predicts every part of every image and the
unconditional one in one batch and combines them as uncond + sum_k w_k * scale * (cond_k - uncond). The
loop guides as uncond + scale * (text - uncond), so this wrapper hands it text = uncond + sum_k w_k *
(cond_k - uncond): the same prediction, with the loop and every wrapper outside this one seeing the usual
[unconditional, conditional] batch. It sits right above DeepCache (which must sit on the U-Net), below any
guidance modifier. It owns no option: a prompt's AND or part weight switches it on, through the
conditioning (`ComposableConditioning`, built in sdgen/engine/prompt_schedule.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdgen.engine.denoise import Conditioning, NoisePredictor
from sdgen.engine.plugins.base import Plugin, Run

if TYPE_CHECKING:  # pragma: no cover
    import torch

# The guided batch's per-row inputs besides the embeddings (Conditioning's field names)
_ROW_INPUTS = (
    "timestep_cond",
    "added_cond_kwargs",
    "down_block_additional_residuals",
    "mid_block_additional_residual",
    "down_intrablock_additional_residuals",
    "concat_channels",
)


@dataclass(frozen=True, eq=False)
class ComposableConditioning(Conditioning):
    """A conditioning whose images have weighted parts: `part_embeds` (P, 77 k, D) holds every part of every
    image, `part_images[k]` the image part k belongs to, `part_weights[k]` its weight. `prompt_embeds` keeps
    each image's first part (what a caller that ignores the parts sees)."""

    part_embeds: torch.Tensor | None = None
    part_images: tuple[int, ...] = ()
    part_weights: tuple[float, ...] = ()


def combined_predictor(inner: NoisePredictor) -> NoisePredictor:
    """`inner` on [unconditional (B), every part (P)] in one call, returned as the guided batch
    [unconditional, uncond + sum_k w_k (part_k - uncond)] (2B) the loop expects."""

    def predict_noise(model_input: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        if not isinstance(cond, ComposableConditioning) or cond.part_embeds is None or not cond.guided:
            return inner(model_input, t, cond)
        assert cond.negative_prompt_embeds is not None
        batch = cond.negative_prompt_embeds.shape[0]
        rows = [*range(batch), *(batch + image for image in cond.part_images)]
        selected = {name: _rows(getattr(cond, name), rows, 2 * batch) for name in _ROW_INPUTS}
        call = Conditioning(
            cond.part_embeds,
            cond.negative_prompt_embeds,
            cross_attention_kwargs=cond.cross_attention_kwargs,
            **selected,
        )
        noise = inner(model_input[rows], t, call)
        uncond, parts = noise[:batch], noise[batch:]
        text = uncond.clone()
        for part, (image, weight) in enumerate(zip(cond.part_images, cond.part_weights, strict=True)):
            text[image] += weight * (parts[part] - uncond[image])
        return _joined(uncond, text)

    return predict_noise


def _joined(uncond: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.cat([uncond, text])


def _rows(value: Any, rows: list[int], batch: int) -> Any:
    """The rows of a guided input (tensors of `batch` rows, also inside tuples, lists and dicts) for the
    parts' batch; anything else as it is."""
    if isinstance(value, Mapping):
        return {key: _rows(item, rows, batch) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_rows(item, rows, batch) for item in value)
    if getattr(value, "ndim", 0) and value.shape[0] == batch:
        return value[rows]
    return value


def with_parts(
    cond: Conditioning, parts: torch.Tensor, images: tuple[int, ...], weights: tuple[float, ...]
) -> Conditioning:
    """`cond` (plain or composable) carrying these parts."""
    fields = {field.name: getattr(cond, field.name) for field in dataclasses.fields(Conditioning)}
    return ComposableConditioning(**fields, part_embeds=parts, part_images=images, part_weights=weights)


def _wrap(predictor: NoisePredictor, run: Run) -> NoisePredictor:
    return combined_predictor(predictor)


PLUGIN = Plugin("composable", options=(), wrap_predictor=_wrap)
