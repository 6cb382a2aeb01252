"""`sdgen doctor`: what this machine and install give sdgen, and a tiny model run through the whole loop."""

from __future__ import annotations

import platform
import sys
import tempfile
import time
from collections.abc import Iterator

from sdgen import models
from sdgen.config.options import DEFAULT_MODEL
from sdgen.engine import loader
from sdgen.engine.pipeline import generate
from sdgen.engine.request import GenerationRequest, ModelSpec
from sdgen.hardware.devices import HardwareProbe, Placement, choose_placement
from sdgen.hardware.machine import cpu_info, gemm_peaks
from sdgen.hardware.speed import sdgen_cache_root
from sdgen.hardware.threads import apply_threads
from sdgen.models.caches import list_caches, size_text, summary
from sdgen.testing.tiny_model import build_tiny_model
from sdgen.version import __version__


def _fast_choice(device: str, bf16_units: bool) -> str:
    """What `--preset fast` would run here (sdgen/config/fast_preset.py), or what to download for it."""
    from sdgen.config.fast_preset import choose_fast, hub_cached
    from sdgen.errors import InvalidRequestError

    try:
        return choose_fast(device, bf16_units, hub_cached()).reason
    except InvalidRequestError as error:
        return str(error).removeprefix("Invalid preset 'fast': ")


def _openvino(dtype: str, bf16_units: bool) -> str:
    """What `--backend openvino` would run here: OpenVINO's version, its CPU precision for --dtype (auto:
    bf16 on CPUs with bfloat16 units), whether the attention heads are padded
    (sdgen/models/openvino_graph.py), or how to install it."""
    import importlib.util

    from sdgen.models.openvino import INSTALL, PRECISION_HINTS

    if importlib.util.find_spec("openvino") is None:
        return f"not installed (--backend openvino: {INSTALL})"
    import openvino

    from sdgen.models.openvino_graph import pads_heads

    precision = dtype if dtype in PRECISION_HINTS else "bfloat16" if bf16_units else "float32"
    padded = ", attention heads padded (AMX)" if pads_heads(precision) else ""
    return f"{openvino.get_version().split('-')[0]}; --backend openvino runs {PRECISION_HINTS[precision]} here{padded}"


class DoctorFailed(Exception):
    """The tiny model did not make a picture."""


def _sdgen_cache() -> str:
    """sdgen's own cache folder and what it holds (converted OpenVINO models, --compile's graphs)."""
    root = sdgen_cache_root()
    entries = list_caches(root)
    stale = sum(entry.size for entry in entries if entry.stale)
    return f"{root}: {summary(entries)}" + (f" ({size_text(stale)} stale: `sdgen cache prune`)" if stale else "")


def report(device: str = "auto", dtype: str = "auto", model: str | None = None) -> Iterator[str]:
    """One line at a time (each is printed as soon as it is known, the first ones before the slow imports);
    raises DoctorFailed at the end if the tiny model (or `model`, a model to check) did not run, and sdgen's
    errors for a device or dtype that does not exist here."""
    yield f"sdgen         {__version__}"
    yield f"python        {platform.python_version()} ({sys.executable})"
    import torch

    yield f"torch         {torch.__version__}"
    import diffusers
    import transformers

    probe = HardwareProbe.detect()
    yield f"diffusers     {diffusers.__version__}"
    yield f"transformers  {transformers.__version__}"
    gpus = [f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(probe.cuda_device_count)]
    yield f"CUDA          {', '.join(gpus) if gpus else 'none'}"
    yield f"MPS           {'available' if probe.mps_available else 'none'}"
    threads = apply_threads()
    cpu = cpu_info()
    yield f"CPU           {cpu.model}"
    yield f"vector units  {', '.join(cpu.vector_units) or 'none reported'} (torch kernels: {cpu.kernel_level})"
    yield f"CPU bfloat16  {'native' if cpu.native_bf16 else 'emulated (slow)'}; {cpu.threads} threads"
    yield f"threads       {cpu.threads} ({threads.reason}; --threads N to change)"
    peaks = gemm_peaks(cpu.native_bf16)
    yield f"GEMM peak     float32 {peaks['float32']:.0f} GFLOP/s, bfloat16 {peaks['bfloat16']:.0f} GFLOP/s (measured)"
    placement = choose_placement(device, dtype, probe=probe)
    yield f"sdgen uses    {placement.device}, {placement.dtype} (VAE {placement.vae_dtype})"
    spec = ModelSpec()
    yield f"HF cache      {models.hub_cache_dir(spec)}"
    yield f"sdgen cache   {_sdgen_cache()}"
    yield f"OpenVINO      {_openvino(dtype, cpu.native_bf16)}"
    yield f"preset fast   {_fast_choice(placement.device, cpu.native_bf16)}"
    cached = models.is_cached(DEFAULT_MODEL, spec)
    yield f"default model {DEFAULT_MODEL}: {'in the cache' if cached else 'not downloaded yet'}"
    transformers.utils.logging.disable_progress_bar()  # its "Writing model shards" bar is noise here
    with tempfile.TemporaryDirectory(prefix="sdgen-doctor-") as folder:
        build_tiny_model(folder)
        parts = loader.load_model(ModelSpec(model=folder), placement)
        started = time.perf_counter()
        [result] = generate(GenerationRequest("doctor", seed=0, num_inference_steps=4, width=64, height=64), parts)
        seconds = time.perf_counter() - started
    ok = result.image.size == (64, 64)
    yield f"tiny model    {'ok' if ok else 'FAILED'}: 4 steps at 64x64 on {placement.device} in {seconds:.2f} s"
    if model is not None:
        ok = (yield from _check_model(model, placement)) and ok
    if not ok:
        raise DoctorFailed


def _check_model(model: str, placement: Placement) -> Iterator[str]:
    """`--model`: the model found, read, loaded and run for one step at 64x64 (noise at that size; this
    checks the files, not the pictures); returns whether it ran."""
    from sdgen.engine.prologue import require_hub_parts
    from sdgen.errors import SdgenError

    try:
        spec = ModelSpec(model=model).checked()
        require_hub_parts(spec)
        yield f"your model    {spec.model}: found, native size {spec.native_size}x{spec.native_size}"
        started = time.perf_counter()
        parts = loader.load_model(spec, placement)
        loaded = time.perf_counter() - started
        request = GenerationRequest("doctor", seed=0, num_inference_steps=1, width=64, height=64)
        started = time.perf_counter()
        [result] = generate(request, parts)
        ran = time.perf_counter() - started
    except SdgenError as error:
        yield f"your model    FAILED: {error}"
        return False
    ok = result.image.size == (64, 64)
    yield f"your model    {'ok' if ok else 'FAILED'}: loaded in {loaded:.1f} s, 1 step at 64x64 in {ran:.2f} s"
    return ok
