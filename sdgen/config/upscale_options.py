"""The option table's rows of enlarging: `sdgen upscale` (sdgen/runs/upscale.py: which upscaler model, by how
much, in which tiles) and SD upscale (sdgen/engine/sd_upscale.py: a generation that repaints an enlarged
init image tile by tile). The rest of the table, and what a row says: sdgen/config/options.py."""

from __future__ import annotations

from sdgen.config.optiontable import REQUEST, RUNS, UPSCALE, UPSCALING, Option

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
    Option(
        "sd_upscale", float, None, "SD upscale: enlarge --init-image this much, then repaint it with "
        "image-to-image tile by tile (tiles of --width x --height).", REQUEST, commands=RUNS, shapes_picture=True,
        needs="init_image",
    ),
    Option(
        "sd_upscale_upscaler", str, "lanczos", "SD upscale: lanczos or an upscaler model (a file or a name in "
        "--upscaler-dir).", REQUEST, commands=RUNS, shapes_picture=True, needs="sd_upscale",
    ),
    Option(
        "sd_upscale_overlap", int, 64, "SD upscale: pixels the tiles overlap by, blended across.", REQUEST,
        commands=RUNS, shapes_picture=True, needs="sd_upscale",
    ),
)
