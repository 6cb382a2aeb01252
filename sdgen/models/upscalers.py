"""Upscaler models (ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT, OmniSR, SPAN ... and the face restorers GFPGAN and
RestoreFormer), read by spandrel from their weights alone: the file says nothing of its architecture, spandrel
recognises it from the tensors' names and shapes, as chaiNNer and ComfyUI do.

An upscaler is a file path or a name in --upscaler-dir (A1111's models/ESRGAN folder): `4x-UltraSharp` finds
`4x-UltraSharp.safetensors`. Pickled files (.pth, most ESRGAN downloads) can run code when loaded: refused
unless --allow-unsafe-pickle, and even then read with torch.load(weights_only=True), as checkpoints are.
The architecture is recognised from the file's header before anything loads (`identify`), so an unknown
file is a one-line error before any weights load.

spandrel imports torchvision for two architectures (LaMa, RestoreFormer) when it is imported. Where
torchvision cannot be imported (a CPU torch build with no matching torchvision), `import_spandrel` lets
spandrel load without it: every other architecture works, those two are refused by name.
"""

from __future__ import annotations

import sys
import types
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdgen.errors import InvalidRequestError
from sdgen.models.single_file import PICKLE_SUFFIXES, SAFE_SUFFIXES, read_pickled_data

UPSCALER_SUFFIXES = SAFE_SUFFIXES + PICKLE_SUFFIXES
NEEDS_TORCHVISION = {"LaMa", "RestoreFormer"}  # spandrel's architectures that call torchvision
MISSING_SPANDREL = 'upscaler models need spandrel: pip install "sdgen[upscale]"'


@dataclass(frozen=True)
class UpscalerFile:
    """An upscaler found and recognised, nothing loaded: its file, the name it is shown by, spandrel's
    architecture."""

    path: Path
    architecture: str

    @property
    def name(self) -> str:
        return self.path.stem


def import_spandrel() -> Any:
    """spandrel, or InvalidRequestError with the install command when it is missing."""
    if "spandrel" in sys.modules:
        return sys.modules["spandrel"]
    try:
        import torchvision  # noqa: F401
    except Exception:  # not installed, or a build that does not match torch ('torchvision::nms does not exist')
        return _import_without_torchvision()
    return _import_plain()


def _import_plain() -> Any:
    try:
        import spandrel
    except ModuleNotFoundError as error:
        if error.name in ("spandrel", "einops"):
            raise InvalidRequestError(f"Invalid {{name}}: {MISSING_SPANDREL}.", "upscaler") from None
        raise
    return spandrel


def _import_without_torchvision() -> Any:
    """Import spandrel with a stand-in torchvision whose every use fails, taken away again at once, so that
    nothing else (transformers looks for torchvision) ever sees it."""
    saved = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] == "torchvision"}
    stand_in = _StandIn("torchvision")
    names = ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.ops")
    sys.modules.update({name: stand_in for name in names})
    try:
        return _import_plain()
    finally:
        for name in names:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


