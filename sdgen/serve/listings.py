"""What the server can offer by name, as A1111's list endpoints say it: checkpoints (the served model, SD
models in the Hugging Face cache, single files in --models-dir), VAEs, LoRAs in --lora-dir and embeddings in
--embedding-dir. Only listed models can be chosen by a client: a request never makes the server open an
arbitrary path or download from the Hub."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdgen.engine.request import ModelSpec
from sdgen.errors import NAME, InvalidRequestError

_HASH_SUFFIX = re.compile(r"\s*\[[0-9a-fA-F]{8,64}\]$")  # A1111 titles end in " [hash]"


@dataclass(frozen=True)
class Checkpoint:
    title: str
    model_name: str
    filename: str
    model: str  # what ModelSpec.model gets
    sha256: str | None = None

    def record(self) -> dict[str, Any]:
        short = self.sha256[:10] if self.sha256 else None
        return {"title": self.title, "model_name": self.model_name, "hash": short, "sha256": self.sha256,
                "filename": self.filename, "config": None}


def title(model: str, models_dir: str | None = None) -> str:
    """A model's A1111 title: a file's path inside --models-dir (or its name), else the Hub id or folder."""
    path = Path(model).expanduser()
    if path.is_file():
        folder = Path(models_dir).expanduser().resolve() if models_dir else None
        inside = folder is not None and path.resolve().is_relative_to(folder)
        return str(path.resolve().relative_to(folder)) if inside and folder else path.name
    return model


def checkpoints(spec: ModelSpec, settings: Mapping[str, Any], served_sha256: str | None = None) -> list[Checkpoint]:
    """The served model first, then the server's own --model (a client may have switched away from it), the
    Hub cache's SD models and --models-dir's loadable files."""
    from sdgen.models.catalog import list_models
    from sdgen.models.hub import hub_cache_dir

    models_dir = settings.get("models_dir")
    found = [Checkpoint(title(spec.model, models_dir), _stem(spec.model), spec.model, spec.model, served_sha256)]
    own = str(settings.get("model") or spec.model)
    found.append(Checkpoint(title(own, models_dir), _stem(own), own, own))
    for entry in list_models(hub_cache_dir(spec), models_dir):
        if entry.where == "cache" and entry.kind.startswith("SD"):
            found.append(Checkpoint(entry.name, _stem(entry.name), entry.path, entry.name))
        elif entry.where == "models-dir" and not entry.kind.startswith("not loadable"):
            found.append(Checkpoint(entry.name, _stem(entry.name), entry.path, entry.path))
    unique: dict[str, Checkpoint] = {}
    for checkpoint in found:
        unique.setdefault(checkpoint.title, checkpoint)
    return list(unique.values())


def _stem(name: str) -> str:
    last = name.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return last.rsplit(".", 1)[0] if last.lower().endswith((".safetensors", ".ckpt")) else last


def find_checkpoint(value: str, spec: ModelSpec, settings: Mapping[str, Any]) -> Checkpoint:
    """The listed checkpoint a client names by title (with or without its [hash]), name or file name."""
    wanted = _HASH_SUFFIX.sub("", value.strip()).lower()
    listed = checkpoints(spec, settings)
    for checkpoint in listed:
        names = (checkpoint.title, checkpoint.model_name, checkpoint.filename, checkpoint.model)
        if wanted in {name.lower() for name in names}:
            return checkpoint
    titles = ", ".join(checkpoint.title for checkpoint in listed)
    raise InvalidRequestError(
        f"Invalid {NAME} {value!r}: not one of this server's models ({titles}); GET /sdapi/v1/sd-models lists them.",
        "model",
    )


def vaes(spec: ModelSpec, settings: Mapping[str, Any]) -> list[dict[str, str]]:
    """GET /sdapi/v1/sd-vae: the server's --vae and the VAEs in the Hugging Face cache."""
    from sdgen.models.catalog import list_models
    from sdgen.models.hub import hub_cache_dir

    listed = [str(settings["vae"])] if settings.get("vae") else []
    listed += [entry.name for entry in list_models(hub_cache_dir(spec), None) if entry.kind == "VAE"]
    return [{"model_name": _stem(name), "filename": name} for name in dict.fromkeys(listed)]


