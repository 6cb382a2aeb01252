#!/usr/bin/env python
"""What padding the attention heads buys (docs/performance.md "Padded attention heads"): one of sdgen's cached
OpenVINO U-Nets (an unpadded form: none, f16 or int8) compiled twice in one process, as it is and with its heads
padded (sdgen/models/openvino_graph.py), and the two called alternately, so the machine's drift falls on both
alike. Prints each one's best and median seconds per call and the largest difference between their outputs.

    sdgen cache list --json                            # each U-Net entry's "path": PATH
    python scripts/bench_openvino_heads.py PATH/model.xml --calls 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("xml", help="a cached U-Net's model.xml (its folder: sdgen cache list --json)")
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (latents: size / 8)")
    parser.add_argument("--batch", type=int, default=2, help="the U-Net's batch (2: guidance's two halves)")
    parser.add_argument("--text-width", type=int, default=768, help="the text encoder's width (SD1.5: 768)")
    parser.add_argument("--precision", default="bf16", choices=("bf16", "f32"))
    parser.add_argument("--calls", type=int, default=10, help="calls of each form, alternating")
    args = parser.parse_args()

    import numpy as np
    import openvino

    from sdgen.models.openvino_graph import pad_attention_heads

    core = openvino.Core()
    side = args.size // 8
    shapes = ((args.batch, 4, side, side), (1,), (args.batch, 77, args.text_width))
    config = {"INFERENCE_PRECISION_HINT": args.precision}
    compiled = {}
    for form in ("plain", "padded"):
        model = core.read_model(args.xml)
        model.reshape({index: openvino.PartialShape(list(shape)) for index, shape in enumerate(shapes)})
        if form == "padded" and pad_attention_heads(model) == 0:
            print("note: no attention here has heads to pad; the two forms are the same model", file=sys.stderr)
        compiled[form] = core.compile_model(model, "CPU", config)
        del model
    rng = np.random.default_rng(0)
    feeds = [rng.standard_normal(shapes[0]).astype(np.float32), np.array([500.0], np.float32),
             rng.standard_normal(shapes[2]).astype(np.float32)]
    requests = {form: model.create_infer_request() for form, model in compiled.items()}
    outputs = {form: np.array(request.infer(feeds)[0]) for form, request in requests.items()}  # first calls: untimed
    seconds: dict[str, list[float]] = {form: [] for form in requests}
    for _ in range(args.calls):
        for form, request in requests.items():
            started = time.perf_counter()
            request.infer(feeds)
            seconds[form].append(time.perf_counter() - started)
    for form, values in seconds.items():
        print(f"{form:7s} best {min(values):.3f} s  median {statistics.median(values):.3f} s  ({args.calls} calls)")
    difference = float(np.abs(outputs["padded"] - outputs["plain"]).max())
    print(f"largest output difference {difference:.4g} (outputs up to {float(np.abs(outputs['plain']).max()):.4g})")


if __name__ == "__main__":
    main()
