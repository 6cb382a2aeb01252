"""--backend openvino: the loaded torch U-Net, text encoder and VAE run as OpenVINO models under sdgen's own
loop, each wrapped so that the loop calls it as it calls the torch module and gets the same output types
(docs/openvino.md). Conversion, the cache and compiling: sdgen/models/openvino.py.

The U-Net and the text encoder are converted after the run's LoRAs (and the text encoder after its
embeddings) are in the torch weights: each call asks for the model of the LoRA set and embeddings loaded now,
converted once per set (or read from the cache). The VAE does not change with them and is converted once.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from sdgen.engine.openvino_prefetch import Prefetch
from sdgen.engine.openvino_weights import MODULE_OF_PART, TorchWeights
from sdgen.engine.text import final_layer_norm
from sdgen.errors import NAME, InvalidRequestError
from sdgen.models.openvino import (
    Conversion,
    compile_for_cpu,
    file_identity,
    is_cached,
    model_identity,
    ov_model,
    size_factor,
    traced_part,
)
from sdgen.models.openvino_graph import PADDED, pads_heads

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable, Mapping, Sequence

    import torch

    from sdgen.engine.loader import StableDiffusionParts
    from sdgen.engine.model_spec import CheckedModelSpec
    from sdgen.engine.request import GenerationRequest

log = logging.getLogger("sdgen")

# request options that patch the torch U-Net in ways the converted one does not take: refused (ControlNet,
# T2I-Adapter, IP-Adapter and DeepCache run on it: plugins/controlnet.py's OpenVINOControlNet,
# plugins/ip_adapter.py's openvino_inputs, plugins/deepcache.py's OpenVINOPasses)
_REFUSED = (
    ("freeu", "FreeU patches the torch U-Net's up blocks"),
    ("pag_scale", "perturbed-attention guidance patches the torch U-Net's attention"),
    ("sag_scale", "self-attention guidance reads the torch U-Net's attention maps"),
    ("tiling", "seamless tiling patches the torch modules' convolutions"),
)
_KEYS = {"controls": "control", "adapters": "adapter"}  # field -> option key, where they differ
# int8-hybrid's activations are calibrated on the plain U-Net's call: inputs it never saw are refused with it
_NOT_CALIBRATED = (
    ("controls", "ControlNet's residuals"), ("adapters", "T2I-Adapter's features"),
    ("cache_interval", "DeepCache's kept features"), ("ip_adapter", "IP-Adapter's image tokens"),
)


def check_request(request: GenerationRequest, model: CheckedModelSpec | None) -> None:
    """The request's options the OpenVINO back end cannot run, refused in one line before any weights load."""
    if model is None or model.backend != "openvino":
        return
    for name, why in _REFUSED:
        if (shown := _given(request, name)) is not None:
            raise InvalidRequestError(
                f"Invalid {NAME} {shown!r} with --backend openvino: {why}; drop {NAME} or use --backend torch.",
                _KEYS.get(name, name),
            )
    if _given(request, "ip_adapter") and _given(request, "cache_interval"):
        raise InvalidRequestError(
            f"Invalid {NAME} {request.cache_interval!r} with --backend openvino and --ip-adapter: DeepCache's two "
            "converted passes take no image tokens; drop one of them or use --backend torch.", "cache_interval",
        )
    for name, inputs in _NOT_CALIBRATED if model.quantize == "int8-hybrid" else ():
        if (shown := _given(request, name)) is not None:
            raise InvalidRequestError(
                f"Invalid {NAME} {shown!r} with --quantize int8-hybrid: its int8 activations were calibrated "
                f"without {inputs}; use --quantize int8 (weights only).", _KEYS.get(name, name),
            )


def _given(request: GenerationRequest, name: str) -> Any:
    """The option's value as the error shows it, or None where it is off (DeepCache: a whole pass each step)."""
    value = getattr(request, name, None)
    if not value or (name == "cache_interval" and value <= 1):
        return None
    return ",".join(value) if isinstance(value, (tuple, list)) else value