class _StandIn(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _StandIn(f"{self.__name__}.{name}")

    def __call__(self, *args: object, **kwargs: object) -> None:
        raise InvalidRequestError(f"Invalid {{name}}: this upscaler needs torchvision ({self.__name__}).", "upscaler")


def find_upscaler(name: str, folder: str | None, allow_pickle: bool = False, key: str = "upscaler") -> Path:
    """The file of upscaler `name`: a path, or NAME.safetensors (or a pickle) in `folder`; InvalidRequestError
    naming it when there is none, or when it is a pickle and pickles are not allowed."""
    path = Path(name).expanduser()
    if not path.is_file() and folder:
        matches = [p for p in list_upscaler_files(folder) if p.stem.lower() == name.lower() or p.name == name]
        path = min(matches, key=lambda p: UPSCALER_SUFFIXES.index(p.suffix.lower())) if matches else path
    if not path.is_file():
        where = f" or in --upscaler-dir {folder!r}" if folder else " (set --upscaler-dir to find it by name)"
        builtin = "latent, lanczos or " if key == "hires_upscaler" else ""
        raise InvalidRequestError(
            f"Invalid {{name}} {name!r}: no such upscaler file{where}; give {builtin}an upscaler model file, "
            "e.g. 4x-UltraSharp.safetensors.", key,
        )
    suffix = path.suffix.lower()
    if suffix not in UPSCALER_SUFFIXES:
        raise InvalidRequestError(f"Invalid {{name}} {name!r}: not a .safetensors or .pth upscaler file.", key)
    if suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise InvalidRequestError(
            f"Invalid {{name}} {name!r}: a pickled file ({suffix}) can run code when it is loaded. Convert it once "
            f"with `sdgen convert {path} {path.with_suffix('.safetensors')}` (it reads tensors only), or pass "
            "--allow-unsafe-pickle to load it that same safe way.", key,
        )
    return path


def list_upscaler_files(folder: str | Path) -> list[Path]:
    """The upscaler files in a folder (not its subfolders), sorted by name."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in UPSCALER_SUFFIXES)


def identify(path: Path, key: str = "upscaler") -> UpscalerFile:
    """spandrel's architecture for the file, from its header (shapes, no weights read) for .safetensors and
    from its tensors for a pickle; InvalidRequestError naming the file when spandrel knows none."""
    spandrel = import_spandrel()
    from spandrel.__helpers.canonicalize import canonicalize_state_dict

    safe = path.suffix.lower() in SAFE_SUFFIXES
    state = canonicalize_state_dict(_header_state(path, key) if safe else _tensors(path, key))
    for support in spandrel.MAIN_REGISTRY.architectures("detection"):
        if support.detect(state):
            architecture = support.architecture.name
            if architecture in NEEDS_TORCHVISION and "torchvision" not in sys.modules:
                _needs_torchvision(path, architecture, key)
            return UpscalerFile(path, architecture)
    raise InvalidRequestError(
        f"Invalid {{name}} {str(path)!r}: spandrel knows no upscaler architecture with these weights (it reads "
        "ESRGAN, Real-ESRGAN, SwinIR, HAT, DAT, OmniSR, SPAN, GFPGAN and others).", key,
    )


def _needs_torchvision(path: Path, architecture: str, key: str) -> None:
    try:
        import torchvision  # noqa: F401
    except Exception:
        raise InvalidRequestError(
            f"Invalid {{name}} {str(path)!r}: a {architecture} model needs torchvision, which cannot be imported "
            "beside this torch; install the torchvision build that matches it.", key,
        ) from None


def _header_state(path: Path, key: str) -> dict[str, Any]:
    """Each tensor of a .safetensors file as an empty tensor of its shape on the meta device: what spandrel's
    detection reads (names and shapes), with no weight read."""
    import torch
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as file:
            return {name: torch.empty(file.get_slice(name).get_shape(), device="meta") for name in file.keys()}  # noqa: SIM118
    except Exception as error:  # safetensors raises its own error types for a damaged file
        raise InvalidRequestError(
            f"Invalid {{name}} {str(path)!r}: not a readable .safetensors file ({error}).", key
        ) from None


def _tensors(path: Path, key: str = "upscaler") -> dict[str, Any]:
    data = read_pickled_data(path, key) if path.suffix.lower() in PICKLE_SUFFIXES else _safetensors(path)
    if not isinstance(data, dict):
        raise InvalidRequestError(f"Invalid {{name}} {str(path)!r}: it holds no tensors by name.", key)
    return data


def _safetensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path))


def load_upscaler(found: UpscalerFile, device: str = "cpu", dtype: str = "float32") -> Any:
    """spandrel's ImageModelDescriptor for the file, in eval mode on `device` (float16/bfloat16 only where the
    architecture supports them, else float32)."""
    import torch

    spandrel = import_spandrel()
    from spandrel.__helpers.canonicalize import canonicalize_state_dict

    state = canonicalize_state_dict(_tensors(found.path))
    try:
        with warnings.catch_warnings():  # SwinIR-family code calls torch.meshgrid the old way
            warnings.filterwarnings("ignore", message="torch.meshgrid")
            model = spandrel.ModelLoader().load_from_state_dict(state)
    except (spandrel.UnsupportedModelError, KeyError, RuntimeError, ValueError) as error:
        raise InvalidRequestError(
            f"Invalid {{name}} {str(found.path)!r}: spandrel could not load it as {found.architecture} ({error}).",
            "upscaler",
        ) from None
    if not isinstance(model, spandrel.ImageModelDescriptor):
        raise InvalidRequestError(
            f"Invalid {{name}} {str(found.path)!r}: a {model.purpose} model, not an upscaler.", "upscaler"
        )
    supported = {"float16": model.supports_half, "bfloat16": model.supports_bfloat16, "float32": True}
    chosen = dtype if supported.get(dtype, False) else "float32"
    return model.eval().to(torch.device(device), dtype=getattr(torch, chosen))


def upscaler_name(value: str) -> str:
    """How A1111 names an upscaler given as a file or a name: the file's name without a model suffix
    ("4x-UltraSharp.pth" -> "4x-UltraSharp"; "GFPGANv1.4" stays as it is)."""
    name = Path(str(value)).name
    return name.rsplit(".", 1)[0] if name.lower().endswith(UPSCALER_SUFFIXES) else name
