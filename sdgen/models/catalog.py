"""`sdgen models`: the models on this machine (the Hugging Face cache and a folder of single files), what
each is, and downloading or removing them. Reads configs and file headers only; no weights load."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sdgen.errors import InvalidRequestError, ModelNotFoundError
from sdgen.models.layout import native_size
from sdgen.models.single_file import PICKLE_SUFFIXES, SAFE_SUFFIXES, inspect_checkpoint

CHECKPOINT_SUFFIXES = SAFE_SUFFIXES + PICKLE_SUFFIXES


@dataclass
class ModelEntry:
    name: str  # Hub id, or a file's path relative to the models folder
    kind: str  # "SD 1.x", "SD 1.x inpainting", "LoRA", "VAE", "not a model: ..." ...
    size: int  # bytes on disk
    where: str  # "cache" or "models-dir"
    path: str
    variants: list[str] = field(default_factory=list)  # fp16 ...
    revisions: list[str] = field(default_factory=list)  # refs and commits in the cache

    def record(self) -> dict[str, Any]:
        return asdict(self)


def find_in_models_dir(model: str, models_dir: str | None) -> str | None:
    """A1111's checkpoint names: `name`, `name.safetensors` or `sub/name.safetensors` in the models folder."""
    if not models_dir or not model:
        return None
    folder = Path(models_dir).expanduser()
    for candidate in (folder / model, *(folder / f"{model}{suffix}" for suffix in CHECKPOINT_SUFFIXES)):
        if candidate.is_file():
            return str(candidate)
    if "/" in model or "\\" in model:
        return None
    matches = sorted(p for p in folder.rglob("*") if p.suffix.lower() in CHECKPOINT_SUFFIXES and p.stem == model)
    return str(matches[0]) if matches else None


def list_models(cache_dir: Path, models_dir: str | None) -> list[ModelEntry]:
    return [*_cached(cache_dir), *_single_files(models_dir)]


def _cached(cache_dir: Path) -> list[ModelEntry]:
    from huggingface_hub import scan_cache_dir

    if not cache_dir.is_dir():
        return []
    entries = []
    for repo in sorted(scan_cache_dir(cache_dir).repos, key=lambda repo: repo.repo_id):
        if repo.repo_type != "model":
            continue
        files = {str(f.file_path.relative_to(revision.snapshot_path)) for revision in repo.revisions
                 for f in revision.files}
        newest = max(repo.revisions, key=lambda revision: revision.last_modified, default=None)
        revisions = [f"{ref}={revision.commit_hash[:10]}" for revision in repo.revisions for ref in revision.refs]
        revisions += [revision.commit_hash[:10] for revision in repo.revisions if not revision.refs]
        entries.append(ModelEntry(
            name=repo.repo_id,
            kind=_folder_kind(newest.snapshot_path if newest else None, files),
            size=repo.size_on_disk,
            where="cache",
            path=str(repo.repo_path),
            variants=sorted({name.split(".")[-2] for name in files if name.count(".") >= 2 and "fp16" in name}),
            revisions=revisions,
        ))
    return entries


def _folder_kind(folder: Path | None, files: set[str]) -> str:
    if "model_index.json" in files or "unet/config.json" in files:
        unet = _json(folder / "unet" / "config.json") if folder else {}
        family = "SD 2.x" if unet.get("cross_attention_dim") == 1024 else "SD 1.x"
        return family + (" inpainting" if unet.get("in_channels") == 9 else "")
    if any(name.endswith("lora_weights.safetensors") for name in files):
        return "LoRA"
    config = _json(folder / "config.json") if folder else {}
    kinds = {"AutoencoderKL": "VAE", "AutoencoderTiny": "tiny autoencoder", "ControlNetModel": "ControlNet"}
    return kinds.get(config.get("_class_name", ""), "other")


def _single_files(models_dir: str | None) -> list[ModelEntry]:
    if not models_dir:
        return []
    folder = Path(models_dir).expanduser()
    entries = []
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix.lower() in CHECKPOINT_SUFFIXES:
            try:
                kind = inspect_checkpoint(str(path), allow_pickle=False).description
            except InvalidRequestError as error:  # a VAE, a LoRA, an SDXL file ...: say why in a few words
                reason = str(error).split(": ", 1)[-1].split(";")[0].split(" (")[0]
                kind = "not loadable: " + (reason[:60] + "..." if len(reason) > 60 else reason)
            entries.append(ModelEntry(str(path.relative_to(folder)), kind, path.stat().st_size, "models-dir",
                                      str(path)))
    return entries


def model_info(model: str, model_config: str | None = None) -> dict[str, Any]:
    """What a model is and what sdgen would load, from its header or configs; no weights."""
    from sdgen.models.single_file import config_folder, is_checkpoint_file

    if is_checkpoint_file(model):
        checkpoint = inspect_checkpoint(model, allow_pickle=False)
        config = config_folder(model_config, offline=True, family=checkpoint.family)
        scheduler = _json(config / "scheduler" / "scheduler_config.json")
        return {
            "model": model, "format": "single file (LDM/A1111 layout)", "family": checkpoint.description,
            "in_channels": checkpoint.in_channels, "prediction_type": scheduler.get("prediction_type", "epsilon"),
            "native_size": native_size(model, model_config), "size": checkpoint.path.stat().st_size,
            "loads_with": str(config),
        }
    folder = _local_folder(model)
    unet, scheduler = _json(folder / "unet" / "config.json"), _json(folder / "scheduler" / "scheduler_config.json")
    files = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    return {
        "model": model, "format": "diffusers folder", "family": _folder_kind(folder, files),
        "in_channels": unet.get("in_channels"), "prediction_type": scheduler.get("prediction_type", "epsilon"),
        "native_size": native_size(str(folder)), "folder": str(folder),
        "variants": sorted({name.split(".")[-2] for name in files if ".fp16." in name}),
        "loads_with": "its own configs",
    }


def _local_folder(model: str) -> Path:
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, "model_index.json")
    if not isinstance(cached, str):
        raise ModelNotFoundError(
            f"{model!r} is not a checkpoint file, a model folder or a model in the Hugging Face cache; "
            f"`sdgen models download {model}` fetches a Hub model."
        )
    return Path(cached).parent


def remove_cached(cache_dir: Path, repo_id: str) -> int:
    """Delete every revision of a Hub model from the cache; returns the bytes freed."""
    from huggingface_hub import scan_cache_dir

    repos = [repo for repo in scan_cache_dir(cache_dir).repos if repo.repo_id == repo_id] if cache_dir.is_dir() else []
    if not repos:
        raise ModelNotFoundError(f"{repo_id!r} is not in the Hugging Face cache ({cache_dir}); `sdgen models list`.")
    hashes = [revision.commit_hash for repo in repos for revision in repo.revisions]
    strategy = scan_cache_dir(cache_dir).delete_revisions(*hashes)
    freed = strategy.expected_freed_size
    strategy.execute()
    return freed


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
