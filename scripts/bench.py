#!/usr/bin/env python
"""sdgen next to diffusers' StableDiffusionPipeline, in one run: load, text encoding, seconds per guided
U-Net step, VAE decode, end to end, peak RSS, and sdgen/diffusers ratios.

Uses the full-size SD1.5 architecture with random weights (scripts/make_random_sd15.py, built once and
cached in models/sd15-random); speed does not depend on the weights' values. Every configuration runs in
its own fresh process (so peak RSS is its own), all with the same prompt, size, steps, scheduler and
guidance; configurations alternate within each round so machine drift hits all of them. Step time is
the mean of the steps after the first (the first builds oneDNN kernels). Quote ratios: these machines
are shared and noisy.

Configurations:
  diffusers          StableDiffusionPipeline.from_pretrained(folder) with its defaults (CPU: float32)
  sdgen              sdgen's defaults (`--dtype auto`: bfloat16 on CPUs with AMX/AVX512-BF16, channels_last)
  sdgen-fp32         sdgen in float32 (the reference-exact setting: the same arithmetic as diffusers)
  sdgen-fp32-cl      sdgen in float32 with channels_last (what channels_last buys in float32)
  sdgen-fp32-vae-cl  sdgen in float32 with channels_last for the VAE only (its 512x512 convolutions)
  sdgen-bf16-plain   sdgen in bfloat16 without channels_last (what channels_last buys in bfloat16)
  sdgen-slicing      sdgen's defaults plus attention slicing
  sdgen-low-memory   sdgen's defaults plus VAE slicing and tiling (--preset low-memory)
  sdgen-compile      sdgen's defaults plus --compile, compile cache warm (models/compile-cache, filled by
                     sdgen-compile-cold or an earlier run): what a second process pays
  sdgen-compile-cold the same with the compile cache emptied first (its first step holds the compile)
  sdgen-fp32-compile sdgen in float32 with --compile (cache warm, as sdgen-compile)
  sdgen-cache3       sdgen's defaults plus --cache-interval 3 (DeepCache)
  sdgen-cache5       sdgen's defaults plus --cache-interval 5
  sdgen-cfg-half     sdgen's defaults plus --cfg-end 0.5
  sdgen-taesd        sdgen's defaults plus --decoder (TAESD's architecture, random: models/taesd-random)
  sdgen-tomesd       sdgen's defaults plus --token-merging 0.5 (tomesd)
  sdgen-turbo        --preset turbo (configs/presets/turbo.toml; its decoder is models/taesd-random)
  sdgen-fp32-turbo   the same in float32 (sdgen's default on a CPU without bf16 units)
  sdgen-lcm          --preset lcm without the LoRA (not downloadable here; fused, it costs nothing per
                     step): 4 steps, LCM scheduler, no guidance
  openvino           optimum-intel's OVStableDiffusionPipeline (the engine of FastSD CPU) with its defaults,
                     exported once to models/sd15-random-openvino (the export is timed and reported apart);
                     needs `pip install "sdgen[bench]"`

    python scripts/bench.py                                   # 256 and 512, 20 steps: diffusers vs sdgen
    python scripts/bench.py --sizes 512 --steps 4 --configs diffusers,sdgen-fp32,sdgen-bf16-plain,sdgen
    python scripts/bench.py --sizes 512 --rounds 2 --configs diffusers,sdgen,sdgen-turbo,openvino

Every table starts with the machine: CPU model, vector units, threads, and the float32 and bfloat16
matrix-multiply peaks measured by sdgen/hardware/machine.py; the "% peak" column is the U-Net's GFLOP/s over the
peak of its dtype (for step savers the GFLOP/s are nominal: the FLOPs of a whole guided step over the time
of one, so above the peak means FLOPs skipped).
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

# FLOP counts at 512x512 (docs/performance.md; derived by scripts/count_flops.py); they scale with pixels.
UNET_TFLOP_GUIDED_512 = 1.61  # 0.80 per sample per step, x2 with guidance
VAE_DECODE_TFLOP_512 = 2.51
PROMPT = "a cute British short hair kitten, looking directly at you"
ROOT = Path(__file__).resolve().parent.parent
COMPILE_CACHE = ROOT / "models" / "compile-cache"
OPENVINO_OUT = ROOT / "models" / "sd15-random-openvino"
# config -> (ModelSpec options, GenerationRequest options) on top of sdgen's defaults on the CPU
SDGEN_CONFIGS: dict[str, tuple[dict, dict]] = {
    "sdgen": ({}, {}),
    "sdgen-fp32": ({"dtype": "float32"}, {}),
    "sdgen-fp32-cl": ({"dtype": "float32"}, {}),
    "sdgen-fp32-vae-cl": ({"dtype": "float32"}, {}),
    "sdgen-bf16-plain": ({"dtype": "bfloat16"}, {}),
    "sdgen-slicing": ({"attention_slicing": True}, {}),
    "sdgen-low-memory": ({"vae_slicing": True, "vae_tiling": True}, {}),
    "sdgen-compile": ({"compile": True}, {}),
    "sdgen-compile-cold": ({"compile": True}, {}),
    "sdgen-fp32-compile": ({"dtype": "float32", "compile": True}, {}),
    "sdgen-cache3": ({}, {"cache_interval": 3}),
    "sdgen-cache5": ({}, {"cache_interval": 5}),
    "sdgen-cfg-half": ({}, {"cfg_end": 0.5}),
    "sdgen-taesd": ({"decoder": "TAESD"}, {}),
    "sdgen-tomesd": ({"token_merging": 0.5}, {}),
    "sdgen-turbo": ({}, {}),  # from configs/presets/turbo.toml
    "sdgen-fp32-turbo": ({"dtype": "float32"}, {}),  # turbo in float32: what an AVX2 CPU's default gets
    "sdgen-lcm": ({}, {}),  # from configs/presets/lcm.toml
}
CONFIGS = ("diffusers", *SDGEN_CONFIGS, "openvino")


def peak_rss_gib() -> float:
    """This process's own peak RSS. Linux keeps ru_maxrss across execve, so a worker forked from a parent that
    once held a model (building one) would report the parent's peak; VmHWM is the peak of this address space."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20  # KiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def run_diffusers(folder: Path, size: int, steps: int, scheduler: str) -> dict:
    import torch
    from diffusers import StableDiffusionPipeline

    started = time.perf_counter()
    # float32 is diffusers' default; said explicitly because transformers 5 would otherwise follow the
    # text encoder's config.json, which the fp16 variant save in make_random_sd15.py leaves at float16.
    pipe = StableDiffusionPipeline.from_pretrained(
        folder, torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False
    )
    return run_pipeline(pipe, started, size, steps, scheduler)


