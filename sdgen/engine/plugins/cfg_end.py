"""The guidance cut-off (`--cfg-end F`): fewer U-Net FLOPs per late step, a slightly different picture.

Classifier-free guidance doubles the batch; late steps refine detail that guidance barely moves, so after
the first part of the steps only the conditional half runs (diffusers' SDCFGCutoffCallback, counted the
same way). The registry turns guidance off through the loop's step-end hook after the steps left here.
"""

from __future__ import annotations

from typing import Any

from sdgen.engine.plugins.base import Plugin, Run
from sdgen.errors import NAME, InvalidRequestError


def guided_steps(total: int, cfg_end: float) -> int:
    """How many of the first steps use guidance. SDCFGCutoffCallback drops it after step index
    int(total * F), so that step is still guided: int(total * F) + 1 steps, all of them when F is 1."""
    if cfg_end >= 1.0:
        return total
    return min(total, int(total * cfg_end) + 1)


def _guided_steps(run: Run) -> int:
    return guided_steps(len(run.timesteps), run.request.cfg_end)


def _check(request: Any) -> None:
    value = request.cfg_end
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise InvalidRequestError(
            f"Invalid {NAME} {value!r}: a fraction of the steps from 0 to 1 (e.g. 0.5; 1 = always).", "cfg_end"
        )


PLUGIN = Plugin("cfg_end", options=("cfg_end",), guided_steps=_guided_steps, check=_check)
