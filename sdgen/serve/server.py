"""uvicorn under the app: in the foreground for `sdgen serve`, or in a thread on a free port (tests, scripts)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from sdgen.serve.engine import Engine


class _Server(uvicorn.Server):
    """uvicorn's server that, when told to stop (Ctrl-C, SIGTERM), also stops the engine: the running
    request is interrupted and returns what it has, queued ones are refused."""

    def __init__(self, config: uvicorn.Config, engine: Engine) -> None:
        super().__init__(config)
        self.engine = engine

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.engine.close()
        super().handle_exit(sig, frame)


def serve(app: Any, engine: Engine, sock: socket.socket) -> None:
    """Serve on a bound socket until stopped (blocking)."""
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=10)
    _Server(config, engine).run(sockets=[sock])


@contextmanager
def serving(app: Any, engine: Engine) -> Iterator[str]:
    """Serve on a free loopback port in a thread; yields the base URL, stops on exit (the engine is the
    caller's: several apps may share one)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2), engine)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
