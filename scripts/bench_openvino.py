#!/usr/bin/env python
"""Issue 27's table for --backend openvino: whole process, 512x512, 20 steps, each configuration in its own
fresh process, configurations alternating within each round, best of N rounds (docs/performance.md's method).

Full-size architectures with random weights (speed and memory do not depend on the weights' values): SD1.5
(scripts/make_random_sd15.py, models/sd15-random), SD-Turbo's (SD 2.1's configs in configs/sd2 with
sd-turbo's scheduler, models/sd2-random) and an SDXS-like model (SD1.5's U-Net with one layer per block, the
slimming SDXS-512 applies, and TAESD's architecture as vae/, models/sdxs-like-random). `--tiny` uses sdgen's
tiny test models instead (sdgen/testing), to check the whole script end to end in a few minutes.

Configurations:
  diffusers   StableDiffusionPipeline.from_pretrained with its own CPU defaults (float32), Euler
  sdgen       sdgen's defaults (torch; --dtype auto: bfloat16 on CPUs with AMX/AVX512-BF16)
  sdgen-fp32  sdgen, torch float32 (the exact path)
  torch-int8  torch's own int8 on the CPU: sdgen in float32 with the U-Net's Linear layers dynamically
              quantized (torch.ao.quantization.quantize_dynamic, qint8 weights, activations quantized per
              call; convolutions stay float32); a measurement, not an sdgen option
  ov          --backend openvino with a warm cache (filled before the rounds): no torch weights load
  ov-unpadded the same with its attention heads left as they are (sdgen/models/openvino_graph.py pads them on
              CPUs with AMX in bf16); a measurement of that rewrite, not an sdgen option
  ov-cold     the same with its own cache emptied first (first round only: converting is a one-time cost)
  ov-int8     --backend openvino --quantize int8 (NNCF weight compression), warm
  ov-hybrid   --backend openvino --quantize int8-hybrid (int8 activations too), warm
  ov-deepcache  --backend openvino --cache-interval 3 (DeepCache's two passes as two converted models), warm
  optimum     OpenVINO's own pipeline: optimum-intel's OVStableDiffusionPipeline, static shapes, run by
              --peer-python (a venv of its own: optimum-intel pins its own transformers); exported once
  ov-fp32, ov-hybrid-fp32, turbo-ov-fp32, sdxs-ov-fp32, optimum-fp32
              the same as ov, ov-hybrid, turbo-ov, sdxs-ov and optimum with OpenVINO's inference precision float32
              (sdgen: --dtype float32; optimum: INFERENCE_PRECISION_HINT f32): on a CPU with bfloat16 units,
              what those rows do without them (the nearest measure of a float32-only CPU this machine has)
  turbo-ov    SD-Turbo's architecture on --backend openvino: 1 step, guidance 0
  turbo-ov-taesd  the same with --decoder TAESD (TAESD's architecture, random weights, models/taesd-random)
  sdxs-ov     the one-step recipe (SDXS-like U-Net, TAESD decoder, TCD, 1 step, guidance 0) on OpenVINO:
              the SECOND image of a run (the first compiles; a user's session makes many)

Per configuration: seconds per step (the mean of the steps after the first; one-step configs: the step),
whole-process seconds (fork to exit, imports and loading included), peak RSS (the process's own), and
ratios against diffusers (per step, whole process, memory).

    python scripts/bench_openvino.py --tiny --rounds 1                     # the whole script, tiny models (minutes)
    python scripts/bench_openvino.py --peer-python /work/venvs/optimum/bin/python   # the issue's table
    python scripts/bench_openvino.py --configs ov --steps 1 --rounds 1      # a full-size smoke
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import peak_rss_gib  # noqa: E402 (scripts/ on the path first)

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
PROMPT = "a cute British short hair kitten, looking directly at you"
CONFIGS = ("diffusers", "sdgen", "sdgen-fp32", "torch-int8", "ov", "ov-unpadded", "ov-cold", "ov-int8", "ov-hybrid",
           "ov-deepcache", "optimum", "turbo-ov", "turbo-ov-taesd", "sdxs-ov", "ov-fp32", "ov-hybrid-fp32",
           "turbo-ov-fp32", "sdxs-ov-fp32", "optimum-fp32")
DEFAULT_CONFIGS = ("diffusers", "sdgen", "ov", "ov-cold", "ov-int8", "ov-hybrid", "optimum", "turbo-ov", "sdxs-ov")
# config -> (model, ModelSpec options, GenerationRequest options); steps and size come from the command line
SDGEN = {
    "sdgen": ("sd15", {}, {}),
    "sdgen-fp32": ("sd15", {"dtype": "float32"}, {}),
    "torch-int8": ("sd15", {"dtype": "float32"}, {}),  # + torch.ao's dynamic int8 of the U-Net's Linear layers
    "ov": ("sd15", {"backend": "openvino"}, {}),
    "ov-unpadded": ("sd15", {"backend": "openvino"}, {}),  # + the padded forms not chosen
    "ov-cold": ("sd15", {"backend": "openvino"}, {}),
    "ov-int8": ("sd15", {"backend": "openvino", "quantize": "int8"}, {}),
    "ov-hybrid": ("sd15", {"backend": "openvino", "quantize": "int8-hybrid"}, {}),
    "ov-deepcache": ("sd15", {"backend": "openvino"}, {"cache_interval": 3}),
    "turbo-ov": ("turbo", {"backend": "openvino"}, {"num_inference_steps": 1, "guidance_scale": 0.0}),
    "turbo-ov-taesd": ("turbo", {"backend": "openvino", "decoder": "taesd"},
                       {"num_inference_steps": 1, "guidance_scale": 0.0}),
    "sdxs-ov": ("sdxs", {"backend": "openvino"},
                {"num_inference_steps": 1, "guidance_scale": 0.0, "scheduler": "tcd"}),
    "ov-fp32": ("sd15", {"backend": "openvino", "dtype": "float32"}, {}),
    "ov-hybrid-fp32": ("sd15", {"backend": "openvino", "quantize": "int8-hybrid", "dtype": "float32"}, {}),
    "turbo-ov-fp32": ("turbo", {"backend": "openvino", "dtype": "float32"},
                      {"num_inference_steps": 1, "guidance_scale": 0.0}),
    "sdxs-ov-fp32": ("sdxs", {"backend": "openvino", "dtype": "float32"},
                     {"num_inference_steps": 1, "guidance_scale": 0.0, "scheduler": "tcd"}),
}
ONE_STEP = ("turbo-ov", "turbo-ov-taesd", "sdxs-ov", "turbo-ov-fp32", "sdxs-ov-fp32")
PEER = ("optimum", "optimum-fp32")  # run by --peer-python


# ---- the models ---------------------------------------------------------------------------------------------


def model_folder(name: str, tiny: bool) -> Path:
    """The model's folder, built once (random weights) and kept under models/."""
    folder = MODELS / (f"tiny-{name}" if tiny else {"sd15": "sd15-random", "turbo": "sd2-random",
                                                      "sdxs": "sdxs-like-random", "taesd": "taesd-random"}[name])
    if (folder / ".complete").is_file():
        return folder
    print(f"building {folder} ...", file=sys.stderr, flush=True)
    if name == "sd15" and not tiny:
        from make_random_sd15 import ensure_model

        return ensure_model(folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    if tiny:
        from sdgen.testing.tiny_fast_models import build_tiny_sd2, build_tiny_sdxs
        from sdgen.testing.tiny_model import build_tiny_autoencoder, build_tiny_model

        builders = {"sd15": build_tiny_model, "turbo": build_tiny_sd2, "sdxs": build_tiny_sdxs,
                    "taesd": build_tiny_autoencoder}
        builders[name](partial)
    elif name == "taesd":
        from diffusers import AutoencoderTiny

        AutoencoderTiny().save_pretrained(partial)  # TAESD's architecture
    else:
        _write_full_size(name, partial)
    (partial / ".complete").write_text("ok\n")
    partial.rename(folder)
    return folder


def _write_full_size(name: str, out: Path) -> None:
    """SD-Turbo's architecture (SD 2.1's configs, sd-turbo's scheduler), or the SDXS-like one."""
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from sdgen.testing.tiny_fast_models import SD_TURBO_SCHEDULER_CONFIG
    from sdgen.testing.tiny_model import SD15_SCHEDULER_CONFIG

    configs = ROOT / "configs" / ("sd2" if name == "turbo" else "sd15")
    torch.manual_seed(0)
    unet_config = json.loads((configs / "unet" / "config.json").read_text())
    if name == "sdxs":
        unet_config["layers_per_block"] = 1  # SDXS-512 keeps one layer per block
    text_config = json.loads((configs / "text_encoder" / "config.json").read_text())
    text_config.pop("architectures", None)
    UNet2DConditionModel.from_config(unet_config).save_pretrained(out / "unet")
    CLIPTextModel(CLIPTextConfig(**text_config)).save_pretrained(out / "text_encoder")
    if name == "turbo":
        vae_config = json.loads((configs / "vae" / "config.json").read_text())
        AutoencoderKL.from_config(vae_config).save_pretrained(out / "vae")
        scheduler, vae_class = SD_TURBO_SCHEDULER_CONFIG, "AutoencoderKL"
    else:
        AutoencoderTiny().save_pretrained(out / "vae")  # TAESD's architecture
        scheduler, vae_class = {"_class_name": "DDPMScheduler", **SD15_SCHEDULER_CONFIG}, "AutoencoderTiny"
    shutil.copytree(configs / "tokenizer", out / "tokenizer")
    (out / "scheduler").mkdir()
    (out / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler, indent=2))
    index = json.loads((ROOT / "configs" / "sd2" / "model_index.json").read_text())
    index.update(scheduler=["diffusers", scheduler["_class_name"]], vae=["diffusers", vae_class])
    (out / "model_index.json").write_text(json.dumps(index, indent=2))


