"""A tiny random Stable Diffusion for tests (about 8 MB; `sdgen models make-tiny DIR` writes it), saved as a
normal diffusers model folder.

Tests and `sdgen doctor` drive the real loading code and the real loop with it: same architecture family
as SD1.x (CLIP text encoder, conditional U-Net with cross-attention, KL VAE, SD1.5's scheduler config),
only narrower. Built from `torch.manual_seed(0)`, so every build has the same weights.
"""

from __future__ import annotations

import json
from pathlib import Path

# SD1.5's scheduler_config.json, as published with the model.
SD15_SCHEDULER_CONFIG = {
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible map from bytes to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def write_tiny_tokenizer(folder: Path) -> None:
    """A byte-level BPE vocabulary of ~520 tokens: every byte, alone and word-final, and a few merges."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(_bytes_to_unicode().values())
    merges = [("a", "n"), ("i", "n"), ("t", "h"), ("o", "n"), ("e", "r"), ("th", "e</w>")]
    vocab_list = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(dict.fromkeys(vocab_list))}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    # The files SD1.5's tokenizer/ folder holds, so from_pretrained reads them the same way.
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    config = {
        **special,
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "add_prefix_space": False,
        "errors": "replace",
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


def build_tiny_model(folder: str | Path, fp16_variant: bool = False, in_channels: int = 4) -> Path:
    """Write the tiny model to `folder` (created); with `fp16_variant`, also the `*.fp16.safetensors` files;
    `in_channels=9` makes an inpainting model (latents, mask, masked-image latents)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(folder)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        block_out_channels=[32, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=2,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=5,
            pad_token_id=1,
            vocab_size=1000,
            max_position_embeddings=77,
        )
    )

    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    text_encoder.save_pretrained(folder / "text_encoder")
    if fp16_variant:
        unet.half().save_pretrained(folder / "unet", variant="fp16")
        vae.half().save_pretrained(folder / "vae", variant="fp16")
        text_encoder.half().save_pretrained(folder / "text_encoder", variant="fp16")
    # Written as published (PNDMScheduler itself ignores clip_sample, but DDIM made from it reads it).
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    scheduler_config = {
        "_class_name": "PNDMScheduler",
        "_diffusers_version": "0.6.0",
        **SD15_SCHEDULER_CONFIG,
    }
    (folder / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler_config, indent=2))
    write_tiny_tokenizer(folder / "tokenizer")
    write_model_index(folder)
    return folder


def write_model_index(folder: Path) -> None:
    """model_index.json, so diffusers' StableDiffusionPipeline.from_pretrained can load the folder too."""
    model_index = {
        "_class_name": "StableDiffusionPipeline",
        "feature_extractor": [None, None],
        "safety_checker": [None, None],
        "requires_safety_checker": False,
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (folder / "model_index.json").write_text(json.dumps(model_index, indent=2))


def build_tiny_autoencoder(folder: str | Path) -> Path:
    """A tiny random AutoencoderTiny (TAESD's class) that decodes the tiny model's 4-channel latents at its
    2x scale (32x32 latents -> 64x64 pixels): the stand-in for madebyollin/taesd in tests."""
    import torch
    from diffusers import AutoencoderTiny

    folder = Path(folder)
    torch.manual_seed(1)
    AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
    ).save_pretrained(folder)
    return folder
