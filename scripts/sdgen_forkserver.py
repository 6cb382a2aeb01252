"""A fork server for scripts/check_doc_examples.py: sdgen's command line with torch, diffusers and transformers
imported once, forked for each `sdgen ...` an example runs.

On a loaded 2-core machine a fresh `sdgen` spends 10-60 s importing and loading before the tiny model's first
step; forked from this server it starts with everything imported. What runs is the same: `sdgen.cli:main`
(the console script's entry point) with the example's arguments, environment, working folder and its own
stdin, stdout and stderr (passed over a Unix socket), in a process of its own, its exit status returned.
`sdgen serve` and a line with other HF_* variables run as a fresh `python -m sdgen` instead.

    python scripts/sdgen_forkserver.py SOCKET        # the server (until killed)
    python -S scripts/sdgen_forkserver.py --client SOCKET ARGS...   # what the `sdgen` on PATH runs
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
import threading
import time

FRESH = -1000  # the server's answer: run this one as a fresh process


def client(path: str, args: list[str]) -> int:
    """Send ARGS, the environment, the folder and fds 0-2 to the server; its exit status is ours."""
    connection = socket.socket(socket.AF_UNIX)
    connection.connect(path)
    message = json.dumps({"args": args, "env": dict(os.environ), "cwd": os.getcwd(), "pid": os.getpid()})
    socket.send_fds(connection, [message.encode()], [0, 1, 2])
    connection.shutdown(socket.SHUT_WR)
    status = connection.recv(4)
    code = struct.unpack("i", status)[0] if len(status) == 4 else 1
    if code == FRESH:
        os.execv(sys.executable, [sys.executable, "-m", "sdgen", *args])
    return code


def _watch(pid: int) -> None:
    """End this run when the `sdgen` that asked for it has gone (a timeout, a server stopped)."""
    while True:
        time.sleep(0.5)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(10)
            os._exit(137)


def _run(connection: socket.socket, request: dict, fds: list[int]) -> None:
    """In the forked child: become the asked-for `sdgen ARGS` and report its exit status."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for number, fd in enumerate(fds[:3]):
        os.dup2(fd, number)
        os.close(fd)
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", closefd=False, buffering=1)  # noqa: SIM115
    sys.stderr = open(2, "w", closefd=False, buffering=1)  # noqa: SIM115
    hub = {key: value for key, value in os.environ.items() if key.startswith("HF_")}
    os.environ.clear()
    os.environ.update(request["env"])
    os.chdir(request["cwd"])
    other_hub = hub != {key: value for key, value in os.environ.items() if key.startswith("HF_")}
    if other_hub or request["args"][:1] == ["serve"]:
        # huggingface_hub read HF_* when imported: another Hub setting needs a fresh process; so does a server
        # (forked, its requests failed with anyio's NoEventLoopError where a fresh `sdgen serve` answers them)
        connection.sendall(struct.pack("i", FRESH))
        os._exit(0)
    sys.argv = ["sdgen", *request["args"]]
    threading.Thread(target=_watch, args=(request["pid"],), daemon=True).start()
    code = 1
    try:
        from sdgen.cli import main

        main()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed pipe: the reader has gone
                stream.flush()
        try:
            connection.sendall(struct.pack("i", code))
        finally:
            os._exit(code)


def _warm_up(folder: str) -> None:
    """Import what a run of sdgen imports: a child makes an image and `sdgen info`s it, and says which modules
    it imported; this process imports them, so that each forked run starts with them."""
    import importlib

    names_file = os.path.join(folder, "modules.txt")
    if os.fork() == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)  # stdout is where the server says "ready"
        picture = os.path.join(folder, "warm.png")
        for args in (["a fox", "-q", "--overwrite", "-o", picture], ["info", picture]):
            sys.argv = ["sdgen", *args]
            try:
                from sdgen.cli import main

                main()
            except SystemExit:
                pass
        with open(names_file, "w") as names:
            names.write("\n".join(sorted(sys.modules)))
        os._exit(0)
    os.wait()
    with open(names_file) as names:
        imported = names.read().split()
    for name in imported:
        with contextlib.suppress(Exception):  # a module only importable in its own context: the run imports it
            importlib.import_module(name)


def serve(path: str) -> None:
    _warm_up(os.path.dirname(os.path.abspath(path)))
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children reaped as they end
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(16)
    print("ready", flush=True)
    while True:
        connection, _ = listener.accept()
        message, fds, _, _ = socket.recv_fds(connection, 1 << 20, 3)
        chunks = [message]
        while chunk := connection.recv(1 << 20):
            chunks.append(chunk)
        if os.fork() == 0:
            listener.close()
            _run(connection, json.loads(b"".join(chunks)), fds)
        for fd in fds:
            os.close(fd)
        connection.close()


if __name__ == "__main__":
    if sys.argv[1] == "--client":
        sys.exit(client(sys.argv[2], sys.argv[3:]))
    serve(sys.argv[1])
