"""Diffusers weights written back in the original (LDM/A1111) key layout, key by key, so tests can prove
that sdgen reads the files people download: a whole SD1.x checkpoint (model.diffusion_model.*,
first_stage_model.*, cond_stage_model.transformer.*) or a standalone VAE file such as
vae-ft-mse-840000-ema-pruned.safetensors."""

from __future__ import annotations

import re
from pathlib import Path
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


_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1", "norm2": "out_layers.0",
           "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def _resnet(rest: str) -> str:
    layer, _, tail = rest.partition(".")
    return f"{_RESNET.get(layer, layer)}.{tail}"


def unet_to_ldm(state: dict[str, Any], config: dict[str, Any]) -> dict[str, Any]:
    """A diffusers UNet2DConditionModel state dict under LDM names (`model.diffusion_model.` prefix):
    input_blocks numbered through the down blocks (resnet .0, attention .1, downsampler .0.op), middle_block
    0-2, output_blocks through the up blocks (upsampler after the attention, if any)."""
    per_down = config["layers_per_block"]
    per_up = per_down + 1
    up_has_attention = ["CrossAttn" in kind for kind in config["up_block_types"]]
    out = {}
    for key, tensor in state.items():
        name = key
        fixed = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
                 "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
        for old, new in fixed.items():
            if name.startswith(old + "."):
                name = new + name[len(old):]
        if m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", name):
            block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
            where = f"input_blocks.{1 + block * (per_down + 1) + layer}"
            name = f"{where}.0.{_resnet(rest)}" if kind == "resnets" else f"{where}.1.{rest}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", name):
            name = f"input_blocks.{1 + int(m[1]) * (per_down + 1) + per_down}.0.op.{m[2]}"
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", name):
            name = f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.*)", name):
            name = f"middle_block.1.{m[1]}"
        elif m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.*)", name):
            block, kind, layer, rest = int(m[1]), m[2], int(m[3]), m[4]
            where = f"output_blocks.{block * per_up + layer}"
            name = f"{where}.0.{_resnet(rest)}" if kind == "resnets" else f"{where}.1.{rest}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.(.*)", name):
            block = int(m[1])
            name = f"output_blocks.{block * per_up + per_up - 1}.{2 if up_has_attention[block] else 1}.{m[2]}"
        out["model.diffusion_model." + name] = tensor.contiguous()
    return out


def text_encoder_to_ldm(state: dict[str, Any]) -> dict[str, Any]:
    """CLIP's weights under `cond_stage_model.transformer.text_model.` (transformers 5 drops `text_model.`)."""
    out = {}
    for key, tensor in state.items():
        name = key if key.startswith("text_model.") else "text_model." + key
        out["cond_stage_model.transformer." + name] = tensor.contiguous()
    return out


def model_to_ldm(folder: str | Path) -> dict[str, Any]:
    """A diffusers SD1.x model folder as one LDM/A1111 checkpoint's tensors."""
    import json

    from safetensors.torch import load_file

    folder = Path(folder)
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    unet = load_file(folder / "unet" / "diffusion_pytorch_model.safetensors")
    vae = load_file(folder / "vae" / "diffusion_pytorch_model.safetensors")
    text = load_file(folder / "text_encoder" / "model.safetensors")
    tensors = unet_to_ldm(unet, unet_config)
    tensors |= {"first_stage_model." + k: v for k, v in vae_to_ldm(vae, len(vae_config["block_out_channels"])).items()}
    tensors |= text_encoder_to_ldm(text)
    return tensors
