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
    Option(
        "sd_upscale_seam_fix", int, 0, "SD upscale: repaint a band this wide over each seam after the tiles "
        "(Ultimate SD Upscale's band pass; 64 typical).", REQUEST, empty="0, off", commands=RUNS,
        shapes_picture=True, needs="sd_upscale",
    ),
    Option(
        "sd_upscale_seam_strength", float, 0.35, "SD upscale: denoising strength of the seam bands.", REQUEST,
        commands=RUNS, shapes_picture=True, needs="sd_upscale",
    ),
    # detail repair, as ADetailer (sdgen/engine/detail.py, sdgen/models/detectors.py)
    Option(
        "detail", list, None, "Detail repair (ADetailer): find each face (face, profile, eyes, upperbody, fullbody, "
        "a cascade .xml or a YOLO .pt) and inpaint it again; repeat for more passes.", REQUEST,
        field_name="details", commands=RUNS, shapes_picture=True,
    ),
    Option(
        "detail_prompt", str, None, "Detail repair: the prompt of the repainted regions.", REQUEST,
        empty="the image's prompt", commands=RUNS, shapes_picture=True, needs="detail", a1111="ADetailer prompt",
    ),
    Option(
        "detail_strength", float, 0.4, "Detail repair: denoising strength of each region.", REQUEST, commands=RUNS,
        shapes_picture=True, needs="detail", a1111="ADetailer denoising strength",
    ),
    Option(
        "detail_steps", int, None, "Detail repair: steps of each region's inpainting.", REQUEST, empty="--steps",
        commands=RUNS, shapes_picture=True, needs="detail", a1111="ADetailer steps",
    ),
    Option(
        "detail_padding", int, 32, "Detail repair: pixels around each region that its inpainting sees.", REQUEST,
        commands=RUNS, shapes_picture=True, needs="detail", a1111="ADetailer inpaint padding",
    ),
    Option(
        "detail_blur", int, 4, "Detail repair: blur of each region's mask, in pixels.", REQUEST, commands=RUNS,
        shapes_picture=True, needs="detail", a1111="ADetailer mask blur",
    ),
    # face restoration, as A1111's "Restore faces" (sdgen/engine/face_restore.py)
    Option(
        "restore_faces", str, None, "Face restoration: a GFPGAN model (a file or a name in --upscaler-dir) run on "
        "each face of the finished picture.", REQUEST, empty="off", shapes_picture=True,
    ),
    Option(
        "restore_faces_visibility", float, 1.0, "Face restoration: how much of the restored face shows, 0 to 1 "
        "(A1111's GFPGAN visibility).", REQUEST, shapes_picture=True, needs="restore_faces",
    ),
)
