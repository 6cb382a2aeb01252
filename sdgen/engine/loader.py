"""Load each part of the model on its own, place it on its device in its dtype, and switch on what the
speed plan says. StableDiffusionParts owns the loaded modules and the switches that change them.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdgen.engine.model_spec import CheckedModelSpec, ModelSpec
from sdgen.errors import ModelLoadError
from sdgen.hardware.devices import Placement, choose_placement, torch_dtype
from sdgen.hardware.speed import SpeedPlan, compile_cache_dir, compile_plan, plan_speed, sdgen_cache_root
from sdgen.models import caches, hub
from sdgen.models.hub import ModelSource
from sdgen.models.layout import PARTS, Part, check_model_folder

if TYPE_CHECKING:  # pragma: no cover
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from sdgen.models.adapters import Adapters

log = logging.getLogger("sdgen")

OnPart = Callable[[str, int], None]  # (part name, bytes of weights) before each part loads
# from_pretrained's name for the dtype to load in
_DTYPE_ARGUMENT = {"transformers": "dtype", "diffusers": "torch_dtype"}


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
    offline: bool = False  # LoRAs named by Hub id come from the cache only
    vae_source: str | None = None  # --vae as given: what replaced the model's VAE, its name and A1111 hash
    vae_name: str | None = None
    vae_hash: str | None = None
    spec: CheckedModelSpec | None = None  # what it was loaded from: the record keeps its options as given
    plugins: dict[str, Any] = field(default_factory=dict)  # what each plug-in's load step kept (sdgen/engine/plugins)
    # (text, how it is read) -> its (1, 77 k, D) CLIP embedding: batches repeat the same prompt and "" a lot
    embedding_cache: dict[Any, Any] = field(default_factory=dict, repr=False)
    _adapters: Adapters | None = field(default=None, repr=False)
    openvino: Any = field(default=None, repr=False)  # --backend openvino's compiled models (engine/openvino_parts.py)

    @property
    def adapters(self) -> Adapters:
        """The LoRAs and embeddings loaded into the parts now (sdgen/models/adapters.py)."""
        if self._adapters is None:
            from sdgen.models.adapters import Adapters

            self._adapters = Adapters(self, self.offline)
        return self._adapters

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent cell along a side (8 for SD1.x, 2 for the tiny test model)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    # --- speed and memory switches, named as on diffusers' pipelines ---------------------------------

    def apply(self, plan: SpeedPlan, spec: ModelSpec | None = None) -> None:
        """Switch on what the plan asks for (placement, dtype and layout were done while loading), then what
        the plug-ins do at load time for `spec` (sdgen/engine/plugins: token merging, the tiny decoder)."""
        if plan.attention_slicing:
            self.enable_attention_slicing()
        if plan.vae_slicing:
            self.enable_vae_slicing()
        if plan.vae_tiling:
            self.enable_vae_tiling()
        if plan.offload == "model":
            self.enable_model_cpu_offload()
        elif plan.offload == "sequential":
            self.enable_sequential_cpu_offload()
        if spec is not None:
            from sdgen.engine.plugins import load_plugins

            load_plugins(self, spec)
        if plan.compile:  # last: it compiles what the switches above made
            self.compile_unet()

    def enable_attention_slicing(self) -> None:
        self.unet.set_attention_slice("auto")  # half the heads at a time, as diffusers' pipeline does

    def enable_vae_slicing(self) -> None:
        self.vae.enable_slicing()

    def enable_vae_tiling(self) -> None:
        self.vae.enable_tiling()

    def enable_model_cpu_offload(self) -> None:
        """One part on the device at a time, moved there when it runs (accelerate's hooks)."""
        from accelerate import cpu_offload_with_hook

        hook = None
        for module in (self.text_encoder, self.unet, self.vae):  # the order they run in
            _, hook = cpu_offload_with_hook(module, self.placement.device, prev_module_hook=hook)

    def enable_sequential_cpu_offload(self) -> None:
        """One layer on the device at a time: the least memory, the slowest."""
        import torch
        from accelerate import cpu_offload

        for module in (self.text_encoder, self.unet, self.vae):
            cpu_offload(module, execution_device=torch.device(self.placement.device))

    def load_tiny_autoencoder(self, name: str, flag: str) -> Any:
        """A tiny autoencoder placed beside the VAE (the --decoder plug-in's load step)."""
        return load_tiny_autoencoder(name, self.placement, self.offline, flag)

    def compile_unet(self) -> None:
        """torch.compile the U-Net, with inductor's caches kept in sdgen's cache folder: the first process
        compiles (a minute or more on a CPU), later ones read the compiled graphs back and start in seconds."""
        import torch

        plan = compile_plan(self.placement.device)
        if plan.freezing:
            import torch._inductor.config

            torch._inductor.config.freezing = True
        if self.placement.device == "cpu" and self.placement.dtype == "float32":
            log.warning(
                "Note: --compile measured slower than no compile in float32 on an AVX2 CPU (12.5 s against 11.4 s "
                "per step at 512x512, after a 128 s compile); it pays in bfloat16."
            )
        folder = self.compile_cache_dir()
        warm = folder is not None and any(path.name != caches.LAST_USED for path in folder.glob("*"))
        if folder is not None:
            caches.mark_used(folder)  # made, and its last use noted for `sdgen cache prune`
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)  # read by inductor when it first caches
        where = f" (cache: {folder})" if folder is not None else ""
        if warm:
            log.info("Compiling the U-Net with torch.compile from earlier runs' compiled graphs%s.", where)
        else:
            log.info("Compiling the U-Net with torch.compile: the first step takes a minute or more%s.", where)
        self.unet = torch.compile(self.unet, **plan.options)

    def compile_cache_dir(self) -> Path | None:
        """sdgen's folder for inductor's caches; None when the user chose one with TORCHINDUCTOR_CACHE_DIR."""
        import torch

        if _user_inductor_cache():
            return None
        identity = self.source.commit or self.source.unet_sha256 or str(self.source.folder.resolve())
        name = f"{self.source.model}@{identity}"
        return compile_cache_dir(name, self.placement.dtype, self.placement.device, torch.__version__)