# ---- the workers (each in its own process) ------------------------------------------------------------------


def _steps(stamps: list[float], started: float) -> float:
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    return statistics.mean(gaps) if gaps else stamps[0] - started


def run_diffusers(folder: Path, size: int, steps: int) -> dict:
    import diffusers
    import torch

    # float32, diffusers' precision on a CPU (said outright: the folder also holds an fp16 variant)
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(
        folder, torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False
    )
    return _run_pipeline(pipe, diffusers, size, steps, torch.Generator("cpu").manual_seed(0))


def run_optimum(folder: Path, size: int, steps: int, precision: str | None = None) -> dict:
    """OpenVINO's own pipeline (optimum-intel), exported to IR once beside the model (not timed here: the
    export runs in the bench's preparation), reshaped to static shapes and compiled, as FastSD CPU does;
    at OpenVINO's default precision for the CPU, or the one given (f32)."""
    import diffusers
    from optimum.intel import OVStableDiffusionPipeline

    exported = folder.with_name(folder.name + "-optimum")
    if not (exported / "model_index.json").is_file():
        OVStableDiffusionPipeline.from_pretrained(folder, export=True, compile=False).save_pretrained(exported)
    ov_config = {"INFERENCE_PRECISION_HINT": precision} if precision else None
    pipe = OVStableDiffusionPipeline.from_pretrained(exported, compile=False, ov_config=ov_config)
    pipe.reshape(batch_size=1, height=size, width=size, num_images_per_prompt=1)
    pipe.compile()
    import numpy as np

    result = _run_pipeline(pipe, diffusers, size, steps, np.random.RandomState(0))
    hint = pipe.unet.request.get_property("INFERENCE_PRECISION_HINT")  # an openvino.Type
    return {**result, "precision": hint.to_string() if hasattr(hint, "to_string") else str(hint)}


