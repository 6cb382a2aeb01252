#!/usr/bin/env python
"""sdgen next to diffusers' own pipeline on a CUDA GPU, in one process: speed, memory and pixel agreement.

Builds the full-size SD1.5 with random weights (scripts/make_random_sd15.py, configs/sd15: speed and memory do
not depend on the weights' values) and runs, at 512x512 with DPM++ 2M Karras:
  diffusers   StableDiffusionPipeline in float16 (the peer), and in float32 for the exactness check
  sdgen       float16 as sdgen runs it (channels_last on CUDA), without channels_last, with --compile,
              and float32
For each: it/s at batch 1 and batch 4 (steps after the first, timed between step callbacks, synchronized),
the end-to-end time of one batch-1 image (prompt to PIL image), and the peak GPU memory. Pixel agreement, same
seed and noise (drawn on the CPU by both): sdgen float16 against diffusers float16 within FP16_BOUND (float16
kernels round differently between layouts and fused ops, so a few levels are expected, never a different
picture), and sdgen float32 against diffusers float32 within 1/255 (sdgen's promise, tests/test_pipeline.py).

    python scripts/check_cuda.py                          # on the GPU: the table, and --json FILE for the numbers
    python scripts/check_cuda.py --device cpu --tiny      # the same code on the tiny model (tests/test_check_cuda.py)

Offline GPU machines: docs/performance.md ("CUDA check") says how to bring the wheels.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PROMPT = "a photograph of an astronaut riding a horse"
SEED = 1234
FP16_BOUND = 16  # max |difference| in 0-255 levels between sdgen's and diffusers' float16 pictures


@dataclass
class Row:
    name: str
    dtype: str
    its_batch1: float
    its_batch4: float
    end_to_end_s: float
    peak_gpu_mib: float | None


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _its(stamps: list[float]) -> float:
    """Steps per second after the first step (which may compile, or warm up kernels)."""
    return (len(stamps) - 2) / (stamps[-1] - stamps[1]) if len(stamps) > 2 else float("nan")


def _peak(device: str, reset: bool = False) -> float | None:
    import torch

    if not device.startswith("cuda"):
        return None
    if reset:
        torch.cuda.reset_peak_memory_stats()
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def _diffusers_pipe(folder: Path, device: str, dtype: str):
    import torch
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    half = dtype == "float16"
    pipe = StableDiffusionPipeline.from_pretrained(
        str(folder), torch_dtype=torch.float16 if half else torch.float32, variant="fp16" if half else None,
        safety_checker=None, requires_safety_checker=False,
    )
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, use_karras_sigmas=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def run_diffusers(folder: Path, device: str, dtype: str, size: int, steps: int, batches: tuple[int, ...]):
    """(Row, batch-1 picture as uint8 array) of diffusers' pipeline."""
    import numpy as np
    import torch

    pipe = _diffusers_pipe(folder, device, dtype)
    rates, picture, seconds = {}, None, 0.0
    for batch in batches:
        stamps: list[float] = []

        def stamp(pipe, index, timestep, kwargs, stamps=stamps):
            _sync(device)
            stamps.append(time.perf_counter())
            return kwargs

        _peak(device, reset=True)
        generators = [torch.Generator("cpu").manual_seed(SEED + i) for i in range(batch)]
        started = time.perf_counter()
        images = pipe([PROMPT] * batch, num_inference_steps=steps, width=size, height=size, generator=generators,
                      callback_on_step_end=stamp).images
        _sync(device)
        if batch == 1:
            seconds, picture = time.perf_counter() - started, np.asarray(images[0])
        rates[batch] = _its(stamps)
    row = Row(f"diffusers {dtype}", dtype, rates[batches[0]], rates[batches[-1]], seconds, _peak(device))
    del pipe
    return row, picture


def run_sdgen(folder: Path, device: str, dtype: str, size: int, steps: int, batches: tuple[int, ...],
              compile: bool = False, channels_last: bool | None = None):
    """(Row, batch-1 picture) of sdgen's loop, loaded as a run loads it (its speed plan, maybe changed)."""
    from dataclasses import replace

    import numpy as np

    from sdgen.engine.loader import load_model
    from sdgen.engine.pipeline import generate
    from sdgen.engine.request import GenerationRequest, ModelSpec
    from sdgen.hardware.devices import choose_placement
    from sdgen.hardware.speed import plan_speed

    spec = ModelSpec(model=str(folder), device=device, dtype=dtype, compile=compile).checked()
    placement = choose_placement(spec.device, spec.dtype, spec.rng)
    plan = plan_speed(spec, placement)
    if channels_last is not None:
        plan = replace(plan, channels_last=channels_last)
    parts = load_model(spec, placement, plan)
    rates, picture, seconds = {}, None, 0.0
    for batch in batches:
        stamps: list[float] = []

        def stamp(info, stamps=stamps):
            _sync(device)
            stamps.append(time.perf_counter())

        request = GenerationRequest(PROMPT, seed=SEED, num_inference_steps=steps, width=size, height=size,
                                    num_images=batch, batch_size=batch)
        if compile:
            generate(request, parts)  # the compiling call, as a server's first request pays it
        _peak(device, reset=True)
        started = time.perf_counter()
        results = generate(request, parts, on_step=stamp)
        _sync(device)
        if batch == 1:
            seconds, picture = time.perf_counter() - started, np.asarray(results[0].image)
        rates[batch] = _its(stamps)
    layout = "" if channels_last is None else (" channels_last" if channels_last else " no channels_last")
    name = f"sdgen {dtype}{' --compile' if compile else ''}{layout}"
    row = Row(name, dtype, rates[batches[0]], rates[batches[-1]], seconds, _peak(device))
    del parts
    return row, picture


