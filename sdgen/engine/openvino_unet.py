"""--backend openvino's U-Net: the converted U-Net as the loop's base noise predictor (the torch one:
sdgen/engine/denoise.py's unet_predictor), taking ControlNet's residuals, T2I-Adapter's features and a plug-in's
inputs (IP-Adapter's image embeddings and scale) as inputs of their own converted forms (docs/openvino.md)."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sdgen.engine.openvino_parts import OpenVINOParts, ov_timestep, run_part, traceable
from sdgen.errors import GenerationError
from sdgen.models.openvino import size_factor, traced_part

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Callable, Mapping
    from contextlib import AbstractContextManager

    import torch

    from sdgen.engine.denoise import Conditioning, NoisePredictor


def calibration_inputs(runtime: OpenVINOParts, size: tuple[int, int], float_unet: NoisePredictor) -> list[Any]:
    from sdgen.engine.openvino_calibration import calibration_inputs

    return calibration_inputs(runtime, size, float_unet)


def unet_predictor(runtime: OpenVINOParts, quantize: str | None = None) -> NoisePredictor:
    """The converted U-Net as a NoisePredictor (the torch one: sdgen/engine/denoise.py's unet_predictor)."""

    unet = runtime.parts.unet

    def predict_noise(model_input: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        kwargs = cond.unet_kwargs()
        plugin = runtime.unet_extra if "added_cond_kwargs" in kwargs else None  # IP-Adapter's, while it runs
        added = plugin.inputs(kwargs.pop("added_cond_kwargs")) if plugin else ()
        extra = sorted(name for name in kwargs if name not in ("encoder_hidden_states", *UNET_INPUTS))
        if extra:
            raise GenerationError(f"--backend openvino: the converted U-Net takes no {', '.join(extra)}.")
        sample = cond.unet_input(model_input)
        timestep = ov_timestep(t)
        layout = tuple((name, _as_list(kwargs[name])) for name in UNET_INPUTS if name in kwargs)
        inputs = (sample, timestep, kwargs["encoder_hidden_states"], *(x for _, given in layout for x in given),
                  *added)
        counts = tuple((name, len(given)) for name, given in layout)
        key = {**runtime.identity(), "loras": runtime.loras(), "in_channels": unet.config.in_channels,
               **({"inputs": counts} if counts else {}),  # the plain U-Net's key as before: caches stay valid
               **(plugin.key if plugin else {})}
        size = tuple(side * runtime.parts.vae_scale_factor for side in sample.shape[-2:])
        calibration = (lambda: calibration_inputs(runtime, size, unet_predictor(runtime, "none"))) \
            if not (counts or plugin) else None
        given = inputs if plugin is None else (*inputs[: len(inputs) - len(added)], *plugin.example(added))
        conversion = traced_part(unet_part(counts) + (plugin.suffix if plugin else ""),
                                 lambda: _unet_forward(unet, counts, plugin), given, key, size_factor(unet.config),
                                 calibration=calibration)
        return run_part(runtime.model(conversion, inputs, quantize), *inputs)[0].to(model_input.dtype)

    return predict_noise


@dataclass(frozen=True)
class UNetExtra:
    """Inputs a plugin adds to the converted U-Net for a run, taken from the call's `added_cond_kwargs`
    (IP-Adapter's image embeddings and scale: sdgen/engine/plugins/ip_adapter.py), and how the torch U-Net runs
    with them while it is traced. Its part is the U-Net's name + `suffix`, its key the U-Net's + `key`."""

    suffix: str
    key: Mapping[str, Any]
    inputs: Callable[[Mapping[str, Any]], tuple[torch.Tensor, ...]]
    example: Callable[[tuple[torch.Tensor, ...]], tuple[torch.Tensor, ...]]  # what the trace runs on
    # the U-Net set up for these inputs during the traced call: yields its extra keyword arguments
    patched: Callable[[Any, tuple[Any, ...]], AbstractContextManager[dict[str, Any]]]
    # the plugin's torch modules `patched` puts on the U-Net, held by the traced module so that the trace takes
    # their weights as the model's (loaded only when the U-Net is converted)
    modules: Callable[[], list[Any]]


# the U-Net's extra inputs the converted one takes after (sample, timestep, states), each as a list of tensors:
# ControlNet's residuals (down blocks, middle block) and T2I-Adapter's features (inside the down blocks)
UNET_INPUTS = ("down_block_additional_residuals", "mid_block_additional_residual",
               "down_intrablock_additional_residuals")


def unet_part(counts: tuple[tuple[str, int], ...]) -> str:
    """The converted U-Net's name for the extra inputs it takes (one cache folder and compiled slot each)."""
    names = {name for name, _ in counts}
    control = "-control" if names & set(UNET_INPUTS[:2]) else ""
    return f"unet{control}{'-adapter' if UNET_INPUTS[2] in names else ''}"


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (tuple, list)) else [value]


def _unet_forward(unet: Any, counts: tuple[tuple[str, int], ...] = (), plugin: UNetExtra | None = None) -> Any:
    """The U-Net with plain tensor inputs: (sample, timestep, states) and, in `counts`' order, each extra input's
    tensors (the middle block's residual is one tensor, the others lists), then a plugin's inputs."""

    def forward(unet: Any, sample: Any, timestep: Any, encoder_hidden_states: Any, *extra: Any) -> Any:
        kwargs, start = {}, 0
        for name, count in counts:
            given = list(extra[start : start + count])
            kwargs[name] = given[0] if name == "mid_block_additional_residual" else given
            start += count
        with plugin.patched(unet, extra[start:]) if plugin else nullcontext({}) as added:
            return unet(sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False,
                        **kwargs, **added)[0]

    return traceable(unet, forward, plugin.modules() if plugin else ())
