"""Tiny random stand-ins for the one-step models' layouts (about 1 MB each), saved as the real repos are:

- `build_tiny_sd2`: SD 2.x's architecture as stabilityai/sd-turbo publishes it: a U-Net with linear
  projections in its transformers and a head size per block (attention_head_dim as a list), OpenCLIP's text
  encoder saved as a CLIPTextModel with GELU and its tokenizer padding with "!", and an EulerDiscreteScheduler
  config with trailing timesteps.
- `build_tiny_sdxs`: IDKiro/sdxs-512-0.9's layout: a slimmer U-Net (one layer per block) and, in `vae/`, a
  tiny autoencoder (diffusers' AutoencoderTiny) in place of the KL VAE.

Built from fixed seeds, so every build has the same weights. Tests compare sdgen's loop on them with diffusers'
StableDiffusionPipeline.from_pretrained of the same folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from sdgen.testing.tiny_model import SD15_SCHEDULER_CONFIG, write_tiny_tokenizer

# stabilityai/sd-turbo's scheduler/scheduler_config.json, without the keys diffusers fills in itself.
SD_TURBO_SCHEDULER_CONFIG = {
    "_class_name": "EulerDiscreteScheduler",
    **SD15_SCHEDULER_CONFIG,
    "interpolation_type": "linear",
    "prediction_type": "epsilon",
    "timestep_spacing": "trailing",
    "use_karras_sigmas": False,
}


def _text_encoder(hidden_act: str):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        bos_token_id=0, eos_token_id=2, hidden_size=32, intermediate_size=37, layer_norm_eps=1e-05,
        num_attention_heads=4, num_hidden_layers=5, pad_token_id=1, vocab_size=1000, max_position_embeddings=77,
        hidden_act=hidden_act,
    ))


def _save(folder: Path, unet, vae, text_encoder, scheduler: dict, vae_class: str) -> Path:
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    text_encoder.save_pretrained(folder / "text_encoder")
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler, indent=2))
    write_tiny_tokenizer(folder / "tokenizer")
    index = {
        "_class_name": "StableDiffusionPipeline", "feature_extractor": [None, None], "safety_checker": [None, None],
        "requires_safety_checker": False, "scheduler": ["diffusers", scheduler["_class_name"]],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", vae_class],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder


def build_tiny_sd2(folder: str | Path) -> Path:
    """A tiny SD 2.x (SD-Turbo's layout) in `folder` (created)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(2)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32, attention_head_dim=(2, 4), use_linear_projection=True,
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=32,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2, sample_size=64,
    )
    folder = _save(Path(folder), unet, vae, _text_encoder("gelu"), SD_TURBO_SCHEDULER_CONFIG, "AutoencoderKL")
    for name in ("special_tokens_map.json", "tokenizer_config.json"):  # OpenCLIP's padding: "!", not the end token
        path = folder / "tokenizer" / name
        path.write_text(json.dumps(json.loads(path.read_text()) | {"pad_token": "!"}))
    return folder


def build_tiny_sdxs(folder: str | Path) -> Path:
    """A tiny SDXS (a slim U-Net, an AutoencoderTiny as vae/) in `folder` (created)."""
    import torch
    from diffusers import AutoencoderTiny, UNet2DConditionModel

    torch.manual_seed(3)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32,
    )
    vae = AutoencoderTiny(  # 2x scale, like the tiny KL VAE: 32x32 latents for 64x64 pixels
        encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1), latent_channels=4,
    )
    scheduler = {"_class_name": "DDPMScheduler", **SD15_SCHEDULER_CONFIG}
    return _save(Path(folder), unet, vae, _text_encoder("quick_gelu"), scheduler, "AutoencoderTiny")
