"""Finding and loading ControlNets (`--control MODEL=IMAGE`): a Hub id through the Hugging Face cache, a diffusers
folder, or one `.safetensors` file in A1111's layout (`control_v11p_sd15_canny.safetensors`), also found by its
short name in `--control-dir` (A1111's models/ControlNet folder: `canny` finds `control_v11p_sd15_canny`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sdgen.errors import InvalidRequestError, ModelLoadError

PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
SINGLE_FILE_SUFFIX = ".safetensors"


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~")) and not Path(name).exists()


def _in_control_dir(name: str, control_dir: str | None) -> Path | None:
    """`name` in the folder: NAME, NAME.safetensors, or the one file whose stem ends with `_NAME`
    (control_v11p_sd15_canny for canny)."""
    if not control_dir:
        return None
    folder = Path(control_dir).expanduser()
    for candidate in (folder / name, folder / f"{name}{SINGLE_FILE_SUFFIX}"):
        if candidate.exists():
            return candidate
    if not folder.is_dir():
        return None
    matches = sorted(
        path for path in folder.iterdir()
        if path.suffix == SINGLE_FILE_SUFFIX and (path.stem == name or path.stem.endswith(f"_{name}"))
    )
    if len(matches) > 1:
        names = ", ".join(path.name for path in matches)
        raise InvalidRequestError(
            f"Invalid {{name}} {name!r}: several files in {str(folder)!r} match ({names}); name one of them.",
            "control",
        )
    return matches[0] if matches else None


def find_controlnet(name: str, control_dir: str | None = None) -> str:
    """Where the ControlNet `name` is: a path (folder or .safetensors) or a Hub id; InvalidRequestError naming
    it when it is none of them, or a pickle."""
    found = _in_control_dir(name, control_dir)
    path = found or Path(name).expanduser()
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise InvalidRequestError(
            f"Invalid {{name}} {name!r}: a pickled file, which sdgen does not load (it can run code); convert it "
            f"with `sdgen convert {path} {path.with_suffix(SINGLE_FILE_SUFFIX)}`.",
            "control",
        )
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise InvalidRequestError(
                f"Invalid {{name}} {name!r}: the folder has no config.json (a diffusers ControlNet folder has).",
                "control",
            )
        return str(path)
    if path.is_file():
        if path.suffix.lower() != SINGLE_FILE_SUFFIX:
            raise InvalidRequestError(
                f"Invalid {{name}} {name!r}: not a .safetensors file or a diffusers folder.", "control"
            )
        return str(path)
    if _looks_like_hub_id(name):
        return name
    where = f" or in --control-dir {control_dir!r}" if control_dir else ""
    raise InvalidRequestError(
        f"Invalid {{name}} {name!r}: no such file or folder{where}; give a Hub id "
        "(lllyasviel/control_v11p_sd15_canny), a diffusers folder or a .safetensors file.",
        "control",
    )


def controlnet_name(source: str) -> str:
    """The name A1111 shows for a ControlNet: the file's or folder's stem, or the Hub id's last part."""
    return Path(source).stem if Path(source).exists() else source.rsplit("/", 1)[-1]


def a1111_model_name(source: str) -> str:
    """The model as A1111's ControlNet extension names it in its list and its infotext: a file's stem and A1111's
    old 8-digit hash of the file (`control_v11p_sd15_canny [d14c016b]`); a folder's or Hub id's name alone (the
    extension lists files only)."""
    from sdgen.models.hashes import legacy_model_hash

    digest = legacy_model_hash(source) if Path(source).suffix.lower() == SINGLE_FILE_SUFFIX else None
    return f"{controlnet_name(source)} [{digest}]" if digest else controlnet_name(source)


def load_controlnet(source: str, dtype: Any = None, unet_config: Mapping[str, Any] | None = None) -> Any:
    """The ControlNetModel at `source` (find_controlnet's answer), in eval mode. A single file in A1111's layout
    (`control_model.*` or bare LDM keys) is read with the base U-Net's architecture (`unet_config`: a ControlNet
    copies its U-Net's encoder) and the control-image encoder's widths the file itself shows."""
    from diffusers import ControlNetModel

    path = Path(source)
    if not path.is_file():  # a folder, or a Hub id: from the cache alone when it is there (no network call)
        return ControlNetModel.from_pretrained(source, torch_dtype=dtype, local_files_only=_cached(source)).eval()
    if unet_config is None:
        raise ModelLoadError(f"Cannot load the ControlNet {source!r} without its base model's U-Net config.")
    return _single_file(path, unet_config).to(dtype=dtype).eval()


def _cached(source: str) -> bool:
    """A folder, or a Hub id whose config.json is in the Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    return Path(source).is_dir() or isinstance(try_to_load_from_cache(source, "config.json"), str)


def _single_file(path: Path, unet_config: Mapping[str, Any]) -> Any:
    import inspect

    from diffusers import ControlNetModel
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except Exception as error:  # not a safetensors file, truncated ...
        raise ModelLoadError(f"Cannot read the ControlNet {str(path)!r}: {error}") from None
    prefix = "control_model." if any(key.startswith("control_model.") for key in tensors) else ""
    hint = sorted(
        (int(key[len(prefix) + len("input_hint_block."):].split(".")[0]), tensor.shape[0])
        for key, tensor in tensors.items()
        if key.startswith(prefix + "input_hint_block.") and key.endswith(".weight")
    )
    if not hint:
        raise ModelLoadError(f"Cannot load {str(path)!r} as a ControlNet: it has no input_hint_block tensors.")
    # the control image's encoder: conv_in, then pairs of convolutions (the second of each pair widens), conv_out
    widths = (hint[0][1], *(channels for _, channels in hint[1:-1][1::2]))
    accepted = set(inspect.signature(ControlNetModel.__init__).parameters)
    config = {key: value for key, value in unet_config.items() if key in accepted and key != "in_channels"}
    model = ControlNetModel(**config, conditioning_embedding_out_channels=widths)
    converted = convert_controlnet_checkpoint(tensors, {**config, "layers_per_block": config["layers_per_block"]})
    missing, unexpected = model.load_state_dict(converted, strict=False)
    if missing or unexpected:
        raise ModelLoadError(
            f"Cannot load {str(path)!r} as a ControlNet of this model: {len(missing)} tensors missing, "
            f"{len(unexpected)} unexpected (e.g. {(missing or unexpected)[0]})."
        )
    return model
