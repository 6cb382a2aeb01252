"""`--model model.safetensors`: one checkpoint file in the original (LDM/A1111) key layout, as most SD 1.x
fine-tunes are shared.

The file's keys and shapes (read from its header, no weights) say what it is: SD 1.x (a CLIP ViT-L text
encoder under cond_stage_model.transformer), its inpainting variant (a 9-channel U-Net input), SD 2.x (an
OpenCLIP text encoder), or another family (SDXL, SD3, Flux ...), refused by name. The parts are then read
by diffusers' own single-file loaders, offline, with the architecture configs sdgen ships (configs/sd15:
U-Net, VAE, CLIP text encoder and its tokenizer, scheduler) or those of `--model-config FOLDER_OR_ID`.

Pickled checkpoints (.ckpt, .pt, .bin) can run code when loaded: refused unless --allow-unsafe-pickle, and
even then read only with torch.load(weights_only=True), which refuses anything but tensors and plain data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdgen.errors import NAME, InvalidRequestError, ModelLoadError

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
UNET_IN = "model.diffusion_model.input_blocks.0.0.weight"

# Key prefixes that name a family sdgen does not run, and what to call it.
_OTHER_FAMILIES = (
    ("conditioner.embedders.1.model.", "an SDXL checkpoint"),
    ("conditioner.embedders.0.model.", "an SDXL refiner checkpoint"),
    ("model.diffusion_model.joint_blocks.", "a Stable Diffusion 3 checkpoint"),
    ("double_blocks.", "a Flux checkpoint"),
    ("model.diffusion_model.double_blocks.", "a Flux checkpoint"),
    ("model.diffusion_model.label_emb.", "an SDXL-style checkpoint"),
)


@dataclass(frozen=True)
class Checkpoint:
    """What a checkpoint file holds, from its header."""

    path: Path
    family: str  # "sd1" or "sd2"
    in_channels: int  # 4, or 9 for inpainting models
    pickled: bool

    @property
    def description(self) -> str:
        kind = {"sd1": "SD 1.x", "sd2": "SD 2.x"}[self.family]
        return kind + (" inpainting" if self.in_channels == 9 else "")


def is_checkpoint_file(model: str) -> bool:
    path = Path(model).expanduser()
    return path.is_file() and path.suffix.lower() in SAFE_SUFFIXES + PICKLE_SUFFIXES


def inspect_checkpoint(model: str, allow_pickle: bool = False) -> Checkpoint:
    """Identify a checkpoint from its keys and shapes; InvalidRequestError naming the file if sdgen cannot
    or will not load it. Reads the safetensors header only; a pickle (allowed) safely, weights only."""
    path = Path(model).expanduser()
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES and not allow_pickle:
        raise InvalidRequestError(
            f"Invalid {NAME} {model!r}: a pickled checkpoint ({suffix}) can run code when it is loaded. Convert it "
            f"once with `sdgen convert {model} {path.with_suffix('.safetensors').name}` (it reads tensors only), "
            "or pass --allow-unsafe-pickle to load it that same safe way.",
            "model",
        )
    shapes = _shapes(path)
    for prefix, family in _OTHER_FAMILIES:
        if any(key.startswith(prefix) for key in shapes):
            raise InvalidRequestError(
                f"Invalid {NAME} {model!r}: this is {family}; sdgen runs Stable Diffusion 1.x and 2.x models.",
                "model",
            )
    if UNET_IN not in shapes:
        raise InvalidRequestError(
            f"Invalid {NAME} {model!r}: not a Stable Diffusion checkpoint in the original layout (no "
            f"{UNET_IN}); a VAE or LoRA file goes to --vae or --lora.",
            "model",
        )
    if any(key.startswith("cond_stage_model.model.") for key in shapes):
        family = "sd2"
    elif any(key.startswith("cond_stage_model.transformer.") for key in shapes):
        family = "sd1"
    else:
        raise InvalidRequestError(f"Invalid {NAME} {model!r}: it holds no text encoder sdgen knows.", "model")
    return Checkpoint(path, family, shapes[UNET_IN][1], suffix in PICKLE_SUFFIXES)


def _shapes(file: Path) -> dict[str, list[int]]:
    """Keys and shapes (a run reads them once: its checked model spec keeps what they say)."""
    return _safetensors_shapes(file) if file.suffix.lower() in SAFE_SUFFIXES else _pickle_shapes(file)


def _safetensors_shapes(path: Path) -> dict[str, list[int]]:
    """Keys and shapes from the header: 8 bytes of length, then JSON. No tensor is read."""
    try:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if not 0 < size < 100_000_000:
                raise ValueError(f"header length {size}")
            header = json.loads(handle.read(size))
    except (OSError, ValueError) as error:
        raise InvalidRequestError(f"Invalid {NAME} {str(path)!r}: not a readable safetensors file ({error}).",
                                  "model") from None
    return {key: value["shape"] for key, value in header.items() if key != "__metadata__"}


def _pickle_shapes(path: Path) -> dict[str, list[int]]:
    return {key: list(tensor.shape) for key, tensor in read_pickled_tensors(path).items()}


def read_pickled_tensors(path: Path) -> dict[str, Any]:
    """A pickled checkpoint's tensors through torch.load(weights_only=True): tensors and plain containers
    only; a file that would build any other object (run code) is refused. A1111 checkpoints keep theirs
    under "state_dict"."""
    import torch

    data = read_pickled_data(path)
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise InvalidRequestError(f"Invalid {NAME} {str(path)!r}: it holds no tensors by name.", "model")
    return {key: value for key, value in data.items() if isinstance(key, str) and isinstance(value, torch.Tensor)}


def read_pickled_data(path: Path, key: str = "model") -> Any:
    """What a pickle holds, through torch.load(weights_only=True): tensors and plain containers only (nested
    as the file has them); a file that would build any other object (run code) is refused."""
    import pickle

    import torch

    try:
        try:  # mapped, not read, for the zip format torch has written since 1.6
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # an older, legacy-format file
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        lines = str(error).strip().splitlines()
        raise InvalidRequestError(
            f"Invalid {NAME} {str(path)!r}: it cannot be read safely ({lines[0][:200] if lines else error}); "
            "a file that needs more than tensors to load is refused.",
            key,
        ) from None


def config_folder(model_config: str | None, offline: bool, family: str = "sd1") -> Path:
    """The architecture configs to read a checkpoint with: --model-config (a folder, or a Hub id whose
    configs and tokenizer come from the cache or the Hub, no weights), else the shipped ones: configs/sd15,
    or configs/sd2 (SD 2.1 768-v; its file says nothing of v, so --prediction-type epsilon makes it the
    512 base model, as diffusers also assumes v for SD 2.x files)."""
    if model_config is None:
        from sdgen.config.settings import configs_dir

        return configs_dir() / ("sd2" if family == "sd2" else "sd15")
    folder = Path(model_config).expanduser()
    if folder.is_dir():
        return folder
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(model_config, allow_patterns=["*.json", "*.txt"], local_files_only=offline))
    except Exception as error:  # offline and not cached, no such repo, the network ...
        raise ModelLoadError(f"Cannot get the configs of --model-config {model_config!r}: {error}") from None


def _with_in_channels(config: Path, in_channels: int) -> Path:
    """The configs with the U-Net's input channels the file has: the SD 1.x configs serve its inpainting
    variant too (9 channels). A folder beside them in the temp dir, linking everything else."""
    import tempfile

    unet_config = json.loads((config / "unet" / "config.json").read_text())
    if unet_config.get("in_channels") == in_channels:
        return config
    overlay = Path(tempfile.mkdtemp(prefix="sdgen-config-"))
    for item in config.iterdir():
        if item.name != "unet":
            (overlay / item.name).symlink_to(item.resolve())
    (overlay / "unet").mkdir()
    (overlay / "unet" / "config.json").write_text(json.dumps({**unet_config, "in_channels": in_channels}))
    return overlay


def load_checkpoint_parts(checkpoint: Checkpoint, config: Path) -> dict[str, Any]:
    """tokenizer, text_encoder, unet, vae in float32 on the CPU, through diffusers' from_single_file."""
    from diffusers import StableDiffusionPipeline

    config = _with_in_channels(config, checkpoint.in_channels)
    try:
        pipe = StableDiffusionPipeline.from_single_file(
            str(checkpoint.path),
            config=str(config),
            local_files_only=True,
            safety_checker=None,
            requires_safety_checker=False,
        )
    except (OSError, ValueError, RuntimeError, KeyError) as error:
        lines = str(error).strip().splitlines()
        raise ModelLoadError(
            f"Cannot load {str(checkpoint.path)!r} as {checkpoint.description}: {lines[0][:300] if lines else error}. "
            "If its architecture differs from SD 1.5's, give it with --model-config."
        ) from None
    return {name: getattr(pipe, name) for name in ("tokenizer", "text_encoder", "unet", "vae")}

