"""`sdgen batch --ray` and `sdgen serve --replicas` on a local two-node Ray cluster on 127.0.0.1 (two "machines":
a head and a second node, one CPU each, so two workers land one on each). Ray starts once for the module and
is torn down after it; every Ray process, driver, server and client here talks to 127.0.0.1 only."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sdgen.cli import app

LINES = 8
STEPS = "4"  # the workers are frozen (SIGSTOP) before one of them or the driver is stopped: any speed will do


@pytest.fixture(scope="module")
def cluster():
    """A head and a second node, both on 127.0.0.1, one CPU each: the address of the head's GCS."""
    from ray.cluster_utils import Cluster

    loopback = {"node_ip_address": "127.0.0.1", "num_cpus": 1}
    nodes = Cluster(initialize_head=True, head_node_args={**loopback, "include_dashboard": False})
    try:
        nodes.add_node(**loopback)
        nodes.wait_for_nodes()
        yield nodes.address
    finally:
        nodes.shutdown()


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ray") / "prompts.txt"
    path.write_text("".join(f"a fox number {i}\n" for i in range(LINES)))
    return path


def options(model, *extra: str) -> list[str]:
    return ["--model", str(model), "-W", "64", "-H", "64", "--steps", STEPS, "--device", "cpu", "--dtype",
            "float32", *extra]


@pytest.fixture(scope="module")
def reference(tiny_model_dir, prompts, tmp_path_factory) -> Path:
    """The same batch in this one process, with one torch thread as each worker has (float sums in another
    order would differ in the last bit)."""
    import torch

    out = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = CliRunner().invoke(app, ["batch", str(prompts), *options(tiny_model_dir, "-q", "-o", f"{out}/")])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return out


