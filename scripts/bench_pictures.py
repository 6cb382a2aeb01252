#!/usr/bin/env python
"""What each picture of the process costs, relative to a plain generation, on the full-size SD1.5
architecture with random weights (models/sd15-random; the tiny autoencoder at TAESD's full size, also
random, in models/taesd-random). Speed does not depend on the weights' values.

One process, the model loaded once; every run makes the same image (same prompt, seed, size, steps). Per
preview quality: the time of one preview of a batch-of-1 latent (median of 3), and the whole-run time with
a live preview every step. Per picture: the whole command's time against a plain run. Quote ratios.

    python scripts/bench_pictures.py                    # 512x512, 8 steps
    python scripts/bench_pictures.py --size 256 --steps 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent
TAESD_OUT = ROOT / "models" / "taesd-random"
PROMPT = "a cute British short hair kitten, looking directly at you"


def ensure_taesd() -> Path:
    """AutoencoderTiny's default config is TAESD's architecture; random weights, saved once."""
    if not (TAESD_OUT / "config.json").is_file():
        import torch
        from diffusers import AutoencoderTiny

        torch.manual_seed(0)
        AutoencoderTiny().save_pretrained(TAESD_OUT)
    return TAESD_OUT


def cpu_kind() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    flags = next((line for line in lines if line.startswith("flags")), "").split()
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    units = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model} ({', '.join(units)})"


def timed(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()
    import torch
    from make_random_sd15 import ensure_model

    from sdgen.engine.loader import load_model, load_tiny_autoencoder
    from sdgen.engine.pipeline import generate
    from sdgen.engine.request import GenerationRequest, ModelSpec
    from sdgen.explain.noising import NoiseRequest, noise_pictures
    from sdgen.explain.schedules import ScheduleRequest, plot, schedule_numbers
    from sdgen.pictures.live import LivePreview
    from sdgen.pictures.previews import make_previewer
    from sdgen.pictures.sequence import SequenceRecorder, animation_frames, contact_sheet
    from sdgen.runs.grid import cell_requests, generate_cells, parse_axis

    folder, taesd = ensure_model(), ensure_taesd()
    spec = ModelSpec(model=str(folder), device="cpu", dtype=args.dtype)
    parts = load_model(spec)
    tiny = load_tiny_autoencoder(str(taesd), parts.placement)
    size = (args.size, args.size)
    request = GenerationRequest(PROMPT, seed=1, width=args.size, height=args.size, num_inference_steps=args.steps)
    generate(GenerationRequest(PROMPT, seed=1, width=64, height=64, num_inference_steps=1), parts)  # warm up
    plain = timed(lambda: generate(request, parts))
    rows = [("plain generation", plain, "")]
    latents = torch.randn((1, 4, args.size // 8, args.size // 8))
    previewers = {q: make_previewer(q, parts, size, tiny) for q in ("approx", "tiny", "full")}
    for quality, previewer in previewers.items():
        one = statistics.median(timed(lambda p=previewer: p(latents)) for _ in range(3))
        with tempfile.TemporaryDirectory() as scratch:
            live = LivePreview(previewer, 1, Path(scratch) / "live.png")
            run = timed(lambda live=live: generate(request, parts, on_step=live.on_step))
        rows.append((f"--preview-file, --preview {quality}, every step", run, f"{one * 1000:.0f} ms per preview"))
    for quality in ("approx", "tiny", "full"):
        recorder = SequenceRecorder(previewers[quality], frames=8)

        def sequence(recorder=recorder) -> None:
            [result] = generate(request, parts, on_step=recorder.on_step)
            finals = {result.seed: result.image}
            contact_sheet(recorder.kept, finals, PROMPT)
            animation_frames(recorder.kept, finals)

        rows.append((f"--save-steps + --animation, --preview {quality}, 8 frames", timed(sequence), ""))
    with tempfile.TemporaryDirectory() as scratch:
        image = Path(scratch) / "in.png"
        generate(request, parts)[0].image.save(image)
        noise = NoiseRequest(str(image), seed=1).checked()
        rows.append(("sdgen noise, latent space, 8 timesteps (loads the VAE)",
                     timed(lambda: noise_pictures(noise, spec, lambda t: [0, 142, 285, 428, 571, 714, 857, 999])), ""))
    rows.append(("sdgen schedule (plot)", timed(lambda: plot(schedule_numbers(parts.scheduler_config,
                 ScheduleRequest().checked()), "t")), ""))
    cells = cell_requests(request, parse_axis("guidance-scale=1,7.5", "x"), parse_axis("seed=1,2", "y"))
    rows.append(("sdgen grid 2x2 (guidance 1 and 7.5 x 2 seeds), batch size 1",
                 timed(lambda: generate_cells(cells, parts, 1, None)), "guidance 1 runs one U-Net pass per step"))
    print(f"### Pictures of the process: {args.size}x{args.size}, {args.steps} steps, {parts.placement.dtype}, "
          f"{cpu_kind()}, {torch.get_num_threads()} threads\n")
    print("| what | seconds | x plain generation | note |\n|---|---|---|---|")
    for name, seconds, note in rows:
        print(f"| {name} | {seconds:.1f} | {seconds / plain:.2f} | {note} |")


if __name__ == "__main__":
    main()
