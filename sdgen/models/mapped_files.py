"""Resident pages of memory-mapped model files, given back while and after OpenVINO compiles a model.

OpenVINO's CPU plugin maps a model's weights file (`model.bin`) and keeps it mapped for the compiled model's
life, but it reads each weight once, to repack it into its own layout, and never again: the mapped pages are
the weights a second time in the process's memory (the full-size SD1.5 U-Net in float32: 3.2 GiB mapped beside
3.3 GiB of its own). They are clean page cache the system would take back under pressure, but they count in
the process's resident memory until then. `madvise(MADV_DONTNEED)` on a read-only shared mapping drops them
from the process and leaves them in the page cache: a later read faults the same bytes back in, so nothing
can be lost (a writable or private mapping is never touched). Linux only; elsewhere nothing is done.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

MADV_DONTNEED = 4  # Linux's value on every architecture sdgen runs on
EVERY_S = 0.2  # while compiling: a 2-core Xeon reads about this long's worth of weights (< 0.3 GiB) between drops
MAPS = Path("/proc/self/maps")


@functools.cache
def _madvise() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        function = ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return function


def drop_resident_pages(files: Iterable[str | Path]) -> int:
    """Drop this process's resident pages of the read-only shared mappings of these files; the bytes dropped."""
    names = {str(Path(file).resolve()) for file in files}  # the kernel names a mapping by its real path
    madvise = _madvise()
    try:
        lines = MAPS.read_text().splitlines() if madvise is not None else []
    except OSError:  # not Linux
        return 0
    dropped = 0
    for line in lines:
        fields = line.split(maxsplit=5)  # address perms offset device inode path
        if len(fields) < 6 or fields[5] not in names or not _shared_read_only(fields[1]):
            continue
        start, end = (int(address, 16) for address in fields[0].split("-"))
        if madvise(start, end - start, MADV_DONTNEED) == 0:
            dropped += end - start
    return dropped


def _shared_read_only(perms: str) -> bool:
    return perms[1] == "-" and perms[3] == "s"  # "r--s": a private mapping's written pages exist nowhere else


@contextlib.contextmanager
def resident_pages_dropped(files: Iterable[str | Path]) -> Iterator[None]:
    """While the block runs (a compile reading the weights), and once after it, the files' mapped pages are
    dropped every EVERY_S: the process never holds the read weights and their repacked copy at once."""
    files = list(files)
    done = threading.Event()

    def drop_until_done() -> None:
        while not done.wait(EVERY_S):
            drop_resident_pages(files)

    thread = threading.Thread(target=drop_until_done, name="sdgen-drop-mapped-pages", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        drop_resident_pages(files)
