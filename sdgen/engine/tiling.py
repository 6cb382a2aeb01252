"""Seamless tiling: circular padding in every 2-D convolution of the U-Net and the VAE, on one axis or both.

A convolution that pads circularly sees, past the picture's right edge, its left edge (and the top past the
bottom), so the picture it makes continues across its borders and tiles without a seam. A1111 switches its
Conv2d layers to `padding_mode="circular"`; sdgen pads each axis on its own (circularly on the chosen one,
with zeros on the other), which is the same for both axes, and puts every layer back as it was when the run
ends, however it ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sdgen.errors import NAME, InvalidRequestError

if TYPE_CHECKING:  # pragma: no cover
    import torch

AXES = {"both": (True, True), "x": (True, False), "y": (False, True)}  # -> (circular across x, across y)
_SPELLINGS = {"both": "both", "xy": "both", "true": "both", "x": "x", "y": "y", "none": None, "off": None,
              "false": None, "": None}


def checked_tiling(value: object) -> str | None:
    """--tiling's value: both, x or y (None: off), or InvalidRequestError naming it."""
    if value is None or value is False:
        return None
    if value is True:
        return "both"
    spelled = str(value).strip().lower()
    if spelled not in _SPELLINGS:
        raise InvalidRequestError(
            f"Invalid {NAME} {value!r}: choose both (--tiling alone), x (left and right edges meet) or y (top and "
            "bottom).",
            "tiling",
        )
    return _SPELLINGS[spelled]


@contextmanager
def tiled(modules: Iterable[Any], tiling: str | None) -> Iterator[None]:
    """Every Conv2d of `modules` pads circularly on `tiling`'s axes inside the block, and is itself again after
    (its forward is the class's once more), even when the block raises or is interrupted."""
    if tiling is None:
        yield
        return
    import torch

    across_x, across_y = AXES[tiling]
    convs = [layer for module in modules if module is not None for layer in module.modules()
             if isinstance(layer, torch.nn.Conv2d)]
    patched = []
    try:
        for conv in convs:
            if "_conv_forward" in vars(conv):  # tiled already (a nested run): leave it to the outer one
                continue
            conv._conv_forward = _circular_forward(conv, across_x, across_y)  # type: ignore[method-assign]
            patched.append(conv)
        yield
    finally:
        for conv in patched:
            del conv._conv_forward


def _circular_forward(conv: torch.nn.Conv2d, across_x: bool, across_y: bool) -> Any:
    """The layer's convolution with its padding done first, per axis: circular where the picture wraps,
    the layer's own (zeros) elsewhere."""
    import torch.nn.functional as F

    pad_y, pad_x = conv.padding if isinstance(conv.padding, tuple) else (conv.padding, conv.padding)
    if not isinstance(pad_x, int) or not isinstance(pad_y, int):  # padding="same"/"valid": left as it is
        return conv._conv_forward

    def forward(input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if pad_x:
            input = F.pad(input, (pad_x, pad_x, 0, 0), mode="circular" if across_x else "constant")
        if pad_y:
            input = F.pad(input, (0, 0, pad_y, pad_y), mode="circular" if across_y else "constant")
        return F.conv2d(input, weight, bias, conv.stride, 0, conv.dilation, conv.groups)

    return forward
