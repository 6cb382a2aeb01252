"""The steps an image-to-image or hires pass runs, in sdgen's counting and in A1111's: what sdgen writes
makes A1111 run the same steps of a schedule of the same length, and what sdgen reads from A1111's text
runs the steps A1111 ran. A1111's counting is written out here by hand from its source
(modules/sd_samplers_common.py setup_img2img_steps; the k-diffusion samplers run sigmas[steps - t_enc - 1:])."""

from __future__ import annotations

import pytest

from sdgen.record import accounting


def a1111_run(steps: int, strength: float, hires_steps: int | None = None) -> tuple[int, int]:
    """(schedule length, steps run) of an A1111 image-to-image run (hires_steps None) or hires pass."""
    if hires_steps is not None:  # the hires pass passes its steps: the "fix steps" branch
        requested = hires_steps or steps
        schedule = int(requested / min(strength, 0.999)) if strength > 0 else 0
        t_enc = requested - 1
    else:
        schedule, t_enc = steps, int(min(strength, 0.999) * steps)
    sigmas = schedule + 1
    return schedule, max(sigmas - (schedule - t_enc - 1) - 1, 0) if schedule else 0


def sdgen_run(steps: int, strength: float) -> tuple[int, int]:
    """(schedule length, steps run) as diffusers and sdgen count: the last int(steps x strength) steps."""
    return steps, min(int(steps * strength), steps)


CASES = [(steps, strength) for steps in (2, 3, 4, 6, 10, 20, 25, 30, 50, 150)
         for strength in (0.05, 0.1, 0.25, 0.3, 0.33, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9, 0.95, 1.0)
         if int(steps * strength) >= 1]


@pytest.mark.parametrize(("steps", "strength"), CASES)
def test_the_img2img_strength_written_makes_a1111_run_sdgens_steps(steps, strength) -> None:
    written = float(accounting.a1111_img2img_strength(steps, strength))
    assert a1111_run(steps, written) == sdgen_run(steps, strength)
    assert sdgen_run(steps, accounting.sdgen_img2img_strength(steps, written)) == sdgen_run(steps, strength)


@pytest.mark.parametrize(("steps", "strength"), CASES)
def test_the_hires_fields_written_make_a1111_run_sdgens_hires_pass(steps, strength) -> None:
    run, written = accounting.a1111_hires(steps, strength)
    assert a1111_run(0, float(written), hires_steps=run) == sdgen_run(steps, strength)
    schedule, back = accounting.sdgen_hires(run, float(written))
    assert sdgen_run(schedule, back) == sdgen_run(steps, strength)


@pytest.mark.parametrize("a1111_strength", [0.3, 0.45, 0.5, 0.7, 0.75, 1.0])
@pytest.mark.parametrize("steps", [4, 20, 28])
def test_an_a1111_text_is_read_as_the_steps_a1111_ran(steps, a1111_strength) -> None:
    read = accounting.sdgen_img2img_strength(steps, a1111_strength)
    assert sdgen_run(steps, read) == a1111_run(steps, a1111_strength)
    hires_steps = max(1, steps // 2)
    schedule, strength = accounting.sdgen_hires(hires_steps, a1111_strength)
    assert sdgen_run(schedule, strength) == a1111_run(0, a1111_strength, hires_steps=hires_steps)


def test_the_users_own_strength_is_kept_where_a1111_counts_it_the_same() -> None:
    assert accounting.a1111_hires(20, 0.5) == (10, "0.5")  # 10 steps of a 20-step schedule either way
    assert accounting.a1111_hires(4, 0.5) == (2, "0.5")
    assert accounting.a1111_img2img_strength(20, 1.0) == "1"  # A1111 caps at 0.999: 19 + 1 steps
    assert accounting.a1111_img2img_strength(2, 0.5) == "0.4"  # int(0.4 x 2) + 1 = 1 step, as int(0.5 x 2)
