#!/usr/bin/env python
"""What enlarging and repairing cost next to the plain generation they follow, on one CPU, in one process.

The full-size SD1.5 architecture with random weights (scripts/make_random_sd15.py, cached in models/sd15-random)
makes a plain 512x512 picture; then, on that picture, each step after it is timed: a full-size ESRGAN (RRDBNet,
64 features, 23 blocks: 4x-UltraSharp's and RealESRGAN_x4plus's shape) and Real-ESRGAN's compact net
(realesr-general-x4v3's shape) enlarging it 4x in 256-pixel tiles, and one GFPGAN v1.4-shaped pass over a 512
face square (zero weights: the cost of a pass does not depend on them). The detail repair's cost is an
inpainting run of steps x strength steps per region, which the plain run's seconds per step give.

    python scripts/bench_repair.py --steps 20
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def timed(run) -> float:  # noqa: ANN001 - a thunk
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def upscaler_file(folder: Path, name: str, module: object) -> Path:
    from safetensors.torch import save_file

    path = folder / f"{name}.safetensors"
    save_file({key: value.contiguous() for key, value in module.state_dict().items()}, str(path))  # type: ignore[attr-defined]
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dtype", default="auto")
    args = parser.parse_args()

    import torch
    from make_random_sd15 import ensure_model

    from sdgen import GenerationRequest, ModelSpec, load_model
    from sdgen.engine.face_restore import FACE_SIZE
    from sdgen.engine.pipeline import generate
    from sdgen.engine.upscaling import upscale_with_model
    from sdgen.hardware.machine import cpu_info
    from sdgen.models.upscalers import identify, import_spandrel, load_upscaler
    from sdgen.testing.tiny_upscalers import save_blank_gfpgan

    import_spandrel()
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN

    print(f"# {cpu_info()}")
    parts = load_model(ModelSpec(model=str(ensure_model()), device="cpu", dtype=args.dtype))
    request = GenerationRequest(prompt="a portrait", seed=0, num_inference_steps=args.steps, scheduler="euler")
    holder: list = []
    plain = timed(lambda: holder.extend(generate(request, parts)))
    picture = holder[0].image
    rows = [(f"plain generation, 512x512, {args.steps} steps ({parts.placement.dtype})", plain)]
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        nets = {"ESRGAN 4x (RRDBNet 64x23), 512 -> 2048, 256 tiles": ESRGAN(num_filters=64, num_blocks=23, scale=4),
                "Real-ESRGAN compact 4x (64x32), 512 -> 2048, 256 tiles": Compact(num_feat=64, num_conv=32, upscale=4)}
        for label, net in nets.items():
            model = load_upscaler(identify(upscaler_file(folder, label.split()[0].lower(), net)))
            rows.append((label, timed(lambda model=model: upscale_with_model(model, picture, tile=256, overlap=16))))
        gfpgan = load_upscaler(identify(save_blank_gfpgan(folder / "GFPGANv1.4.safetensors")))
        face = picture.resize((FACE_SIZE, FACE_SIZE))
        rows.append(("GFPGAN v1.4 shape, one 512 face square", timed(lambda: upscale_with_model(gfpgan, face, tile=0))))
    per_step = plain / args.steps
    print("| step | seconds | against the plain generation |")
    print("|---|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.1f} | {seconds / plain:.2f}x |")
    detail_steps = round(args.steps * 0.4)
    print(f"| detail repair, one region at 512, strength 0.4 ({detail_steps} steps, from the plain run's "
          f"{per_step:.2f} s a step) | {per_step * detail_steps:.1f} | {detail_steps / args.steps:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
