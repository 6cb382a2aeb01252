"""Before any weights load: each Hub-hosted part a request names (a preset's LoRA, a ControlNet, a T2I-Adapter,
an IP-Adapter and its image encoder) is in the Hugging Face cache when only the cache may be used (offline, or
the Hub unreachable), each missing one said in the main model's one line (sdgen.models.hub.require_cached).
Upscalers, face restorers and detectors are files on this machine (or OpenCV's own), checked by their own
parts; the annotators' weights are read from the cache only and checked by their preprocessors."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sdgen.models.hub import require_cached

if TYPE_CHECKING:  # pragma: no cover
    from sdgen.engine.model_spec import ModelSpec
    from sdgen.engine.request import CheckedRequest, ImageJob


def require_request_hub_parts(request: CheckedRequest, jobs: tuple[ImageJob, ...], model: ModelSpec) -> None:
    from sdgen.engine.plugins.control_units import control_units
    from sdgen.engine.plugins.t2i_adapter import adapter_units
    from sdgen.models.controlnet import find_controlnet
    from sdgen.models.ip_adapter import ENCODER_FOLDER, find_ip_adapter
    from sdgen.models.t2i_adapter import find_t2i_adapter

    for source in dict.fromkeys(lora.source for job in jobs for lora in job.lora_refs):
        require_cached(source, "LoRA", model)
    for unit in control_units(request):
        require_cached(find_controlnet(unit.model, request.control_dir), "ControlNet (--control)", model)
    for adapter in adapter_units(request):
        require_cached(find_t2i_adapter(adapter.model, request.adapter_dir), "T2I-Adapter (--adapter)", model)
    if request.ip_adapter:
        found = find_ip_adapter(request.ip_adapter)
        if found.repo is not None:
            require_cached(f"{found.repo}/{found.file}", "IP-Adapter (--ip-adapter)", model)
            if not request.ip_encoder:
                encoder = (Path(found.file).parent / ENCODER_FOLDER / "model.safetensors").as_posix()
                require_cached(f"{found.repo}/{encoder}", "IP-Adapter image encoder", model)
