#!/usr/bin/env python
"""What a ControlNet costs per step: sdgen next to diffusers' StableDiffusionControlNetPipeline, in one run.

The full-size SD1.5 architecture with random weights (scripts/make_random_sd15.py, cached in models/sd15-random)
and a full-size ControlNet made from its U-Net with `ControlNetModel.from_unet` (cached in
models/controlnet-random); speed does not depend on the weights' values. Each configuration runs in its own
fresh process, one after the other, with the same prompt, size, steps, scheduler and guidance and a control
image of the picture's size; a step's time is the mean of the steps after the first (the first builds
oneDNN's kernels). Quote the ratios within one run: these machines are shared and noisy.

Configurations:
  diffusers             StableDiffusionPipeline, float32 (diffusers' default on a CPU)
  diffusers-controlnet  StableDiffusionControlNetPipeline with the ControlNet, float32
  sdgen-fp32            sdgen in float32, no ControlNet
  sdgen-fp32-controlnet sdgen in float32 with --control (the same arithmetic as diffusers)
  sdgen                 sdgen's defaults (--dtype auto: bfloat16 on CPUs with AMX/AVX512-BF16)
  sdgen-controlnet      sdgen's defaults with --control (the ControlNet in the U-Net's dtype)

    python scripts/bench_controlnet.py --steps 3          # 512x512, 1 warm-up step + 3 timed
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent
CONTROLNET_OUT = ROOT / "models" / "controlnet-random"
PROMPT = "a cute British short hair kitten, looking directly at you"
CONFIGS = ("diffusers", "diffusers-controlnet", "sdgen-fp32", "sdgen-fp32-controlnet", "sdgen", "sdgen-controlnet")


def ensure_controlnet(folder: Path) -> Path:
    """A full-size random ControlNet: the random U-Net's encoder copied by ControlNetModel.from_unet, once."""
    if (CONTROLNET_OUT / "config.json").is_file():
        return CONTROLNET_OUT
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet")
    ControlNetModel.from_unet(unet).save_pretrained(CONTROLNET_OUT)
    return CONTROLNET_OUT


def control_image(size: int) -> Path:
    """An edge-like map of the picture's size (its content does not change the cost)."""
    import numpy as np
    from PIL import Image

    path = ROOT / "models" / f"control-{size}.png"
    if not path.is_file():
        y, x = np.mgrid[0:size, 0:size]
        rings = ((np.hypot(x - size / 2, y - size / 2) // 16) % 2 * 255).astype(np.uint8)
        Image.fromarray(np.repeat(rings[..., None], 3, axis=-1)).save(path)
    return path


def step_seconds(stamps: list[float], started: float) -> dict:
    steps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return {"first_step": stamps[0] - started, "step": statistics.mean(steps), "timed_steps": len(steps)}


def run_diffusers(folder: Path, size: int, steps: int, scheduler: str, controlnet: Path | None) -> dict:
    import diffusers
    import torch
    from PIL import Image

    from sdgen.config.schedulers import scheduler_spec

    kwargs = {"torch_dtype": torch.float32, "safety_checker": None, "requires_safety_checker": False}
    if controlnet is None:
        pipe = diffusers.StableDiffusionPipeline.from_pretrained(folder, **kwargs)
        extra = {}
    else:
        net = diffusers.ControlNetModel.from_pretrained(controlnet, torch_dtype=torch.float32)
        pipe = diffusers.StableDiffusionControlNetPipeline.from_pretrained(folder, controlnet=net, **kwargs)
        extra = {"image": Image.open(control_image(size)).convert("RGB")}
    spec = scheduler_spec(scheduler)
    pipe.scheduler = getattr(diffusers, spec.class_name).from_config(pipe.scheduler.config, **spec.options)
    pipe.set_progress_bar_config(disable=True)
    stamps: list[float] = []

    def on_step_end(pipeline, index, timestep, values):
        stamps.append(time.perf_counter())
        return values

    started = time.perf_counter()
    pipe(
        PROMPT, num_inference_steps=steps, width=size, height=size, output_type="latent",
        generator=torch.Generator("cpu").manual_seed(0), callback_on_step_end=on_step_end, **extra,
    )
    return {**step_seconds(stamps, started), "dtype": "float32"}


def run_sdgen(folder: Path, size: int, steps: int, scheduler: str, controlnet: Path | None, dtype: str) -> dict:
    from sdgen import GenerationRequest, ModelSpec, load_model
    from sdgen.engine.pipeline import generate

    parts = load_model(ModelSpec(model=str(folder), device="cpu", dtype=dtype))
    controls = (f"{controlnet}={control_image(size)}",) if controlnet is not None else ()
    request = GenerationRequest(
        PROMPT, seed=0, width=size, height=size, num_inference_steps=steps, scheduler=scheduler, controls=controls
    )
    stamps: list[float] = []
    started = time.perf_counter()
    generate(request, parts, on_step=lambda info: stamps.append(time.perf_counter()))
    return {**step_seconds(stamps, started), "dtype": parts.placement.dtype}


def worker(config: str, size: int, steps: int, scheduler: str) -> None:
    from make_random_sd15 import ensure_model

    folder = ensure_model()
    controlnet = ensure_controlnet(folder) if config.endswith("controlnet") else None
    if config.startswith("diffusers"):
        result = run_diffusers(folder, size, steps, scheduler, controlnet)
    else:
        dtype = "float32" if "fp32" in config else "auto"
        result = run_sdgen(folder, size, steps, scheduler, controlnet, dtype)
    print("BENCH " + json.dumps(result), flush=True)


def run_config(config: str, size: int, steps: int, scheduler: str) -> dict:
    command = [sys.executable, __file__, "--worker", config, "--size", str(size), "--steps", str(steps)]
    done = subprocess.run([*command, "--scheduler", scheduler], capture_output=True, text=True, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{config} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("BENCH "):])


def table(results: dict[str, dict], size: int, steps: int) -> str:
    from sdgen.hardware.machine import cpu_info

    lines = [
        f"{cpu_info().summary()}; {size}x{size}, {steps} steps (the first one untimed), guidance 7.5",
        "",
        "| configuration | dtype | s / step | x without ControlNet | x diffusers (same ControlNet use) |",
        "|---|---|---|---|---|",
    ]
    for config, result in results.items():
        plain = results.get(config.removesuffix("-controlnet"))
        other = "diffusers-controlnet" if config.endswith("controlnet") else "diffusers"
        against = results.get(other)
        own = f"{result['step'] / plain['step']:.2f}" if plain and config.endswith("controlnet") else ""
        versus = f"{result['step'] / against['step']:.2f}" if against and config != other else ""
        lines.append(f"| {config} | {result['dtype']} | {result['step']:.2f} | {own} | {versus} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=4, help="denoising steps per image (the first is untimed)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from: {', '.join(CONFIGS)}")
    parser.add_argument("--scheduler", default="euler")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.size, args.steps, args.scheduler)
        return
    results = {}
    for config in args.configs.split(","):
        results[config] = run_config(config, args.size, args.steps, args.scheduler)
        print(f"{config}: {json.dumps(results[config])}", file=sys.stderr, flush=True)
    print(table(results, args.size, args.steps))


if __name__ == "__main__":
    main()
