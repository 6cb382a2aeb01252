"""Guidance rescale (`--guidance-rescale F`, Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps
are Flawed", section 3.4): strong classifier-free guidance over-exposes; the guided prediction is scaled to
the standard deviation of the conditional one, and mixed with the unscaled one by F. diffusers'
StableDiffusionPipeline(guidance_rescale=F) does the same (rescale_noise_cfg); tested against it in
tests/test_guidance.py. No extra U-Net pass; only while guidance runs, as in diffusers.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sdgen.engine.denoise import Guide, Guided
from sdgen.engine.plugins.base import Plugin, Run
from sdgen.errors import NAME, InvalidRequestError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from sdgen.engine.request import GenerationRequest

# The field of the A1111 extension CFG_Rescale_webui; older versions and sd-webui-neutral-prompt wrote the others
A1111_FIELD = "CFG Rescale"
A1111_ALIASES = (A1111_FIELD, "CFG Rescale φ", "CFG Rescale phi")


def rescaled(noise: torch.Tensor, noise_text: torch.Tensor, fraction: float) -> torch.Tensor:
    """`noise` given the per-image standard deviation of `noise_text` (over channels and pixels), mixed with
    `noise` itself by `fraction`."""
    dims = tuple(range(1, noise.ndim))
    scaled = noise * (noise_text.std(dim=dims, keepdim=True) / noise.std(dim=dims, keepdim=True))
    return fraction * scaled + (1 - fraction) * noise


@contextmanager
def _in_run(run: Run) -> Iterator[Guide | None]:
    fraction = run.request.guidance_rescale
    if not fraction:
        yield None
        return

    def guide(step: Guided) -> torch.Tensor:
        if step.noise_uncond is None:  # guidance off (scale <= 1, or past --cfg-end): nothing to rescale
            return step.noise
        return rescaled(step.noise, step.noise_text, fraction)

    yield guide


def _check(request: GenerationRequest) -> None:
    value = request.guidance_rescale
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise InvalidRequestError(
            f"Invalid {NAME} {value!r}: a fraction from 0 (off) to 1 (0.7 is typical).", "guidance_rescale"
        )


def _a1111_fields(request: GenerationRequest) -> list[tuple[str, object]]:
    return [(A1111_FIELD, request.guidance_rescale)] if request.guidance_rescale else []


def _from_a1111(fields: Mapping[str, str]) -> dict[str, Any]:
    for name in A1111_ALIASES:
        if name in fields:
            return {"guidance_rescale": float(fields[name])}
    return {}


def _from_script(args: Sequence[Any]) -> dict[str, Any]:
    """CFG Rescale Extension's args: [phi, DDIM trailing]; its trailing DDIM schedule is not this option's."""
    if len(args) > 1 and args[1] is True:
        raise InvalidRequestError(
            f"Invalid {NAME} DDIM Trailing {args[1]!r}: send false; for trailing timesteps choose sdgen's sampler.",
            "guidance_rescale",
        )
    return {"guidance_rescale": args[0]} if args else {}


PLUGIN = Plugin(
    "guidance_rescale", options=("guidance_rescale",), in_run=_in_run, check=_check, a1111_fields=_a1111_fields,
    from_a1111=_from_a1111, scripts=("cfg rescale",), from_script=_from_script,
)
