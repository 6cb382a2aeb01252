"""Run every shell example of README.md and docs/*.md against the tiny random model (CI runs it after pytest).

    python scripts/check_doc_examples.py [--keep DIR] [--jobs 2] [--only PIECE] [--timeout 180]

A sandbox (sdgen/testing/doc_sandbox.py) holds a Hugging Face cache (HF_HOME, HF_HUB_OFFLINE=1) with the tiny
models saved under every Hub id the examples name, a HOME with ~/loras, ~/models, ... and a folder of the
input files. Each example runs as the real shell line it is, with bash (`-o pipefail`), the installed `sdgen`
on PATH, in a copy of that folder of its own, 2 at a time, each with a timeout; pipes, xargs, globs and
VAR=value as written.

The one rewrite rule (sdgen.testing.doc_examples.shrink), so that no example takes minutes on the tiny model
while the same flags and kinds of value run: widths and heights over 128 are divided by 8, 64 at least (768 ->
96, 384 -> 64), and --sd-upscale-overlap with them; step counts (--steps, --hires-steps, "steps": N, a grid's
steps=..., SDGEN_STEPS) are capped at 4 (a strength of 0.25 still runs a step), and SDGEN_STEPS=4 stands for
the default of 25; -n and --batch-size are capped at 2. A server (`sdgen serve ...`) gets a free --port and
loses --listen (servers bind 127.0.0.1 only); it starts in the background, the page's client lines (curl to
127.0.0.1) run against the page's first server once it listens, then it is stopped. A line ending in `&` runs
in one shell with the next line of its block. A line with --preset runs with SDGEN_WIDTH=SDGEN_HEIGHT=64 (the
presets' own 512x512 is minutes on the tiny models, whose VAE downsamples 2x; flags still win over it), a line
with --sd-upscale with SDGEN_SD_UPSCALE_OVERLAP=8 (its default 64 is for 512x512 tiles). Single-file
checkpoints are the tiny model's, so SDGEN_MODEL_CONFIG names its configs. `sdgen` is forked from
scripts/sdgen_forkserver.py (imports made once; --no-fork: fresh processes).

What cannot run here is in NOT_RUNNABLE, by page and a piece of the line unique on that page, with the
reason; an example not listed that fails is a failure, and so is a listed piece that matches no example.
Every failure prints page:line, the command, its exit code and the last lines of its output. Exit 1 if any
example failed.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sdgen.testing.doc_examples import Example, all_examples, shrink  # noqa: E402

GPU = "a GPU: --device cuda or mps, or several GPUs"
NETWORK = "installs or downloads from the network"
MACHINES = "several real machines (a cluster's address)"
PYTEST = "the test suite and its tools: CI runs them before this script"
BENCH = "the benchmark: minutes on full-size random SD1.5 weights"
COMPILE = "torch.compile: its inductor build took over 2 minutes here, on the tiny model too"
OPENPOSE = "OpenPose's detector: its body, hand and face nets (lllyasviel/Annotators) are not made in the sandbox"
RAY_CLUSTER = "a Ray cluster already started with `ray start`, writing to /shared/ (another machine's disk)"
CPUS = "at least 8 CPUs (a Ray worker per replica); CI's machine has 2"
SD2_FILE = "a real SD 2.x single file: the shipped 2.x configs are full size (tests/test_models_single_file.py)"

# (page, a piece of the line unique on that page, why it does not run here). Add a row for a new example
# that cannot run here; a row that matches no example fails, so the table stays true.
NOT_RUNNABLE = [
    ("README.md", "pip install -e .", NETWORK),
    ("README.md", "python3 -m venv .venv", NETWORK),
    ("README.md", 'pip install -c requirements/test-constraints.txt', NETWORK),
    ("README.md", "accelerate launch --num_processes 4", GPU),
    ("README.md", 'pip install "sdgen[controlnet]"', NETWORK),
    ("README.md", 'pip install "sdgen[upscale,repair]"', NETWORK),
    ("README.md", 'pip install -e ".[serve]"', NETWORK),
    ("docs/batch.md", "accelerate launch --num_processes 4", GPU),
    ("docs/batch.md", "--num_machines 2", MACHINES),
    ("docs/controlnet.md", "-p openpose -o pose.png", OPENPOSE),
    ("docs/contributing.md", "python scripts/gen_reference.py", PYTEST),
    ("docs/dependencies.md", "pip install -c requirements/test-constraints.txt", NETWORK),
    ("docs/dependencies.md", "pip install uv", NETWORK),
    ("docs/dependencies.md", "scripts/lock.sh", NETWORK),
    ("docs/dependencies.md", "python -m pytest -q", PYTEST),
    ("docs/dependencies.md", "scripts/test_newest.sh  ", NETWORK),
    ("docs/dependencies.md", 'scripts/test_newest.sh "peft<0.19"', NETWORK),
    ("docs/dependencies.md", "PYTEST_ARGS=", NETWORK),
    ("docs/install.md", "python3 -m venv .venv", NETWORK),
    ("docs/install.md", "whl/cpu", NETWORK),
    ("docs/install.md", "pip install -e .  ", NETWORK),
    ("docs/install.md", "pip install -e .", NETWORK),
    ("docs/install.md", "whl/cu126", NETWORK),
    ("docs/install.md", "pip install torch  ", NETWORK),
    ("docs/models.md", "sd21-768-v.safetensors", SD2_FILE),
    ("docs/models.md", "sd21-base.safetensors", SD2_FILE),
    ("docs/performance.md", "python3 -m venv .venv-ov", NETWORK),
    ("docs/performance.md", ".venv-ov/bin/pip uninstall", NETWORK),
    ("docs/performance.md", "--openvino-python", BENCH),
    ("docs/performance.md", "make_random_sd15.py", BENCH),
    ("docs/performance.md", "--rounds 2 --configs diffusers,sdgen,sdgen-turbo", BENCH),
    ("docs/performance.md", "sdgen-cache3", BENCH),
    ("docs/performance.md", "--cap-avx2", BENCH),
    ("docs/performance.md", "check_cuda.py --json cuda.json  ", GPU),
    ("docs/performance.md", "python scripts/check_cuda.py --json cuda.json", GPU),
    ("docs/performance.md", "pip wheel --no-deps", NETWORK),
    ("docs/performance.md", "pip download --dest wheels", NETWORK),
    ("docs/performance.md", "--no-index --find-links wheels", GPU),
    ("docs/ray.md", 'pip install "sdgen[ray]"', NETWORK),
    ("docs/ray.md", "--ray auto -o /shared/out/", RAY_CLUSTER),
    ("docs/ray.md", "--ray auto --workers 3", RAY_CLUSTER),
    ("docs/ray.md", "--max-replicas 8", CPUS),
    ("docs/ray.md", "--ray 10.0.0.5:6379", MACHINES),
    ("docs/ray.md", "--ray ray://10.0.0.5:10001", MACHINES),
    ("docs/ray.md", "RAY_ADDRESS=10.0.0.5:6379", MACHINES),
    ("docs/scaling.md", "accelerate launch --num_processes 4", GPU),
    ("docs/scaling.md", "--num_machines 2", MACHINES),
    ("docs/server.md", 'pip install -e ".[serve]"', NETWORK),
    ("docs/upscaling.md", 'pip install "sdgen[upscale]"', NETWORK),
    ("docs/upscaling.md", 'pip install "sdgen[repair]"', NETWORK),
    ("docs/usage.md", "--device cuda:1", GPU),
    ("docs/usage.md", "--batch-size 4 --compile", COMPILE),
    ("docs/usage.md", "--rng device --device cuda", GPU),
    ("docs/usage.md", "--device cuda --offload model", GPU),
]
TAIL_LINES = 12


@dataclass
class Result:
    example: Example
    command: str
    code: int | None  # None: not runnable here
    output: str = ""
    seconds: float = 0.0
    reason: str = ""


def not_runnable(examples: list[Example]) -> dict[int, str]:
    """index of example -> reason, from NOT_RUNNABLE; a row that matches no example, or several that are not the
    same line (`pip install -e .` twice on a page), is an error."""
    found, problems = {}, []
    for page, piece, reason in NOT_RUNNABLE:
        hits = [i for i, e in enumerate(examples) if e.page == page and piece in e.text]
        hits = [i for i in hits if examples[i].text == piece] or hits  # the whole line, where one is that
        if not hits or len({examples[i].text for i in hits}) > 1:
            problems.append(f"NOT_RUNNABLE {page!r} {piece!r} matches {len(hits)} examples; make it match one")
        found.update(dict.fromkeys(hits, reason))
    if problems:
        sys.exit("\n".join(problems))
    return found


def is_server(example: Example) -> bool:
    return example.args is not None and example.args[:1] == ("serve",)


def is_client(example: Example) -> bool:
    return not is_server(example) and ("127.0.0.1:" in example.text or "localhost:" in example.text)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def written(example: Example) -> set[str]:
    """The files the example writes (-o NAME, sdgen convert's target): inputs of others, left out of its copy."""
    args = list(example.args or ())
    names = {args[i + 1] for i, arg in enumerate(args[:-1]) if arg in ("-o", "--output")}
    made = args[:1] == ["convert"] or args[:2] == ["models", "make-tiny"]
    return names | ({args[-1].rstrip("/")} if made else set())


def work_copy(sandbox: Path, name: str, leave_out: set[str] = frozenset()) -> Path:
    """A folder of the example's own: the inputs linked, the output folders copied."""
    folder = sandbox / "runs" / name
    folder.mkdir(parents=True)
    for entry in (sandbox / "work").iterdir():
        if entry.name in leave_out:
            continue
        if entry.name in ("outputs", "out"):
            shutil.copytree(entry, folder / entry.name, symlinks=True)
        else:
            (folder / entry.name).symlink_to(entry)
    return folder


def run_line(command: str, cwd: Path, env: dict[str, str], timeout: float) -> tuple[int, str, float]:
    start = time.monotonic()
    try:
        done = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=cwd, env=env, timeout=timeout,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace")
        code, output = done.returncode, done.stdout[-4000:] + done.stderr[-4000:]
    except subprocess.TimeoutExpired as expired:
        code, output = 124, f"timed out after {timeout:.0f} s\n{_text(expired.stderr)[-4000:]}"
    return code, output, time.monotonic() - start


def _text(data: bytes | str | None) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def wait_for_port(port: int, process: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.3)
    return False


def stop(process: subprocess.Popen) -> str:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    return process.communicate()[0] or ""


def run_server(job: Job, sandbox: Path, env: dict[str, str], timeout: float) -> list[Result]:
    """Start `sdgen serve ...` in the background, run its clients against it once it listens, stop it."""
    port, start = free_port(), time.monotonic()
    command = shrink(job.example.command, port)
    if "--port" not in command:
        command += f" --port {port}"
    cwd = work_copy(sandbox, job.name)
    process = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    listening = wait_for_port(port, process, timeout)
    results = []
    for client in job.clients if listening else ():
        line = shrink(client.command, port)
        code, output, seconds = run_line(line, cwd, env, timeout)
        results.append(Result(client, line, code, output, seconds))
    output = stop(process)
    code = 0 if listening else (process.returncode if process.returncode not in (None, 0) else 124)
    results.insert(0, Result(job.example, command, code, output[-4000:], time.monotonic() - start))
    for client in job.clients if not listening else ():
        results.append(Result(client, client.command, 1, "its server did not start"))
    return results


@dataclass
class Job:
    name: str
    example: Example
    then: Example | None = None  # the next line of a block, for a line ending in `&`
    clients: tuple[Example, ...] = ()


def run_job(job: Job, sandbox: Path, env: dict[str, str], timeout: float) -> list[Result]:
    if "--preset" in job.example.command:  # a preset's own size (512x512: SD-Turbo, SDXS) held to the tiny 64
        env = env | {"SDGEN_WIDTH": "64", "SDGEN_HEIGHT": "64"}
    if "--sd-upscale " in job.example.command:  # its default overlap, 64, is for 512x512 tiles: 8 on 64x64 ones
        env = env | {"SDGEN_SD_UPSCALE_OVERLAP": "8"}
    if is_server(job.example):
        return run_server(job, sandbox, env, timeout)
    command = shrink(job.example.command)
    if job.then is not None:
        command = f"{command}\n{shrink(job.then.command)}\nwait"
    cwd = work_copy(sandbox, job.name, written(job.example) | (written(job.then) if job.then else set()))
    code, output, seconds = run_line(command, cwd, env, timeout)
    return [Result(job.example, command, code, output, seconds)]


def plan(examples: list[Example], skipped: dict[int, str]) -> tuple[list[Job], list[Result]]:
    """The jobs to run, and the results of what does not run here."""
    jobs, results, joined = [], [], set()
    first_server: dict[str, Job] = {}
    for index, example in enumerate(examples):
        if index in skipped:
            results.append(Result(example, example.command, None, reason=skipped[index]))
            continue
        if index in joined:
            continue
        if is_client(example) and example.page in first_server:
            server = first_server[example.page]
            server.clients = (*server.clients, example)
            continue
        job = Job(f"{index:03d}", example)
        following = examples[index + 1] if index + 1 < len(examples) else None
        if example.command.endswith("&") and following is not None and following.block == example.block:
            job.then = following
            joined.add(index + 1)
        if is_server(example):
            first_server.setdefault(example.page, job)
        jobs.append(job)
    return jobs, results


def start_forkserver(sandbox: Path, env: dict[str, str]) -> subprocess.Popen:
    """scripts/sdgen_forkserver.py, and an `sdgen` first on PATH that runs through it."""
    server_script, socket_path = ROOT / "scripts" / "sdgen_forkserver.py", sandbox / "sdgen.sock"
    server = subprocess.Popen([sys.executable, str(server_script), str(socket_path)], env=env, text=True,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, start_new_session=True)
    if server.stdout.readline().strip() != "ready":
        sys.exit("the sdgen fork server did not start")
    shim = sandbox / "bin" / "sdgen"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -S "{server_script}" --client "{socket_path}" "$@"\n')
    shim.chmod(0o755)
    return server


def prepare(sandbox: Path) -> dict[str, str]:
    """The sandbox, and the outputs the examples read: outputs/00000-42-a-fox.png, out/ of a batch, old.png."""
    from sdgen.models.upscalers import import_spandrel
    from sdgen.testing.doc_sandbox import build_sandbox

    import_spandrel()  # spandrel without torchvision, before the tiny upscalers are built
    env = build_sandbox(sandbox, Path(sys.executable).parent)
    work = sandbox / "work"
    for line in ('sdgen "a fox" --seed 42 -q', "sdgen batch prompts.txt -o out/ -q",
                 "cp outputs/00000-42-a-fox.png old.png"):
        code, output, _ = run_line(line, work, env, 300)
        if code:
            sys.exit(f"preparing the sandbox: `{line}` exited {code}\n{output}")
    return env


def describe(result: Result) -> str:
    tail = "\n".join(result.output.rstrip().splitlines()[-TAIL_LINES:])
    return f"FAILED {result.example.page}:{result.example.line}: exit {result.code}\n  $ {result.command}\n{tail}\n"


def report(results: list[Result], seconds: float) -> int:
    failed = [r for r in results if r.code not in (None, 0)]
    for result in failed:
        print(describe(result), flush=True)
    skipped = collections.Counter(r.reason for r in results if r.code is None)
    worked = sum(r.code == 0 for r in results)
    print(f"{len(results)} examples: {worked} worked, {len(failed)} failed, {sum(skipped.values())} not runnable "
          f"here, in {seconds:.0f} s")
    for reason, count in skipped.most_common():
        print(f"  {count:3d} not runnable: {reason}")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="make the sandbox here and keep it (made before: used again)")
    parser.add_argument("--jobs", type=int, default=2, help="examples run at once (default 2: two cores)")
    parser.add_argument("--only", action="append", help="run only the examples whose line contains this (repeat)")
    parser.add_argument("--start", help="with --only: also every example from PAGE:LINE on (docs/usage.md:56)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds an example may take")
    parser.add_argument("--no-fork", action="store_true",
                        help="run the installed sdgen afresh for each example (slow) instead of the fork server")
    options = parser.parse_args()
    start = time.monotonic()
    sandbox = options.keep or Path(tempfile.mkdtemp(prefix="sdgen-doc-examples-")) / "sandbox"
    examples = all_examples(ROOT)
    jobs, results = plan(examples, not_runnable(examples))
    if options.only:
        places = [f"{job.example.page}:{job.example.line}" for job in jobs]
        first = places.index(options.start) if options.start else None
        jobs = [job for number, job in enumerate(jobs) if any(piece in job.example.text for piece in options.only)
                or (first is not None and number >= first)]
        results = []
    if options.keep and (sandbox / "settings.json").is_file():
        from sdgen.testing.doc_sandbox import environment

        shutil.rmtree(sandbox / "runs", ignore_errors=True)
        env = environment(sandbox, Path(sys.executable).parent)
    else:
        env = prepare(sandbox)
    server = None if options.no_fork else start_forkserver(sandbox, env)
    print(f"sandbox ready in {time.monotonic() - start:.0f} s: {sandbox}; {len(jobs)} jobs", flush=True)
    with ThreadPoolExecutor(options.jobs) as pool:
        for done in pool.map(lambda job: run_job(job, sandbox, env, options.timeout), jobs):
            results.extend(done)
            for result in done:
                print(f"ok   {result.seconds:5.1f} s {result.example.page}:{result.example.line}" if result.code == 0
                      else describe(result), flush=True)
    code = report(results, time.monotonic() - start)
    if server is not None:
        stop(server)
    if not options.keep:
        shutil.rmtree(sandbox.parent, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
