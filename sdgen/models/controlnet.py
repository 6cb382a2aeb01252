"""Finding and loading ControlNets (`--control MODEL=IMAGE`): a Hub id through the Hugging Face cache, a diffusers
folder, or one `.safetensors` file in A1111's layout (`control_v11p_sd15_canny.safetensors`), also found by its
short name in `--control-dir` (A1111's models/ControlNet folder: `canny` finds `control_v11p_sd15_canny`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sdgen.errors import InvalidRequestError

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


def load_controlnet(source: str, dtype: Any = None, config: str | None = None) -> Any:
    """The ControlNetModel at `source` (find_controlnet's answer), in eval mode. A single file needs the
    architecture's config (`config`: a folder or Hub id; default: diffusers' own guess, which may need the
    cache)."""
    from diffusers import ControlNetModel

    path = Path(source)
    if path.is_file():
        extra = {"config": config} if config else {}
        model = ControlNetModel.from_single_file(str(path), torch_dtype=dtype, **extra)
    else:
        model = ControlNetModel.from_pretrained(source, torch_dtype=dtype)
    return model.eval()