def _user_inductor_cache() -> bool:
    """True when TORCHINDUCTOR_CACHE_DIR is the user's choice: torch writes its default (a folder in /tmp,
    emptied at reboot) into the variable itself the first time it looks, and sdgen writes its own."""
    value = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not value:
        return False
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    ours = str(sdgen_cache_root())
    return os.path.abspath(value) != os.path.abspath(default_cache_dir()) and not value.startswith(ours)


def load_model(
    spec: ModelSpec | None = None,
    placement: Placement | None = None,
    plan: SpeedPlan | None = None,
    on_part: OnPart | None = None,
) -> StableDiffusionParts:
    """Find the model, then load each part on its own onto the chosen device and dtype. `placement` and `plan`
    are decided once per run by the caller (checked before anything loads); left out, here from the spec."""
    spec = (spec or ModelSpec()).checked()  # a checked spec (a run's prologue) is used as it is
    placement = placement or choose_placement(spec.device, spec.dtype, spec.rng)
    precision = placement.dtype  # OpenVINO runs at the run's dtype; the torch modules it converts are float32
    if spec.backend == "openvino":
        placement, plan = Placement(placement.device, "float32", "float32", placement.rng), None
    plan = plan or plan_speed(spec, placement)
    started = time.perf_counter()
    _quiet_library_progress_bars()
    vae_name = vae_hash = prefetch = None  # prefetch: --backend openvino's last run's models, compiled ahead
    if spec.checkpoint is not None:  # one LDM/A1111 file (sdgen/models/single_file.py)
        source, loaded = _load_checkpoint(spec, placement, plan, on_part)
        files, loaders = {}, {}  # every part is loaded from the one file
    else:
        source = hub.resolve_model_folder(spec, placement.weight_variant)
        files = check_model_folder(source.folder, source.model, placement.weight_variant)
        loaders = {part.name: functools.partial(_load_part, part, source, files.get(part.name), placement, plan,
                                                on_part) for part in PARTS if part.name != "vae" or not spec.vae}
        if spec.backend == "openvino":  # the weights load when a conversion needs them (a cold cache)
            from sdgen.engine.openvino_prefetch import Prefetch
            from sdgen.engine.openvino_weights import unloaded_parts
            prefetch = Prefetch.of(source, precision, spec.quantize)
            loaded = unloaded_parts(loaders, PARTS, source.folder)
        else:
            loaded = {name: load() for name, load in loaders.items() if name != "vae"}
    if spec.vae or "vae" not in loaded:
        loaded["vae"], vae_name, vae_hash = _load_vae(spec, source, files, placement, plan, on_part)
    unet = loaded["unet"]
    if unet.config.in_channels not in (4, 9):
        raise ModelLoadError(
            f"Model {source.model!r} has a {unet.config.in_channels}-channel U-Net; sdgen runs standard (4) and "
            "inpainting (9) Stable Diffusion U-Nets."
        )
    scheduler_config = _scheduler_config(source.folder, spec)
    parts = StableDiffusionParts(
        **loaded, scheduler_config=scheduler_config, placement=placement, source=source, offline=spec.offline,
        vae_source=str(spec.vae) if spec.vae else None, vae_name=vae_name, vae_hash=vae_hash,
        spec=spec,
    )
    parts.apply(plan, spec)
    if spec.backend == "openvino":  # after the plug-ins' load steps; the models convert on first use
        from sdgen.engine.openvino_parts import use_openvino
        use_openvino(parts, precision, spec.quantize, loaders, prefetch)
    parts.load_seconds = time.perf_counter() - started
    return parts


