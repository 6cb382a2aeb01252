"""LoRAs and textual-inversion embeddings on sdgen's own parts, through diffusers' own loaders (peft).

LoRAs are fused into the weights for as long as a run (or a run of batch lines) uses the same set, so they
cost nothing per step; the weights they touch are kept aside first and put back exactly when the set
changes (unfusing by subtraction would drift in bfloat16). Embeddings add tokens to the tokenizer and
rows to the text encoder's token table; a set change unloads them all and loads the new set, so a prompt
never meets an embedding its own request did not ask for.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdgen.errors import GenerationError
from sdgen.prompts.networks import EmbeddingRef, LoraRef

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from sdgen.engine.loader import StableDiffusionParts

log = logging.getLogger("sdgen")


def _host_class() -> type:
    """Diffusers' loader mixins expect a pipeline's attributes; the host gives them sdgen's parts."""
    from diffusers.loaders import StableDiffusionLoraLoaderMixin, TextualInversionLoaderMixin

    class Host(StableDiffusionLoraLoaderMixin, TextualInversionLoaderMixin):
        hf_device_map = None  # a pipeline spread over devices by accelerate; sdgen places parts itself

        def __init__(self, parts: StableDiffusionParts) -> None:
            self.unet = getattr(parts.unet, "_orig_mod", parts.unet)  # under torch.compile's wrapper
            self.text_encoder = parts.text_encoder
            self.tokenizer = parts.tokenizer

        @property
        def components(self) -> dict[str, Any]:
            return {"unet": self.unet, "text_encoder": self.text_encoder, "tokenizer": self.tokenizer}

    return Host


class Adapters:
    """What LoRAs and embeddings the parts hold now; `use_*` switches them, doing nothing when unchanged."""

    def __init__(self, parts: StableDiffusionParts, offline: bool = False) -> None:
        self.parts = parts
        self.offline = offline
        self.loras: tuple[LoraRef, ...] = ()  # the run's set
        self.fused: tuple[LoraRef, ...] = ()  # the set in the torch weights (--backend openvino: see use_loras)
        self.embeddings: tuple[EmbeddingRef, ...] = ()
        self._host = _host_class()(parts)
        self._originals: list[tuple[torch.Tensor, torch.Tensor]] = []  # (weight, its value before fusing)

    def convert(self, text: str) -> str:
        """A multi-vector embedding's token becomes its tokens `tok tok_1 tok_2`, as diffusers writes them."""
        return self._host.maybe_convert_prompt(text, self.parts.tokenizer) if self.embeddings else text

    # --- LoRA ------------------------------------------------------------------------------------

    def use_loras(self, loras: tuple[LoraRef, ...]) -> bool:
        """Make `loras` the run's set; True when it changed (text embeddings must be redone). On torch they are
        fused now. On --backend openvino with a model folder they are fused only when a part must be converted
        (fuse_pending): a set whose converted models are cached never loads the torch weights."""
        if loras == self.loras:
            return False
        for lora in loras:
            _lora_file(lora.source, self.offline)  # a missing file or Hub id fails now, not at conversion
        self.loras = loras
        runtime = getattr(self.parts, "openvino", None)
        if runtime is None or runtime.weights is None:
            self.fuse_pending()
        return True

    def fuse_pending(self) -> None:
        """The run's LoRA set into the torch weights, where another set (or none) is fused now."""
        if self.fused == self.loras:
            return
        self._weights_needed("to fuse LoRAs into them")
        self._restore()
        self.fused = ()
        if self.loras:
            try:
                self._fuse(self.loras)
            except BaseException:
                self.loras = ()  # not the run's set: the next request with it tries again, and fails again
                raise
            self.fused = self.loras

    def _fuse(self, loras: tuple[LoraRef, ...]) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        names = [f"sdgen_{number}" for number in range(len(loras))]
        try:
            with warnings.catch_warnings():  # peft warns that a second adapter is a second adapter
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                for name, lora in zip(names, loras, strict=True):
                    self._load(lora, name)
            touched = [
                module.get_base_layer().weight
                for model in (self._host.unet, self._host.text_encoder)
                for module in model.modules()
                if isinstance(module, BaseTunerLayer)
            ]
            # kept in CPU memory: on a GPU, a second copy of the touched layers would cost its memory
            self._originals = [(weight, weight.detach().to("cpu", copy=True)) for weight in touched]
            self._host.set_adapters(names, adapter_weights=[lora.scale for lora in loras])
            self._host.fuse_lora(components=["unet", "text_encoder"], lora_scale=1.0, adapter_names=names)
        except BaseException:
            self._restore()
            raise
        finally:
            self._host.unload_lora_weights()  # the peft layers go; fused weights stay
        log.info("LoRA: %s", ", ".join(f"{lora.name} x{lora.scale:g}" for lora in loras))

    def _load(self, lora: LoraRef, name: str) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer
        from safetensors.torch import load_file

        tensors = load_file(_lora_file(lora.source, self.offline))  # safetensors only: no pickle runs
        try:
            self._host.load_lora_weights(tensors, adapter_name=name)
        except (ValueError, RuntimeError, KeyError) as error:
            raise GenerationError(
                f"LoRA {lora.source!r} does not fit this model ({_first_line(error)}); is it made for SD 1.x?"
            ) from None
        wrapped = [
            module
            for model in (self._host.unet, self._host.text_encoder)
            for module in model.modules()
            if isinstance(module, BaseTunerLayer) and name in module.lora_A
        ]
        if not wrapped:
            raise GenerationError(
                f"LoRA {lora.source!r} does not fit this model: none of its layers match the U-Net or text "
                "encoder (is it made for SD 1.x?)."
            )

    def _weights_needed(self, why: str, names: tuple[str, ...] = ("unet", "text_encoder")) -> None:
        """--backend openvino makes the torch modules empty where their converted models are cached: their
        weights load before LoRAs or embeddings change them (sdgen/engine/openvino_weights.py)."""
        runtime = getattr(self.parts, "openvino", None)
        if runtime is not None:
            runtime.load_torch(names, why)

    def _restore(self) -> None:
        """Put back the weights the fused LoRAs changed, bit for bit."""
        import torch

        with torch.no_grad():
            for weight, original in self._originals:
                weight.copy_(original)
        self._originals = []

    # --- embeddings ------------------------------------------------------------------------------

    def use_embeddings(self, embeddings: tuple[EmbeddingRef, ...]) -> None:
        if embeddings == self.embeddings:
            return
        self._weights_needed("to load embeddings into it", ("text_encoder",))
        if self.embeddings:
            self._host.unload_textual_inversion()
            self.embeddings = ()
        for embedding in embeddings:
            try:
                state = _read_embedding(embedding.path)
                self._host.load_textual_inversion(state, token=embedding.token)
            except (ValueError, RuntimeError, KeyError, TypeError) as error:
                self._host.unload_textual_inversion()
                raise GenerationError(
                    f"Embedding {embedding.path!r} does not fit this model ({_first_line(error)}); "
                    "is it made for SD 1.x?"
                ) from None
        self.embeddings = embeddings
        if embeddings:  # announced as the LoRAs are: a word of the prompt now means something else
            log.info("Embeddings: %s", ", ".join(f"{e.token} ({Path(e.path).name})" for e in embeddings))


