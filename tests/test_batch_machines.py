"""docs/batch.md's several-machines recipe run for real: two `accelerate launch --num_machines 2` invocations,
machine ranks 0 and 1, as two "machines" on this one (gloo over the loopback, the rendezvous on 127.0.0.1 at a
port free at run time), writing into one shared folder; the images and the manifest equal a one-process run's."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import torch
from typer.testing import CliRunner

from sdgen.cli import app

PROMPTS = [f"prompt {i}" for i in range(4)]


def tiny(model: Path, out: Path) -> list[str]:
    return ["--model", str(model), "-W", "64", "-H", "64", "--steps", "2", "-o", f"{out}/"]


def pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one_process(source: Path, model: Path, out: Path) -> None:
    """In this process with one thread, as torchrun gives each of its processes (CPU sums depend on threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(app, ["batch", str(source), *tiny(model, out), "--device", "cpu"])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output


def machine(rank: int, port: int, source: Path, model: Path, out: Path) -> subprocess.Popen:
    """`accelerate launch` as docs/batch.md writes it for machine `rank` of 2 (one process on each)."""
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable)) or "accelerate"
    launch = [accelerate, "launch", "--multi_gpu", "--num_machines", "2", "--num_processes", "2",
              "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "sdgen"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}  # gloo on the loopback only
    return subprocess.Popen([*launch, "batch", str(source), *tiny(model, out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_machines_through_accelerate_make_a_one_process_runs_files(tiny_model_dir, tmp_path) -> None:
    source = tmp_path / "p.txt"
    source.write_text("".join(f"{prompt}\n" for prompt in PROMPTS))
    port = free_port()
    launched = [machine(rank, port, source, tiny_model_dir, tmp_path / "shared") for rank in (0, 1)]
    one_process(source, tiny_model_dir, tmp_path / "one")  # while the two start up
    outputs = [process.communicate(timeout=240) for process in launched]
    for process, (_, stderr) in zip(launched, outputs, strict=True):
        assert process.returncode == 0, stderr.decode()[-3000:]
    assert b"[process 0/2]" in outputs[0][1] and b"[process 1/2]" in outputs[1][1]  # one on each "machine"
    assert pngs(tmp_path / "shared") == pngs(tmp_path / "one") and len(pngs(tmp_path / "one")) == len(PROMPTS)
    merged = [json.loads(line) for line in (tmp_path / "shared/manifest.jsonl").read_text().splitlines()]
    alone = [json.loads(line) for line in (tmp_path / "one/manifest.jsonl").read_text().splitlines()]
    assert [record["line"] for record in merged] == [1, 2, 3, 4] and not list((tmp_path / "shared").glob(".manifest*"))
    assert [record["seed"] for record in merged] == [record["seed"] for record in alone]
