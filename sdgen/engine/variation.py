"""Variation seeds, as A1111 makes them: the seed's noise bent towards a second seed's, and noise drawn at
another size placed in the middle so that a picture can change size and keep its composition.

A1111 (modules/rng.py, ImageRNG.first) draws, for each image, the subseed's noise and the seed's noise at the
size the noise is "resized from" (the image's own size when none is given), joins them by spherical
interpolation (`slerp(strength, seed_noise, subseed_noise)`), and pastes the result centred into the seed's
noise at the image's size (cropped where it is larger). The image's generator draws exactly one tensor of the
image's size first either way, so the noise that ancestral samplers draw later is the seed's as always.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import torch

# A1111's threshold: noises this close are joined linearly (slerp divides by sin(angle))
_NEARLY_PARALLEL = 0.9995
MAX_SEED = 2**63 - 1  # as the request's seed
_MAX_SIDE = 4096


@dataclass(frozen=True)
class Variation:
    """What bends each image's starting noise: its subseed, how far towards it, and the latent size (h, w)
    the noise is drawn at (None: the image's own)."""

    subseeds: tuple[int, ...]
    strength: float
    resize_from: tuple[int, int] | None = None

    @property
    def active(self) -> bool:
        return (bool(self.subseeds) and self.strength != 0) or self.resize_from is not None


def slerp(strength: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's spherical interpolation of two (C, H, W) noises. Like A1111 it measures the angle along dim 1
    (each channel's columns), one angle per (channel, column): kept so that the same seeds give A1111's noise."""
    import torch

    low_unit = low / torch.norm(low, dim=1, keepdim=True)
    high_unit = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_unit * high_unit).sum(1)
    if dot.mean() > _NEARLY_PARALLEL:
        return low * strength + high * (1 - strength)  # A1111's own (reversed) weights for this case
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - strength) * omega) / so).unsqueeze(1) * low + (
        torch.sin(strength * omega) / so
    ).unsqueeze(1) * high


def place_centred(noise: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """`noise` (C, h, w) pasted into the middle of `target` (C, H, W), each cropped to the other where it is
    larger, with A1111's rounding (the offsets are floor((H - h) / 2))."""
    dy, dx = (target.shape[1] - noise.shape[1]) // 2, (target.shape[2] - noise.shape[2]) // 2
    h = noise.shape[1] if dy >= 0 else noise.shape[1] + 2 * dy
    w = noise.shape[2] if dx >= 0 else noise.shape[2] + 2 * dx
    ty, tx = max(dy, 0), max(dx, 0)
    sy, sx = max(-dy, 0), max(-dx, 0)
    placed = target.clone()
    placed[:, ty : ty + h, tx : tx + w] = noise[:, sy : sy + h, sx : sx + w]
    return placed


def varied_noise(
    seeds: Sequence[int],
    generators: Sequence[torch.Generator],
    shape: tuple[int, ...],
    variation: Variation,
    new_generator: Callable[[int], torch.Generator],
    device: str,
    dtype: torch.dtype,
) -> torch.Tensor:
    """(B, C, H, W) starting noise of images with these seeds and their generators (each drawn from once, at
    the image's size, as without a variation); `new_generator(seed)` makes a fresh one for the other draws."""
    import torch

    one = tuple(shape[1:])  # (C, H, W)
    drawn = (one[0], *variation.resize_from) if variation.resize_from is not None else one
    noises = []
    for index, (seed, generator) in enumerate(zip(seeds, generators, strict=True)):
        own = _draw(generator, one, dtype)  # the image's generator draws its first tensor as it always does
        noise = own if drawn == one else _draw(new_generator(seed), drawn, dtype)
        if variation.subseeds and variation.strength != 0:
            subseed = variation.subseeds[index] if index < len(variation.subseeds) else 0  # A1111's fallback
            sub = _draw(new_generator(subseed), drawn, dtype)
            noise = slerp(variation.strength, noise.float(), sub.float()).to(dtype)
        if drawn != one:
            noise = place_centred(noise, own)
        noises.append(noise)
    return torch.stack(noises).to(device)


def _draw(generator: torch.Generator, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """One image's normal draw as diffusers' randn_tensor makes it: on the generator's device, in `dtype`."""
    import torch

    return torch.randn((1, *shape), generator=generator, device=generator.device, dtype=dtype)[0]


def checked_variation(
    subseed: object, strength: object, resize_from: object, num_images: int
) -> tuple[int | None, str | None]:
    """The request's subseed (drawn at random for a strength without one; None without a strength, where it
    means nothing) and its `seed_resize_from` as "WxH" (None: off), or InvalidRequestError naming the value."""
    import secrets

    from sdgen.errors import NAME, InvalidRequestError

    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0 <= strength <= 1:
        raise InvalidRequestError(
            f"Invalid {NAME} {strength!r}: a fraction from 0 (the seed's noise) to 1 (the variation seed's), "
            "e.g. 0.1.",
            "subseed_strength",
        )
    if not strength:
        subseed = None
    elif subseed is None:
        subseed = secrets.randbelow(2**32)  # A1111-sized, like a random seed
    highest = MAX_SEED - num_images + 1
    whole = isinstance(subseed, int) and not isinstance(subseed, bool)
    if subseed is not None and not (whole and 0 <= subseed <= highest):  # type: ignore[operator]
        raise InvalidRequestError(f"Invalid {NAME} {subseed!r}: must be a whole number from 0 to {highest}.", "subseed")
    return subseed, _checked_size(resize_from)


def _checked_size(value: object) -> str | None:
    """"640x512" (or 640X512, 640,512) -> "640x512"; None, "" and "0x0" are off (A1111's -1/0)."""
    from sdgen.errors import NAME, InvalidRequestError

    if value is None or str(value).strip() in ("", "0x0", "-1x-1"):
        return None
    text = str(value).strip().lower().replace(",", "x")
    sides = text.split("x")
    if len(sides) == 2 and all(side.strip().isdigit() for side in sides):
        width, height = (int(side) for side in sides)
        if 8 <= width <= _MAX_SIDE and 8 <= height <= _MAX_SIDE:
            return f"{width}x{height}"
    raise InvalidRequestError(
        f"Invalid {NAME} {value!r}: give WIDTHxHEIGHT in pixels, each from 8 to {_MAX_SIDE} (e.g. 512x512).",
        "seed_resize_from",
    )


def resize_latent_size(resize_from: str | None, scale: int) -> tuple[int, int] | None:
    """"WxH" pixels -> the (h, w) of the latents drawn at that size (A1111 divides each side by 8)."""
    if resize_from is None:
        return None
    width, height = (int(side) for side in resize_from.split("x"))
    return height // scale, width // scale
