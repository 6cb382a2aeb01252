"""The start every run shares (`sdgen PROMPT`, `sdgen batch`, `sdgen grid`, the server's engine):

1. `prepare`: check the model spec (a checkpoint's header read once, kept on the checked spec), choose the
   device and dtype, and plan speed and memory; all before any weights load, so bad input fails first;
2. `load`: load the model once, reporting each part as it loads.
Runs on the command line add progress and the pictures that watch each step (sdgen/runs/prologue.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from sdgen.engine import loader
from sdgen.engine.loader import StableDiffusionParts
from sdgen.engine.model_spec import CheckedModelSpec, ModelSpec
from sdgen.hardware.devices import Placement, choose_placement
from sdgen.hardware.speed import SpeedPlan, plan_speed
from sdgen.hardware.threads import apply_threads


@dataclass(frozen=True)
class Machine:
    """Where a run goes: the checked model spec, the device and dtype chosen, the speed plan."""

    spec: CheckedModelSpec
    placement: Placement
    plan: SpeedPlan


def check_model(spec: ModelSpec, device: str | None = None) -> CheckedModelSpec:
    """The spec checked; `device` (a launcher's choice for this process) replaces an `auto` device first."""
    if device is not None and spec.device == "auto":
        spec = replace(spec, device=device)
    return spec.checked()


def require_hub_parts(spec: CheckedModelSpec) -> None:
    """After the request's own checks, before anything loads: the model is a folder, a file or a Hub id, and
    offline the model, --vae and --decoder (a preset's TAESD) are in the Hugging Face cache, each missing one
    said in the main model's one line (sdgen.models.hub.require_cached)."""
    from sdgen.models import hub

    if spec.checkpoint is None:
        hub.check_model_name(spec.model, spec)
    if spec.vae is not None:
        hub.require_cached(str(spec.vae), "VAE (--vae)", spec)
    hub.require_cached(spec.decoder, "Decoder (--decoder)", spec)


def prepare(spec: ModelSpec, device: str | None = None) -> Machine:
    """1. Check the spec, choose the placement and the speed plan (e.g. --offload on a CPU: refused here)."""
    checked = check_model(spec, device)
    placement = choose_placement(checked.device, checked.dtype, checked.rng)
    plan = plan_speed(checked, placement)
    require_hub_parts(checked)
    return Machine(checked, placement, plan)


def load(machine: Machine, on_part: Callable[[str, int], None] | None = None) -> StableDiffusionParts:
    """2. Load the model where the machine says, each part reported to `on_part` as it loads."""
    apply_threads(machine.spec.threads)  # torch's CPU threads, before any work (sdgen/hardware/threads.py)
    return loader.load_model(machine.spec, machine.placement, machine.plan, on_part=on_part)
