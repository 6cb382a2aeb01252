"""The one place that finds and loads weights: a Hub id through the Hugging Face cache, or a local folder.

Each part is loaded on its own (tokenizer, text encoder, U-Net, VAE, scheduler config) with its library's
`from_pretrained`, safetensors only: pickled `.bin` weights can run code when loaded, so they are refused.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdgen.config import MODEL_ALIASES, ModelSpec
from sdgen.devices import Placement, choose_placement, torch_dtype
from sdgen.errors import ModelLoadError, ModelNotFoundError
from sdgen.speed import apply_speed, place_module, plan_speed

if TYPE_CHECKING:  # pragma: no cover
    import diffusers.utils.logging
    import transformers.utils.logging
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    # sdgen draws its own progress; the libraries' per-file bars would interleave with it on stderr.
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.disable_progress_bar()

log = logging.getLogger("sdgen")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")

# part -> (weights file stem in diffusers layout, library that reads it)
WEIGHT_STEMS = {"text_encoder": "model", "unet": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model"}
CONFIG_FILES = {
    "text_encoder": "config.json",
    "unet": "config.json",
    "vae": "config.json",
    "scheduler": "scheduler_config.json",
}

HUB_TIMEOUT_SECONDS = 15

OnPart = Callable[[str, int], None]  # (part name, bytes of weights) before each part loads


@dataclass(frozen=True)
class ModelSource:
    """Where the weights came from, for metadata and error messages."""

    model: str  # what the user asked for, after aliases
    folder: Path  # local diffusers-layout folder (a Hub snapshot or the user's own)
    revision: str | None = None  # asked-for revision
    commit: str | None = None  # resolved Hub commit, when loaded from the Hub
    unet_sha256: str | None = None  # LFS sha256 of the U-Net weights when the Hub cache tells it for free


@dataclass
class StableDiffusionParts:
    """The loaded model: each part, where it runs and where it came from."""

    tokenizer: CLIPTokenizer
    text_encoder: CLIPTextModel
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    scheduler_config: dict[str, Any]
    placement: Placement
    source: ModelSource
    load_seconds: float = 0.0
    # text -> its (1, 77, D) CLIP embedding: batches repeat the same prompt and "" over and over
    embedding_cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along a side (8 for SD1.x, 2 for the tiny test model)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def canonical_model_id(model: str) -> str:
    """Map an old Hub id to its new home, with a note on stderr."""
    if model in MODEL_ALIASES:
        new = MODEL_ALIASES[model]
        log.warning("Note: %s is now served as %s; using that.", model, new)
        return new
    return model


def hub_cache_dir(spec: ModelSpec) -> Path:
    from huggingface_hub import constants

    return Path(spec.cache_dir or constants.HF_HUB_CACHE)


def is_offline(spec: ModelSpec) -> bool:
    from huggingface_hub import constants

    return spec.offline or bool(constants.HF_HUB_OFFLINE)


def resolve_model_folder(spec: ModelSpec, variant: str | None) -> ModelSource:
    """Turn --model into a local diffusers folder, downloading from the Hub into its cache if needed."""
    model = canonical_model_id(spec.model)
    path = Path(model).expanduser()
    if path.is_dir():
        return ModelSource(model=model, folder=path.resolve(), revision=spec.revision)
    if path.exists() or model.startswith((".", "/", "~")) or not _HUB_ID.match(model):
        raise ModelNotFoundError(
            f"Model {model!r} is not a model folder or a Hub id: pass a folder in diffusers layout "
            "(with unet/, vae/, text_encoder/, tokenizer/, scheduler/) or an id like owner/name."
        )
    return _resolve_hub(model, spec, variant)


def _resolve_hub(repo_id: str, spec: ModelSpec, variant: str | None) -> ModelSource:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    cache = hub_cache_dir(spec)
    not_found_hint = (
        f"Run once with network access to download it into {cache}, or pass --model PATH to a local diffusers folder."
    )
    local_only = is_offline(spec)
    patterns: list[str] | None = None
    if not local_only:
        try:
            patterns = _download_patterns(_list_repo_files(repo_id, spec), variant, repo_id)
        except (RepositoryNotFoundError, GatedRepoError) as error:
            raise ModelNotFoundError(
                f"Model {repo_id!r} is not on the Hugging Face Hub or needs a login "
                f"({error.__class__.__name__}); check the id, or run `hf auth login` for gated models."
            ) from None
        except RevisionNotFoundError:
            raise ModelNotFoundError(
                f"Revision {spec.revision!r} of model {repo_id!r} does not exist on the Hub; check --revision."
            ) from None
        except ModelLoadError:
            raise
        except Exception as error:  # network down, DNS, proxy, timeouts: use the cache if it has the model
            log.warning("Could not reach the Hugging Face Hub (%s); looking in the cache.", type(error).__name__)
            local_only = True
    try:
        folder = snapshot_download(
            repo_id,
            revision=spec.revision,
            cache_dir=spec.cache_dir,
            local_files_only=local_only,
            allow_patterns=patterns,
        )
    except Exception as error:
        why = "offline mode is on (--offline or HF_HUB_OFFLINE=1)" if is_offline(spec) else "the Hub is unreachable"
        raise ModelNotFoundError(
            f"Model {repo_id!r}{_revision_text(spec)} is not in the Hugging Face cache ({cache}) and {why}. "
            + not_found_hint
        ) from error
    folder_path = Path(folder)
    commit = folder_path.name if folder_path.parent.name == "snapshots" else None
    return ModelSource(
        model=repo_id,
        folder=folder_path,
        revision=spec.revision,
        commit=commit,
        unet_sha256=_cached_blob_sha256(folder_path, "unet", variant),
    )


def _revision_text(spec: ModelSpec) -> str:
    return f" at revision {spec.revision!r}" if spec.revision else ""


def _list_repo_files(repo_id: str, spec: ModelSpec) -> list[str]:
    """One request with a timeout (the tree-listing API retries for ~25 s when the Hub is unreachable)."""
    from huggingface_hub import HfApi

    info = HfApi().model_info(repo_id, revision=spec.revision, timeout=HUB_TIMEOUT_SECONDS)
    return [sibling.rfilename for sibling in info.siblings or []]


def _download_patterns(files: list[str], variant: str | None, repo_id: str) -> list[str]:
    """Exactly the files sdgen loads: configs, tokenizer, and one weights file per part."""
    patterns = ["model_index.json", "tokenizer/*", *(f"{part}/{name}" for part, name in CONFIG_FILES.items())]
    for part in WEIGHT_STEMS:
        candidates = _weight_candidates(part, variant)
        chosen = next((name for name in candidates if f"{part}/{name}" in files), None)
        if chosen is None:
            raise ModelLoadError(_missing_weights_message(repo_id, part, candidates, files))
        patterns.append(f"{part}/{chosen}")
    return patterns


def _weight_candidates(part: str, variant: str | None) -> list[str]:
    """The `fp16` variant first when running in float16, then the full-precision file."""
    stem = WEIGHT_STEMS[part]
    names = [f"{stem}.safetensors"]
    if variant:
        names.insert(0, f"{stem}.{variant}.safetensors")
    return names


def _missing_weights_message(model: str, part: str, candidates: list[str], present: list[str]) -> str:
    pickles = [f for f in present if f.startswith(f"{part}/") and f.endswith((".bin", ".ckpt", ".pt"))]
    if pickles:
        return (
            f"Model {model!r} has only pickled weights for {part} ({pickles[0]}); sdgen loads safetensors only, "
            "because pickles can run code. Convert it to safetensors first."
        )
    return f"Model {model!r} lacks {part}/{candidates[-1]}: the {part} weights are missing or incomplete."


def _cached_blob_sha256(folder: Path, part: str, variant: str | None) -> str | None:
    """In the Hub cache a weights file links to a blob named by its sha256: a free file hash."""
    for name in _weight_candidates(part, variant):
        path = folder / part / name
        if path.is_symlink():
            blob = os.path.basename(os.readlink(path))
            if re.fullmatch(r"[0-9a-f]{64}", blob):
                return blob
    return None


def check_model_folder(folder: Path, model: str, variant: str | None) -> dict[str, Path]:
    """Check every part is present before loading any; return the weights file chosen for each part."""
    for part, config in CONFIG_FILES.items():
        if not (folder / part / config).is_file():
            raise ModelLoadError(
                f"Model {model!r} is incomplete: {folder / part / config} is missing. "
                "A diffusers model folder needs unet/, vae/, text_encoder/, tokenizer/ and scheduler/."
            )
    tokenizer = folder / "tokenizer"
    if not ((tokenizer / "vocab.json").is_file() or (tokenizer / "tokenizer.json").is_file()):
        raise ModelLoadError(f"Model {model!r} is incomplete: {tokenizer / 'vocab.json'} is missing.")
    chosen: dict[str, Path] = {}
    for part in WEIGHT_STEMS:
        candidates = _weight_candidates(part, variant)
        found = next((folder / part / n for n in candidates if (folder / part / n).is_file()), None)
        if found is None:
            present = [f"{part}/{p.name}" for p in (folder / part).iterdir()]
            raise ModelLoadError(_missing_weights_message(model, part, candidates, present))
        chosen[part] = found
    return chosen


def load_model(
    spec: ModelSpec | None = None,
    placement: Placement | None = None,
    on_part: OnPart | None = None,
) -> StableDiffusionParts:
    """Find the model, then load each part on its own onto the chosen device and dtype."""
    spec = (spec or ModelSpec()).validated()
    placement = placement or choose_placement(spec.device, spec.dtype, spec.rng)
    speed = plan_speed(spec, placement)  # refuses impossible options before anything loads
    started = time.perf_counter()
    source = resolve_model_folder(spec, placement.weight_variant)
    files = check_model_folder(source.folder, source.model, placement.weight_variant)

    import diffusers.utils.logging
    import transformers.utils.logging
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    # sdgen draws its own progress; the libraries' per-file bars would interleave with it on stderr.
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.disable_progress_bar()

    def variant_of(part: str) -> str | None:
        return "fp16" if ".fp16." in files[part].name else None

    def as_stored(part: str) -> Any:
        """The dtype of the weights file: loading in it maps the safetensors file without a copy; the one
        conversion to the run's dtype and layout happens in place_module (measured 2-4 s faster for the
        bfloat16 U-Net than converting in the loader and again for channels_last)."""
        return torch_dtype("float16" if variant_of(part) else "float32")

    def load(part: str, loader: Callable[[], Any]) -> Any:
        if on_part is not None:
            on_part(part, files[part].stat().st_size if part in files else 0)
        try:
            return loader()
        except (OSError, ValueError, RuntimeError) as error:
            where = files.get(part, source.folder / part)
            raise ModelLoadError(
                f"Cannot load the {part} of {source.model!r} from {where}: {_first_line(error)}. "
                "The file may be corrupt or truncated: delete it and download it again."
            ) from error

    folder = str(source.folder)
    model_dtype = torch_dtype(placement.dtype)
    tokenizer = load("tokenizer", lambda: CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"))
    text_encoder = load(
        "text_encoder",
        lambda: CLIPTextModel.from_pretrained(
            folder,
            subfolder="text_encoder",
            variant=variant_of("text_encoder"),
            dtype=model_dtype,
            use_safetensors=True,
        ),
    )
    unet = load(
        "unet",
        lambda: UNet2DConditionModel.from_pretrained(
            folder,
            subfolder="unet",
            variant=variant_of("unet"),
            torch_dtype=as_stored("unet"),
            use_safetensors=True,
        ),
    )
    vae = load(
        "vae",
        lambda: AutoencoderKL.from_pretrained(
            folder,
            subfolder="vae",
            variant=variant_of("vae"),
            torch_dtype=as_stored("vae"),
            use_safetensors=True,
        ),
    )
    scheduler_config = json.loads((source.folder / "scheduler" / "scheduler_config.json").read_text())
    device = placement.device if speed.move_to_device else None  # offload hooks move the weights instead
    place_module(text_encoder, device, model_dtype)
    place_module(unet, device, model_dtype, speed.channels_last)
    place_module(vae, device, torch_dtype(placement.vae_dtype), speed.channels_last)
    if unet.config.in_channels != 4:
        raise ModelLoadError(
            f"Model {source.model!r} has a {unet.config.in_channels}-channel U-Net (an inpainting or other special "
            "model); sdgen's text-to-image and image-to-image need a standard 4-channel SD1.x model."
        )
    parts = StableDiffusionParts(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        unet=unet,
        vae=vae,
        scheduler_config=scheduler_config,
        placement=placement,
        source=source,
    )
    apply_speed(parts, speed)
    parts.load_seconds = time.perf_counter() - started
    return parts


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
