"""Diffusers weights written back in the original (LDM/A1111) key layout, key by key, so tests can prove
that sdgen reads the files people download. Only what tests need: the VAE (a standalone VAE file such as
vae-ft-mse-840000-ema-pruned.safetensors)."""

from __future__ import annotations

import re
from typing import Any


def vae_to_ldm(state: dict[str, Any], up_blocks: int) -> dict[str, Any]:
    """A diffusers AutoencoderKL state dict under LDM names: down/up/mid blocks renamed (the decoder's up
    blocks counted from the other end), attention projections as 1x1 convolutions."""
    out = {}
    for key, tensor in state.items():
        name = key
        name = re.sub(r"(encoder|decoder)\.conv_norm_out", r"\1.norm_out", name)
        name = re.sub(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)", r"encoder.down.\1.block.\2", name)
        name = re.sub(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0", r"encoder.down.\1.downsample", name)
        name = re.sub(
            r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)",
            lambda m: f"decoder.up.{up_blocks - 1 - int(m.group(1))}.block.{m.group(2)}", name,
        )
        name = re.sub(
            r"decoder\.up_blocks\.(\d+)\.upsamplers\.0",
            lambda m: f"decoder.up.{up_blocks - 1 - int(m.group(1))}.upsample", name,
        )
        name = re.sub(r"mid_block\.resnets\.(\d+)", lambda m: f"mid.block_{int(m.group(1)) + 1}", name)
        name = name.replace("conv_shortcut", "nin_shortcut")
        attention = re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(\w+)(?:\.0)?\.(weight|bias)", name)
        if attention:
            part = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}
            name = f"{attention.group(1)}.mid.attn_1.{part[attention.group(2)]}.{attention.group(3)}"
            if attention.group(2) != "group_norm" and tensor.ndim == 2:
                tensor = tensor[:, :, None, None]  # LDM's attention projections are 1x1 convolutions
        out[name] = tensor.contiguous()
    return out
