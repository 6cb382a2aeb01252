"""The tiny decoder (`--decoder PATH_OR_ID`): a tiny autoencoder (diffusers' AutoencoderTiny, TAESD) decodes
the final image instead of the VAE, at a fraction of its cost; the VAE still encodes init images and the
hires pass. Tested against diffusers' pipeline with `pipe.vae` swapped in tests/test_stepsavers.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdgen.engine.plugins.base import Plugin
from sdgen.errors import NAME, InvalidRequestError

if TYPE_CHECKING:  # pragma: no cover
    from sdgen.engine.loader import StableDiffusionParts
    from sdgen.engine.request import ModelSpec


def load_decoder(parts: StableDiffusionParts, spec: ModelSpec) -> Any:
    """The tiny autoencoder, placed beside the VAE; None when --decoder is not given."""
    if not spec.decoder:
        return None
    return parts.load_tiny_autoencoder(spec.decoder, flag="--decoder")


def _check(spec: Any) -> None:
    """A value written as a path (./x, /x, ~/x) or that exists must be a folder; else it is a Hub id. ""
    undoes a preset's decoder: the VAE decodes."""
    value = str(spec.decoder or "")
    path = Path(value).expanduser()
    looks_local = value.startswith((".", "/", "~")) or (value and path.exists())
    if looks_local and not (path / "config.json").is_file():
        raise InvalidRequestError(
            f"Invalid {NAME} {value!r}: not a model folder with a config.json; give a folder or a Hub id "
            "(e.g. madebyollin/taesd).",
            "decoder",
        )


PLUGIN = Plugin(
    "decoder", options=("decoder",), load=load_decoder, decoder=lambda module: module, check=_check
)
