"""Warm starts of --backend openvino, in parallel with loading (docs/openvino.md, "Compiled while loading"):
each model's last run is recorded (which cached model each part compiled, for which input shapes), and the
next process for the same model, precision and quantization starts compiling those in a background thread as
soon as the model's folder is found. Compiling a cached model is mostly reading OpenVINO's compiled blob (the
full-size U-Net: 1.7 GB, about 4.5 s on a 2-core AMD EPYC with AVX512-BF16), which then overlaps torch's
imports and the building of the empty torch modules instead of following them.

A part asked for with other weights or shapes (another size, a LoRA) is compiled as before and its
prefetched model dropped. The record is a hint: a missing, stale or unreadable one only means no prefetch.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import tempfile
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdgen.hardware.speed import sdgen_cache_root
from sdgen.models.openvino import cache_key, compile_for_cpu, model_identity

log = logging.getLogger("sdgen")

# the parts every txt2img run calls, in the order it first calls them
PREFETCHED_SLOTS = ("text_encoder", "unet", "vae_decoder")

Shapes = tuple[tuple[int, ...], ...]


def record_file(identity: dict[str, Any], precision: str, quantize: str) -> Path:
    """The model's record: one per model identity, precision and --quantize setting."""
    digest = cache_key({"identity": identity, "precision": precision, "quantize": quantize})
    return sdgen_cache_root() / "openvino" / "recent" / f"{digest}.json"


@dataclass
class Prefetch:
    """The prefetched compiled models of one loaded model, and its record of what its run compiled."""

    file: Path
    precision: str
    recorded: dict[str, dict[str, Any]] = field(default_factory=dict)  # slot -> {"xml": ..., "shapes": ...}
    pending: dict[str, tuple[str, Shapes, Future]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    @classmethod
    def of(cls, source: Any, precision: str, quantize: str) -> Prefetch:
        """The prefetch of a model found (its ModelSource), started where its last run is recorded."""
        prefetch = cls(record_file(model_identity(source), precision, quantize), precision)
        prefetch.recorded = _read(prefetch.file)
        for slot in PREFETCHED_SLOTS:
            entry = prefetch.recorded.get(slot)
            if entry and Path(entry["xml"]).is_file():
                shapes = tuple(tuple(shape) for shape in entry["shapes"])
                prefetch.pending[slot] = (entry["xml"], shapes, Future())
        if prefetch.pending:
            # not a daemon: it never dies inside OpenVINO at exit; told to stop first (concurrent.futures' hook)
            register = getattr(threading, "_register_atexit", atexit.register)
            register(prefetch.stop.set)
            threading.Thread(target=prefetch._compile_all, name="sdgen-openvino-prefetch").start()
        return prefetch

    def _compile_all(self) -> None:
        for xml, shapes, future in list(self.pending.values()):
            if self.stop.is_set() or not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(compile_for_cpu(xml, self.precision, shapes))
            except Exception as error:  # noqa: BLE001 (a hint only: the caller compiles it itself)
                future.set_exception(error)

    def take(self, slot: str, xml: str, shapes: Shapes) -> Any | None:
        """The part's prefetched compiled model if it is this one (file and shapes), else None (dropped)."""
        if self.pending.get(slot, (None, None))[:2] != (xml, shapes):
            self.drop(slot)
            return None
        _, _, future = self.pending.pop(slot)
        try:
            compiled = future.result()
        except Exception:  # noqa: BLE001
            return None
        log.info("OpenVINO: the %s compiled while the model loaded (the shapes of its last run).", slot)
        return compiled

    def drop(self, slot: str) -> None:
        """The part's prefetched model is not wanted (another form of it runs): never compiled, or let go."""
        _, _, future = self.pending.pop(slot, (None, None, None))
        if future is not None:
            future.cancel()  # not started: never compiled; running or done: let go with the future

    def record(self, slot: str, xml: str, shapes: Shapes) -> None:
        """What this run compiled for the part, for the next process (written only when it changed)."""
        entry = {"xml": xml, "shapes": [list(shape) for shape in shapes]}
        if slot not in PREFETCHED_SLOTS or self.recorded.get(slot) == entry:
            return
        self.recorded[slot] = entry
        with contextlib.suppress(OSError):  # a read-only cache: no record, no prefetch next time
            self.file.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(prefix=".tmp-", dir=self.file.parent)
            with os.fdopen(handle, "w") as out:
                json.dump(self.recorded, out)
            os.replace(temporary, self.file)


def _read(file: Path) -> dict[str, dict[str, Any]]:
    try:
        found = json.loads(file.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(found, dict):
        return {}
    return {slot: entry for slot, entry in found.items() if _well_formed(entry)}


def _well_formed(entry: Any) -> bool:
    shapes = entry.get("shapes") if isinstance(entry, dict) else None
    return (isinstance(entry.get("xml"), str) and isinstance(shapes, list)
            and all(isinstance(shape, list) and all(type(side) is int for side in shape) for shape in shapes))
