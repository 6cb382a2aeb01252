"""Signals that stop a run: SIGINT (Ctrl-C), SIGTERM (kill, timeout, containers, systemd, Slurm) and SIGHUP.

Each becomes an `Interrupted` exception at the next safe point: a signal that arrives while an image or
its record is being written waits until that write is done (`finishing`), so a stopped run keeps every
finished image and record, leaves no partial file, prints its summary and exits 128 + the signal's number
(130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(KeyboardInterrupt):
    """A stop signal arrived; `exit_code` is 128 + its number."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum

    @property
    def by(self) -> str:
        """' by SIGTERM', or '' for Ctrl-C."""
        return "" if self.signum == signal.SIGINT else f" by {signal.Signals(self.signum).name}"


_writing = 0  # how many writes are under way (nested)
_pending: int | None = None  # a signal that arrived during a write


def _on_signal(signum: int, frame: object) -> None:
    global _pending
    if _writing:
        _pending = signum
        return
    raise Interrupted(signum)


@contextmanager
def finishing() -> Iterator[None]:
    """A write that a stop signal must not cut: the signal takes effect when the block is done."""
    global _writing, _pending
    _writing += 1
    try:
        yield
    finally:
        _writing -= 1
        if not _writing and _pending is not None:
            signum, _pending = _pending, None
            raise Interrupted(signum)


@contextmanager
def handled() -> Iterator[None]:
    """Install the handlers for the block (a command's run), then put the previous ones back."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may handle signals
        return
    previous = {signum: signal.signal(signum, _on_signal) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
