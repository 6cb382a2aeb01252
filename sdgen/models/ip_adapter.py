"""Finding and loading IP-Adapters (`--ip-adapter MODEL`) and their image encoders, in h94/IP-Adapter's layout:
`models/ip-adapter_sd15.safetensors` (base) or `models/ip-adapter-plus_sd15.safetensors` (Plus) beside
`models/image_encoder/` (a CLIPVisionModelWithProjection folder).

MODEL is a `.safetensors` file, a folder holding one of those two files (in it or in its `models/`; the base one
first), or a Hub id read through the Hugging Face cache: `h94/IP-Adapter` means its
`models/ip-adapter_sd15.safetensors`, and a path inside the repo may follow the id
(`h94/IP-Adapter/models/ip-adapter-plus_sd15.safetensors`). The image encoder is the `image_encoder` folder beside
the file unless `--ip-encoder` names another."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdgen.errors import InvalidRequestError, ModelLoadError
from sdgen.models.controlnet import PICKLE_SUFFIXES, _looks_like_hub_id

KEY = "ip_adapter"
FILE_NAMES = ("ip-adapter_sd15.safetensors", "ip-adapter-plus_sd15.safetensors")
HUB_FOLDER = "models"  # where h94/IP-Adapter keeps the SD 1.5 files
ENCODER_FOLDER = "image_encoder"


@dataclass(frozen=True)
class IPAdapterSource:
    """Where an IP-Adapter's file is: a local path, or a path inside the Hub repo `repo`."""

    file: str
    repo: str | None = None

    @property
    def name(self) -> str:
        """The name A1111 shows: the file's stem (ip-adapter_sd15)."""
        return Path(self.file).stem


def _bad(name: str, why: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid {{name}} {name!r}: {why}.", KEY)


def find_ip_adapter(name: str) -> IPAdapterSource:
    """Where the IP-Adapter `name` is; InvalidRequestError naming it when it is no file, folder or Hub id."""
    path = Path(name).expanduser()
    if path.is_file():
        if path.suffix.lower() in PICKLE_SUFFIXES:
            raise _bad(name, "a pickled file, which sdgen does not load (it can run code); use the .safetensors file")
        if path.suffix.lower() != ".safetensors":
            raise _bad(name, "not a .safetensors file")
        return IPAdapterSource(str(path))
    if path.is_dir():
        for folder in (path, path / HUB_FOLDER):
            for file_name in FILE_NAMES:
                if (folder / file_name).is_file():
                    return IPAdapterSource(str(folder / file_name))
        raise _bad(name, f"the folder holds neither {FILE_NAMES[0]} nor {FILE_NAMES[1]} (in it or in models/)")
    repo, inner = "/".join(name.split("/")[:2]), "/".join(name.split("/")[2:])
    if _looks_like_hub_id(repo) and not path.exists():
        if inner and not inner.endswith(".safetensors"):
            raise _bad(name, "a file in a Hub repo must be a .safetensors file")
        return IPAdapterSource(inner or f"{HUB_FOLDER}/{FILE_NAMES[0]}", repo)
    raise _bad(
        name, "no such file or folder; give a Hub id (h94/IP-Adapter), a folder holding ip-adapter_sd15.safetensors "
        "or a .safetensors file"
    )


def _from_hub(repo: str, file: str) -> Path:
    """A file of a Hub repo: from the cache, else downloaded (ModelLoadError in one line when neither can be)."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo, file)
    if isinstance(cached, str):
        return Path(cached)
    try:
        return Path(hf_hub_download(repo, file))
    except Exception as error:  # offline, not found, no network
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(
            f"Cannot find {file} of the IP-Adapter {repo} in the Hugging Face cache ({reason}); download it with "
            f"`hf download {repo} {file}` (and its {Path(file).parent.as_posix()}/{ENCODER_FOLDER}/)."
        ) from None


def adapter_file(source: IPAdapterSource) -> Path:
    return _from_hub(source.repo, source.file) if source.repo else Path(source.file)


def encoder_folder(source: IPAdapterSource, ip_encoder: str | None) -> Path:
    """The image encoder's folder: `ip_encoder`, else `image_encoder` beside the adapter's file."""
    if ip_encoder:
        return Path(ip_encoder).expanduser()
    if source.repo is None:
        return Path(source.file).parent / ENCODER_FOLDER
    config = _from_hub(source.repo, (Path(source.file).parent / ENCODER_FOLDER / "config.json").as_posix())
    folder = config.parent
    if not any(folder.glob("*.safetensors")):
        _from_hub(source.repo, (Path(source.file).parent / ENCODER_FOLDER / "model.safetensors").as_posix())
    return folder


def check_encoder_folder(folder: str) -> None:
    if not (Path(folder).expanduser() / "config.json").is_file():
        raise InvalidRequestError(
            f"Invalid {{name}} {folder!r}: not an image encoder folder (a CLIPVisionModelWithProjection folder with "
            "config.json, like h94/IP-Adapter's models/image_encoder).", "ip_encoder"
        )


def load_ip_adapter_tensors(path: Path) -> dict[str, dict[str, Any]]:
    """The file's tensors as diffusers' `_load_ip_adapter_weights` takes them: {"image_proj": {...},
    "ip_adapter": {...}}."""
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except Exception as error:  # not a safetensors file, truncated ...
        raise ModelLoadError(f"Cannot read the IP-Adapter {str(path)!r}: {error}") from None
    state: dict[str, dict[str, Any]] = {"image_proj": {}, "ip_adapter": {}}
    for key, tensor in tensors.items():
        group, _, rest = key.partition(".")
        if group in state:
            state[group][rest] = tensor
    if not state["image_proj"] or not state["ip_adapter"]:
        raise ModelLoadError(f"Cannot load {str(path)!r} as an IP-Adapter: no image_proj.* or ip_adapter.* keys.")
    return state


def reads_hidden_states(path: Path) -> bool:
    """Whether the adapter's projection reads the image encoder's penultimate hidden states (Plus, full face) or
    its image embeddings (base): diffusers' `_convert_ip_adapter_image_proj_to_diffusers` builds the base
    ImageProjection where the file has `image_proj.proj.weight`, and `encode_image` gives every other projection
    the hidden states. Told from the file, so no U-Net layers are built to know it (an OpenVINO warm start)."""
    return "proj.weight" not in load_ip_adapter_tensors(path)["image_proj"]


def load_image_encoder(folder: Path, dtype: Any = None) -> tuple[Any, Any]:
    """The CLIPVisionModelWithProjection in `folder` (eval mode) and its image processor, made as diffusers'
    load_ip_adapter makes it (CLIP's defaults at the encoder's image size)."""
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    if not (folder / "config.json").is_file():
        raise ModelLoadError(
            f"Cannot load the IP-Adapter's image encoder: {str(folder)!r} has no config.json; give --ip-encoder DIR."
        )
    encoder = CLIPVisionModelWithProjection.from_pretrained(str(folder), torch_dtype=dtype).eval()
    size = encoder.config.image_size
    return encoder, CLIPImageProcessor(size=size, crop_size=size)