def run_pipeline(pipe, started: float, size: int, steps: int, scheduler: str) -> dict:
    """Time a diffusers-style pipeline loaded since `started`: its scheduler set to ours, text encoding,
    then one image with a timestamp at every step."""
    import diffusers
    import torch

    from sdgen.config.schedulers import scheduler_spec

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


def preset_options(name: str) -> tuple[dict, dict]:
    """A shipped preset's values split into ModelSpec and GenerationRequest options."""
    import tomllib

    from sdgen.config.options import MODEL, OPTIONS, REQUEST

    values = tomllib.loads((ROOT / "configs" / "presets" / f"{name}.toml").read_text())
    values.pop("lora", None)  # sdgen-lcm: the LCM-LoRA cannot be downloaded here (see the docstring)
    model = {k: v for k, v in values.items() if OPTIONS[k].target == MODEL}
    request = {OPTIONS[k].target_field: v for k, v in values.items() if OPTIONS[k].target == REQUEST}
    return model, request


def run_sdgen(folder: Path, size: int, steps: int, scheduler: str, config: str) -> dict:
    import torch

    from sdgen import GenerationRequest, ModelSpec, load_model
    from sdgen.engine.pipeline import generate
    from sdgen.engine.text import encode_prompt

    model_options, request_options = SDGEN_CONFIGS[config]
    if config.endswith(("-turbo", "-lcm")):
        model_options, request_options = preset_options(config.rpartition("-")[2])
        model_options = {**SDGEN_CONFIGS[config][0], **model_options}
    options: dict = {"model": str(folder), "device": "cpu", **model_options}
    if options.get("decoder"):
        options["decoder"] = str(ensure_taesd())  # madebyollin/taesd's architecture, random weights
    request_values = {"num_inference_steps": steps, "scheduler": scheduler, **request_options}

    started = time.perf_counter()
    parts = load_model(ModelSpec(**options))
    if config.endswith("-plain"):  # undo channels_last to measure what it buys
        parts.unet.to(memory_format=torch.contiguous_format)
        parts.vae.to(memory_format=torch.contiguous_format)
    if config.endswith("-cl"):
        if not config.endswith("-vae-cl"):
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
    request = GenerationRequest(PROMPT, seed=0, width=size, height=size, **request_values)
    started = time.perf_counter()
    generate(request, parts, on_step=lambda info: stamps.append(time.perf_counter()))
    result = _timings(load, text_seconds, started, stamps, time.perf_counter())
    result["dtype"] = parts.placement.dtype
    return result


