"""OpenVINO models made from sdgen's own loaded torch modules (docs/openvino.md): converted with
`openvino.convert_model`, int8 weight compression with NNCF where asked, saved in sdgen's cache folder under
a key of everything the converted weights depend on, read back from there by later processes, and compiled
for the CPU at the run's precision. The wrappers the loop calls: sdgen/engine/openvino_parts.py and openvino_unet.py.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdgen.config.backend_options import BACKENDS, QUANTIZE_CHOICES
from sdgen.errors import NAME, InvalidRequestError
from sdgen.hardware.speed import sdgen_cache_root
from sdgen.models.caches import COMPILED, mark_used
from sdgen.models.mapped_files import resident_pages_dropped
from sdgen.models.openvino_graph import PADDED, pad_attention_heads, save_model, static_model

if TYPE_CHECKING:  # pragma: no cover
    from sdgen.engine.model_spec import ModelSpec

log = logging.getLogger("sdgen")

INSTALL = 'pip install "sdgen[openvino]"'
# sdgen's dtype -> OpenVINO's CPU inference precision hint (float16 is refused: see check_backend)
PRECISION_HINTS = {"float32": "f32", "bfloat16": "bf16"}


def check_backend(spec: ModelSpec) -> None:
    """--backend and --quantize, and the model options they cannot run with, refused in one line each
    before any weights load (the request's options: sdgen/engine/openvino_parts.py's check_request)."""
    backend, quantize = spec.backend, spec.quantize
    if backend not in BACKENDS:
        raise InvalidRequestError(f"Invalid {NAME} {backend!r}: use one of {', '.join(BACKENDS)}.", "backend")
    if quantize not in QUANTIZE_CHOICES:
        raise InvalidRequestError(
            f"Invalid {NAME} {quantize!r}: use one of {', '.join(QUANTIZE_CHOICES)}.", "quantize"
        )
    if quantize != "none" and backend != "openvino":
        raise InvalidRequestError(
            f"Invalid {NAME} {quantize} with --backend {backend}: int8 weight compression runs on the OpenVINO "
            "back end; add --backend openvino.", "quantize",
        )
    if backend != "openvino":
        return
    device = spec.device.strip().lower()
    if device not in ("auto", "cpu", "cpu:0"):
        raise InvalidRequestError(
            f"Invalid {NAME} {spec.device!r} with --backend openvino: sdgen compiles OpenVINO models for the CPU "
            "only; use --device cpu, or --backend torch on a GPU.", "device",
        )
    refused = (
        ("compile", spec.compile, "torch.compile compiles the torch U-Net, which OpenVINO replaces"),
        ("offload", spec.offload not in ("none", None), "offloading moves torch weights to a GPU"),
        ("dtype", spec.dtype == "float16", "OpenVINO on the CPU runs float32 or bfloat16"),
        ("token_merging", bool(spec.token_merging), "token merging patches the torch U-Net's attention"),
        ("vae_tiling", spec.vae_tiling, "the converted VAE decodes whole images"),
        ("vae_slicing", spec.vae_slicing, "the converted VAE decodes whole batches"),
    )
    for key, given, why in refused:
        if given:
            value = getattr(spec, key)
            raise InvalidRequestError(
                f"Invalid {NAME} {value!r} with --backend openvino: {why}; drop {NAME} or use --backend torch.", key
            )
    missing = [name for name in ("openvino", "nncf") if importlib.util.find_spec(name) is None]
    needed = [name for name in missing if name == "openvino" or quantize != "none"]
    if needed:
        raise InvalidRequestError(
            f"Invalid {NAME} openvino: the {' and '.join(needed)} package is not installed; run: {INSTALL}.",
            "backend",
        )


def check_quantize_model(quantize: str, model: str, in_channels: int | None) -> None:
    """int8-hybrid calibrates a text-to-image U-Net in sdgen's loop: an inpainting model (9 input channels, read
    from the checkpoint's header or the folder's unet/config.json) is refused before loading. A model not on
    disk yet (downloaded at load) is checked when its U-Net loads."""
    if quantize != "int8-hybrid":
        return
    channels = in_channels if in_channels is not None else _folder_unet_channels(model)
    if channels is not None and channels != 4:
        raise InvalidRequestError(
            f"Invalid {NAME} int8-hybrid for {model!r}: its U-Net takes {channels} channels (an inpainting model) "
            "and int8-hybrid calibrates 4-channel U-Nets; use --quantize int8 (weights only).", "quantize",
        )


def _folder_unet_channels(model: str) -> int | None:
    config = Path(model).expanduser() / "unet" / "config.json"
    if not config.is_file():
        from huggingface_hub import try_to_load_from_cache

        is_repo_id = re.fullmatch(r"[\w.-]+/[\w.-]+", model) is not None
        cached = try_to_load_from_cache(model, "unet/config.json") if is_repo_id else None
        if not isinstance(cached, str):
            return None
        config = Path(cached)
    try:
        channels = json.loads(config.read_text()).get("in_channels")
    except (OSError, ValueError):
        return None  # an unreadable config: the load says what is wrong with it
    return channels if isinstance(channels, int) else None


def cache_root() -> Path:
    """Where converted models are kept: one folder per OpenVINO version under sdgen's cache folder."""
    import openvino

    version = openvino.get_version().split("-")[0]
    return sdgen_cache_root() / "openvino" / f"ov-{version}"


