#!/usr/bin/env python
"""Seconds per guided U-Net step: sdgen's loop next to diffusers' StableDiffusionPipeline, in one run.

Uses the full-size SD1.5 architecture with random weights (scripts/make_random_sd15.py, built once and
cached); speed does not depend on the weights' values. Both run on the same loaded modules, same prompt,
size, steps, scheduler and guidance, alternating rounds so machine drift hits both. The first step of
each run is a warm-up and is not counted. Quote the ratio: these machines are shared and noisy.

    python scripts/bench.py --size 512 --steps 3 --rounds 1
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

UNET_TFLOP_PER_GUIDED_STEP_512 = 1.61  # DESIGN.md: 0.80 TFLOP per sample per step, x2 with guidance


class _Stop(Exception):
    """Raised from the step callback once the timed steps are done, so neither side decodes."""


def time_sdgen(parts, prompt: str, size: int, steps: int, scheduler: str) -> list[float]:
    from sdgen import GenerationRequest, generate

    stamps: list[float] = []

    def on_step(info) -> None:
        stamps.append(time.perf_counter())
        if info.index == steps - 1:
            raise _Stop

    request = GenerationRequest(
        prompt=prompt, seed=0, num_inference_steps=steps, scheduler=scheduler, width=size, height=size
    )
    start = time.perf_counter()
    with contextlib.suppress(_Stop):
        generate(request, parts, on_step=on_step)
    return [b - a for a, b in zip([start, *stamps[:-1]], stamps, strict=True)]


def time_diffusers(pipe, prompt: str, size: int, steps: int) -> list[float]:
    import torch

    stamps: list[float] = []

    def on_step_end(pipeline, index, timestep, kwargs):
        stamps.append(time.perf_counter())
        return kwargs

    start = time.perf_counter()
    pipe(
        prompt,
        num_inference_steps=steps,
        width=size,
        height=size,
        output_type="latent",
        generator=torch.Generator("cpu").manual_seed(0),
        callback_on_step_end=on_step_end,
    )
    return [b - a for a, b in zip([start, *stamps[:-1]], stamps, strict=True)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3, help="steps per run; the first is a warm-up")
    parser.add_argument("--rounds", type=int, default=1, help="alternating sdgen/diffusers rounds")
    parser.add_argument("--scheduler", default="dpm++2m-karras")
    args = parser.parse_args()

    import diffusers
    from diffusers import StableDiffusionPipeline
    from make_random_sd15 import ensure_model

    from sdgen import ModelSpec, load_model
    from sdgen.schedulers import scheduler_spec

    folder = ensure_model()
    parts = load_model(ModelSpec(model=str(folder), device="cpu", dtype="float32"))
    spec = scheduler_spec(args.scheduler)
    pipe = StableDiffusionPipeline(
        vae=parts.vae,
        text_encoder=parts.text_encoder,
        tokenizer=parts.tokenizer,
        unet=parts.unet,
        scheduler=getattr(diffusers, spec.class_name).from_config(parts.scheduler_config, **spec.options),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    prompt = "a cute British short hair kitten, looking directly at you"
    ours: list[float] = []
    theirs: list[float] = []
    for _ in range(args.rounds):
        ours += time_sdgen(parts, prompt, args.size, args.steps, args.scheduler)[1:]
        theirs += time_diffusers(pipe, prompt, args.size, args.steps)[1:]
    s, d = statistics.median(ours), statistics.median(theirs)
    flop = UNET_TFLOP_PER_GUIDED_STEP_512 * (args.size / 512) ** 2 * 1000
    print("| config | sdgen s/step | diffusers s/step | sdgen/diffusers | sdgen GFLOP/s |")
    print("|---|---|---|---|---|")
    print(
        f"| cpu fp32 {args.size}x{args.size} guided, {args.scheduler} | {s:.2f} | {d:.2f} | {s / d:.2f} "
        f"| {flop / s:.0f} |"
    )


if __name__ == "__main__":
    main()
