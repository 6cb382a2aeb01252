"""A1111's model hash of a single-file checkpoint: the sha256 of the whole file, of which A1111 writes the
first 10 hex digits (`Model hash: 6ce0161689`). Hashing a 2-4 GB file takes seconds, so each file version
(its resolved path, size and modification time) is hashed once: kept in memory, and on disk in
`<sdgen cache>/hashes.json` (A1111 keeps the same in its cache.json), so a second run costs nothing."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
import threading
from pathlib import Path

from sdgen.hardware.speed import sdgen_cache_root

log = logging.getLogger("sdgen")
SHORT = 10  # A1111's short hash: sd_models.CheckpointInfo.shorthash
LEGACY_OFFSET, LEGACY_LENGTH, LEGACY_SHORT = 0x100000, 0x10000, 8  # A1111's old sd_models.model_hash
_lock = threading.Lock()


def cache_file(root: Path | None = None) -> Path:
    return (root or sdgen_cache_root()) / "hashes.json"


def model_short_hash(path: str | Path) -> str | None:
    """The 10-hex-digit `Model hash` of a checkpoint file; None for a folder, a Hub id or a missing file."""
    digest = file_sha256(path)
    return digest[:SHORT] if digest else None


def legacy_model_hash(path: str | Path) -> str | None:
    """A1111's old 8-hex-digit hash (sd_models.model_hash), which the ControlNet extension still writes after a
    model's name: the sha256 of the 64 KiB at 1 MiB into the file (of nothing for a smaller file). It reads
    64 KiB, so it needs no cache. None for a folder, a Hub id or a missing file."""
    file = Path(path).expanduser()
    if not file.is_file():
        return None
    with open(file, "rb") as handle:
        handle.seek(LEGACY_OFFSET)
        return hashlib.sha256(handle.read(LEGACY_LENGTH)).hexdigest()[:LEGACY_SHORT]


def file_sha256(path: str | Path) -> str | None:
    """The whole file's sha256, from the caches when this version of the file was hashed before."""
    file = Path(path).expanduser()
    if not file.is_file():
        return None
    stat = file.stat()
    return _sha256(str(file.resolve()), stat.st_size, stat.st_mtime_ns, str(cache_file()))


@functools.lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime: int, cache: str) -> str:
    key, version = path, f"{size}:{mtime}"
    entries = _read(Path(cache))
    entry = entries.get(key)
    if isinstance(entry, dict) and entry.get("version") == version and isinstance(entry.get("sha256"), str):
        return entry["sha256"]
    log.info("Hashing %s for its A1111 model hash (once per file version)", path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    _remember(Path(cache), key, {"version": version, "sha256": digest.hexdigest()})
    return digest.hexdigest()


def _read(cache: Path) -> dict:
    try:
        data = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _remember(cache: Path, key: str, entry: dict) -> None:
    """Add an entry, written atomically; a cache that cannot be written only costs the next run the hash."""
    with _lock:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            entries = _read(cache) | {key: entry}
            fd, temporary = tempfile.mkstemp(dir=cache.parent, prefix=".hashes-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(entries, handle, indent=1, sort_keys=True)
            os.replace(temporary, cache)
        except OSError as error:
            log.debug("Could not write the hash cache %s: %s", cache, error)
