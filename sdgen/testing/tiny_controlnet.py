"""A tiny random ControlNet of the tiny U-Net (diffusers' `ControlNetModel.from_unet`), seeded. Its conditioning
embedding downsamples 2x, as the tiny VAE does, and its zero convolutions are made random so that its
residuals change the picture (a fresh ControlNet's are zero)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def build_tiny_controlnet(unet: Any, seed: int = 0) -> Any:
    """A ControlNetModel copied from `unet` (the tiny model's), with random zero convolutions."""
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    unet = getattr(unet, "_orig_mod", unet)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32))
    with torch.no_grad():
        for block in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]:
            for parameter in block.parameters():
                parameter.normal_(0, 0.1)
    return controlnet.eval()


def save_tiny_controlnet(unet: Any, out_dir: str | Path, seed: int = 0) -> Path:
    """Write build_tiny_controlnet(unet, seed) as a diffusers folder; returns it."""
    out_dir = Path(out_dir)
    build_tiny_controlnet(unet, seed).save_pretrained(out_dir, safe_serialization=True)
    return out_dir
