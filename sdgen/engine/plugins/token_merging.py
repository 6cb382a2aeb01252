"""Token merging (tomesd, Bolya & Hoffman 2023, `--token-merging R`): fewer attention tokens in the U-Net's
transformer blocks at full latent resolution, a slightly different picture. Tested against tomesd on
diffusers' pipeline in tests/test_stepsavers.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sdgen.engine.plugins.base import Plugin
from sdgen.errors import NAME, InvalidRequestError

if TYPE_CHECKING:  # pragma: no cover
    from sdgen.engine.loader import StableDiffusionParts
    from sdgen.engine.request import ModelSpec


def merge_tokens(parts: StableDiffusionParts, spec: ModelSpec) -> float | None:
    """Patch the U-Net with tomesd at the spec's ratio; None when off. `use_rand=False`: tomesd's random pick
    forks torch's global RNG, which would make a seed's picture depend on what ran before and on the
    batch; the fixed pick keeps both contracts."""
    if not spec.token_merging:
        return None
    import tomesd

    tomesd.apply_patch(parts.unet, ratio=spec.token_merging, use_rand=False)
    return spec.token_merging


def _check(spec: Any) -> None:
    ratio = spec.token_merging
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= 0.75:
        raise InvalidRequestError(
            f"Invalid {NAME} {ratio!r}: a fraction of the tokens from 0 (off) to 0.75 (e.g. 0.5).", "token_merging"
        )


PLUGIN = Plugin("token_merging", options=("token_merging",), load=merge_tokens, check=_check)
