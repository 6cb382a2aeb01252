#!/usr/bin/env python
"""Throughput of `sdgen batch --ray` with 1, 2 and 4 workers on the tiny random model at 64x64 (images/min).

For each worker count N, starts a local Ray cluster on 127.0.0.1 of N logical CPUs (so N workers of one torch
thread each; on a machine with fewer cores they share them, which is the point of the table), builds the tiny
model once, and runs the same prompts file into a fresh folder with `sdgen batch --ray ADDRESS
--workers N`, timing the whole command (start-up and model loads included) and the steady part (the images
after each worker's first). Nothing is downloaded.

    python scripts/bench_ray.py --images 32 --steps 8 --workers 1,2,4
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(address: str, model: Path, prompts: Path, out: Path, workers: int, steps: int) -> tuple[float, list]:
    args = [sys.executable, "-m", "sdgen", "batch", str(prompts), "--ray", address, "--workers", str(workers),
            "--model", str(model), "-W", "64", "-H", "64", "--steps", str(steps), "--device", "cpu",
            "--dtype", "float32", "-q", "-o", f"{out}/"]
    started = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - started
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    return seconds, records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]

    from ray.cluster_utils import Cluster

    from sdgen.hardware.machine import cpu_model
    from sdgen.testing.tiny_model import build_tiny_model

    folder = Path(tempfile.mkdtemp(prefix="sdgen-bench-ray-"))
    model = build_tiny_model(folder / "tiny-sd")
    prompts = folder / "prompts.txt"
    prompts.write_text("".join(f"a fox number {i}\n" for i in range(args.images)))
    print(f"{cpu_model()}, {os.cpu_count()} cores; tiny model, 64x64, {args.steps} steps, {args.images} images")
    print("| workers | whole run (s) | images/min, whole run | images/min, after start-up |")
    print("|---|---|---|---|")
    for workers in counts:
        # a cluster of N logical CPUs: N workers of one torch thread each (more threads than cores would spin)
        cluster = Cluster(initialize_head=True, head_node_args={
            "node_ip_address": "127.0.0.1", "num_cpus": workers, "include_dashboard": False})
        try:
            seconds, records = run(cluster.address, model, prompts, folder / f"out-{workers}", workers, args.steps)
        finally:
            cluster.shutdown()
        steady = sorted(r["seconds"] for r in records)[workers:]  # each worker's first image warms it up
        per_image = sum(steady) / len(steady) / workers if steady else float("nan")
        print(f"| {workers} | {seconds:.1f} | {len(records) / seconds * 60:.0f} | {60 / per_image:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
