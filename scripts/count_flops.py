#!/usr/bin/env python
"""Where bench.py's FLOP counts come from: count them on the published SD1.5 architecture.

Builds the U-Net, VAE and CLIP text encoder from configs/sd15/ on PyTorch's meta device (no memory, no
weights) and runs one forward pass of each under torch.utils.flop_counter.FlopCounterMode, which counts
2 FLOPs per multiply-add of every matrix product, convolution and attention (element-wise work such as
normalisation and activations is not counted; it is a few percent).

    python scripts/count_flops.py            # 512x512
    python scripts/count_flops.py --size 768
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "sd15"


def count(forward) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.device("meta"), torch.no_grad(), counter:
        forward()
    return counter.get_total_flops() / 1e12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (latents are size/8)")
    size = parser.parse_args().size
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    def config(name: str) -> dict:
        return {k: v for k, v in json.loads((CONFIGS / name).read_text()).items() if not k.startswith("_")}

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(config("unet/config.json"))
        vae = AutoencoderKL.from_config(config("vae/config.json"))
        text_encoder = CLIPTextModel(CLIPTextConfig(**config("text_encoder/config.json")))
    side = size // 8
    unet_one = count(lambda: unet(torch.randn(1, 4, side, side), 500, encoder_hidden_states=torch.randn(1, 77, 768)))
    print(f"{size}x{size}")
    print(f"U-Net, one sample, one step   {unet_one:.2f} TFLOP")
    print(f"U-Net, guided step (2 samples) {2 * unet_one:.2f} TFLOP")
    print(f"VAE decoder                   {count(lambda: vae.decode(torch.randn(1, 4, side, side))):.2f} TFLOP")
    print(f"VAE encoder (img2img)         {count(lambda: vae.encode(torch.randn(1, 3, size, size))):.2f} TFLOP")
    text = count(lambda: text_encoder(torch.zeros(1, 77, dtype=torch.long)))
    print(f"CLIP text encoder, 77 tokens  {text:.3f} TFLOP")
    with torch.device("meta"):  # a ControlNet copies the U-Net's encoder and middle block (ControlNetModel.from_unet)
        controlnet = ControlNetModel.from_unet(unet, load_weights_from_unet=False)
    control_one = count(lambda: controlnet(
        torch.randn(1, 4, side, side), 500, encoder_hidden_states=torch.randn(1, 77, 768),
        controlnet_cond=torch.randn(1, 3, size, size),
    ))
    print(f"ControlNet, one sample        {control_one:.2f} TFLOP ({control_one / unet_one:.2f} of the U-Net's)")


if __name__ == "__main__":
    main()
