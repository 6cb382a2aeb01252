#!/usr/bin/env python
"""--backend openvino against PyTorch and diffusers: seconds per step, cold and warm start, peak RSS.

The full-size SD1.5 architecture with random weights (scripts/make_random_sd15.py, cached in models/sd15-random);
speed does not depend on the weights' values. Each configuration runs in its own fresh process, one after the
other, with the same prompt, size, steps and scheduler; a step's time is the mean of the steps after the first.
The OpenVINO configurations run twice: cold, then warm (a new process reading the cache). The cache starts
empty, so the first OpenVINO configuration's cold run converts every part; the float32 models do not depend on
the precision, so later cold runs only compile (and int8's compresses the weights). Quote ratios within one
run: these machines are shared and noisy.

Configurations:
  diffusers      StableDiffusionPipeline, float32 (diffusers' default on a CPU)
  sdgen-fp32     sdgen, torch float32 (the exact path)
  sdgen          sdgen's defaults (torch; --dtype auto: bfloat16 on CPUs with AMX/AVX512-BF16)
  ov-fp32        --backend openvino --dtype float32 (f32 inference)
  ov             --backend openvino (bf16 inference on CPUs with bfloat16 units, else f32)
  ov-int8        --backend openvino --quantize int8 (int8 weights, the precision of `ov`)

    python scripts/bench_openvino.py --steps 3            # 512x512, 1 untimed step + 2 timed
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "models" / "openvino-bench-cache"  # SDGEN_CACHE_DIR of the OpenVINO runs
PROMPT = "a cute British short hair kitten, looking directly at you"
CONFIGS = ("diffusers", "sdgen-fp32", "sdgen", "ov-fp32", "ov", "ov-int8")
SPECS = {
    "sdgen-fp32": {"dtype": "float32"},
    "sdgen": {},
    "ov-fp32": {"backend": "openvino", "dtype": "float32"},
    "ov": {"backend": "openvino"},
    "ov-int8": {"backend": "openvino", "quantize": "int8"},
}


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def step_seconds(stamps: list[float], started: float) -> dict:
    steps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return {"first_step": stamps[0] - started, "step": statistics.mean(steps) if steps else float("nan")}


def run_diffusers(folder: Path, size: int, steps: int, scheduler: str) -> dict:
    import diffusers
    import torch

    from sdgen.config.schedulers import scheduler_spec

    pipe = diffusers.StableDiffusionPipeline.from_pretrained(
        folder, torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False
    )
    spec = scheduler_spec(scheduler)
    pipe.scheduler = getattr(diffusers, spec.class_name).from_config(pipe.scheduler.config, **spec.options)
    pipe.set_progress_bar_config(disable=True)
    stamps: list[float] = []

    def on_step_end(pipeline, index, timestep, values):
        stamps.append(time.perf_counter())
        return values

    started = time.perf_counter()
    pipe(PROMPT, num_inference_steps=steps, width=size, height=size, generator=torch.Generator("cpu").manual_seed(0),
         callback_on_step_end=on_step_end)
    return {**step_seconds(stamps, started), "precision": "float32", "end": time.perf_counter() - started}


def run_sdgen(folder: Path, size: int, steps: int, scheduler: str, config: str) -> dict:
    from sdgen import GenerationRequest, ModelSpec, load_model
    from sdgen.engine.pipeline import generate

    parts = load_model(ModelSpec(model=str(folder), device="cpu", **SPECS[config]))
    request = GenerationRequest(PROMPT, seed=0, width=size, height=size, num_inference_steps=steps, scheduler=scheduler)
    stamps: list[float] = []
    started = time.perf_counter()
    generate(request, parts, on_step=lambda info: stamps.append(time.perf_counter()))
    runtime = parts.openvino
    precision = runtime.precision if runtime is not None else parts.placement.dtype
    return {**step_seconds(stamps, started), "precision": precision, "end": time.perf_counter() - started}


def worker(config: str, size: int, steps: int, scheduler: str) -> None:
    from make_random_sd15 import ensure_model

    folder = ensure_model()
    started = time.perf_counter()
    if config == "diffusers":
        result = run_diffusers(folder, size, steps, scheduler)
    else:
        result = run_sdgen(folder, size, steps, scheduler, config)
    result.update(process=time.perf_counter() - started, rss=peak_rss_gib())
    print("BENCH " + json.dumps(result), flush=True)


def run_config(config: str, size: int, steps: int, scheduler: str) -> dict:
    command = [sys.executable, __file__, "--worker", config, "--size", str(size), "--steps", str(steps)]
    env = {**os.environ, "SDGEN_CACHE_DIR": str(CACHE), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    done = subprocess.run([*command, "--scheduler", scheduler], capture_output=True, text=True, check=False, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{config} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(lines[-1][len("BENCH "):]), "wall": time.perf_counter() - started}


def table(results: dict[str, dict], size: int, steps: int) -> str:
    from sdgen.hardware.machine import cpu_info

    base = results.get("diffusers")
    lines = [
        f"{cpu_info().summary()}; {size}x{size}, {steps} steps (the first one untimed), guidance 7.5",
        "",
        "| configuration | precision | s / step | x diffusers per step | first step s | process wall s "
        "| peak RSS GiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        faster = f"{base['step'] / result['step']:.2f}" if base and name != "diffusers" else ""
        lines.append(
            f"| {name} | {result['precision']} | {result['step']:.2f} | {faster} | {result['first_step']:.1f} | "
            f"{result['wall']:.1f} | {result['rss']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=3, help="denoising steps per image (the first is untimed)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, from: {', '.join(CONFIGS)}")
    parser.add_argument("--scheduler", default="euler")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.size, args.steps, args.scheduler)
        return
    shutil.rmtree(CACHE, ignore_errors=True)  # the first OpenVINO run of each part is cold
    results = {}
    for config in args.configs.split(","):
        runs = ("cold", "warm") if config.startswith("ov") else ("",)
        for run in runs:
            name = f"{config} ({run})" if run else config
            results[name] = run_config(config, args.size, args.steps, args.scheduler)
            print(f"{name}: {json.dumps(results[name])}", file=sys.stderr, flush=True)
    print(table(results, args.size, args.steps))


if __name__ == "__main__":
    main()
