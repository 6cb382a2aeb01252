"""A tiny random T2I-Adapter for the tiny U-Net, seeded, saved as a diffusers folder.

Its features must meet the tiny U-Net where diffusers adds them (`down_intrablock_additional_residuals`): after
the first down block (a DownBlock2D, which halves the size: 32 channels at 1/4 of the image) and inside the
second (64 channels, no further halving). SD 1.5's adapters (`full_adapter`) halve the size at every block,
because SD 1.5's U-Net starts with a cross-attention block; the tiny U-Net starts as SDXL's does, so its adapter
is diffusers' `full_adapter_xl` (the same kind of module: pixel unshuffle, convolutions, one feature per block)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def build_tiny_t2i_adapter(seed: int = 0, in_channels: int = 3) -> Any:
    """A T2IAdapter whose two features fit the tiny U-Net (32 and 64 channels at 1/4 of the image)."""
    import torch
    from diffusers import T2IAdapter

    torch.manual_seed(seed)
    adapter = T2IAdapter(
        in_channels=in_channels, channels=[32, 64], num_res_blocks=1, downscale_factor=4,
        adapter_type="full_adapter_xl",
    )
    return adapter.eval()


def save_tiny_t2i_adapter(out_dir: str | Path, seed: int = 0, in_channels: int = 3) -> Path:
    """Write build_tiny_t2i_adapter(seed, in_channels) as a diffusers folder; returns it."""
    out_dir = Path(out_dir)
    build_tiny_t2i_adapter(seed, in_channels).save_pretrained(out_dir, safe_serialization=True)
    return out_dir