def _run_pipeline(pipe, diffusers, size: int, steps: int, generator) -> dict:
    pipe.scheduler = diffusers.EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    stamps: list[float] = []

    def on_step_end(pipeline, index, timestep, values):
        stamps.append(time.perf_counter())
        return values

    started = time.perf_counter()
    pipe(PROMPT, num_inference_steps=steps, width=size, height=size, generator=generator,
         callback_on_step_end=on_step_end)
    return {"step": _steps(stamps, started), "image": time.perf_counter() - started, "precision": "float32"}


def run_sdgen(config: str, folder: Path, size: int, steps: int) -> dict:
    from sdgen import GenerationRequest, ModelSpec, load_model
    from sdgen.engine.pipeline import generate

    _, model_options, request_options = SDGEN[config]
    if config == "ov-unpadded":
        from sdgen.engine import openvino_parts

        openvino_parts.pads_heads = lambda precision, part: False
    if model_options.get("decoder") == "taesd":
        model_options = {**model_options, "decoder": str(model_folder("taesd", folder.name.startswith("tiny-")))}
    parts = load_model(ModelSpec(model=str(folder), device="cpu", **model_options))
    if config == "torch-int8":
        import torch
        from torch.ao.quantization import quantize_dynamic

        quantize_dynamic(parts.unet, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    values = {"num_inference_steps": steps, "scheduler": "euler", **request_options}
    request = GenerationRequest(PROMPT, seed=0, width=size, height=size, **values)
    images = 2 if config.startswith("sdxs-ov") else 1  # the second image of a run
    for _ in range(images):
        stamps: list[float] = []
        started = time.perf_counter()
        generate(request, parts, on_step=lambda info, stamps=stamps: stamps.append(time.perf_counter()))
        image = time.perf_counter() - started
    runtime = parts.openvino
    precision = runtime.precision if runtime is not None else parts.placement.dtype
    precision = "float32 + qint8 Linear" if config == "torch-int8" else precision
    if model_options.get("quantize"):
        precision = f"{precision} + {model_options['quantize']}"
    loads = runtime.weights.loads if runtime is not None and runtime.weights is not None else None
    return {"step": _steps(stamps, started), "image": image, "precision": precision, "torch_loads": loads}


class AnonPeak:
    """The process's peak of anonymous resident memory (RssAnon, sampled every 50 ms in a thread). Peak RSS
    counts file pages too: OpenVINO keeps its model and blob files mapped (read-only page cache, dropped under
    memory pressure) beside its own copy of the weights, so RSS alone overstates what it cannot give back."""

    def __init__(self) -> None:
        import threading

        self.peak = 0.0
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        status = Path("/proc/self/status")
        while status.is_file():
            for line in status.read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak = max(self.peak, int(line.split()[1]) / 2**20)  # KiB
            time.sleep(0.05)


def worker(config: str, tiny: bool, size: int, steps: int) -> None:
    anon = AnonPeak()
    model = SDGEN[config][0] if config in SDGEN else "sd15"
    folder = model_folder(model, tiny) if config not in PEER else Path(os.environ["BENCH_MODEL"])
    runner = {"diffusers": run_diffusers, "optimum": run_optimum,
              "optimum-fp32": lambda *given: run_optimum(*given, precision="f32")}.get(config)
    result = runner(folder, size, steps) if runner else run_sdgen(config, folder, size, steps)
    print("BENCH " + json.dumps({**result, "rss": peak_rss_gib(), "anon": anon.peak}), flush=True)


# ---- the parent --------------------------------------------------------------------------------------------


def run_config(config: str, args: argparse.Namespace, steps: int | None = None) -> dict:
    """One fresh process; its whole wall time measured from here."""
    python = args.peer_python if config in PEER else sys.executable
    command = [python, __file__, "--worker", config, "--size", str(args.size), "--steps", str(steps or args.steps)]
    cache = MODELS / ("openvino-bench-cold" if config == "ov-cold" else "openvino-bench-cache")
    if config == "ov-cold":
        shutil.rmtree(cache, ignore_errors=True)
    env = {**os.environ, "SDGEN_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1",
           "BENCH_MODEL": str(model_folder("sd15", args.tiny))}
    started = time.perf_counter()
    done = subprocess.run([*command, *(["--tiny"] if args.tiny else [])], capture_output=True, text=True, env=env,
                          check=False)
    wall = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.startswith("BENCH ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{config} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(lines[-1][len("BENCH "):]), "process": wall}


def prepare(configs: list[str], args: argparse.Namespace) -> None:
    """Untimed: build the models, fill the warm configurations' cache (convert, compress, export)."""
    for name in {SDGEN[c][0] for c in configs if c in SDGEN} | {"sd15"}:
        model_folder(name, args.tiny)
    if any(SDGEN.get(c, ("", {}))[1].get("decoder") for c in configs):
        model_folder("taesd", args.tiny)
    for config in configs:
        if config in ("ov", "ov-unpadded", "ov-int8", "ov-hybrid", "ov-deepcache", "turbo-ov", "turbo-ov-taesd",
                      "sdxs-ov", "optimum", "ov-fp32", "ov-hybrid-fp32", "turbo-ov-fp32", "sdxs-ov-fp32"):
            print(f"preparing {config} (cache, export) ...", file=sys.stderr, flush=True)
            run_config(config, args, steps=2 if config == "ov-deepcache" else 1)  # DeepCache: both passes


def table(results: dict[str, list[dict]], args: argparse.Namespace) -> str:
    from sdgen.hardware.machine import cpu_info

    best = {name: {key: min(run.get(key, 0.0) for run in runs) for key in ("step", "image", "process", "rss", "anon")}
            for name, runs in results.items()}
    base = best.get("diffusers")
    rows = [
        f"{cpu_info().summary()}; {os.cpu_count()} threads; {args.size}x{args.size}, {args.steps} steps (one-step "
        f"configurations: 1), guidance 7.5 (one-step: 0), Euler; best of {args.rounds} round(s)"
        + ("; tiny test models" if args.tiny else ""),
        "",
        "| configuration | precision | s / step | whole process s | image s | peak RSS GiB | peak anon GiB "
        "| step x diffusers | process x diffusers | RSS / diffusers | anon / diffusers |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in best.items():
        precision = results[name][0].get("precision", "")

        def ratio(key: str, m=m, name=name) -> str:
            if not base or name == "diffusers" or (key == "step" and name in ONE_STEP):
                return ""
            if key in ("rss", "anon"):
                return f"{m[key] / base[key]:.2f}" if base[key] else ""
            return f"{base[key] / m[key]:.2f}"

        rows.append(f"| {name} | {precision} | {m['step']:.2f} | {m['process']:.1f} | {m['image']:.2f} | "
                    f"{m['rss']:.2f} | {m['anon']:.2f} | {ratio('step')} | {ratio('process')} | {ratio('rss')} | "
                    f"{ratio('anon')} |")
    rows += ["", "x: diffusers' seconds / this configuration's (higher is faster); RSS: this / diffusers'. "
             "sdxs-ov's image s is the second image of its run. peak anon: anonymous memory only (RssAnon, sampled "
             "every 50 ms), without the mapped model files that peak RSS counts."]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, help="square size (default 512; --tiny: 64)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps of the multi-step configurations")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; each figure the best of them")
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help=f"from: {', '.join(CONFIGS)}")
    parser.add_argument("--peer-python", help="the Python of a venv with optimum-intel[openvino] (config optimum)")
    parser.add_argument("--tiny", action="store_true", help="sdgen's tiny test models: the script end to end, fast")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.size = args.size or (64 if args.tiny else 512)
    if args.worker:
        worker(args.worker, args.tiny, args.size, args.steps)
        return
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration {unknown[0]!r}; choose from {', '.join(CONFIGS)}")
    if set(PEER) & set(configs) and not args.peer_python:
        parser.error("optimum needs --peer-python (a venv with optimum-intel[openvino]); or leave it out of --configs")
    prepare(configs, args)
    results: dict[str, list[dict]] = {config: [] for config in configs}
    for round_ in range(args.rounds):
        for config in configs:
            if config == "ov-cold" and round_:
                continue  # the cold start once
            print(f"round {round_ + 1}: {config} ...", file=sys.stderr, flush=True)
            results[config].append(run_config(config, args))
            print(f"  {json.dumps(results[config][-1])}", file=sys.stderr, flush=True)
    print(table(results, args))


if __name__ == "__main__":
    main()
