"""`sdgen cache`: what sdgen keeps in its own cache folder between processes, and pruning it. Two kinds of
entries, each a folder that can be deleted on its own (the next run that needs it makes it again):

- `openvino/ov-VERSION/PART/KEY/`: one converted model of `--backend openvino` (model.xml and .bin), made by
  sdgen/models/openvino.py, and in its `shapes/DIGEST/` one entry per size and batch it was run at (the
  static-shape model, its .bin a hard link to the model's, and OpenVINO's compiled blobs: weightless but for
  int8's), which can go on its own;
- `compile/torch-VERSION/MODEL/DEVICE-DTYPE/`: inductor's graphs and kernels of `--compile` for one model.

An entry made for another OpenVINO or torch version than the installed one is never read again: `stale`.
Each use of an entry touches its `last-used` file, which is what `--unused-days` and `--max-size` go by.
Reads folders and small JSON files only: nothing is imported from torch or OpenVINO.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sdgen.errors import InvalidRequestError, WriteError, os_reason

LAST_USED = "last-used"
SHAPES = "shapes"  # in an OpenVINO entry: one folder per static-shape form (sdgen/models/openvino_graph.py)
SHAPES_FILE = "shapes.json"  # in each: its input shapes
COMPILED = "compiled"  # in each: OpenVINO's compiled blobs (CACHE_DIR); in older layouts, beside the model
UNFINISHED_AFTER_S = 24 * 3600  # a temporary folder this old is no conversion still running: a crash's leftover


@dataclass
class CacheEntry:
    kind: str  # "openvino", "torch-compile", "unfinished" (a crashed conversion's), "converting" (under a day old)
    part: str  # "unet", "vae_decoder", ...; for torch-compile the device and dtype
    model: str  # what it was made from, in short
    form: str  # openvino: the weights' form (none = float32, f16, int8, int8-hybrid); torch-compile: ""
    version: str  # "openvino 2026.4.1", "torch 2.13.0+cpu"
    stale: bool  # made for a version other than the installed one (or an older layout): never read again
    size: int  # bytes on disk
    last_used: float  # seconds since the epoch
    path: str
    shapes: str = ""  # openvino: the input shapes of a static-shape form ("2x4x64x64 () 2x77x768"); else ""

    def record(self) -> dict[str, Any]:
        return asdict(self)


def size_text(size: float) -> str:
    """Bytes as people read them: 812 B, 4.0 KB, 2.9 MB, 7.9 GB."""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)


def entries_text(count: int) -> str:
    return f"{count} {'entry' if count == 1 else 'entries'}"


def mark_used(folder: Path) -> None:
    """Note that the entry in this folder was used now (made, read or compiled): pruning by age keeps it."""
    with contextlib.suppress(OSError):  # a read-only cache: nothing to note, nothing pruned either
        folder.mkdir(parents=True, exist_ok=True)
        (folder / LAST_USED).touch()


def list_caches(root: Path) -> list[CacheEntry]:
    """Every entry under sdgen's cache folder, most recently used first."""
    entries = [*_openvino_entries(root / "openvino"), *_compile_entries(root / "compile")]
    return sorted(entries, key=lambda entry: entry.last_used, reverse=True)


