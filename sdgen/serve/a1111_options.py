"""A1111's settings as GET/POST /sdapi/v1/options know them: every key of A1111's modules/shared_options.py
with its default (a1111_options.json, in A1111's order), sdgen's values for the keys it acts on, and the
checks of those keys. Keys sdgen does not act on are kept as a client sends them (per server process) and
sent back, so a client that reads, changes and writes back the whole dict loses nothing."""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sdgen.errors import InvalidRequestError
from sdgen.record.formats import FORMATS

DATA = Path(__file__).with_name("a1111_options.json")

# The keys sdgen acts on (docs/server.md#options); every other key is kept and echoed.
ACTED_ON = (
    "sd_model_checkpoint", "sd_vae", "CLIP_stop_at_last_layers", "samples_format", "jpeg_quality", "webp_lossless",
    "enable_pnginfo", "eta_noise_seed_delta", "randn_source",
)
RANDN_SOURCES = {"CPU": "cpu", "GPU": "device", "NV": "device"}  # A1111's randn_source -> sdgen's --rng


@functools.lru_cache(maxsize=1)
def _defaults() -> dict[str, Any]:
    return json.loads(DATA.read_text(encoding="utf-8"))


def a1111_defaults() -> dict[str, Any]:
    """A fresh copy of A1111's default settings (lists included, so a change to one never reaches another)."""
    return copy.deepcopy(_defaults())


def served_options(settings: Mapping[str, Any], checkpoint_title: str, rng: str) -> dict[str, Any]:
    """A1111's settings with sdgen's values where it acts on them: the served model, its clip skip, ENSD,
    metadata on or off, where noise is drawn."""
    return a1111_defaults() | {
        "sd_model_checkpoint": checkpoint_title, "sd_vae": "Automatic",
        "CLIP_stop_at_last_layers": settings.get("clip_skip", 1),
        "eta_noise_seed_delta": settings.get("eta_noise_seed_delta", 0),
        "enable_pnginfo": bool(settings.get("metadata", True)),
        "randn_source": "CPU" if rng == "cpu" else "GPU",
    }


MAX_OTHER_KEYS = 256  # keys A1111 does not have, kept per server: clients' own, bounded so memory is


def check_kept(kept: Mapping[str, Any], changes: Mapping[str, Any]) -> None:
    """InvalidRequestError (422) when keeping `changes` would hold more than MAX_OTHER_KEYS keys that are not
    A1111's: a client may store its own keys, not grow the server without end."""
    others = (kept.keys() | changes.keys()) - _defaults().keys()
    if len(others) > MAX_OTHER_KEYS:
        raise InvalidRequestError(
            f"Too many options: {len(others)} keys that are not A1111's would be kept; this server keeps at most "
            f"{MAX_OTHER_KEYS} (send fewer keys of your own)."
        )


def check(changes: Mapping[str, Any]) -> None:
    """InvalidRequestError (422) naming the key, for a bad value of a key sdgen acts on."""
    for key, rule in _RULES.items():
        if key in changes and not rule[0](changes[key]):
            raise InvalidRequestError(f"Invalid {key} {changes[key]!r}: {rule[1]}.", key)


def _whole(low: int, high: int) -> Any:
    return lambda value: not isinstance(value, bool) and isinstance(value, int) and low <= value <= high


_RULES = {
    "samples_format": (lambda value: isinstance(value, str) and value.lower() in FORMATS,
                       "sdgen sends png, jpg (or jpeg) or webp"),
    "jpeg_quality": (_whole(1, 100), "a whole number from 1 to 100"),
    "webp_lossless": (lambda value: isinstance(value, bool), "true or false"),
    "enable_pnginfo": (lambda value: isinstance(value, bool), "true or false"),
    "CLIP_stop_at_last_layers": (_whole(1, 12), "a whole number from 1 to 12"),
    "eta_noise_seed_delta": (_whole(0, 2**63 - 1), "a whole number from 0 up"),
    "randn_source": (lambda value: value in RANDN_SOURCES, "GPU, CPU or NV (sdgen draws NV's noise on CUDA: GPU)"),
}