def cache_key(fields: Mapping[str, Any]) -> str:
    """A stable digest of everything converted weights depend on (model identity, LoRA set and weights,
    embeddings, quantization, the OpenVINO version, the part): same fields, same folder."""
    text = json.dumps({str(key): fields[key] for key in sorted(fields)}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def file_identity(path: str | Path) -> list[Any]:
    """A file or folder as a cache key sees it: its resolved path, and each file's size and change time."""
    path = Path(path).expanduser()
    if not path.exists():
        return [str(path)]
    files = [path] if path.is_file() else sorted(item for item in path.rglob("*") if item.is_file())
    return [str(path.resolve()), *[(file.name, file.stat().st_size, file.stat().st_mtime_ns) for file in files[:64]]]


def model_identity(source: Any) -> dict[str, Any]:
    """A loaded model's identity in every part's key (a ModelSource): a Hub snapshot by its commit, a local
    file or folder by its resolved path and files (`./m` and `/abs/m` share one cache)."""
    if source.commit or source.unet_sha256:
        return {"model": source.model, "commit": source.commit, "unet_sha256": source.unet_sha256}
    checkpoint = Path(source.model).expanduser()  # one file, else the diffusers folder
    return {"files": file_identity(checkpoint if checkpoint.is_file() else source.folder)}


@dataclass(frozen=True)
class Conversion:
    """One part to convert: its name (for the log and the folder), the torch module (a wrapper whose forward
    takes plain tensors), an example input, and the key fields of its weights."""

    name: str
    module: Callable[[], Any]  # made when needed: no wrapper is built for a cached part
    example_input: Callable[[], tuple[Any, ...]]
    key: Mapping[str, Any]
    # int8-hybrid's calibration inputs (the U-Net only): each a tuple of the model's inputs as numpy arrays
    calibration: Callable[[], list[tuple[Any, ...]]] | None = None
    instance: str = ""  # which one, where a part comes in several (a ControlNet per model file)

    @property
    def slot(self) -> str:
        """Where its compiled model is kept in memory: one per part, and per instance."""
        return f"{self.name}:{self.instance}" if self.instance else self.name


def trace_example(inputs: tuple[Any, ...], factor: int) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """What a part is traced on, and the key field a trace at the run's own size adds.

    Tracing runs the torch module once, and at the run's size its activations stay with the process (the allocator
    keeps the memory): 1.3 GB more at a cold start's peak with the full-size SD1.5 U-Net at 512x512, batch 2. So a
    part is traced on one row at a small size (sides of 2 x `factor` where they divide, else `factor`), which
    converts to the same model: the saved model's shapes are dynamic and compile_for_cpu fixes the run's (the
    full-size U-Net traced at 16x16 gave the same output, to the bit, at 64x64 and batch 2). `factor` is the
    first input's up-sampling factor (8 for SD's U-Net latents): diffusers' U-Net takes a Python branch on the
    size, up-sampling to each skip's size where the factor does not divide a side, and a trace keeps the branch
    it took. Such a run is traced at its own size and keyed apart ("odd_size"). Every 4-D input is cut in
    proportion to the first (ControlNet's residuals and image, T2I-Adapter's features, DeepCache's kept
    features); where one cannot be cut exactly, all are traced whole."""
    if _odd_size(inputs, factor):
        return inputs, {"odd_size": True}
    height, width = inputs[0].shape[-2:]
    small = [2 * factor if side % (2 * factor) == 0 else factor for side in (height, width)]
    cut = []
    for tensor in inputs:
        if tensor.ndim >= 2:  # not a timestep or a scale: one row
            tensor = tensor[:1]
        if tensor.ndim == 4:
            rows, columns = tensor.shape[-2] * small[0], tensor.shape[-1] * small[1]
            if rows % height or columns % width:
                return inputs, {}
            tensor = tensor[..., : rows // height, : columns // width]
        cut.append(tensor.contiguous())
    return tuple(cut), {}


def _odd_size(inputs: tuple[Any, ...], factor: int) -> bool:
    return any(side % factor for side in inputs[0].shape[-2:])


def traced_part(name: str, module: Callable[[], Any], inputs: tuple[Any, ...], key: Mapping[str, Any], factor: int,
                **fields: Any) -> Conversion:
    """The Conversion of a part traced on trace_example's cut of `inputs`, made only when it converts (not on
    every call), its key the part's own plus "odd_size" where the run is traced at its own size."""
    odd = {"odd_size": True} if _odd_size(inputs, factor) else {}
    return Conversion(name, module, lambda: trace_example(inputs, factor)[0], {**key, **odd}, **fields)


def size_factor(config: Any) -> int:
    """How much a U-Net, ControlNet or VAE scales its sides between its first and its last block (8 for SD's; a
    tiny autoencoder's config names its decoder's blocks)."""
    channels = getattr(config, "block_out_channels", None) or getattr(config, "decoder_block_out_channels", None)
    return int(2 ** (len(channels) - 1)) if channels else 1


def cache_folder(conversion: Conversion, quantize: str) -> Path:
    """The part's folder in the cache: its key's digest under the part's name."""
    return cache_root() / conversion.name / cache_key(json_fields(conversion, quantize))


def is_cached(conversion: Conversion, quantize: str) -> bool:
    return (cache_folder(conversion, quantize) / "model.xml").is_file()


# OpenVINO sets the process's locale to "C" while it reads or writes a model file and puts the previous one back
# after: two threads doing it at once (the prefetch thread's compile, sdgen/engine/openvino_prefetch.py, and
# the loop's) can leave "C" behind for good, and with it ASCII as Python's default text encoding. So every
# read, write and compile of a model file runs one at a time.
_MODEL_FILES = threading.RLock()


def one_at_a_time(function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _MODEL_FILES:
            return function(*args, **kwargs)

    return locked


@one_at_a_time
def ov_model(conversion: Conversion, quantize: str) -> str:
    """The part's model.xml in the cache, converted (or compressed) into it first where it is missing; the other
    forms are made from the float32 model (itself read from the cache, or converted there first): f16 its weights
    stored in float16, int8 NNCF's weight compression, int8-hybrid NNCF's hybrid quantization, and f16-padded
    and int8-padded those with padded attention heads (openvino_graph.py). The saved model keeps dynamic
    shapes: compile_for_cpu fixes them for each run."""
    folder = cache_folder(conversion, quantize)
    fields = json_fields(conversion, quantize)
    xml = folder / "model.xml"
    if xml.is_file():
        log.info("OpenVINO: the %s from the cache (%s).", conversion.name, folder)
        return str(xml)
    if quantize == "none":
        _convert(conversion, folder, fields)
        return str(xml)
    form = quantize.removesuffix(PADDED)
    model = _core().read_model(ov_model(conversion, "none"))
    if form == "int8-hybrid":
        assert conversion.calibration is not None, "int8-hybrid quantizes the U-Net's activations only"
        samples = conversion.calibration()
        log.info("OpenVINO: int8-hybrid %s from %d calibration inputs (cached in %s).", conversion.name,
                 len(samples), folder)
        model = hybrid_quantize(model, samples)
    elif form == "int8":
        log.info("OpenVINO: int8 weights of the %s (cached in %s).", conversion.name, folder)
        import nncf

        with quiet_nncf():
            model = nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_ASYM)
    else:  # f16, for bf16 inference (see OpenVINOParts)
        log.info("OpenVINO: the %s with float16 weights, for bf16 inference (cached in %s).", conversion.name, folder)
    if form != quantize:
        log.info("OpenVINO: %d attention(s) of the %s with padded heads.", pad_attention_heads(model), conversion.name)
    _save(model, folder, fields, compress_to_fp16=form == "f16")
    return str(xml)


def _convert(conversion: Conversion, folder: Path, fields: Mapping[str, Any]) -> None:
    """The float32 model, converted from a trace of the part's torch module."""
    import openvino
    import torch

    log.info("OpenVINO: converting the %s (cached in %s).", conversion.name, folder)
    # traced once without the tracer's check (a second and third forward pass); its warnings are about
    # Python-side shape checks, constant for the model's own layout; OpenVINO's bars go to stderr
    example = conversion.example_input()
    with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(conversion.module(), example, check_trace=False)
        model = openvino.convert_model(traced, example_input=example)
        _save(model, folder, fields)
    del model, traced  # the converted model may share the torch weights' memory: only the saved file is used


def json_fields(conversion: Conversion, quantize: str) -> dict[str, Any]:
    import openvino

    return {**conversion.key, "part": conversion.name, "quantize": quantize, "openvino": openvino.get_version()}


@contextlib.contextmanager
def quiet_nncf() -> Any:
    """NNCF's notes turned down and its bars sent to stderr (stdout carries sdgen's own output), for the time
    it runs. Only the "nncf" logger's level: nncf.set_log_level would also set the level of every handler on
    that logger, and a host's handlers sit there too (pytest's log capture, a server's), which it would mute."""
    logger = logging.getLogger("nncf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        logger.setLevel(level)


def hybrid_quantize(model: Any, samples: list[tuple[Any, ...]]) -> Any:
    """optimum-intel's hybrid recipe for diffusion U-Nets (its _get_hybrid_mixed_quantization_config): int8
    weights (asymmetric, per channel) for the MatMuls, then NNCF's post-training quantization of everything
    else, activations included, calibrated on `samples`; SmoothQuant off (the MatMul weights are compressed)."""
    import nncf

    matmuls = [op.get_friendly_name() for op in model.get_ops()
               if op.get_type_name() == "MatMul" and any(_constant_input(op, port) for port in (0, 1))]
    with quiet_nncf():
        compressed = nncf.compress_weights(
            model, mode=nncf.CompressWeightsMode.INT8_ASYM, ignored_scope=nncf.IgnoredScope(types=["Convolution"])
        )
        advanced = nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix.DISABLE)
        advanced.smooth_quant_alphas.matmul = -1
        return nncf.quantize(
            compressed, nncf.Dataset(samples), preset=nncf.QuantizationPreset.MIXED, subset_size=len(samples),
            fast_bias_correction=True, model_type=nncf.ModelType.TRANSFORMER,
            ignored_scope=nncf.IgnoredScope(names=matmuls, validate=False), advanced_parameters=advanced,
        )


def _constant_input(op: Any, port: int) -> bool:
    """The input comes from a constant, through conversions and reshapes (a layer's weight)."""
    node = op.input_value(port).get_node()
    while node.get_type_name() in ("Convert", "FakeQuantize", "Reshape") and node.inputs():
        node = node.input_value(0).get_node()
    return node.get_type_name() == "Constant"


def _save(model: Any, folder: Path, fields: Mapping[str, Any], compress_to_fp16: bool = False) -> None:
    """Write the model whole or not at all: into a temporary folder beside it, then one rename."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    try:
        save_model(model, temporary / "model.xml", compress_to_fp16, key=fields)
        os.replace(temporary, folder)
    except OSError:  # another process saved it first (the folder exists): theirs is the same model
        pass
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


@one_at_a_time
def compile_for_cpu(xml: str, precision: str, shapes: tuple[tuple[int, ...], ...]) -> Any:
    """The cached model compiled for the CPU with static shapes (the run's size and batch: kernels and buffers
    planned once, as optimum-intel's reshape() does), at sdgen's precision (f32, or bf16 on CPUs with bfloat16
    units), on the run's threads (torch's, as the prologue set them: --threads, else one per core). Compiled
    from a file: OpenVINO imports its compiled blob from the shape's folder (CACHE_DIR) when it has one."""
    import torch

    mark_used(Path(xml).parent)  # `sdgen cache prune --unused-days` goes by this, per model and per shape
    static = Path(static_model(_core(), xml, shapes))
    mark_used(static.parent)
    # CACHE_MODE OPTIMIZE_SIZE: weightless blobs, which read the weights from the shape's model.bin (a hard link
    # to the model's) on import; a full blob holds its own copy (SD1.5's bf16 U-Net at 512x512: 1.72 GB against
    # 3.8 MB), a warm start the same in bf16 and 2 s longer in f32 (3.44 GB saved a size; docs/openvino.md)
    config = {"INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision], "CACHE_DIR": str(static.parent / COMPILED),
              "CACHE_MODE": "OPTIMIZE_SIZE", "INFERENCE_NUM_THREADS": torch.get_num_threads()}
    with resident_pages_dropped([static.with_suffix(".bin")]):  # read once to repack, kept mapped: see there
        return _core().compile_model(str(static), "CPU", config)


_CORE: list[Any] = []


def _core() -> Any:
    with _MODEL_FILES:  # one Core for both threads (the prefetch thread's and the loop's)
        if not _CORE:
            import openvino

            _CORE.append(openvino.Core())
        return _CORE[0]