def choose_pruned(entries: list[CacheEntry], unused_days: float | None = None, max_size_gb: float | None = None,
                  everything: bool = False, now: float | None = None) -> list[CacheEntry]:
    """The entries `sdgen cache prune` removes: every one with --all; else the stale and unfinished ones, those
    unused for more than `unused_days`, and then the least recently used until the rest fit in `max_size_gb`."""
    for name, value in (("--unused-days", unused_days), ("--max-size", max_size_gb)):
        if value is not None and value < 0:
            raise InvalidRequestError(f"{name} {value:g} is negative; give 0 or more.")
    if everything:
        return list(entries)
    now = time.time() if now is None else now
    candidates = [entry for entry in entries if entry.kind != "converting"]  # a conversion still running: kept
    pruned = [entry for entry in candidates if entry.stale or entry.kind == "unfinished"
              or (unused_days is not None and now - entry.last_used > unused_days * 86400)]
    pruned += [entry for entry in candidates if entry not in pruned and _inside_any(entry, pruned)]
    if max_size_gb is not None:
        kept = sorted((entry for entry in candidates if entry not in pruned), key=lambda entry: entry.last_used)
        total = sum(entry.size for entry in kept)
        while kept and total > max_size_gb * 1024**3:  # the least recently used first, a model with its shapes
            gone = [kept[0], *(entry for entry in kept[1:] if _inside_any(entry, kept[:1]))]
            pruned += gone
            kept = [entry for entry in kept if entry not in gone]
            total -= sum(entry.size for entry in gone)
    return pruned


def _inside_any(entry: CacheEntry, others: list[CacheEntry]) -> bool:
    """Whether the entry lies in another's folder (a model's static-shape form: removed with the model)."""
    return any(Path(other.path) in Path(entry.path).parents for other in others)


def summary(entries: list[CacheEntry]) -> str:
    return f"{entries_text(len(entries))}, {size_text(sum(entry.size for entry in entries))}"


def remove(entries: list[CacheEntry], root: Path) -> tuple[list[CacheEntry], list[WriteError]]:
    """Delete each entry's folder and the folders left empty above it (up to the cache folder); one that cannot
    be removed stops none of the others. Returns the entries removed and an error for each one that was not."""
    removed, failed = [], []
    for entry in entries:
        try:
            _remove_folder(Path(entry.path), root)
            removed.append(entry)
        except WriteError as error:
            failed.append(error)
    _forget_removed(root)
    return removed, failed


def _remove_folder(path: Path, root: Path) -> None:
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass  # gone already (another prune)
    except OSError as error:
        raise WriteError(f"Could not remove {path}: {os_reason(error)}; check its owner and permissions, "
                         "or delete it by hand.") from error
    parent = path.parent
    while parent != root and root in parent.parents:
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break
        parent = parent.parent


def _openvino_entries(folder: Path) -> list[CacheEntry]:
    installed = _installed("openvino")
    entries = []
    for version_folder in sorted(folder.glob("ov-*")):
        version = version_folder.name.removeprefix("ov-")
        stale = installed is not None and version != installed
        for part_folder in _folders(version_folder):
            if part_folder.name == COMPILED:  # blobs of sdgen before each entry kept its own
                entries.append(_entry("openvino", "compiled blobs (older layout)", part_folder, f"openvino {version}",
                                      True))
                continue
            for entry_folder in _folders(part_folder):
                entry = _openvino_entry(part_folder.name, entry_folder, f"openvino {version}", stale)
                entries += [entry, *_shape_entries(entry, entry_folder)] if entry.kind == "openvino" else [entry]
    return entries


def _openvino_entry(part: str, folder: Path, version: str, stale: bool) -> CacheEntry:
    if folder.name.startswith(".tmp-"):
        return _unfinished(part, folder, version)
    try:
        key = json.loads((folder / "key.json").read_text())
    except (OSError, ValueError):
        key = {}
    entry = _entry("openvino", part, folder, version, stale, skip=(SHAPES, COMPILED))  # entries of their own
    entry.model, entry.form = _model_of(key), str(key.get("quantize", ""))
    return entry