@dataclass
class OpenVINOParts:
    """The compiled models of one loaded model: per part, the key of the weights it was made from."""

    parts: StableDiffusionParts
    precision: str  # float32 or bfloat16 (sdgen's names)
    quantize: str
    weights: TorchWeights | None = None  # the torch modules' weights, loaded only when needed
    compiled: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # part -> (key, compiled model)
    prefetch: Prefetch | None = None  # the compiled models the model's last run used, compiling ahead
    unet_extra: Any = None  # a plugin's inputs of the converted U-Net for its runs (openvino_unet.UNetExtra)
    _identity: dict[str, Any] | None = None

    def model(self, conversion: Conversion, inputs: tuple[torch.Tensor, ...], quantize: str | None = None) -> Any:
        """The part compiled for these inputs' shapes: one compiled model per part in memory, compiled again
        when the weights (LoRAs, embeddings) or the shapes (guidance cut-off, hires pass) change."""
        quantize = quantize or self.quantize
        if quantize == "int8-hybrid" and conversion.calibration is None:
            quantize = "int8"  # int8-hybrid: the U-Net's activations; the other parts' weights as int8 does
        if quantize == "none" and self.precision == "bfloat16":
            # float16 weights on file: bf16 inference converts them at compile time, from half the bytes (peak
            # RSS of a 512x512 SD1.5 U-Net step 3.7 GiB against 5.3 from float32 weights, the same speed)
            quantize = "f16"
        if quantize in ("f16", "int8") and pads_heads(self.precision, conversion.name):
            quantize += PADDED  # AMX in bf16: the attention heads padded (sdgen/models/openvino_graph.py)
        shapes = tuple(tuple(tensor.shape) for tensor in inputs)
        made = (conversion.key, quantize, shapes)
        kept = self.compiled.get(conversion.slot)
        if kept is not None and kept[0] == made:
            return kept[1]
        self.compiled.pop(conversion.slot, None)  # one set of weights per part in memory
        if self.prefetch and conversion.name.startswith("unet-"):  # ControlNet's, T2I-Adapter's or DeepCache's
            self.prefetch.drop("unet")  # U-Net runs: the plain one compiled ahead is let go before it compiles
        name = MODULE_OF_PART.get(conversion.name)  # None: a ControlNet, its torch module always loaded
        weights = self.weights if name is not None else None
        if weights is not None and not (is_cached(conversion, quantize) or is_cached(conversion, "none")):
            weights.ensure(name, f"to convert the {conversion.name}")
            if name != "vae":
                self.parts.adapters.fuse_pending()  # the run's LoRAs, fused only now that they are converted
            ov_model(conversion, "none")  # from the torch weights; the float16 and int8 forms from this file
        adapters = self.parts.adapters
        if weights is not None and (name == "vae" or not (adapters.loras or adapters.fused or adapters.embeddings)):
            # before the other forms are made and compiled: never the torch weights and those in memory at once
            keep = final_layer_norm(self.parts.text_encoder) if name == "text_encoder" else None
            weights.drop(name, keep)  # the plain model's weights load again from the folder if needed
        xml = ov_model(conversion, quantize)
        ahead = self.prefetch.take(conversion.slot, xml, shapes) if self.prefetch else None
        compiled = ahead if ahead is not None else compile_for_cpu(xml, self.precision, shapes)
        if self.prefetch:
            self.prefetch.record(conversion.slot, xml, shapes)
        self.compiled[conversion.slot] = (made, compiled)
        return compiled

    def release_buffers(self, but: str) -> None:
        """Give back every compiled part's working memory (its activation buffers, not its weights) except the
        part `but`'s: called before the VAE decodes, so the denoising parts' buffers and the decoder's are
        never held at once (SD1.5 at 512x512 in float32: 0.2 GiB off the peak); a part's next call allocates
        them again, in milliseconds."""
        for slot, (_, compiled) in self.compiled.items():
            if slot != but:
                with contextlib.suppress(RuntimeError):  # OpenVINO refuses while another thread infers: kept
                    compiled.release_memory()

    def load_torch(self, names: tuple[str, ...], why: str) -> None:
        """The torch modules' weights before LoRAs or embeddings change them (sdgen/models/adapters.py)."""
        if self.weights is not None:
            for name in names:
                self.weights.ensure(name, why)

    def identity(self) -> dict[str, Any]:
        """The model's identity in every part's key, found once (a local folder's files are listed)."""
        if self._identity is None:
            self._identity = model_identity(self.parts.source)
        return self._identity

    def loras(self) -> list[Any]:
        return [(lora.scale, file_identity(lora.source)) for lora in self.parts.adapters.loras]


def use_openvino(
    parts: StableDiffusionParts, precision: str, quantize: str, loaders: Mapping[str, Callable[[], Any]],
    prefetch: Prefetch | None = None,
) -> None:
    """Switch a loaded model to OpenVINO: the VAE replaced by its wrapper, the U-Net and text encoder
    called through theirs (engine/plugins' base predictor, pipeline's text encoder). `loaders`: how each
    torch module of a model folder loads its weights, when it was made empty (sdgen/engine/openvino_weights.py)."""
    loaders = {name: load for name, load in loaders.items() if name in MODULE_OF_PART.values()}
    runtime = OpenVINOParts(parts, precision, quantize, TorchWeights(parts, loaders) if loaders else None,
                            prefetch=prefetch or Prefetch.of(parts.source, precision, quantize))
    parts.openvino = runtime
    parts.vae = OpenVINOVae(parts.vae, runtime)
    log.info("OpenVINO back end: %s, weights %s.", {"float32": "f32", "bfloat16": "bf16"}[precision], quantize)


def as_numpy(tensor: torch.Tensor) -> Any:
    array = tensor.detach().to("cpu").float() if tensor.is_floating_point() else tensor.cpu()
    return array.contiguous().numpy()  # an expanded or sliced tensor (T2I features, a guided half) made whole


