#!/usr/bin/env python
"""SD upscale's memory and time by picture size: does the peak grow with the tile or with the picture?

The full-size SD1.5 architecture with random weights (scripts/make_random_sd15.py, cached in models/sd15-random).
For each output size, one fresh process runs `--sd-upscale 2` on a random init image of half that size with
512x512 tiles (overlap 64), and, where it fits, plain image-to-image of the whole picture at that size for
comparison; each reports its seconds, the tiles it ran and its peak resident memory (ru_maxrss). Few steps
(the cost per tile is what repeats; the steps do not change the peak).

    python scripts/bench_sd_upscale.py --sizes 512,1024,2048 --steps 2 --plain 512,1024
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parent.parent


def worker(kind: str, size: int, steps: int, dtype: str) -> None:
    import numpy as np
    from make_random_sd15 import ensure_model
    from PIL import Image

    from sdgen import GenerationRequest, ModelSpec, load_model
    from sdgen.engine.pipeline import generate
    from sdgen.engine.sd_upscale import tile_starts

    parts = load_model(ModelSpec(model=str(ensure_model()), device="cpu", dtype=dtype))
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    rng = np.random.default_rng(0)
    half = Image.fromarray((rng.random((size // 2, size // 2, 3)) * 255).astype(np.uint8))
    common = dict(prompt="a castle", seed=0, num_inference_steps=steps, strength=0.5, scheduler="euler")
    if kind == "tiled":
        request = GenerationRequest(**common, init_image=half, sd_upscale=2.0, width=512, height=512)
        tiles = len(tile_starts(size, 512, 64)) ** 2
    else:
        request = GenerationRequest(**common, init_image=half.resize((size, size)), width=size, height=size)
        tiles = 1
    started = time.perf_counter()
    [image] = generate(request, parts)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    print(json.dumps({"kind": kind, "size": size, "tiles": tiles, "seconds": round(seconds, 1),
                      "peak_gib": round(peak, 2), "loaded_gib": round(loaded, 2), "out": list(image.image.size),
                      "dtype": parts.placement.dtype}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="512,1024,2048")
    parser.add_argument("--plain", default="512,1024", help="sizes to also run untiled image-to-image at")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], int(args.worker[1]), args.steps, args.dtype)
        return 0
    from sdgen.hardware.machine import cpu_info

    print(f"# {cpu_info()}")
    runs = [("tiled", int(s)) for s in args.sizes.split(",")] + [("plain", int(s)) for s in args.plain.split(",") if s]
    print("| run | output | tiles | seconds | peak RSS GiB | of which the loaded model |")
    print("|---|---|---|---|---|---|")
    for kind, size in runs:
        done = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--dtype", args.dtype,
                               "--worker", kind, str(size)], capture_output=True, text=True)
        if done.returncode != 0:
            print(f"| {kind} | {size} | - | failed: {done.stderr.strip().splitlines()[-1][:80]} | | |")
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"| {kind} ({row['dtype']}) | {size}x{size} | {row['tiles']} | {row['seconds']} | {row['peak_gib']} | "
              f"{row['loaded_gib']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
