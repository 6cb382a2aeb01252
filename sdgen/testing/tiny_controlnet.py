"""A tiny random ControlNet of the tiny U-Net (diffusers' `ControlNetModel.from_unet`), seeded. Its conditioning
embedding downsamples 2x, as the tiny VAE does, and its zero convolutions (the conditioning embedding's last
one among them) are made random so that its residuals, and the control image, change the picture (a fresh
ControlNet's are zero)."""

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
        # the conditioning embedding's last conv is a zero convolution too: left zero, the image changes nothing
        for parameter in controlnet.controlnet_cond_embedding.conv_out.parameters():
            parameter.normal_(0, 1.0)
    return controlnet.eval()


def save_tiny_controlnet(unet: Any, out_dir: str | Path, seed: int = 0) -> Path:
    """Write build_tiny_controlnet(unet, seed) as a diffusers folder; returns it."""
    out_dir = Path(out_dir)
    build_tiny_controlnet(unet, seed).save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def controlnet_to_ldm(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """A diffusers ControlNetModel state dict in A1111's single-file layout (`control_model.` prefix): the
    encoder copied from the U-Net under the U-Net's LDM names, zero_convs.N.0, middle_block_out.0, and the
    control image's encoder as input_hint_block.K (its last convolution at 14, where SD 1.5's is and diffusers
    reads it)."""
    import re

    from sdgen.testing.ldm import unet_to_ldm

    out, encoder = {}, {}
    for key, tensor in state.items():
        name = None
        if m := re.match(r"controlnet_down_blocks\.(\d+)\.(.*)", key):
            name = f"zero_convs.{m[1]}.0.{m[2]}"
        elif key.startswith("controlnet_mid_block."):
            name = "middle_block_out.0." + key[len("controlnet_mid_block."):]
        elif key.startswith("controlnet_cond_embedding.conv_in."):
            name = "input_hint_block.0." + key.rsplit(".", 1)[1]
        elif key.startswith("controlnet_cond_embedding.conv_out."):
            name = "input_hint_block.14." + key.rsplit(".", 1)[1]
        elif m := re.match(r"controlnet_cond_embedding\.blocks\.(\d+)\.(.*)", key):
            name = f"input_hint_block.{2 * (int(m[1]) + 1)}.{m[2]}"
        if name is None:
            encoder[key] = tensor
        else:
            out["control_model." + name] = tensor.contiguous()
    for key, tensor in unet_to_ldm(encoder, {**config, "up_block_types": ()}).items():
        out["control_model." + key[len("model.diffusion_model."):]] = tensor
    return out


def save_tiny_controlnet_file(unet: Any, out_file: str | Path, seed: int = 0) -> Path:
    """build_tiny_controlnet(unet, seed) as one .safetensors file in A1111's layout; returns it."""
    from safetensors.torch import save_file

    controlnet = build_tiny_controlnet(unet, seed)
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    save_file(controlnet_to_ldm(controlnet.state_dict(), dict(controlnet.config)), str(out_file))
    return out_file
