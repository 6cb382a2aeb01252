"""Load figure of `sdgen serve`: N concurrent clients send requests to a real server process; prints
requests per minute, latency and the server's resident memory before and after.

    python scripts/serve_load.py                       # the tiny random model, 64x64, 8 clients, 200 requests
    python scripts/serve_load.py --model models/sd15-random --size 512 --requests 16 --steps 20

Needs the serve extra (pip install "sdgen[serve]") and requests. The tiny model is built in a temporary
folder when no --model is given; nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def rss_mib(pid: int) -> float:
    """Resident memory of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: str, port: int, extra: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "sdgen", "serve", "--model", model, "--port", str(port), "--quiet", *extra]
    return subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def wait_ready(url: str, process: subprocess.Popen) -> None:
    import requests

    while True:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            requests.get(f"{url}/sdapi/v1/options", timeout=5)
            return
        except requests.ConnectionError:
            time.sleep(0.2)


def run_load(url: str, clients: int, total: int, body: dict) -> tuple[float, list[float], int]:
    """`total` requests from `clients` threads; returns (seconds, latencies, failures)."""
    import requests

    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()
    counter = iter(range(total))

    def client() -> None:
        nonlocal failures
        session = requests.Session()
        while True:
            with lock:
                number = next(counter, None)
            if number is None:
                return
            started = time.perf_counter()
            answer = session.post(f"{url}/sdapi/v1/txt2img", json={**body, "seed": number}, timeout=600)
            with lock:
                latencies.append(time.perf_counter() - started)
                failures += answer.status_code != 200 or len(answer.json().get("images", [])) != 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model folder or id (default: the tiny random model, built here)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=8, help="requests before the memory is read the first time")
    parser.add_argument("serve_args", nargs="*", help="more flags for sdgen serve (after --)")
    args = parser.parse_args()
    model = args.model
    if model is None:
        from sdgen.testing.tiny_model import build_tiny_model

        model = str(build_tiny_model(Path(tempfile.mkdtemp(prefix="sdgen-load-")) / "tiny-sd"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(model, port, ["--max-queue", "0", *args.serve_args])
    try:
        wait_ready(url, process)
        body = {"prompt": "a fox in the snow", "steps": args.steps, "width": args.size, "height": args.size,
                "sampler_name": "Euler a", "cfg_scale": 7.5}
        run_load(url, args.clients, args.warmup, body)
        before = rss_mib(process.pid)
        seconds, latencies, failures = run_load(url, args.clients, args.requests, body)
        after = rss_mib(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    latencies.sort()
    print(json.dumps({
        "model": args.model or "tiny random (sdgen.testing)", "size": args.size, "steps": args.steps,
        "clients": args.clients, "requests": args.requests, "failures": failures,
        "requests_per_minute": round(args.requests / seconds * 60, 1),
        "latency_s": {"p50": round(statistics.median(latencies), 3),
                      "p95": round(latencies[int(0.95 * (len(latencies) - 1))], 3)},
        "server_rss_mib": {"before": round(before, 1), "after": round(after, 1), "growth": round(after - before, 1)},
    }, indent=2))


if __name__ == "__main__":
    main()
