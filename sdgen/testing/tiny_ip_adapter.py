"""A tiny random IP-Adapter for the tiny model, seeded: an image encoder (CLIPVisionModelWithProjection whose
projection has the tiny U-Net's cross-attention width, as SD 1.5's ViT-H has 1024 = SD 1.5's) and adapter files
in the layout of h94/IP-Adapter's (`models/ip-adapter_sd15.safetensors`, `models/ip-adapter-plus_sd15.safetensors`,
`models/image_encoder/`): keys `image_proj.*` (base: `proj`, `norm`; Plus: the Resampler's `latents`, `proj_in`,
`layers.N.0.*` attention, `layers.N.1.*` feed-forward, `proj_out`, `norm_out`) and `ip_adapter.K.to_k_ip/to_v_ip`,
K counting the U-Net's attention processors in order (the cross-attention ones are the odd K), as diffusers'
`_convert_ip_adapter_*_to_diffusers` read them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

IMAGE_SIZE = 32  # the tiny encoder's input size
VISION_WIDTH = 32  # its hidden size: what a Plus adapter's Resampler reads


def build_tiny_image_encoder(projection_dim: int, seed: int = 0) -> Any:
    """A tiny CLIPVisionModelWithProjection whose image embeddings are `projection_dim` wide."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    config = CLIPVisionConfig(
        hidden_size=VISION_WIDTH, intermediate_size=37, projection_dim=projection_dim, num_hidden_layers=3,
        num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=8,
    )
    return CLIPVisionModelWithProjection(config).eval()


def _cross_attention_keys(unet: Any, seed: int) -> dict[str, Any]:
    """`ip_adapter.K.to_k_ip/to_v_ip.weight` for each cross-attention processor of `unet` (K odd)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    widths = list(unet.config.block_out_channels)
    tensors = {}
    for key_id, name in enumerate(unet.attn_processors):
        if name.endswith("attn1.processor"):
            continue
        block = int(name.split(".")[1]) if not name.startswith("mid_block") else None
        width = widths[-1] if block is None else (widths[::-1] if name.startswith("up") else widths)[block]
        for part in ("to_k_ip", "to_v_ip"):
            shape = (width, unet.config.cross_attention_dim)
            tensors[f"ip_adapter.{key_id}.{part}.weight"] = torch.randn(shape, generator=generator) * 0.3
    return tensors


def _resampler_keys(cross_attention_dim: int, seed: int) -> dict[str, Any]:
    """A Plus adapter's Resampler (diffusers' IPAdapterPlusImageProjection, random) under the file's names."""
    import re

    import torch
    from diffusers.models.embeddings import IPAdapterPlusImageProjection

    torch.manual_seed(seed)
    resampler = IPAdapterPlusImageProjection(
        embed_dims=VISION_WIDTH, output_dims=cross_attention_dim, hidden_dims=32, heads=1, num_queries=4
    )
    state = resampler.state_dict()
    renames = {
        r"layers\.(\d)\.ln0": r"layers.\1.0.norm1", r"layers\.(\d)\.ln1": r"layers.\1.0.norm2",
        r"layers\.(\d)\.attn\.to_q": r"layers.\1.0.to_q", r"layers\.(\d)\.attn\.to_out\.0": r"layers.\1.0.to_out",
        r"layers\.(\d)\.ff\.0": r"layers.\1.1.0", r"layers\.(\d)\.ff\.1\.net\.0\.proj": r"layers.\1.1.1",
        r"layers\.(\d)\.ff\.1\.net\.2": r"layers.\1.1.3",
    }
    tensors = {}
    for key, tensor in state.items():
        if ".attn.to_k." in key or ".attn.to_v." in key:
            if ".attn.to_k." in key:  # the file keeps keys and values as one matrix
                value = state[key.replace(".to_k.", ".to_v.")]
                tensors["image_proj." + key.replace("attn.to_k", "0.to_kv")] = torch.cat([tensor, value])
            continue
        for pattern, name in renames.items():
            key = re.sub(pattern, name, key)
        tensors["image_proj." + key] = tensor
    return tensors


def tiny_ip_adapter_tensors(unet: Any, projection_dim: int, plus: bool = False, seed: int = 0) -> dict[str, Any]:
    """A tiny IP-Adapter's tensors in the file layout (base: 4 image tokens from the image embedding; Plus: 4
    tokens resampled from the encoder's penultimate hidden states)."""
    import torch

    cross = unet.config.cross_attention_dim
    generator = torch.Generator().manual_seed(seed + 100)
    if plus:
        tensors = _resampler_keys(cross, seed)
    else:
        tensors = {
            "image_proj.proj.weight": torch.randn((4 * cross, projection_dim), generator=generator) * 0.3,
            "image_proj.proj.bias": torch.randn(4 * cross, generator=generator) * 0.1,
            "image_proj.norm.weight": torch.ones(cross),
            "image_proj.norm.bias": torch.zeros(cross),
        }
    return {**tensors, **_cross_attention_keys(unet, seed)}


def save_tiny_ip_adapter_repo(unet: Any, root: str | Path, seed: int = 0) -> Path:
    """h94/IP-Adapter's layout in little: models/ip-adapter_sd15.safetensors, models/ip-adapter-plus_sd15.safetensors
    and models/image_encoder/ (for `unet`, the tiny model's); returns root."""
    from safetensors.torch import save_file

    unet = getattr(unet, "_orig_mod", unet)
    models = Path(root) / "models"
    models.mkdir(parents=True, exist_ok=True)
    projection_dim = unet.config.cross_attention_dim
    build_tiny_image_encoder(projection_dim, seed).save_pretrained(models / "image_encoder", safe_serialization=True)
    for plus, name in ((False, "ip-adapter_sd15.safetensors"), (True, "ip-adapter-plus_sd15.safetensors")):
        tensors = tiny_ip_adapter_tensors(unet, projection_dim, plus, seed)
        save_file({key: tensor.contiguous() for key, tensor in tensors.items()}, str(models / name))
    return Path(root)
