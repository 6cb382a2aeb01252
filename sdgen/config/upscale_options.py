"""The option table's rows of `sdgen upscale` (sdgen/runs/upscale.py): which upscaler model, by how much, in
which tiles (the rest of the table, and what a row says: sdgen/config/options.py)."""

from __future__ import annotations

from sdgen.config.optiontable import UPSCALE, UPSCALING, Option

UPSCALE_ROWS: tuple[Option, ...] = (
    Option(
        "upscaler", str, None, "The upscaler model: a file or a name in --upscaler-dir (ESRGAN, Real-ESRGAN, "
        "SwinIR, HAT, DAT, OmniSR, SPAN ... read by spandrel).", UPSCALING, commands=frozenset({UPSCALE}),
    ),
    Option(
        "upscale_by", float, None, "Enlarge by this factor (Lanczos after the model for one it does not have).",
        UPSCALING, flag="--scale", empty="the model's own", commands=frozenset({UPSCALE}),
    ),
    Option(
        "upscale_tile", int, 256, "Tile side in input pixels (0: the whole picture at once): memory grows with it.",
        UPSCALING, flag="--tile", commands=frozenset({UPSCALE}),
    ),
    Option(
        "upscale_overlap", int, 16, "Pixels of context each tile sees of its neighbours.", UPSCALING,
        flag="--tile-overlap", commands=frozenset({UPSCALE}),
    ),
)
