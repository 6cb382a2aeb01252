"""uvicorn under the app: in the foreground for `sdgen serve`, or in a thread on a free port (tests, scripts)."""

from __future__ import annotations

import math
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from sdgen.serve.engine import Engine


class _Server(uvicorn.Server):
    """uvicorn's server that, when it stops (Ctrl-C, SIGTERM) and `close_engine` is set, first stops the engine:
    queued requests are answered 503 at once, the running one is interrupted at its next step and answered with
    what it has (or 503 after the engine's grace), so the process exits within a few seconds."""

    def __init__(self, config: uvicorn.Config, engine: Engine, close_engine: bool) -> None:
        super().__init__(config)
        self.engine, self.close_engine = engine, close_engine

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.close_engine:
            self.engine.close()  # in the event loop, before uvicorn waits for the requests under way
        await super().shutdown(sockets)


def _config(app: Any, engine: Engine) -> uvicorn.Config:
    """uvicorn's graceful timeout is only a backstop: the engine answers every request within its grace."""
    return uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=math.ceil(engine.shutdown_grace) + 3)


def serve(app: Any, engine: Engine, sock: socket.socket) -> None:
    """Serve on a bound socket until stopped (blocking); stopping closes the engine."""
    _Server(_config(app, engine), engine, close_engine=True).run(sockets=[sock])


@contextmanager
def serving(app: Any, engine: Engine) -> Iterator[str]:
    """Serve on a free loopback port in a thread; yields the base URL, stops on exit (the engine is the
    caller's: several apps may share one)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2), engine, close_engine=False)
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
