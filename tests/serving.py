"""Helpers of the server tests: an Engine over the tiny model with the settings `sdgen serve` would build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdgen.config import settings
from sdgen.engine.request import ModelSpec


def server_settings(model: Path | str, **flags: Any) -> dict[str, Any]:
    """The effective settings of `sdgen serve --model MODEL --device cpu --dtype float32 FLAGS`."""
    typed = {"model": str(model), "device": "cpu", "dtype": "float32", **flags}
    return settings.values(settings.resolve(flags=typed))


def make_engine(model: Path | str, limits: Any = None, outdir: Path | None = None, **flags: Any):
    from sdgen.serve.engine import Engine, Limits

    chosen = server_settings(model, **flags)
    engine = Engine(chosen, ModelSpec.from_settings(chosen).checked(), limits or Limits(max_steps=5000), outdir)
    engine.start()
    return engine
