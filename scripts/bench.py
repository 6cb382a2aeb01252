#!/usr/bin/env python
"""sdgen next to diffusers' StableDiffusionPipeline, in one run: load, text encoding, seconds per guided
U-Net step, VAE decode, end to end, peak RSS, and sdgen/diffusers ratios.

Uses the full-size SD1.5 architecture with random weights (scripts/make_random_sd15.py, built once and
cached in models/sd15-random); speed does not depend on the weights' values. Every configuration runs in
its own fresh process (so peak RSS is its own), all with the same prompt, size, steps, scheduler and
guidance; configurations alternate within each round so machine drift hits all of them. Step time is
the median of the steps after the first (the first builds oneDNN kernels). Quote ratios: these machines
are shared and noisy.

Configurations:
  diffusers          StableDiffusionPipeline.from_pretrained(folder) with its defaults (CPU: float32)
  sdgen              sdgen's defaults (`--dtype auto`: bfloat16 on CPUs with AMX/AVX512-BF16, channels_last)
  sdgen-fp32         sdgen in float32 (the reference-exact setting: the same arithmetic as diffusers)
  sdgen-fp32-cl      sdgen in float32 with channels_last (what channels_last buys in float32)
  sdgen-bf16-plain   sdgen in bfloat16 without channels_last (what channels_last buys in bfloat16)
  sdgen-slicing      sdgen's defaults plus attention slicing
  sdgen-low-memory   sdgen's defaults plus VAE slicing and tiling (--preset low-memory)
  sdgen-compile      sdgen's defaults plus torch.compile on the U-Net (its first step holds the compile)

    python scripts/bench.py                                   # 256 and 512, 20 steps: diffusers vs sdgen
    python scripts/bench.py --sizes 512 --steps 4 --configs diffusers,sdgen-fp32,sdgen-bf16-plain,sdgen
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# FLOP counts at 512x512 (docs/performance.md; derived by scripts/count_flops.py); they scale with pixels.
UNET_TFLOP_GUIDED_512 = 1.61  # 0.80 per sample per step, x2 with guidance
VAE_DECODE_TFLOP_512 = 2.51
PROMPT = "a cute British short hair kitten, looking directly at you"
CONFIGS = (
    "diffusers",
    "sdgen",
    "sdgen-fp32",
    "sdgen-fp32-cl",
    "sdgen-bf16-plain",
    "sdgen-slicing",
    "sdgen-low-memory",
    "sdgen-compile",
)


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def run_diffusers(folder: Path, size: int, steps: int, scheduler: str) -> dict:
    import diffusers
    import torch
    from diffusers import StableDiffusionPipeline

    from sdgen.schedulers import scheduler_spec

    started = time.perf_counter()
    # float32 is diffusers' default; said explicitly because transformers 5 would otherwise follow the
    # text encoder's config.json, which the fp16 variant save in make_random_sd15.py leaves at float16.
    pipe = StableDiffusionPipeline.from_pretrained(
        folder, torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False
    )
    spec = scheduler_spec(scheduler)
    pipe.scheduler = getattr(diffusers, spec.class_name).from_config(pipe.scheduler.config, **spec.options)
    pipe.set_progress_bar_config(disable=True)
    load = time.perf_counter() - started

    with torch.inference_mode():
        started = time.perf_counter()
        pipe.encode_prompt(PROMPT, "cpu", 1, True)
        text = time.perf_counter() - started

    stamps: list[float] = []

    def on_step_end(pipeline, index, timestep, kwargs):
        stamps.append(time.perf_counter())
        return kwargs

    started = time.perf_counter()
    pipe(
        PROMPT,
        num_inference_steps=steps,
        width=size,
        height=size,
        generator=torch.Generator("cpu").manual_seed(0),
        callback_on_step_end=on_step_end,
    )
    return _timings(load, text, started, stamps, time.perf_counter())


def run_sdgen(folder: Path, size: int, steps: int, scheduler: str, config: str) -> dict:
    import torch

    from sdgen import GenerationRequest, ModelSpec, load_model
    from sdgen.pipeline import generate
    from sdgen.text import encode_prompt

    options: dict = {"model": str(folder), "device": "cpu"}
    if config.startswith("sdgen-fp32"):
        options["dtype"] = "float32"
    elif config == "sdgen-bf16-plain":
        options["dtype"] = "bfloat16"
    if config == "sdgen-low-memory":
        options.update(vae_slicing=True, vae_tiling=True)
    if config == "sdgen-slicing":
        options["attention_slicing"] = True
    if config == "sdgen-compile":
        options["compile"] = True

    started = time.perf_counter()
    parts = load_model(ModelSpec(**options))
    if config.endswith("-plain"):  # undo channels_last to measure what it buys
        parts.unet.to(memory_format=torch.contiguous_format)
        parts.vae.to(memory_format=torch.contiguous_format)
    if config.endswith("-cl"):
        parts.unet.to(memory_format=torch.channels_last)
        parts.vae.to(memory_format=torch.channels_last)
    load = time.perf_counter() - started

    with torch.inference_mode():
        started = time.perf_counter()
        for text in (PROMPT, ""):
            encode_prompt(text, parts.tokenizer, parts.text_encoder, "cpu")
        text_seconds = time.perf_counter() - started
    parts.embedding_cache.clear()  # the timed run encodes again, as a fresh run would

    stamps: list[float] = []
    request = GenerationRequest(PROMPT, seed=0, num_inference_steps=steps, scheduler=scheduler, width=size, height=size)
    started = time.perf_counter()
    generate(request, parts, on_step=lambda info: stamps.append(time.perf_counter()))
    result = _timings(load, text_seconds, started, stamps, time.perf_counter())
    result["dtype"] = parts.placement.dtype
    return result


def _timings(load: float, text: float, started: float, stamps: list[float], ended: float) -> dict:
    steps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return {
        "load": load,
        "text": text,
        "first_step": stamps[0] - started,
        "step": statistics.median(steps) if steps else stamps[0] - started,
        "decode": ended - stamps[-1],  # VAE decode and conversion to an image
        "e2e": ended - started + load,  # what a user waits for one image, load included
        "peak_rss": peak_rss_gib(),
    }


def worker(args: argparse.Namespace) -> None:
    # Import the libraries both sides use before any timer starts: load times compare loading, not imports.
    import diffusers  # noqa: F401
    import transformers  # noqa: F401
    from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel  # noqa: F401
    from make_random_sd15 import ensure_model
    from transformers import CLIPTextModel, CLIPTokenizer  # noqa: F401

    import sdgen.models  # noqa: F401
    import sdgen.pipeline  # noqa: F401

    folder = ensure_model()
    if args.worker == "diffusers":
        result = run_diffusers(folder, args.size, args.steps, args.scheduler)
    else:
        result = run_sdgen(folder, args.size, args.steps, args.scheduler, args.worker)
    print("BENCH " + json.dumps(result), flush=True)


def run_config(config: str, size: int, steps: int, scheduler: str) -> dict:
    command = [sys.executable, __file__, "--worker", config, "--size", str(size), "--steps", str(steps)]
    command += ["--scheduler", scheduler]
    done = subprocess.run(command, capture_output=True, text=True, check=False, env={**os.environ})
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{config} at {size} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("BENCH ") :])


def table(size: int, steps: int, scheduler: str, results: dict[str, list[dict]]) -> str:
    scale = (size / 512) ** 2
    median = {
        config: {key: statistics.median(run[key] for run in runs) for key in runs[0] if key != "dtype"}
        for config, runs in results.items()
    }
    base = median.get("diffusers")
    rows = [
        f"### {size}x{size}, {steps} steps, guidance 7.5, {scheduler}, CPU ({os.cpu_count()} threads)",
        "",
        "| config | dtype | load s | text s | 1st step s | s/step | decode s | end to end s | peak RSS GiB "
        "| step x | decode x | e2e x | RSS ratio | U-Net GFLOP/s | VAE GFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for config, m in median.items():
        dtype = results[config][0].get("dtype", "float32")

        def faster(key: str, m=m) -> str:
            return f"{base[key] / m[key]:.2f}" if base else "-"

        rss = f"{m['peak_rss'] / base['peak_rss']:.2f}" if base else "-"
        rows.append(
            f"| {config} | {dtype} | {m['load']:.1f} | {m['text']:.2f} | {m['first_step']:.1f} | {m['step']:.2f} "
            f"| {m['decode']:.2f} "
            f"| {m['e2e']:.1f} | {m['peak_rss']:.2f} | {faster('step')} | {faster('decode')} | {faster('e2e')} "
            f"| {rss} | {UNET_TFLOP_GUIDED_512 * scale * 1000 / m['step']:.0f} "
            f"| {VAE_DECODE_TFLOP_512 * scale * 1000 / m['decode']:.0f} |"
        )
    rows.append("")
    rows.append("x columns: diffusers' time / this config's time (higher is faster); RSS ratio: this / diffusers.")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="256,512", help="comma-separated square sizes")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps per image")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds over the configurations")
    parser.add_argument("--configs", default="diffusers,sdgen", help=f"comma-separated, from: {', '.join(CONFIGS)}")
    parser.add_argument("--scheduler", default="dpm++2m-karras")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown config {unknown[0]!r}; choose from {', '.join(CONFIGS)}")
    from make_random_sd15 import ensure_model

    ensure_model()  # build once, outside the timings
    for size in (int(s) for s in args.sizes.split(",")):
        results: dict[str, list[dict]] = {config: [] for config in configs}
        for _ in range(args.rounds):
            for config in configs:
                print(f"running {config} at {size}x{size} ...", file=sys.stderr, flush=True)
                results[config].append(run_config(config, size, args.steps, args.scheduler))
        print(table(size, args.steps, args.scheduler, results), flush=True)
        print(flush=True)


if __name__ == "__main__":
    main()