def load_scheduler_config(spec: ModelSpec) -> tuple[dict[str, Any], str]:
    """The model's scheduler config (its noise schedule) and where it came from. SD1.5's ships with sdgen
    (configs/sd15), so its schedule needs no download when the model is not in the cache."""
    from sdgen.config.options import DEFAULT_MODEL
    from sdgen.config.settings import configs_dir
    from sdgen.models.hub import canonical_model_id, is_cached

    spec = spec.checked()
    model = canonical_model_id(spec.model)
    if model == DEFAULT_MODEL and spec.revision is None and not is_cached(model, spec):
        return _scheduler_config(configs_dir() / "sd15", spec), model
    if spec.checkpoint is not None:
        from sdgen.models.single_file import config_folder

        family = spec.checkpoint.family
        return _scheduler_config(config_folder(spec.model_config, hub.is_offline(spec), family), spec), spec.model
    source = hub.resolve_model_folder(spec, None)
    return _scheduler_config(source.folder, spec), source.model


def _scheduler_config(folder: Path, spec: ModelSpec) -> dict[str, Any]:
    """The model's noise schedule; --prediction-type overrides what it predicts (epsilon or v)."""
    config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    if spec.prediction_type is not None:
        config["prediction_type"] = spec.prediction_type
    return config


def _load_checkpoint(
    spec: CheckedModelSpec, placement: Placement, plan: SpeedPlan, on_part: OnPart | None
) -> tuple[ModelSource, dict[str, Any]]:
    """Every part from one checkpoint file, placed as a folder's parts would be."""
    from sdgen.models import single_file

    checkpoint = spec.checkpoint
    assert checkpoint is not None, "a checked spec of a checkpoint file keeps its header"
    config = single_file.config_folder(spec.model_config, hub.is_offline(spec), checkpoint.family)
    for part in PARTS:
        if on_part is not None:
            on_part(part.name, checkpoint.path.stat().st_size if part.name == "unet" else 0)
    loaded = single_file.load_checkpoint_parts(checkpoint, config)
    device = placement.device if plan.move_to_device else None
    for part in PARTS:
        if part.dtype_role is not None:
            dtype = placement.dtype if part.dtype_role == "model" else placement.vae_dtype
            place_module(loaded[part.name], device, torch_dtype(dtype), plan.channels_last and part.channels_last)
    if spec.vae:
        del loaded["vae"]
    return ModelSource(model=str(checkpoint.path), folder=config), loaded


def load_vae(spec: ModelSpec, placement: Placement) -> tuple[AutoencoderKL, ModelSource]:
    """Only the VAE of a model (forward noising in latent space needs nothing else), placed as a run would."""
    spec = spec.checked()
    _quiet_library_progress_bars()
    if spec.checkpoint is not None:
        source, loaded = _load_checkpoint(spec, placement, plan_speed(spec, placement), None)
        if "vae" in loaded:
            return loaded["vae"], source
        return _load_vae(spec, source, {}, placement, plan_speed(spec, placement), None)[0], source
    source = hub.resolve_model_folder(spec, placement.weight_variant)
    files = check_model_folder(source.folder, source.model, placement.weight_variant)
    return _load_vae(spec, source, files, placement, plan_speed(spec, placement), None)[0], source


