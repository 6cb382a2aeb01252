"""The torch weights behind --backend openvino (docs/openvino.md, "Memory and warm start"): a model folder's
U-Net, text encoder and VAE are made without weights (their configs only, on torch's meta device), their
weights loaded from the folder only when a part must be converted (not in the cache) or a LoRA or embedding
must be fused into them, and dropped again right after a conversion of the plain model. A warm cache
therefore never loads the torch weights: the process holds the tokenizer, the configs and the compiled
OpenVINO models, and starts in seconds.

A checkpoint file (its parts come out of one file together) and --vae's replacement VAE load as before.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from sdgen.engine.loader import StableDiffusionParts
    from sdgen.models.layout import Part

log = logging.getLogger("sdgen")

# the converted parts made from each torch module (a U-Net taking ControlNet's residuals or T2I-Adapter's
# features as inputs, DeepCache's two passes); a ControlNet is converted from its own, always loaded, module
MODULE_OF_PART = {
    **{f"unet{inputs}{ip}": "unet" for inputs in ("", "-control", "-adapter", "-control-adapter")
       for ip in ("", "-ip")},  # "-ip": IP-Adapter's image tokens
    "unet-deepcache": "unet", "unet-shallow": "unet",
    "text_encoder": "text_encoder", "vae_decoder": "vae", "vae_encoder": "vae",
}


def unloaded_parts(loaders: Mapping[str, Callable[[], Any]], parts: tuple[Part, ...], folder: Path) -> dict[str, Any]:
    """The model's parts with the weighted ones empty (config only); the tokenizer loaded."""
    return {
        part.name: loaders[part.name]() if part.dtype_role is None else empty_module(part, folder)
        for part in parts
        if part.name in loaders
    }


def empty_module(part: Part, folder: Path) -> Any:
    """The part's module built from its config.json on the meta device: no memory, no file read but the config."""
    import torch

    cls = getattr(importlib.import_module(part.library), part.class_in(folder))
    with torch.device("meta"):
        if part.library == "diffusers":
            module = cls.from_config(cls.load_config(str(folder), subfolder=part.name))
        else:
            module = cls(cls.config_class.from_pretrained(str(folder), subfolder=part.name))
    module.eval()
    module.requires_grad_(False)
    return module


def is_empty(module: Any) -> bool:
    return any(parameter.is_meta for parameter in module.parameters())


@dataclass
class TorchWeights:
    """Which torch modules of the parts hold their weights, and how to load each one again."""

    parts: StableDiffusionParts
    loaders: Mapping[str, Callable[[], Any]]  # module name -> a freshly loaded module (loader.py's own loading)
    loads: list[str] = field(default_factory=list)  # what was loaded, in order (the log and the tests)

    def module(self, name: str) -> Any:
        module = getattr(self.parts, name)
        return getattr(module, "module", module)  # the VAE under its OpenVINO wrapper

    def ensure(self, name: str, why: str) -> None:
        """The module's weights in memory, loaded into the empty module in place (the adapters hold it)."""
        target = self.module(name)
        if not is_empty(target):
            return
        log.info("OpenVINO: loading the torch %s's weights (%s).", name, why)
        self.loads.append(name)
        fill(target, self.loaders[name]())
        gc.collect()

    def drop(self, name: str, keep: Any = None) -> None:
        """Back to an empty module (the memory freed): after its part is converted, when it can be loaded again
        from the folder. `keep`: a submodule that stays (the text encoder's final layer norm, for clip skip)."""
        if name not in self.loaders:
            return
        kept = {id(tensor) for tensor in keep.parameters()} if keep is not None else set()
        dropped = 0
        for owner in self.module(name).modules():
            for store in (owner._parameters, owner._buffers):
                for key, tensor in store.items():
                    if tensor is None or tensor.is_meta:
                        continue
                    if id(tensor) in kept:  # in memory of its own: a view into the loaded file would keep the
                        store[key] = _copy(tensor)  # whole file mapped (the text encoder's: 0.46 GiB of RSS)
                    else:
                        store[key] = _meta_like(tensor)
                        dropped += 1
        if not dropped:
            return
        gc.collect()
        _trim()
        log.info("OpenVINO: the torch %s's weights dropped (its OpenVINO model is made).", name)

    def norm(self, norm: Any) -> Any:
        """The text encoder's final layer norm with its weights (loaded once, the rest dropped again)."""
        if any(parameter.is_meta for parameter in norm.parameters()):
            self.ensure("text_encoder", "its final layer norm, for clip skip")
            self.drop("text_encoder", keep=norm)
        return norm


def fill(target: Any, source: Any) -> None:
    """`source`'s tensors put into `target` (the same class and config) in place, buffers outside the
    state dict too (CLIP's position ids)."""
    target.load_state_dict(source.state_dict(), strict=True, assign=True)
    for name, buffer in source.named_buffers():
        owner, _, leaf = name.rpartition(".")
        target.get_submodule(owner)._buffers[leaf] = buffer
    target.eval()
    target.requires_grad_(False)


def _copy(tensor: Any) -> Any:
    import torch

    copy = tensor.detach().clone()
    return torch.nn.Parameter(copy, requires_grad=False) if isinstance(tensor, torch.nn.Parameter) else copy


def _meta_like(tensor: Any) -> Any:
    import torch

    empty = torch.empty_like(tensor, device="meta")
    return torch.nn.Parameter(empty, requires_grad=False) if isinstance(tensor, torch.nn.Parameter) else empty


def _trim() -> None:
    """Give freed heap pages back to the system (glibc keeps them otherwise: peak RSS is what is measured)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)