def _lora_file(source: str, offline: bool) -> str:
    """The .safetensors file of a LoRA given as a file, a folder, or a Hub id (downloaded to, or found in,
    the Hugging Face cache; only its .safetensors files)."""
    path = Path(source)
    if path.is_file():
        return source
    if not path.is_dir() and source.count("/") >= 2 and source.endswith(".safetensors"):
        return _hub_file(source, offline)  # owner/name/file.safetensors: one file of a repo of several
    if not path.is_dir():
        from huggingface_hub import snapshot_download

        try:
            path = Path(snapshot_download(source, allow_patterns=["*.safetensors"], local_files_only=offline))
        except Exception as error:  # offline and not cached, no such repo, the network ...
            raise GenerationError(
                f"LoRA {source!r} could not be downloaded or found in the cache ({_first_line(error)})."
            ) from None
    files = sorted(path.glob("*.safetensors"))
    preferred = [file for file in files if file.name == "pytorch_lora_weights.safetensors"]
    if len(preferred or files) != 1:
        found = ", ".join(file.name for file in files) or "none"
        raise GenerationError(
            f"LoRA {source!r}: expected one .safetensors file (or pytorch_lora_weights.safetensors), found {found}; "
            "pass the file itself."
        )
    return str((preferred or files)[0])


def _hub_file(source: str, offline: bool) -> str:
    """ByteDance/Hyper-SD/Hyper-SD15-1step-lora.safetensors: that file of that Hub repo, from the cache (or
    downloaded unless offline)."""
    from huggingface_hub import hf_hub_download

    owner, name, file = source.split("/", 2)
    try:
        return hf_hub_download(f"{owner}/{name}", file, local_files_only=offline)
    except Exception as error:  # offline and not cached, no such repo or file, the network ...
        raise GenerationError(
            f"LoRA {source!r} could not be downloaded or found in the cache ({_first_line(error)}); "
            f"download it with `hf download {owner}/{name} {file}`."
        ) from None


def _read_embedding(path: str) -> Any:
    """The file's tensors: safetensors, or a pickle read with torch.load(weights_only=True), which refuses
    anything but tensors and plain containers (a pickle that would run code is an error, not a risk)."""
    import pickle

    import torch

    if path.lower().endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise GenerationError(
            f"Embedding {path!r} could not be read safely ({_first_line(error)}); only tensors are loaded from "
            ".pt/.bin files; use its .safetensors version."
        ) from None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__