def _shape_entries(model: CacheEntry, folder: Path) -> list[CacheEntry]:
    """The model's static-shape forms, each its own entry (its .bin, the model's weights, counted with the
    model); an older sdgen's blobs of every shape in one compiled/ folder: stale, never read again."""
    entries = []
    for shape_folder in _folders(folder / SHAPES):
        if shape_folder.name.startswith(".tmp-"):
            entries.append(_unfinished(model.part, shape_folder, model.version))
            continue
        entry = _entry("openvino", model.part, shape_folder, model.version, model.stale, linked=False)
        try:
            entry.shapes = " ".join("x".join(map(str, shape)) or "()" for shape in
                                    json.loads((shape_folder / SHAPES_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            entry.shapes = "?"
        entries.append(entry)
    if (folder / COMPILED).is_dir():
        entries.append(_entry("openvino", model.part, folder / COMPILED, model.version, True))
        entries[-1].shapes = "every shape (older layout)"
    for entry in entries:
        entry.model, entry.form = model.model, model.form
    return entries


def _compile_entries(folder: Path) -> list[CacheEntry]:
    installed = _installed("torch")
    entries = []
    for version_folder in sorted(folder.glob("torch-*")):
        version = version_folder.name.removeprefix("torch-")
        stale = installed is not None and version != installed
        for model_folder in _folders(version_folder):
            for device_folder in _folders(model_folder):
                entry = _entry("torch-compile", device_folder.name, device_folder, f"torch {version}", stale)
                entry.model = model_folder.name.rsplit("-", 1)[0]  # its slug, without the digest of the full name
                entries.append(entry)
    return entries


def _folders(folder: Path) -> list[Path]:
    """The folders in this one, sorted; none where it went away meanwhile (another process's prune or rename)."""
    try:
        return sorted(path for path in folder.iterdir() if path.is_dir())
    except OSError:
        return []


def _entry(kind: str, part: str, folder: Path, version: str, stale: bool, skip: tuple[str, ...] = (),
           linked: bool = True) -> CacheEntry:
    size, newest = _size_and_newest(folder, skip, linked)
    marker = folder / LAST_USED
    try:
        last_used = marker.stat().st_mtime
    except OSError:  # made before sdgen kept the marker
        last_used = newest
    return CacheEntry(kind, part, "", "", version, stale, size, last_used, str(folder))


def _unfinished(part: str, folder: Path, version: str) -> CacheEntry:
    entry = _entry("unfinished", part, folder, version, False)
    young = time.time() - entry.last_used < UNFINISHED_AFTER_S
    entry.kind = "converting" if young else "unfinished"  # a conversion still running is never pruned
    return entry


def _size_and_newest(folder: Path, skip: tuple[str, ...] = (), linked: bool = True) -> tuple[int, float]:
    """Bytes on disk (each file once: hard links to one .bin count once; `linked` False counts no hard-linked
    file, which removing this folder would not free) and the newest change, leaving out the folders `skip`."""
    size, newest, seen = 0, 0.0, set()
    with contextlib.suppress(OSError):  # gone meanwhile: an empty entry, pruned or listed as such
        newest = folder.stat().st_mtime
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            stat = path.lstat()
            if not path.is_file() or path.is_symlink() or path.relative_to(folder).parts[0] in skip:
                continue
            if stat.st_ino not in seen and (linked or stat.st_nlink == 1):
                size += stat.st_blocks * 512
            seen.add(stat.st_ino)
            newest = max(newest, stat.st_mtime)
    return size, newest


def _model_of(key: dict[str, Any]) -> str:
    """The model an entry was converted from, as the key names it: a Hub id and commit, or a local path."""
    if key.get("model"):
        commit = key.get("commit") or ""
        return f"{key['model']}@{commit[:10]}" if commit else str(key["model"])
    files = key.get("files") or []
    return str(files[0]) if files else "?"


def _installed(package: str) -> str | None:
    """The installed version as sdgen's cache folders name it (None: not installed, nothing is stale)."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _forget_removed(root: Path) -> None:
    """Drop the warm-start records (openvino/recent/) whose cached models are all gone: nothing to prefetch."""
    for record in (root / "openvino" / "recent").glob("*.json"):
        try:
            entries = json.loads(record.read_text()).values()
            if not any(Path(entry["xml"]).is_file() for entry in entries):
                record.unlink()
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue
