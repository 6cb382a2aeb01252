"""The parts of a Stable Diffusion 1.x model in diffusers' folder layout, and the check that a folder has them.

```
model_index.json
scheduler/scheduler_config.json
tokenizer/vocab.json, merges.txt, ...            (CLIPTokenizer)
text_encoder/config.json, model[.fp16].safetensors                 (CLIPTextModel)
unet/config.json, diffusion_pytorch_model[.fp16].safetensors       (UNet2DConditionModel)
vae/config.json, diffusion_pytorch_model[.fp16].safetensors        (AutoencoderKL; AutoencoderTiny in SDXS)
```
SD 2.x folders (SD-Turbo) have the same parts, with OpenCLIP's text encoder saved as a CLIPTextModel.
Weights are read from safetensors only: pickled `.bin`/`.ckpt` files can run code when loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sdgen.errors import ModelLoadError, SdgenError


@dataclass(frozen=True)
class Part:
    """One part of the model: its folder, the class that reads it, and its weights file."""

    name: str  # subfolder
    library: str  # "transformers" or "diffusers"
    class_name: str  # the class whose from_pretrained reads the folder
    weights_stem: str | None  # weights file name without .safetensors; None: no weights (tokenizer)
    dtype_role: str | None  # "model" or "vae": which of the placement's dtypes the part runs in
    channels_last: bool = False  # convolutional: NHWC layout where the speed plan says so
    also: tuple[str, ...] = ()  # other classes a folder's config.json may name (SDXS's vae/: AutoencoderTiny)

    def class_in(self, folder: Path) -> str:
        """The class that reads this part of `folder`: the one its config.json names where that is one of
        `also` (SDXS ships AutoencoderTiny as vae/), else the usual one."""
        import json

        try:
            named = json.loads((folder / self.name / "config.json").read_text()).get("_class_name")
        except (OSError, ValueError, AttributeError):
            return self.class_name
        return named if named in self.also else self.class_name


PARTS = (
    Part("tokenizer", "transformers", "CLIPTokenizer", None, None),
    Part("text_encoder", "transformers", "CLIPTextModel", "model", "model"),
    Part("unet", "diffusers", "UNet2DConditionModel", "diffusion_pytorch_model", "model", channels_last=True),
    Part("vae", "diffusers", "AutoencoderKL", "diffusion_pytorch_model", "vae", channels_last=True,
         also=("AutoencoderTiny",)),
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


def native_size(
    model: str | None, model_config: str | None = None, prediction_type: str | None = None, family: str | None = None
) -> int | None:
    """The side a model was trained at (the U-Net's sample_size times the VAE's scale: 512 for SD 1.x, 768
    for SD 2.x 768-v), from configs already on disk (a folder, the Hugging Face cache, the configs of a
    single file); None when they are not there yet (the model is about to be downloaded)."""
    import json

    configs = [_config_file(model, model_config, part, family) for part in ("unet", "vae")]
    if model_config is None and prediction_type == "epsilon" and configs[0] is not None and "sd2" in configs[0].parts:
        return 512  # a shipped-config SD 2.x file said to predict epsilon: SD 2.x base, trained at 512
    if None in configs:
        return None
    try:
        unet, vae = (json.loads(path.read_text()) for path in configs if path is not None)
    except (OSError, ValueError):
        return None
    sample, blocks = unet.get("sample_size"), vae.get("block_out_channels")
    if not isinstance(sample, int) or not isinstance(blocks, list) or not blocks:
        return None
    return sample * 2 ** (len(blocks) - 1)


def _config_file(model: str | None, model_config: str | None, part: str, family: str | None = None) -> Path | None:
    if not model:
        return None
    path = Path(model).expanduser()
    if path.is_file():  # a single-file checkpoint: its --model-config, else the shipped configs of its family
        if model_config is None:
            from sdgen.config.settings import configs_dir
            from sdgen.models.single_file import inspect_checkpoint

            try:  # the family, unless the caller read the header already
                family = family or inspect_checkpoint(str(path), allow_pickle=False).family
            except SdgenError:
                return None  # refused later, with its own message
            return configs_dir() / ("sd2" if family == "sd2" else "sd15") / part / "config.json"
        return _config_file(model_config, None, part)
    if path.is_dir():
        file = path / part / "config.json"
        return file if file.is_file() else None
    if model.startswith((".", "/", "~")) or model.count("/") != 1:
        return None  # no folder here and no Hub id: refused by name before loading (sdgen.models.hub)
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, f"{part}/config.json")  # an old id's new name: SD 1.5, 512 anyway
    return Path(cached) if isinstance(cached, str) else None
