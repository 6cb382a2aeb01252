"""`--vae`: another VAE in place of the model's own (a fine-tuned decoder such as stabilityai/sd-vae-ft-mse).

Given as a diffusers folder (config.json + weights, or a model folder with vae/; an AutoencoderTiny folder such
as TAESD's or SDXS's vae/ loads as the tiny autoencoder it is), a Hub id, or one
`.safetensors` file in the original (LDM) or diffusers key layout, read with diffusers' own
`AutoencoderKL.from_single_file` and the model's VAE config. Safetensors only: a pickle can run code.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdgen.errors import NAME, InvalidRequestError, ModelLoadError

PICKLES = (".ckpt", ".pt", ".pth", ".bin")


@dataclass(frozen=True)
class VaeSource:
    kind: str  # "file", "folder" or "hub"
    location: str
    subfolder: str | None = None  # "vae" when a whole model folder was given

    @property
    def name(self) -> str:
        """What A1111's `VAE` field shows: the file's or folder's name, or the Hub id."""
        return Path(self.location).name if self.kind != "hub" else self.location


def vae_source(value: str) -> VaeSource:
    """Where --vae points, checked before any weights load; InvalidRequestError naming the value if nowhere."""
    path = Path(value).expanduser()
    if path.is_file():
        if path.suffix.lower() in PICKLES:
            raise InvalidRequestError(
                f"Invalid {NAME} {value!r}: a pickle file can run code when loaded; use the VAE's .safetensors "
                "version (or `sdgen convert`).",
                "vae",
            )
        if path.suffix.lower() != ".safetensors":
            raise InvalidRequestError(f"Invalid {NAME} {value!r}: a VAE file ends in .safetensors.", "vae")
        return VaeSource("file", str(path))
    if path.is_dir():
        if (path / "config.json").is_file():
            return VaeSource("folder", str(path))
        if (path / "vae" / "config.json").is_file():
            return VaeSource("folder", str(path), "vae")
        raise InvalidRequestError(
            f"Invalid {NAME} {value!r}: the folder has no config.json (nor vae/config.json); give a diffusers VAE "
            "folder, a .safetensors file or a Hub id.",
            "vae",
        )
    if re.fullmatch(r"[\w.\-]+/[\w.\-]+", value):
        return VaeSource("hub", value)
    raise InvalidRequestError(
        f"Invalid {NAME} {value!r}: no such file or folder (give a .safetensors file, a diffusers VAE folder or a "
        "Hub id like stabilityai/sd-vae-ft-mse).",
        "vae",
    )


def load_replacement_vae(source: VaeSource, model_folder: Path, offline: bool) -> Any:
    """The VAE in float32 on the CPU (placed like the model's own VAE by the caller)."""
    import torch
    from diffusers import AutoencoderKL

    try:
        if source.kind == "file":
            return AutoencoderKL.from_single_file(
                source.location, config=str(model_folder), subfolder="vae", local_files_only=True,
                torch_dtype=torch.float32,
            )
        cls = _folder_class(source) or AutoencoderKL  # a local AutoencoderTiny folder (TAESD, SDXS's vae/) too
        return cls.from_pretrained(
            source.location, subfolder=source.subfolder, use_safetensors=True, local_files_only=offline,
            torch_dtype=torch.float32,
        )
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        lines = str(error).strip().splitlines()
        reason = lines[0][:300] if lines else type(error).__name__
        raise ModelLoadError(f"Cannot load the VAE {source.location!r}: {reason}. Is it an SD 1.x/2.x VAE?") from None


def _folder_class(source: VaeSource) -> Any:
    """diffusers' AutoencoderTiny for a local folder whose config.json names it; None otherwise."""
    import json

    if source.kind != "folder":
        return None
    config = Path(source.location) / (source.subfolder or "") / "config.json"
    try:
        named = json.loads(config.read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError):
        return None
    if named != "AutoencoderTiny":
        return None
    from diffusers import AutoencoderTiny

    return AutoencoderTiny


def vae_hash(source: VaeSource) -> str | None:
    """A1111's `VAE hash`: the first 10 hex digits of the weights file's sha256."""
    file = _weights_file(source)
    if file is None:
        return None
    stat = file.stat()
    return _sha256(str(file.resolve()), stat.st_size, stat.st_mtime_ns)[:10]


def _weights_file(source: VaeSource) -> Path | None:
    if source.kind == "file":
        return Path(source.location)
    name = "diffusion_pytorch_model.safetensors"
    if source.kind == "hub":
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(source.location, name)
        return Path(cached) if isinstance(cached, str) else None
    file = Path(source.location) / (source.subfolder or "") / name
    return file if file.is_file() else None


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