def ensure_taesd() -> Path:
    from bench_pictures import ensure_taesd as ensure

    return ensure()


def run_openvino(folder: Path, size: int, steps: int, scheduler: str) -> dict:
    """optimum-intel with its defaults: the model exported to OpenVINO IR once (timed apart), then loaded,
    reshaped to the size (static shapes, as FastSD CPU does) and compiled by OpenVINO at load."""
    try:
        from optimum.intel import OVStableDiffusionPipeline
    except ImportError as error:
        raise SystemExit(f'openvino needs optimum-intel: pip install "sdgen[bench]" ({error})') from None

    export = 0.0
    if not (OPENVINO_OUT / "model_index.json").is_file():
        started = time.perf_counter()
        OVStableDiffusionPipeline.from_pretrained(folder, export=True, compile=False).save_pretrained(OPENVINO_OUT)
        export = time.perf_counter() - started
    started = time.perf_counter()
    pipe = OVStableDiffusionPipeline.from_pretrained(OPENVINO_OUT, compile=False)
    pipe.reshape(batch_size=1, height=size, width=size, num_images_per_prompt=1)
    pipe.compile()
    result = run_pipeline(pipe, started, size, steps, scheduler)
    result["dtype"] = "openvino"
    result["export"] = export
    return result


def _timings(load: float, text: float, started: float, stamps: list[float], ended: float) -> dict:
    steps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return {
        "load": load,
        "text": text,
        "first_step": stamps[0] - started,
        # the mean, not the median: with DeepCache or --cfg-end the steps differ, and what counts is their sum
        "step": statistics.mean(steps) if steps else stamps[0] - started,
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

    import sdgen.engine.pipeline  # noqa: F401
    import sdgen.models  # noqa: F401

    folder = ensure_model()
    if args.worker == "diffusers":
        result = run_diffusers(folder, args.size, args.steps, args.scheduler)
    elif args.worker == "openvino":
        result = run_openvino(folder, args.size, args.steps, args.scheduler)
    else:
        result = run_sdgen(folder, args.size, args.steps, args.scheduler, args.worker)
    print("BENCH " + json.dumps(result), flush=True)


# Caps torch's own kernels, oneDNN and MKL at AVX2 (their documented switches): an approximation of an
# AVX2-only CPU on a newer one (same cores, caches and clocks), never a measurement of one.
AVX2_CAP = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def run_config(
    config: str, size: int, steps: int, scheduler: str, openvino_python: str | None = None, cap_avx2: bool = False
) -> dict:
    python = openvino_python if config == "openvino" and openvino_python else sys.executable
    command = [python, __file__, "--worker", config, "--size", str(size), "--steps", str(steps)]
    command += ["--scheduler", scheduler]
    env = {**os.environ, **(AVX2_CAP if cap_avx2 else {})}
    if "compile" in config:  # a compile cache of the bench's own; -cold empties it first
        env["SDGEN_CACHE_DIR"] = str(COMPILE_CACHE)
        if config.endswith("-cold"):
            shutil.rmtree(COMPILE_CACHE, ignore_errors=True)
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{config} at {size} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("BENCH ") :])


def machine(cap_avx2: bool = False) -> dict:
    """The CPU and its measured matmul peaks (sdgen/hardware/machine.py), once per bench run."""
    from sdgen.hardware.machine import cpu_info, gemm_peaks

    info = cpu_info()
    native_bf16 = info.native_bf16 and not cap_avx2  # capped, bfloat16 is emulated: measure a small product
    return {"cpu": info.summary(), "kind": info.kind, "peaks": gemm_peaks(native_bf16)}


