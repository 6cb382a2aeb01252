"""What the attention-based guidance modifiers (pag.py, sag.py) share: finding self-attention layers,
swapping their processors for a while, and an extra U-Net pass outside the run's predictor chain."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sdgen.engine.denoise import Conditioning
from sdgen.errors import NAME, InvalidRequestError

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from diffusers import UNet2DConditionModel


def self_attention_layers(unet: UNet2DConditionModel, layer: str) -> list[Any]:
    """The self-attention modules whose name `layer` matches (re.search), as diffusers' PAGMixin picks them:
    "mid" is the mid-block's attn1."""
    from diffusers.models.attention_processor import Attention

    found = [
        module for name, module in unet.named_modules()
        if isinstance(module, Attention) and not module.is_cross_attention and re.search(layer, name)
    ]
    if not found:
        raise ValueError(f"no self-attention layer of the U-Net matches {layer!r}")
    return found


@contextmanager
def processors(modules: list[Any], processor: Any) -> Iterator[None]:
    """`processor` on each module for a while, then each module's own again (the model is left unchanged)."""
    before = [module.processor for module in modules]
    for module in modules:
        module.processor = processor
    try:
        yield
    finally:
        for module, original in zip(modules, before, strict=True):
            module.processor = original


def extra_pass(unet: UNet2DConditionModel, sample: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
    """One more U-Net call (unguided `cond`), past the run's predictor wrappers: DeepCache counts calls."""
    return unet(cond.unet_input(sample), t, **cond.unet_kwargs(), return_dict=False)[0]


def unconditional(cond: Conditioning) -> Conditioning:
    """The unconditional half of a guided conditioning, unguided: the negative embeddings, and the extra
    inputs' halves (both halves are the same for SD 1.x's: the inpainting channels)."""
    import dataclasses

    assert cond.negative_prompt_embeds is not None
    return dataclasses.replace(cond.conditional(), prompt_embeds=cond.negative_prompt_embeds)


def check_scale(key: str, value: object, high: float, cache_interval: int, typical: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
        raise InvalidRequestError(f"Invalid {NAME} {value!r}: from 0 (off) to {high:g} ({typical} is typical).", key)
    if value and cache_interval > 1:
        raise InvalidRequestError(
            f"Invalid {NAME} {value!r} with --cache-interval {cache_interval}: DeepCache skips the mid-block this "
            "guidance reads; use one of them.",
            key,
        )
