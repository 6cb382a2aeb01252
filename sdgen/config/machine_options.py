"""The option table's rows of the machine a run uses: CPU threads (sdgen/hardware/threads.py). The rest of the
table, and what a row says: sdgen/config/options.py."""

from __future__ import annotations

from sdgen.config.optiontable import MAKERS, MODEL, NOISE, UPSCALE, Option

MACHINE_ROWS: tuple[Option, ...] = (
    Option(
        "threads", int, None,
        "CPU threads of torch (set before any work) and of --backend openvino; `sdgen doctor` shows the choice.",
        MODEL, empty="one per physical core", commands=MAKERS | {NOISE, UPSCALE},
    ),
)
