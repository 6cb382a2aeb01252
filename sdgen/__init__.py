"""sdgen: Stable Diffusion 1.x from the command line, with its own readable denoising loop.

Importing this package must stay cheap: torch and diffusers are imported lazily by the functions
that need them, so `sdgen --help` is instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

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
    from sdgen.models import load_model
    from sdgen.options import DEFAULT_MODEL
    from sdgen.pipeline import GeneratedImage, generate
    from sdgen.request import GenerationRequest, ModelSpec

_LAZY = {
    "DEFAULT_MODEL": "sdgen.options",
    "GenerationRequest": "sdgen.request",
    "ModelSpec": "sdgen.request",
    "load_model": "sdgen.models",
    "GeneratedImage": "sdgen.pipeline",
    "generate": "sdgen.pipeline",
}


def __getattr__(name: str) -> Any:
    """Import the public API on first use (PEP 562), keeping `import sdgen` free of torch."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sdgen' has no attribute {name!r}")