def ov_timestep(t: Any) -> torch.Tensor:
    """A step's timestep as the converted models take it: float32 of shape (1,)."""
    import torch

    return torch.as_tensor(t, dtype=torch.float32).reshape(1)


def run_part(compiled: Any, *inputs: torch.Tensor) -> list[torch.Tensor]:
    """The compiled model's outputs for these inputs, as torch tensors (float32)."""
    import torch

    request = compiled.create_infer_request()
    request.infer([as_numpy(tensor) for tensor in inputs], share_inputs=True)
    return [torch.from_numpy(request.get_output_tensor(i).data.copy()) for i in range(len(compiled.outputs))]


def traceable(owner: Any, forward: Callable[..., Any], held: Sequence[Any] = ()) -> Any:
    """`forward(owner, *inputs)` as a torch module holding `owner` and the modules `held` (what torch.jit.trace
    traces: a module's forward over plain tensors, its weights found through its submodules)."""
    import torch

    class Traceable(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.owner = owner
            self.held = torch.nn.ModuleList(held)

        def forward(self, *inputs: Any) -> Any:
            return forward(self.owner, *inputs)

    return Traceable()


# ---- text encoder ------------------------------------------------------------------------------------


class OpenVINOTextEncoder:
    """Called as CLIPTextModel is by sdgen/engine/text.py: `(ids)[0]`, `(ids, output_hidden_states=True)
    .hidden_states`; the final layer norm (clip skip) is the torch module's own."""

    def __init__(self, runtime: OpenVINOParts) -> None:
        self.runtime = runtime
        self.module = runtime.parts.text_encoder

    @property
    def final_layer_norm(self) -> Any:
        norm = final_layer_norm(self.module)
        weights = self.runtime.weights
        return norm if weights is None else weights.norm(norm)

    def __call__(self, ids: torch.Tensor, output_hidden_states: bool = False) -> Any:
        runtime = self.runtime
        embeddings = [(ref.token, file_identity(ref.path)) for ref in runtime.parts.adapters.embeddings]
        key = {**runtime.identity(), "loras": runtime.loras(), "embeddings": embeddings}
        conversion = Conversion("text_encoder", lambda: _text_forward(self.module), lambda: (ids,), key)
        outputs = run_part(runtime.model(conversion, (ids,)), ids)
        if output_hidden_states:
            return SimpleNamespace(last_hidden_state=outputs[0], hidden_states=tuple(outputs[1:]))
        return (outputs[0],)


def _text_forward(module: Any) -> Any:
    def forward(module: Any, ids: Any) -> Any:
        outputs = module(ids, output_hidden_states=True)
        return (outputs.last_hidden_state, *outputs.hidden_states)

    return traceable(module, forward)


def text_encoder_of(parts: StableDiffusionParts) -> Any:
    """The text encoder the pipeline calls: the torch one, or its OpenVINO wrapper."""
    runtime = getattr(parts, "openvino", None)
    return parts.text_encoder if runtime is None else OpenVINOTextEncoder(runtime)


# ---- VAE ------------------------------------------------------------------------------------------------


class OpenVINOVae:
    """Called as AutoencoderKL is by sdgen/engine/latents.py: `.decode(z, return_dict=False)[0]`,
    `.encode(x).latent_dist` (diffusers' own DiagonalGaussianDistribution, sampled with the image's
    generator as before), `.dtype`, `.config`, `.to()`; the torch VAE stays at `.module`."""

    def __init__(self, module: Any, runtime: OpenVINOParts) -> None:
        self.module, self.runtime, self.config = module, runtime, module.config
        parts = runtime.parts
        self.key = {**runtime.identity(), "vae": parts.vae_hash or parts.vae_source}  # --vae by its hash

    @property
    def dtype(self) -> torch.dtype:
        import torch

        return torch.float32

    def to(self, *args: Any, **kwargs: Any) -> OpenVINOVae:
        return self  # the compiled model keeps its precision

    def decode(self, latents: torch.Tensor, return_dict: bool = False) -> tuple[torch.Tensor]:
        vae = self.module
        conversion = traced_part("vae_decoder", lambda: _vae_forward(vae, "decode"), (latents,), self.key,
                                 size_factor(self.config))
        self.runtime.release_buffers(but=conversion.slot)
        return (run_part(self.runtime.model(conversion, (latents,)), latents)[0],)

    def encode(self, image: torch.Tensor) -> Any:
        from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

        vae = self.module
        conversion = traced_part("vae_encoder", lambda: _vae_forward(vae, "encode"), (image,), self.key,
                                 size_factor(self.config) ** 2)  # the image's sides: 64 for SD's
        moments = run_part(self.runtime.model(conversion, (image,)), image)[0]
        return SimpleNamespace(latent_dist=DiagonalGaussianDistribution(moments))


def _vae_forward(vae: Any, direction: str) -> Any:
    def forward(vae: Any, x: Any) -> Any:
        if direction == "decode":
            return vae.decode(x, return_dict=False)[0]
        return vae.encode(x).latent_dist.parameters

    return traceable(vae, forward)