def _model(tiny: bool, folder: Path | None = None) -> Path:
    if folder is not None:
        return folder
    if tiny:
        from sdgen.testing.tiny_model import build_tiny_model

        return build_tiny_model(Path(tempfile.mkdtemp(prefix="sdgen-check-")) / "tiny", fp16_variant=True)
    from make_random_sd15 import ensure_model

    return ensure_model()


def check(device: str, tiny: bool, steps: int, compile: bool = True, model: Path | None = None) -> dict:
    """Every configuration, then the agreement of the pictures; a dict of plain values (--json writes it)."""
    import numpy as np

    folder = _model(tiny, model)
    size, batches = (64, (1, 2)) if tiny else (512, (1, 4))
    half = "float16" if device.startswith("cuda") else "float32"  # float16 on a CPU is not what anyone runs
    rows, pictures = [], {}
    runners = {
        "diffusers-half": lambda: run_diffusers(folder, device, half, size, steps, batches),
        "sdgen-half": lambda: run_sdgen(folder, device, half, size, steps, batches),
    }
    if device.startswith("cuda"):  # on a CPU, float32 keeps NHWC off already and the float32 runs are the above
        runners["sdgen-half-nhwc-off"] = lambda: run_sdgen(folder, device, half, size, steps, batches,
                                                           channels_last=False)
        runners["diffusers-fp32"] = lambda: run_diffusers(folder, device, "float32", size, steps, batches[:1])
        runners["sdgen-fp32"] = lambda: run_sdgen(folder, device, "float32", size, steps, batches[:1])
    if compile:
        runners["sdgen-half-compile"] = lambda: run_sdgen(folder, device, half, size, steps, batches, True)
    for key, runner in runners.items():
        row, pictures[key] = runner()
        rows.append(row)
        print(f"  {row.name}: {row.its_batch1:.2f} it/s", file=sys.stderr)
    if "sdgen-fp32" not in pictures:
        pictures["sdgen-fp32"], pictures["diffusers-fp32"] = pictures["sdgen-half"], pictures["diffusers-half"]

    def diff(a: str, b: str) -> int:
        return int(np.abs(pictures[a].astype(np.int16) - pictures[b].astype(np.int16)).max())

    agreement = {
        "half_max_diff": diff("sdgen-half", "diffusers-half"), "half_bound": FP16_BOUND,
        "compiled_max_diff": diff("sdgen-half-compile", "sdgen-half") if compile else None,
        "fp32_max_diff": diff("sdgen-fp32", "diffusers-fp32"), "fp32_bound": 1,
    }
    agreement["ok"] = agreement["half_max_diff"] <= FP16_BOUND and agreement["fp32_max_diff"] <= 1
    return {"device": _device_name(device), "size": size, "steps": steps, "batches": list(batches),
            "rows": [asdict(row) for row in rows], "agreement": agreement}


def _device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__}, CUDA {torch.version.cuda})"
    from sdgen.hardware.machine import cpu_info

    return f"CPU {cpu_info().summary()} (torch {torch.__version__})"


def table(report: dict) -> str:
    batch = report["batches"][-1]
    lines = [f"{report['device']}, {report['size']}x{report['size']}, {report['steps']} steps, DPM++ 2M Karras", "",
             f"| run | it/s batch 1 | it/s batch {batch} | end to end (batch 1) | peak GPU memory |",
             "|---|---|---|---|---|"]
    for row in report["rows"]:
        peak = "-" if row["peak_gpu_mib"] is None else f"{row['peak_gpu_mib']:.0f} MiB"
        lines.append(f"| {row['name']} | {row['its_batch1']:.2f} | {row['its_batch4']:.2f} | "
                     f"{row['end_to_end_s']:.2f} s | {peak} |")
    a = report["agreement"]
    lines += ["", f"pixels: half max |diff| {a['half_max_diff']}/255 (bound {a['half_bound']}), float32 "
              f"{a['fp32_max_diff']}/255 (bound 1): {'ok' if a['ok'] else 'FAILED'}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (with --tiny: the test)")
    parser.add_argument("--tiny", action="store_true", help="the tiny random model at 64x64 (batch 1 and 2)")
    parser.add_argument("--model", type=Path, help="a model folder to use instead of building one (its size: "
                        "512x512 unless --tiny)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--no-compile", action="store_true", help="leave out the --compile run")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("check_cuda: no CUDA device here (torch.cuda.is_available() is False); use --device cpu --tiny "
                  "for the CPU check.", file=sys.stderr)
            return 2
    report = check(args.device, args.tiny, max(args.steps, 3), compile=not args.no_compile, model=args.model)
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0 if report["agreement"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