def table(size: int, steps: int, scheduler: str, results: dict[str, list[dict]], machine: dict | None = None) -> str:
    scale = (size / 512) ** 2
    # best of the rounds (the least disturbed run on a shared machine), each figure on its own
    best = {
        config: {key: min(run[key] for run in runs) for key in runs[0] if key != "dtype"}
        for config, runs in results.items()
    }
    base = best.get("diffusers")
    peaks = (machine or {}).get("peaks", {})
    rows = [f"### {size}x{size}, {steps} steps, guidance 7.5, {scheduler}, CPU ({os.cpu_count()} threads)", ""]
    if machine:
        rows += [
            f"CPU: {machine['cpu']}, {machine['kind']}. Measured GEMM peak: float32 {peaks['float32']:.0f} GFLOP/s, "
            f"bfloat16 {peaks['bfloat16']:.0f} GFLOP/s.",
            "",
        ]
    rows += [
        "| config | dtype | load s | text s | 1st step s | s/step | decode s | end to end s | peak RSS GiB "
        "| step x | decode x | e2e x | RSS ratio | U-Net GFLOP/s | VAE GFLOP/s | U-Net % peak |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for config, m in best.items():
        dtype = results[config][0].get("dtype", "float32")

        def faster(key: str, m=m) -> str:
            return f"{base[key] / m[key]:.2f}" if base else "-"

        rss = f"{m['peak_rss'] / base['peak_rss']:.2f}" if base else "-"
        unet_gflops = UNET_TFLOP_GUIDED_512 * scale * 1000 / m["step"]
        peak = f"{100 * unet_gflops / peaks[dtype]:.0f}%" if dtype in peaks else "-"
        rows.append(
            f"| {config} | {dtype} | {m['load']:.1f} | {m['text']:.2f} | {m['first_step']:.1f} | {m['step']:.2f} "
            f"| {m['decode']:.2f} "
            f"| {m['e2e']:.1f} | {m['peak_rss']:.2f} | {faster('step')} | {faster('decode')} | {faster('e2e')} "
            f"| {rss} | {unet_gflops:.0f} "
            f"| {VAE_DECODE_TFLOP_512 * scale * 1000 / m['decode']:.0f} | {peak} |"
        )
    rows.append("")
    rows.append("x columns: diffusers' time / this config's time (higher is faster); RSS ratio: this / diffusers.")
    exports = [run["export"] for run in results.get("openvino", []) if run.get("export")]
    if exports:
        rows.append(f"OpenVINO's one-time export to IR (not in its load or end to end): {max(exports):.0f} s.")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="256,512", help="comma-separated square sizes")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps per image")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds over the configurations")
    parser.add_argument("--configs", default="diffusers,sdgen", help=f"comma-separated, from: {', '.join(CONFIGS)}")
    parser.add_argument("--scheduler", default="dpm++2m-karras")
    parser.add_argument(
        "--openvino-python", help="the Python of an environment with sdgen[bench] (optimum-intel pins its own "
        "transformers, so a separate venv keeps sdgen's); default: this one",
    )
    parser.add_argument(
        "--cap-avx2", action="store_true",
        help="cap torch, oneDNN and MKL at AVX2 in every configuration (an AVX2-only CPU, approximated)",
    )
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
    if args.cap_avx2:
        os.environ.update(AVX2_CAP)  # the GEMM peaks below are measured under the cap too
    where = machine(args.cap_avx2)
    if args.cap_avx2:
        where["cpu"] += " capped at AVX2 (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, MKL_ENABLE_INSTRUCTIONS)"
        where["kind"] = "float32 only, approximated"
    print(f"CPU: {where['cpu']}; GEMM peak GFLOP/s: {where['peaks']}", file=sys.stderr, flush=True)
    for size in (int(s) for s in args.sizes.split(",")):
        results: dict[str, list[dict]] = {config: [] for config in configs}
        for _ in range(args.rounds):
            for config in configs:
                print(f"running {config} at {size}x{size} ...", file=sys.stderr, flush=True)
                run = run_config(config, size, args.steps, args.scheduler, args.openvino_python, args.cap_avx2)
                results[config].append(run)
        print(table(size, args.steps, args.scheduler, results, where), flush=True)
        print(flush=True)


if __name__ == "__main__":
    main()
