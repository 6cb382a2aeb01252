"""Which LoRAs and embeddings a prompt uses, found on disk before any weights load.

- `--lora PATH_OR_ID[:SCALE]` and A1111's `<lora:name:0.8>` prompt tags (name looked up in --lora-dir);
  the tags are removed from the text CLIP reads, and kept in the text the image records, as A1111 does.
- `--embedding PATH[:TOKEN]` (the token defaults to the file's name) and --embedding-dir, where a file
  is used when its name is a word of the prompt or negative prompt (`easynegative`), as A1111 does.
Loading them is sdgen.models.adapters' job.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from sdgen.errors import NAME, InvalidRequestError

LORA_SUFFIXES = (".safetensors",)
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
PICKLE_SUFFIXES = (".pt", ".bin", ".ckpt", ".pth")

# <lora:name>, <lora:name:0.8> (also A1111's older <lyco:...>)
_TAG = re.compile(r"<(?:lora|lyco):([^:>]+)(?::([^>]*))?>", re.IGNORECASE)


@dataclass(frozen=True)
class LoraRef:
    source: str  # a .safetensors file, a diffusers LoRA folder, or a Hub id
    scale: float
    name: str  # what metadata calls it: the file's stem, or the Hub id


@dataclass(frozen=True)
class EmbeddingRef:
    path: str
    token: str


def lora_tags(prompt: str) -> list[tuple[str, float]]:
    """(name, scale) of each `<lora:...>` tag, in order."""
    tags = []
    for match in _TAG.finditer(prompt):
        name, scale = match.group(1).strip(), match.group(2)
        try:
            value = 1.0 if scale is None or not scale.strip() else float(scale)
        except ValueError:
            raise InvalidRequestError(
                f"Invalid {NAME} tag {match.group(0)!r}: the scale must be one number, as in <lora:{name}:0.8>.",
                "prompt",
            ) from None
        tags.append((name, value))
    return tags


def without_tags(prompt: str) -> str:
    """The text CLIP reads: tags removed, the text around them left as it is (as A1111 does)."""
    return _TAG.sub("", prompt)


def resolve_loras(
    specs: tuple[str, ...], prompt: str, lora_dir: str | None, files: FolderListing | None = None
) -> tuple[LoraRef, ...]:
    """--lora specs, then the prompt's tags; the same LoRA twice is one LoRA at the summed scale."""
    files = files or FolderListing()
    found: dict[str, LoraRef] = {}
    entries = [(*_split_scale(spec), "lora") for spec in specs]
    entries += [(_in_folder(name, lora_dir, files), scale, "prompt") for name, scale in lora_tags(prompt)]
    for source, scale, key in entries:
        ref = _lora_source(source, key)
        known = found.get(ref.source)
        found[ref.source] = LoraRef(ref.source, scale + (known.scale if known else 0.0), ref.name)
    return tuple(found.values())


class FolderListing:
    """The files a prompt may name, listed once per folder for one check of a run (every image's prompt asks):
    inside the folder, linked folders not entered (rglob does not), linked files kept only when they resolve
    inside it, so a tag or word never reaches a file elsewhere."""

    def __init__(self) -> None:
        self._found: dict[Path, list[Path]] = {}

    def __call__(self, folder: Path) -> list[Path]:
        if folder not in self._found:
            if not folder.is_dir():
                return []
            root = folder.resolve()
            self._found[folder] = sorted(
                path for path in folder.rglob("*") if path.is_file() and path.resolve().is_relative_to(root)
            )
        return self._found[folder]


def _split_scale(spec: str) -> tuple[str, float]:
    """'file.safetensors:0.7' -> ('file.safetensors', 0.7); a Windows drive letter is no scale."""
    head, sep, tail = spec.rpartition(":")
    if sep and head:
        try:
            return head, float(tail)
        except ValueError:
            pass
    return spec, 1.0


def _in_folder(name: str, lora_dir: str | None, files: FolderListing) -> str:
    if not lora_dir:
        raise InvalidRequestError(
            f"Invalid {NAME} tag <lora:{name}>: set --lora-dir (or lora_dir in the config) to the folder "
            f"holding {name}.safetensors.",
            "prompt",
        )
    folder = Path(lora_dir).expanduser()
    matches = [path for path in files(folder) if path.stem == name and path.suffix in LORA_SUFFIXES]
    if not matches:
        raise InvalidRequestError(
            f"Invalid {NAME} tag <lora:{name}>: no {name}.safetensors in {str(folder)!r} or its subfolders.",
            "prompt",
        )
    return str(matches[0])


