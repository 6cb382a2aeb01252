"""A tiny LoRA and tiny textual-inversion embeddings for the tiny model, written in the formats people
download: a diffusers LoRA (made with peft's own injection, as diffusers' training scripts make them), the same LoRA in
kohya/A1111's key layout, and embeddings as A1111 `.pt`, A1111 `.safetensors` and diffusers files.
Seeded, so every build has the same weights."""

from __future__ import annotations

import re
from pathlib import Path

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
RANK = ALPHA = 4  # alpha = rank: a diffusers file without adapter metadata reads the same scale


def build_tiny_lora(model_dir: str | Path, out_file: str | Path, seed: int = 0) -> dict:
    """Write a diffusers-format LoRA (U-Net and text encoder) for the tiny model; returns its tensors."""
    import torch
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig, inject_adapter_in_model
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    model_dir = Path(model_dir)
    unet = UNet2DConditionModel.from_pretrained(model_dir / "unet")
    text_encoder = CLIPTextModel.from_pretrained(model_dir / "text_encoder")
    torch.manual_seed(seed)
    # init_lora_weights=False: random A and B (trained LoRAs are not zero), so the effect shows.
    # peft's own injection, not transformers' add_adapter: that one refuses peft versions it was not built with.
    unet = inject_adapter_in_model(
        LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=UNET_TARGETS, init_lora_weights=False), unet
    )
    text_encoder = inject_adapter_in_model(
        LoraConfig(r=RANK, lora_alpha=ALPHA, target_modules=TEXT_TARGETS, init_lora_weights=False), text_encoder
    )
    tensors = {f"unet.{k}": v for k, v in get_peft_model_state_dict(unet).items()}
    tensors |= {f"text_encoder.{k}": v for k, v in get_peft_model_state_dict(text_encoder).items()}
    tensors = {key: value.contiguous() for key, value in tensors.items()}
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_file), metadata={"format": "pt"})
    return tensors


def to_kohya(tensors: dict, out_file: str | Path) -> Path:
    """The same LoRA in kohya's layout (what A1111 users download): lora_unet_.../lora_te_..., lora_down and
    lora_up, and an `alpha` per module."""
    import torch
    from safetensors.torch import save_file

    kohya = {}
    for key, value in tensors.items():
        component, rest = key.split(".", 1)
        module, kind = re.match(r"(.*)\.lora_([AB])\.weight", rest).groups()  # type: ignore[union-attr]
        if component == "text_encoder" and not module.startswith("text_model."):
            module = "text_model." + module  # transformers 5 names CLIP's modules without text_model
        name = ("lora_unet_" if component == "unet" else "lora_te_") + module.replace(".", "_")
        kohya[f"{name}.lora_{'down' if kind == 'A' else 'up'}.weight"] = value
        kohya[f"{name}.alpha"] = torch.tensor(float(ALPHA))
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    save_file(kohya, str(out_file))
    return Path(out_file)


def build_tiny_embedding(model_dir: str | Path, out_file: str | Path, vectors: int = 2, seed: int = 0):
    """A textual-inversion embedding of `vectors` tokens, in the format its suffix says: `.pt` as A1111
    writes it (string_to_param), `.safetensors` as A1111 (emb_params), `.bin` as diffusers ({token: tensor})."""
    import json

    import torch

    dim = json.loads((Path(model_dir) / "text_encoder" / "config.json").read_text())["hidden_size"]
    generator = torch.Generator().manual_seed(seed)
    vectors_tensor = torch.randn((vectors, dim), generator=generator)
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    if out_file.suffix == ".pt":
        torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vectors_tensor},
                    "name": out_file.stem, "step": 100, "sd_checkpoint": None}, out_file)
    elif out_file.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({"emb_params": vectors_tensor}, str(out_file))
    else:
        torch.save({out_file.stem: vectors_tensor}, out_file)
    return vectors_tensor