def _load_vae(
    spec: ModelSpec, source: ModelSource, files: dict[str, Path], placement: Placement, plan: SpeedPlan,
    on_part: OnPart | None,
) -> tuple[Any, str | None, str | None]:
    """The model's VAE, or --vae's in its place (placed the same way); with the replacement's name and hash."""
    if not spec.vae:
        vae = next(part for part in PARTS if part.name == "vae")
        return _load_part(vae, source, files.get("vae"), placement, plan, on_part), None, None
    from sdgen.models.vae import load_replacement_vae, vae_hash, vae_source

    replacement = vae_source(str(spec.vae))
    if on_part is not None:
        on_part("vae", 0)
    module = load_replacement_vae(replacement, source.folder, hub.is_offline(spec))
    device = placement.device if plan.move_to_device else None
    place_module(module, device, torch_dtype(placement.vae_dtype), plan.channels_last)
    return module, replacement.name, vae_hash(replacement)


def load_tiny_autoencoder(name: str, placement: Placement, offline: bool = False, flag: str = "--preview-model") -> Any:
    """A tiny autoencoder (diffusers' AutoencoderTiny, e.g. TAESD `madebyollin/taesd`) from a folder or the
    Hub, in safetensors, placed beside the VAE in the VAE's dtype."""
    from diffusers import AutoencoderTiny

    folder = Path(name).expanduser()
    source = str(folder) if folder.is_dir() else name
    _quiet_library_progress_bars()
    try:
        module = AutoencoderTiny.from_pretrained(
            source,
            use_safetensors=True,
            local_files_only=hub.is_offline(ModelSpec(offline=offline)),
            torch_dtype=torch_dtype("float32"),
        )
    except (OSError, ValueError, RuntimeError) as error:
        where = "a folder that is not there" if name.startswith((".", "/", "~")) else "not in the cache and offline?"
        raise ModelLoadError(
            f"Cannot load the tiny autoencoder {name!r} ({flag}; {where}): {_first_line(error)}. "
            "Give a local AutoencoderTiny folder, or let sdgen download madebyollin/taesd."
        ) from error
    place_module(module, placement.device, torch_dtype(placement.vae_dtype))
    return module


def _load_part(
    part: Part, source: ModelSource, weights: Path | None, placement: Placement, plan: SpeedPlan, on_part: OnPart | None
) -> Any:
    """from_pretrained in the weights file's own dtype (a zero-copy map of the safetensors file), then one
    conversion to the run's device, dtype and layout in place_module (measured 2-4 s faster for the
    bfloat16 U-Net than converting in the loader and again for channels_last)."""
    if on_part is not None:
        on_part(part.name, weights.stat().st_size if weights is not None else 0)
    options: dict[str, Any] = {"subfolder": part.name}
    if weights is not None:
        variant = "fp16" if ".fp16." in weights.name else None
        stored = torch_dtype("float16" if variant else "float32")
        options.update(variant=variant, use_safetensors=True, **{_DTYPE_ARGUMENT[part.library]: stored})
    cls = getattr(importlib.import_module(part.library), part.class_in(source.folder))
    try:
        module = cls.from_pretrained(str(source.folder), **options)
    except (OSError, ValueError, RuntimeError) as error:
        raise ModelLoadError(
            f"Cannot load the {part.name} of {source.model!r} from {weights or source.folder / part.name}: "
            f"{_first_line(error)}. The file may be corrupt or truncated: delete it and download it again."
        ) from error
    if part.dtype_role is not None:
        dtype = placement.dtype if part.dtype_role == "model" else placement.vae_dtype
        device = placement.device if plan.move_to_device else None  # offload hooks move the weights instead
        place_module(module, device, torch_dtype(dtype), plan.channels_last and part.channels_last)
    return module


def place_module(module: Any, device: str | None, dtype: Any, channels_last: bool = False) -> None:
    """Device, dtype and layout in one pass over the weights (one copy, not three), then inference mode."""
    import diffusers.utils.logging
    import torch

    options: dict[str, Any] = {"dtype": dtype}
    if device is not None:
        options["device"] = device
    if channels_last:
        options["memory_format"] = torch.channels_last
    # diffusers warns on any .to(dtype) about keeping modules in float32, even when its list of them is empty
    level = diffusers.utils.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity_error()
    try:
        module.to(**options)
    finally:
        diffusers.utils.logging.set_verbosity(level)
    module.eval()
    module.requires_grad_(False)


def _quiet_library_progress_bars() -> None:
    """sdgen draws its own progress; the libraries' per-file bars would interleave with it on stderr."""
    import diffusers.utils.logging
    import transformers.utils.logging

    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.disable_progress_bar()


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
