"""How many steps an image-to-image or hires pass runs, in sdgen's terms and in A1111's, and the A1111
fields that make A1111 run the steps sdgen ran (docs/usage.md#what-a1111-reads).

sdgen counts as diffusers does: `--steps N --strength s` makes an N-step schedule and runs its last
k = int(N s) steps (the hires pass likewise with --hires-steps). A1111 counts otherwise
(modules/sd_samplers_common.py, setup_img2img_steps, and the k-diffusion samplers' sigmas[steps - t_enc - 1:]):
- image-to-image: an N-step schedule, t_enc = int(min(s, 0.999) N), and it runs t_enc + 1 steps;
- the hires pass: `Hires steps` k are the steps it runs, of a schedule of int(k / min(s, 0.999)) steps;
  `Denoising strength: 0` runs none (the upscaled image is the result).
sdgen keeps its own counting (its pictures equal diffusers' pipelines) and writes the A1111 text so that
A1111 runs the same steps of the same schedule: `Hires steps` are the steps run, and `Denoising strength`
is, where A1111's rounding needs it, the nearest short number under which A1111 counts the same (the
sdgen record keeps the strength as given). Reading an A1111 text, sdgen turns A1111's counting back into
its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable

_CAP = 0.999  # A1111's min(denoising_strength, 0.999)


def img2img_steps_run(steps: int, strength: float) -> int:
    """sdgen's (and diffusers') image-to-image: the last int(steps x strength) steps of the schedule."""
    return min(int(steps * strength), steps)


def a1111_img2img_strength(steps: int, strength: float) -> str:
    """The `Denoising strength` under which A1111 runs the steps sdgen ran: t_enc + 1 = k."""
    run = img2img_steps_run(steps, strength)
    return _nearest(strength, lambda value: int(min(value, _CAP) * steps) + 1 == run)


def sdgen_img2img_strength(steps: int, a1111_strength: float) -> float:
    """The sdgen strength that runs the steps A1111 ran for `Steps: steps, Denoising strength: x`."""
    run = min(int(min(a1111_strength, _CAP) * steps) + 1, steps)
    return _exact_fraction(run, steps)


def a1111_hires(hires_steps: int, strength: float) -> tuple[int, str]:
    """(`Hires steps`, `Denoising strength`) under which A1111 runs sdgen's hires pass: the same steps of a
    schedule of the same length."""
    run = img2img_steps_run(hires_steps, strength)
    return run, _nearest(strength, lambda value: int(run / min(value, _CAP)) == hires_steps)


def sdgen_hires(steps_run: int, a1111_strength: float) -> tuple[int, float]:
    """(--hires-steps, --hires-strength) for A1111's `Hires steps: k, Denoising strength: x`."""
    schedule = int(steps_run / min(a1111_strength, _CAP))
    return schedule, _exact_fraction(steps_run, schedule)


def _exact_fraction(run: int, steps: int) -> float:
    """run / steps, nudged up where floating point would make int(steps x it) one short."""
    value = min(run / steps, 1.0)
    while int(steps * value) < run and value < 1.0:
        value = math.nextafter(value, 2.0)
    return value


def _nearest(given: float, accepts: Callable[[float], bool]) -> str:
    """`given` as A1111 text if A1111 counts it as sdgen does, else the accepted number with the fewest
    decimals (then nearest to `given`), as the text A1111 will parse."""
    text = f"{given:g}"
    if accepts(float(text)):
        return text
    for digits in range(1, 7):
        scale = 10**digits
        found = [m / scale for m in range(1, scale + 1) if accepts(float(f"{m / scale:g}"))]
        if found:
            return f"{min(found, key=lambda value: abs(value - given)):g}"
    return text  # no number of 6 decimals does it (never for schedules under 1000 steps)