def _lora_source(source: str, key: str) -> LoraRef:
    path = Path(source).expanduser()
    if path.exists():
        if path.is_file() and path.suffix.lower() in PICKLE_SUFFIXES:
            raise InvalidRequestError(
                f"Invalid {NAME} {source!r}: a pickle file can run code when loaded; sdgen loads LoRAs from "
                ".safetensors only (convert it, or download the .safetensors version).",
                key,
            )
        if path.is_file() and path.suffix.lower() not in LORA_SUFFIXES:
            raise InvalidRequestError(f"Invalid {NAME} {source!r}: a LoRA file ends in .safetensors.", key)
        return LoraRef(str(path), 1.0, path.stem)
    if _looks_like_hub_id(source):
        return LoraRef(source, 1.0, source)
    if _looks_like_hub_file(source):  # one file of a Hub repo of several: ByteDance/Hyper-SD/Hyper-SD15-...
        return LoraRef(source, 1.0, source.rsplit("/", 1)[1].removesuffix(".safetensors"))
    raise InvalidRequestError(
        f"Invalid {NAME} {source!r}: no such file or folder (give a .safetensors file, a diffusers LoRA folder, "
        "a Hub id like owner/name, or owner/name/file.safetensors).",
        key,
    )


def _looks_like_hub_id(text: str) -> bool:
    return re.fullmatch(r"[\w.\-]+/[\w.\-]+", text) is not None and not text.endswith(PICKLE_SUFFIXES + LORA_SUFFIXES)


def _looks_like_hub_file(text: str) -> bool:
    return re.fullmatch(r"[\w.\-]+/[\w.\-]+(/[\w.\-]+)+\.safetensors", text) is not None and ".." not in text


def resolve_embeddings(
    specs: tuple[str, ...], texts: tuple[str, ...], embedding_dir: str | None, files: FolderListing | None = None
) -> tuple[EmbeddingRef, ...]:
    """--embedding specs, then the files of --embedding-dir named by a word of the texts."""
    files = files or FolderListing()
    refs: dict[str, EmbeddingRef] = {}
    for spec in specs:
        path, token = _split_token(spec)
        refs[token] = EmbeddingRef(_embedding_file(path, "embedding"), token)
    if embedding_dir:
        folder = Path(embedding_dir).expanduser()
        if not folder.is_dir():
            raise InvalidRequestError(f"Invalid {NAME} {embedding_dir!r}: no such folder.", "embedding_dir")
        words = {word.lower() for text in texts for word in re.findall(r"[\w\-.]+", text)}
        for path in files(folder):
            if path.suffix.lower() in EMBEDDING_SUFFIXES and path.stem.lower() in words and path.stem not in refs:
                refs[path.stem] = EmbeddingRef(str(path), path.stem)
    return tuple(refs.values())


def _split_token(spec: str) -> tuple[str, str]:
    """'easyneg.safetensors:easynegative' -> (path, token); no token: the file's name, A1111's way."""
    head, sep, tail = spec.rpartition(":")
    if sep and head and tail and not any(c in tail for c in "/\\") and not Path(spec).expanduser().exists():
        return head, tail
    return spec, Path(spec).stem


def _embedding_file(path: str, key: str) -> str:
    file = Path(path).expanduser()
    if not file.is_file():
        raise InvalidRequestError(f"Invalid {NAME} {path!r}: no such file.", key)
    if file.suffix.lower() not in EMBEDDING_SUFFIXES:
        raise InvalidRequestError(
            f"Invalid {NAME} {path!r}: an embedding is a .safetensors, .pt or .bin file.", key
        )
    return str(file)


def short_hash(path: str) -> str | None:
    """The 12-hex-digit hash A1111 writes in `Lora hashes` and `TI hashes`: for a .safetensors file the
    sha256 of its tensor data (kohya's "addnet" hash, header skipped), else of the whole file; None for a
    folder or Hub id."""
    file = Path(path)
    if not file.is_file():
        return None
    stat = file.stat()
    return _hash(str(file.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _hash(path: str, size: int, mtime: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        if path.lower().endswith(".safetensors"):
            header = int.from_bytes(handle.read(8), "little")
            handle.seek(8 + header)
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]
