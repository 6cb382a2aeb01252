"""Speed and memory: what to do to the loaded parts for the device they run on.

Only decisions live here, as plain data, unit-tested without a GPU. The loader carries them out with the
libraries' own switches (StableDiffusionParts.apply in sdgen/engine/loader.py: diffusers' attention slicing,
VAE slicing and tiling, accelerate's offload, torch.compile, channels_last). Measured with
scripts/bench.py; see docs/performance.md (the options: docs/settings.md).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdgen.errors import NAME, InvalidRequestError
from sdgen.hardware.devices import Placement

if TYPE_CHECKING:  # pragma: no cover
    from sdgen.engine.request import ModelSpec

OFFLOAD_CHOICES = ("none", "model", "sequential")


@dataclass(frozen=True)
class SpeedPlan:
    """What apply_speed does; every field is a decision tests can check."""

    channels_last: bool  # NHWC convolutions: faster oneDNN (CPU) and cuDNN (CUDA) kernels for the U-Net and VAE
    attention_slicing: bool  # attention in slices: less peak memory, a little slower
    vae_slicing: bool  # decode a batch one image at a time
    vae_tiling: bool  # decode in overlapping tiles, blended: big images in little memory, no seams
    offload: str  # none, model (one part on the GPU at a time), sequential (one layer at a time)
    compile: bool  # torch.compile the U-Net: faster steps after a slow first call
    move_to_device: bool  # False when offload hooks move the weights instead


def plan_speed(spec: ModelSpec, placement: Placement) -> SpeedPlan:
    """Decide from the options asked for and where the run happens; refuse what cannot work there."""
    kind = placement.device.partition(":")[0]
    offload = (spec.offload or "none").lower()
    if offload not in OFFLOAD_CHOICES:
        choices = ", ".join(OFFLOAD_CHOICES)
        raise InvalidRequestError(f"Invalid {NAME} {spec.offload!r}: use one of {choices}.", "offload")
    if offload != "none" and kind != "cuda":
        raise InvalidRequestError(
            f"Invalid {NAME} {offload} on {placement.device}: offloading keeps weights in CPU memory and "
            f"moves them to a CUDA GPU when needed; on the CPU they are there already. Drop {NAME}.",
            "offload",
        )
    return SpeedPlan(
        # bench.py on an AMX CPU: channels_last makes the bfloat16 U-Net step 1.09x and the VAE decode 1.7x
        # faster, but gains nothing in float32 (1.00x) while its copies raise peak RSS; diffusers advises
        # it on CUDA. MPS has no fast path worth the copies.
        channels_last=kind == "cuda" or (kind == "cpu" and placement.dtype == "bfloat16"),
        attention_slicing=spec.attention_slicing,
        vae_slicing=spec.vae_slicing,
        vae_tiling=spec.vae_tiling,
        offload=offload,
        compile=spec.compile,
        move_to_device=offload == "none",
    )


@dataclass(frozen=True)
class CompilePlan:
    options: dict[str, Any]  # for torch.compile
    freezing: bool  # inductor folds the weights into the graph (torch._inductor.config.freezing)


def compile_plan(device: str) -> CompilePlan:
    """CPU: inductor's freezing folds the (never trained) weights into the graph and prepacks them for
    oneDNN: bench.py measured the bfloat16 256x256 step 1.76x faster with it, 1.13x without. CUDA:
    diffusers' advice, mode="reduce-overhead" (CUDA graphs)."""
    if device.partition(":")[0] == "cuda":
        return CompilePlan({"mode": "reduce-overhead"}, freezing=False)
    return CompilePlan({}, freezing=True)


def sdgen_cache_root(environ: dict[str, str] | None = None) -> Path:
    """$SDGEN_CACHE_DIR, else $XDG_CACHE_HOME/sdgen, else ~/.cache/sdgen."""
    environ = dict(os.environ) if environ is None else environ
    if environ.get("SDGEN_CACHE_DIR"):
        return Path(environ["SDGEN_CACHE_DIR"]).expanduser()
    base = environ.get("XDG_CACHE_HOME") or str(Path("~/.cache").expanduser())
    return Path(base) / "sdgen"


def compile_cache_dir(model: str, dtype: str, device: str, torch_version: str, root: Path | None = None) -> Path:
    """Where --compile keeps inductor's compiled graphs and kernels between processes (inductor's FX graph
    and AOTAutograd caches, pointed here through TORCHINDUCTOR_CACHE_DIR): one folder per torch version,
    model, device kind and dtype. Inside, inductor keys each graph by its shapes, so every image size gets
    its own entries; a new size compiles once, then starts warm too."""
    digest = hashlib.sha256(model.encode()).hexdigest()[:10]  # two folders named "model" never share
    name, _, where = model.partition("@")
    if where.startswith("/"):  # a local model keyed by its folder too: named once, by its own name
        model = name
    if model.startswith(("/", "~", ".")):
        model = Path(model).name
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-")[-60:] or "model"
    kind = device.partition(":")[0]
    return (root or sdgen_cache_root()) / "compile" / f"torch-{torch_version}" / f"{slug}-{digest}" / f"{kind}-{dtype}"