def find_vae(value: str, spec: ModelSpec, settings: Mapping[str, Any]) -> str | None:
    """sd_vae -> ModelSpec.vae: Automatic = the server's --vae, None = the model's own, else a listed VAE."""
    if value.strip().lower() == "automatic":
        return settings.get("vae")
    if value.strip().lower() == "none":
        return None
    for entry in vaes(spec, settings):
        if value.strip().lower() in {entry["model_name"].lower(), entry["filename"].lower()}:
            return entry["filename"]
    names = ", ".join(["Automatic", "None", *(entry["model_name"] for entry in vaes(spec, settings))])
    raise InvalidRequestError(f"Invalid {NAME} {value!r}: choose one of {names}.", "vae")


def loras(settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """GET /sdapi/v1/loras: the .safetensors files of --lora-dir, named as <lora:NAME:0.8> finds them."""
    return [{"name": path.stem, "alias": path.stem, "path": str(path), "metadata": {}}
            for path in _files(settings.get("lora_dir"), (".safetensors",))]


def embeddings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """GET /sdapi/v1/embeddings: --embedding-dir's files, used when a prompt says their name."""
    loaded = {}
    for path in _files(settings.get("embedding_dir"), (".safetensors", ".pt", ".bin")):
        vectors, width = _embedding_shape(path)
        loaded[path.stem] = {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": width,
                             "vectors": vectors}
    return {"loaded": loaded, "skipped": {}}


def _files(folder: str | None, suffixes: tuple[str, ...]) -> list[Path]:
    if not folder or not Path(folder).expanduser().is_dir():
        return []
    return sorted(p for p in Path(folder).expanduser().rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def _embedding_shape(path: Path) -> tuple[int | None, int | None]:
    """(vectors, width) from a .safetensors header (no tensors read); unknown for pickles, which are not opened."""
    if path.suffix.lower() != ".safetensors":
        return None, None
    try:
        with open(path, "rb") as handle:
            header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
        shape = next(value["shape"] for key, value in header.items() if key != "__metadata__")
    except (OSError, ValueError, StopIteration, KeyError, TypeError):
        return None, None
    return (shape[0], shape[-1]) if len(shape) == 2 else (1, shape[-1])


def upscalers(settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """GET /sdapi/v1/upscalers: None and Lanczos, then --upscaler-dir's model files (their scale read from the
    name, "4x-UltraSharp", as A1111 reads it; 4 when the name does not say)."""
    from sdgen.models.upscalers import list_upscaler_files

    entries = [{"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4}
               for name in ("None", "Lanczos")]
    for path in list_upscaler_files(settings.get("upscaler_dir") or ""):
        match = re.search(r"(\d+)[xX]|[xX](\d+)", path.stem)
        scale = int(match.group(1) or match.group(2)) if match else 4
        entries.append({"name": path.stem, "model_name": path.stem, "model_path": str(path), "model_url": None,
                        "scale": scale})
    return entries


def face_restorers(settings: Mapping[str, Any]) -> list[dict[str, Any]]:
    """GET /sdapi/v1/face-restorers: the server's --restore-faces model, the one restore_faces uses."""
    model = settings.get("restore_faces")
    if not model:
        return []
    from sdgen.models.upscalers import upscaler_name

    folder = settings.get("upscaler_dir") or str(Path(str(model)).parent)
    return [{"name": upscaler_name(str(model)), "cmd_dir": str(folder)}]


def listed_upscaler(name: str, settings: Mapping[str, Any], key: str) -> Path:
    """The file of an upscaler a client names: one GET /sdapi/v1/upscalers lists (a file of the server's
    --upscaler-dir, by its name, without case), never a path the client makes up; pickles as the server's
    --allow-unsafe-pickle says."""
    from sdgen.models.upscalers import find_upscaler, list_upscaler_files

    files = list_upscaler_files(settings.get("upscaler_dir") or "")
    found = next((path for path in files if path.stem.lower() == name.lower()), None)
    if found is None:
        names = ", ".join(["None", "Lanczos", *(path.stem for path in files)])
        raise InvalidRequestError(f"Invalid {NAME} {name!r}: choose one of {names} (GET /sdapi/v1/upscalers).", key)
    return find_upscaler(str(found), None, bool(settings.get("allow_unsafe_pickle")), key)
