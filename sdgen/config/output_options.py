"""The option table's rows for what a run writes and shows: where images go, the pictures of the process, the
batch reader and the terminal (the rest of the table, and what a row says: sdgen/config/options.py)."""

from __future__ import annotations

from sdgen.config.optiontable import (
    BATCH,
    BOTH,
    GENERATE,
    GRID,
    LOADERS,
    MAKERS,
    MODEL,
    NOISE,
    OUTPUT,
    PICTURES,
    RUN,
    RUNS,
    SCHEDULE,
    SERVE,
    UPSCALE,
    Option,
)

OUTPUT_ROWS: tuple[Option, ...] = (
    # where the images go
    Option(
        "output", str, None, "FILE.png, a folder ending in /, or - for stdout.", OUTPUT, short="-o",
        empty="outputs/", commands=(LOADERS - {SERVE}) | {UPSCALE},
        help_for={
            BATCH: "Output folder. [default: outputs/]",
            UPSCALE: "FILE.png (one input), a folder ending in / or - for stdout. [default: beside each input]",
        },
    ),
    Option(
        "overwrite", bool, False, "Replace existing files.", OUTPUT, layered=False,
        commands=(LOADERS - {SERVE}) | {UPSCALE},
        help_for={BATCH: "Regenerate and replace finished images."},
    ),
    Option(
        "name", str, "{index:05d}-{seed}-{slug}", "File name template: {index} {seed} {slug} {steps} {scheduler}.",
        OUTPUT, commands=frozenset({GENERATE}),
    ),
    Option(
        "batch_name", str, "{line:05d}-{seed}-{slug}",
        "File name template: {line} {index} {seed} {slug} {steps} {scheduler}.", OUTPUT, flag="--name",
        commands=frozenset({BATCH}),
    ),
    Option(
        "rng", str, "cpu", "Where noise is drawn: cpu (same picture on every device) or device.", MODEL,
        commands=MAKERS | {NOISE}, shapes_picture=True,
    ),
    Option(
        "json", bool, False, "Print one JSON object per image on stdout.", OUTPUT, layered=False,
        commands=RUNS | {SCHEDULE},
        help_for={
            BATCH: "Print each image's manifest record on stdout (valid batch input).",
            GRID: "Print each cell's record on stdout, one JSON object per line.",
            SCHEDULE: "Print the numbers (alpha-bar per schedule, visited timesteps and sigmas) as JSON; no plot.",
        },
    ),
    Option(
        "save_control", bool, False,
        "Write each --control's map, as the ControlNet sees it at the picture's size, beside the image "
        "(IMAGE-control-0.png ...).", OUTPUT, commands=BOTH,
    ),
    Option(
        "metadata", bool, True, "Write A1111 parameters and sdgen's record into each PNG.", OUTPUT,
        commands=MAKERS | {NOISE},
    ),
    # pictures of the process (sdgen/pictures/)
    Option(
        "save_steps", str, None,
        "Write the denoising sequence: x_t and predicted x0 at chosen steps, the final image last (PNG).",
        PICTURES, layered=False, path=True, commands=frozenset({GENERATE}),
    ),
    Option(
        "every", int, None, "--save-steps/--animation: a frame every K steps.", PICTURES,
        commands=frozenset({GENERATE}), empty="--frames",
    ),
    Option(
        "frames", int, 8, "--save-steps/--animation: N evenly spaced frames (the last step always).", PICTURES,
        commands=frozenset({GENERATE}),
    ),
    Option(
        "animation", str, None, "Write the same frames as an animation (.gif or .webp).", PICTURES,
        layered=False, path=True, commands=frozenset({GENERATE}),
    ),
    Option(
        "preview", str, "auto",
        "How step previews are decoded: approx (a fixed linear map, no network), tiny (a tiny autoencoder, "
        "--preview-model), full (the model's VAE), none; auto: full for --save-steps/--animation, approx live.",
        PICTURES, commands=RUNS,
    ),
    Option(
        "preview_model", str, "madebyollin/taesd", "Tiny autoencoder of --preview tiny: Hub id or folder.", PICTURES,
        commands=RUNS,
    ),
    Option(
        "preview_file", str, None, "Rewrite this PNG with the picture forming as the steps run (live preview).",
        PICTURES, path=True, commands=RUNS,
    ),
    Option("preview_every", int, 1, "Live preview: every K steps.", PICTURES, commands=RUNS),
    Option(
        "grid", str, None, "Also put this run's images in one labelled picture (PNG), as A1111 does.", PICTURES,
        layered=False, path=True, commands=frozenset({GENERATE}),
    ),
    # the batch reader
    Option(
        "fail_fast", bool, False, "Stop at the first bad line or failure.", RUN,
        commands=frozenset({BATCH}), layered=False,
    ),
    Option(
        "dry_run", bool, False, "Check the whole input and print the plan; load no weights.", RUN,
        commands=frozenset({BATCH}), layered=False,
    ),
    # the terminal
    Option(
        "quiet", bool, False, "No progress, notes or warnings on stderr.", RUN, short="-q", layered=False,
        commands=LOADERS | {UPSCALE},
    ),
    Option(
        "verbose", bool, False, "More logs; tracebacks on errors.", RUN, short="-v", layered=False,
        commands=LOADERS | {UPSCALE},
    ),
)
