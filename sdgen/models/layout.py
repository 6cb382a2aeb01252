"""The parts of a Stable Diffusion 1.x model in diffusers' folder layout, and the check that a folder has them.

```
model_index.json
scheduler/scheduler_config.json
tokenizer/vocab.json, merges.txt, ...            (CLIPTokenizer)
text_encoder/config.json, model[.fp16].safetensors                 (CLIPTextModel)
unet/config.json, diffusion_pytorch_model[.fp16].safetensors       (UNet2DConditionModel)
vae/config.json, diffusion_pytorch_model[.fp16].safetensors        (AutoencoderKL)
```
Weights are read from safetensors only: pickled `.bin`/`.ckpt` files can run code when loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sdgen.errors import ModelLoadError


@dataclass(frozen=True)
class Part:
    """One part of the model: its folder, the class that reads it, and its weights file."""

    name: str  # subfolder
    library: str  # "transformers" or "diffusers"
    class_name: str  # the class whose from_pretrained reads the folder
    weights_stem: str | None  # weights file name without .safetensors; None: no weights (tokenizer)
    dtype_role: str | None  # "model" or "vae": which of the placement's dtypes the part runs in
    channels_last: bool = False  # convolutional: NHWC layout where the speed plan says so


PARTS = (
    Part("tokenizer", "transformers", "CLIPTokenizer", None, None),
    Part("text_encoder", "transformers", "CLIPTextModel", "model", "model"),
    Part("unet", "diffusers", "UNet2DConditionModel", "diffusion_pytorch_model", "model", channels_last=True),
    Part("vae", "diffusers", "AutoencoderKL", "diffusion_pytorch_model", "vae", channels_last=True),
)
WEIGHTED_PARTS = tuple(part for part in PARTS if part.weights_stem is not None)
CONFIG_FILES = {
    **{part.name: "config.json" for part in WEIGHTED_PARTS},
    "scheduler": "scheduler_config.json",
}


def weight_candidates(part: Part, variant: str | None) -> list[str]:
    """The `fp16` variant first when running in half precision, then the full-precision file."""
    names = [f"{part.weights_stem}.safetensors"]
    if variant:
        names.insert(0, f"{part.weights_stem}.{variant}.safetensors")
    return names


def missing_weights_message(model: str, part: Part, candidates: list[str], present: list[str]) -> str:
    pickles = [f for f in present if f.startswith(f"{part.name}/") and f.endswith((".bin", ".ckpt", ".pt"))]
    if pickles:
        return (
            f"Model {model!r} has only pickled weights for {part.name} ({pickles[0]}); sdgen loads safetensors "
            "only, because pickles can run code. Convert it to safetensors first."
        )
    return f"Model {model!r} lacks {part.name}/{candidates[-1]}: the {part.name} weights are missing or incomplete."


def check_model_folder(folder: Path, model: str, variant: str | None) -> dict[str, Path]:
    """Check every part is present before loading any; return the weights file chosen for each part."""
    for name, config in CONFIG_FILES.items():
        if not (folder / name / config).is_file():
            raise ModelLoadError(
                f"Model {model!r} is incomplete: {folder / name / config} is missing. "
                "A diffusers model folder needs unet/, vae/, text_encoder/, tokenizer/ and scheduler/."
            )
    tokenizer = folder / "tokenizer"
    if not ((tokenizer / "vocab.json").is_file() or (tokenizer / "tokenizer.json").is_file()):
        raise ModelLoadError(f"Model {model!r} is incomplete: {tokenizer / 'vocab.json'} is missing.")
    chosen: dict[str, Path] = {}
    for part in WEIGHTED_PARTS:
        candidates = weight_candidates(part, variant)
        found = next((folder / part.name / n for n in candidates if (folder / part.name / n).is_file()), None)
        if found is None:
            present = [f"{part.name}/{p.name}" for p in (folder / part.name).iterdir()]
            raise ModelLoadError(missing_weights_message(model, part, candidates, present))
        chosen[part.name] = found
    return chosen


def download_patterns(files: list[str], variant: str | None, model: str) -> list[str]:
    """Exactly the files sdgen loads from a Hub repo listing: configs, tokenizer, one weights file per part."""
    patterns = ["model_index.json", "tokenizer/*", *(f"{name}/{config}" for name, config in CONFIG_FILES.items())]
    for part in WEIGHTED_PARTS:
        candidates = weight_candidates(part, variant)
        chosen = next((name for name in candidates if f"{part.name}/{name}" in files), None)
        if chosen is None:
            raise ModelLoadError(missing_weights_message(model, part, candidates, files))
        patterns.append(f"{part.name}/{chosen}")
    return patterns
