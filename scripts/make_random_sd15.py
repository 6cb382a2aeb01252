#!/usr/bin/env python
"""Write a model folder with the real SD1.5 architecture and random weights, fp32 plus an fp16 variant.

Speed and memory do not depend on the weights' values, so this stands in for the real 4 GB download
when measuring loading, steps and decoding at full size. The configs are the published ones, kept in
configs/sd15/. The tokenizer is sdgen's small byte-level one (the real CLIP vocabulary cannot be
downloaded here); prompts still encode to the same (1, 77, 768) shape.

    python scripts/make_random_sd15.py                 # -> models/sd15-random (skipped if complete)
    python scripts/make_random_sd15.py --out DIR --force
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs" / "sd15"
DEFAULT_OUT = ROOT / "models" / "sd15-random"
DONE_MARKER = ".complete"


def build_sd15_modules(seed: int = 0):
    """The three networks from the published configs, randomly initialised: (unet, vae, text_encoder)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(json.loads((CONFIGS / "unet" / "config.json").read_text()))
    vae = AutoencoderKL.from_config(json.loads((CONFIGS / "vae" / "config.json").read_text()))
    text_config = json.loads((CONFIGS / "text_encoder" / "config.json").read_text())
    text_config.pop("architectures", None)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_config))
    return unet, vae, text_encoder


def write_model(out: Path, seed: int = 0) -> Path:
    from sdgen.testing.tiny_model import write_model_index, write_tiny_tokenizer

    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    unet, vae, text_encoder = build_sd15_modules(seed)
    for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder)):
        module.save_pretrained(partial / name)
        module.half().save_pretrained(partial / name, variant="fp16")
        print(f"  wrote {name}", file=sys.stderr)
    (partial / "scheduler").mkdir(parents=True)
    shutil.copyfile(CONFIGS / "scheduler" / "scheduler_config.json", partial / "scheduler" / "scheduler_config.json")
    write_tiny_tokenizer(partial / "tokenizer")
    write_model_index(partial)
    (partial / DONE_MARKER).write_text("ok\n")
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)  # the folder appears complete or not at all
    return out


def ensure_model(out: Path = DEFAULT_OUT, force: bool = False) -> Path:
    """Build once and cache: an existing complete folder is reused."""
    if (out / DONE_MARKER).is_file() and not force:
        if not (out / "model_index.json").is_file():  # folders built before model_index.json was written
            from sdgen.testing.tiny_model import write_model_index

            write_model_index(out)
        return out
    started = time.perf_counter()
    print(f"Building the random SD1.5 model in {out} ...", file=sys.stderr)
    write_model(out)
    print(f"Done in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model folder to write")
    parser.add_argument("--force", action="store_true", help="rebuild even if the folder is complete")
    args = parser.parse_args()
    print(ensure_model(args.out, args.force))


if __name__ == "__main__":
    main()
