"""FreeU (`--freeu b1,b2,s1,s2`, Si et al. 2023): in the U-Net's first two up-blocks, half the backbone's
channels are amplified by b1/b2 and the low frequencies of the skip connections damped by s1/s2. No extra
U-Net pass. diffusers' `UNet2DConditionModel.enable_freeu` does it; sdgen switches it on for each denoising
run and puts the up-blocks back exactly as they were afterwards, so the loaded model is unchanged (tested
against `pipe.enable_freeu` in tests/test_guidance.py). The paper's SD1.5 values: 1.5,1.6,0.9,0.2.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sdgen.engine.denoise import Guide, NoisePredictor
from sdgen.engine.plugins.base import Plugin, Run, plain_unet, uncompiled
from sdgen.errors import NAME, InvalidRequestError

if TYPE_CHECKING:  # pragma: no cover
    from sdgen.engine.request import GenerationRequest

FACTORS = ("b1", "b2", "s1", "s2")  # the order of --freeu's values, as the paper and A1111/Forge list them
MAX_FACTOR = 10.0
_ABSENT = object()


def freeu_factors(text: str) -> dict[str, float]:
    """'1.5,1.6,0.9,0.2' -> {'b1': 1.5, 'b2': 1.6, 's1': 0.9, 's2': 0.2}; InvalidRequestError naming the value."""
    parts = [part.strip() for part in str(text).split(",")]
    try:
        values = [float(part) for part in parts]
    except ValueError:
        values = []
    if len(values) != len(FACTORS) or not all(math.isfinite(v) and 0 <= v <= MAX_FACTOR for v in values):
        raise InvalidRequestError(
            f"Invalid {NAME} {text!r}: four numbers b1,b2,s1,s2 from 0 to {MAX_FACTOR:g} (SD1.5: 1.5,1.6,0.9,0.2).",
            "freeu",
        )
    return dict(zip(FACTORS, values, strict=True))


@contextmanager
def _in_run(run: Run) -> Iterator[Guide | None]:
    if not run.request.freeu:
        yield None
        return
    unet = plain_unet(run.parts.unet)
    before = [{key: getattr(block, key, _ABSENT) for key in FACTORS} for block in unet.up_blocks]
    factors = freeu_factors(run.request.freeu)
    unet.enable_freeu(**factors)
    try:
        yield None
    finally:  # exactly as before: attributes the blocks did not have are removed again
        for block, values in zip(unet.up_blocks, before, strict=True):
            for key, value in values.items():
                if value is _ABSENT:
                    delattr(block, key)
                else:
                    setattr(block, key, value)


def _check(request: GenerationRequest) -> None:
    if request.freeu:
        freeu_factors(request.freeu)


def _a1111_fields(request: GenerationRequest) -> list[tuple[str, object]]:
    """Forge's FreeU Integrated fields."""
    if not request.freeu:
        return []
    factors = freeu_factors(request.freeu)
    return [("freeu_enabled", "True"), *((f"freeu_{key}", factors[key]) for key in FACTORS)]


def _from_a1111(fields: Mapping[str, str]) -> dict[str, Any]:
    if fields.get("freeu_enabled", "").lower() != "true":
        return {}
    return {"freeu": ",".join(fields.get(f"freeu_{key}", "") for key in FACTORS)}


def _from_script(args: Sequence[Any]) -> dict[str, Any]:
    """Forge's FreeU Integrated args: [enabled, b1, b2, s1, s2, (start, end)]."""
    if not args or args[0] is not True:
        return {"freeu": None}
    return {"freeu": ",".join(str(value) for value in args[1:5])}


def _wrap(predictor: NoisePredictor, run: Run) -> NoisePredictor:
    return uncompiled(predictor, run, "--freeu") if run.request.freeu else predictor


PLUGIN = Plugin(
    "freeu", options=("freeu",), wrap_predictor=_wrap, in_run=_in_run, check=_check,
    a1111_fields=_a1111_fields, from_a1111=_from_a1111,
    scripts=("freeu",), from_script=_from_script,
)