def driver(address: str, prompts: Path, model, out: Path, *extra: str) -> subprocess.Popen:
    args = ["batch", str(prompts), "--ray", address, "--workers", "2", *options(model, "-o", f"{out}/", *extra)]
    return subprocess.Popen([sys.executable, "-m", "sdgen", *args], cwd=out.parent, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def json_records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def records(folder: Path) -> list[dict]:
    """The manifest without what differs between runs: timings, and the folder the paths start with."""
    return [{**r, "seconds": None, "path": Path(r["path"]).name} for r in json_records(folder)]


def same_as_reference(folder: Path, reference: Path) -> None:
    made = {p.name: p.read_bytes() for p in folder.glob("*.png")}
    assert made == {p.name: p.read_bytes() for p in reference.glob("*.png")}  # every image, byte for byte
    # each image recorded once (a resumed run records the images a stopped one left unrecorded first, then
    # makes the rest, so the lines are in plan order only within each run)
    def in_plan_order(found: list[dict]) -> list[dict]:
        return sorted(found, key=lambda record: (record["line"], record["index"]))

    assert in_plan_order(records(folder)) == records(reference)


def wait_for(check, seconds: float, what: str, every: float = 0.05):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(every)
    raise AssertionError(f"waited {seconds} s for {what}")


def workers() -> dict[int, int]:
    """The batch's Ray workers on this machine (they load sdgen's model): pid -> parent (its node's raylet)."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"ChunkMaker" in (proc / "cmdline").read_bytes():
                found[int(proc.name)] = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    return found


def test_a_killed_worker_then_a_stopped_driver_then_resume_equals_one_process(cluster, prompts, tiny_model_dir,
                                                                            reference, tmp_path) -> None:
    """Both recoveries in one batch (one start-up of the workers fewer): a worker killed mid-run is restarted by
    Ray and makes images again; the driver stopped after that leaves a partial manifest, and a second run
    (--gather: its images come back to the driver to be written) makes only the rest."""
    out = tmp_path / "out"
    first = driver(cluster, prompts, tiny_model_dir, out)
    manifest = out / "manifest.jsonl"
    try:
        pool = wait_for(lambda: (found := workers()) and len(found) == 2 and found, 90, "two workers")
        assert len(set(pool.values())) == 2  # one on each node: two raylets started them
        wait_for(lambda: manifest.is_file() and manifest.read_text(), 90, "a record", every=0.01)
        for pid in pool:  # both frozen mid-run (however fast this machine), so one dies holding a chunk
            os.kill(pid, signal.SIGSTOP)
        images = len(list(out.glob("*.png")))
        dead, alive = pool
        os.kill(dead, signal.SIGKILL)  # Ray starts another worker; `alive` stays frozen on its chunk
        restarted = wait_for(lambda: [pid for pid in workers() if pid not in pool], 90, "a restarted worker")
        wait_for(lambda: len(list(out.glob("*.png"))) > images, 90, "an image from it", every=0.01)
        for pid in restarted:  # nothing more is made: the driver stops mid-run
            os.kill(pid, signal.SIGSTOP)
        first.send_signal(signal.SIGTERM)
        _, stderr = first.communicate(timeout=60)
    finally:
        first.kill()
    assert first.returncode == 143, stderr
    made = len(list(out.glob("*.png")))  # the workers wrote them; the driver recorded those it got back
    assert 0 < len(records(out)) <= made < LINES  # `alive`'s chunk was never finished
    again = driver(cluster, prompts, tiny_model_dir, out, "--gather")
    stdout, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    assert f"{LINES - made} made, {made} skipped, 0 failed" in stderr  # an image on disk is not made again
    assert len(stdout.splitlines()) == LINES - made  # one line per image made, nothing else on stdout
    same_as_reference(out, reference)


def test_serve_with_two_replicas_answers_webuiapi_and_eight_clients(cluster, tiny_model_dir, tmp_path) -> None:
    import socket

    import webuiapi

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ["serve", "--replicas", "2", "--port", str(port), *options(tiny_model_dir)]
    server = subprocess.Popen([sys.executable, "-m", "sdgen", *args], env={**os.environ, "RAY_ADDRESS": cluster},
                              stderr=subprocess.PIPE, text=True)
    try:
        client = webuiapi.WebUIApi(host="127.0.0.1", port=port)
        wait_for(lambda: _answers(client), 120, "the replicas")
        first = client.txt2img(prompt="a fox", width=64, height=64, steps=2, seed=3)
        assert first.image.size == (64, 64) and first.info["seed"] == 3
        with ThreadPoolExecutor(8) as pool:
            made = list(pool.map(lambda i: client.txt2img(prompt=f"fox {i}", width=64, height=64, steps=2, seed=i),
                                 range(8)))
        assert [result.info["seed"] for result in made] == list(range(8))
        assert client.get_progress()["state"] is not None  # the answering replica's progress
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.communicate(timeout=120)
        finally:
            server.kill()
    assert server.returncode == 130  # stopped by its Ctrl-C (even where the suite's parent ignores SIGINT)


def test_ctrl_c_taken_by_another_thread_still_stops_the_replicas_wait() -> None:
    # Ray's threads can take a SIGINT meant for the process: Python's handler then runs only when the main
    # thread wakes, which an untimed Event.wait() never does (this script hangs there: killed at 20 s)
    script = """
import signal, threading, time
from sdgen.serve.ray_serve import wait_until_stopped

def take_the_signal():
    time.sleep(0.3)
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)  # delivered to this thread, not the main one

signal.signal(signal.SIGINT, signal.default_int_handler)  # as sdgen serve sets it, whatever was inherited
threading.Thread(target=take_the_signal).start()
try:
    wait_until_stopped(threading.Event())
except KeyboardInterrupt:
    print("stopped")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=20)
    assert done.stdout.strip() == "stopped", done.stderr[-2000:]


def _answers(client) -> bool:
    try:
        client.get_sd_models()
    except Exception:  # noqa: BLE001 - not up yet: the proxy refuses or the app is still deploying
        return False
    return True
