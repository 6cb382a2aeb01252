"""sdgen: Stable Diffusion 1.x from the command line, with its own readable denoising loop.

Importing this package must stay cheap: torch and diffusers are imported lazily by the functions
that need them, so `sdgen --help` is instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sdgen.version import __version__

__all__ = [
    "DEFAULT_MODEL",
    "GeneratedImage",
    "GenerationRequest",
    "ModelSpec",
    "__version__",
    "generate",
    "load_model",
]

if TYPE_CHECKING:  # pragma: no cover
    from sdgen.config.options import DEFAULT_MODEL
    from sdgen.engine.loader import load_model
    from sdgen.engine.pipeline import GeneratedImage, generate
    from sdgen.engine.request import GenerationRequest, ModelSpec

_LAZY = {
    "DEFAULT_MODEL": "sdgen.config.options",
    "GenerationRequest": "sdgen.engine.request",
    "ModelSpec": "sdgen.engine.request",
    "load_model": "sdgen.engine.loader",
    "GeneratedImage": "sdgen.engine.pipeline",
    "generate": "sdgen.engine.pipeline",
}


def __getattr__(name: str) -> Any:
    """Import the public API on first use (PEP 562), keeping `import sdgen` free of torch."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sdgen' has no attribute {name!r}")
