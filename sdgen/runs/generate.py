"""`sdgen PROMPT` as a library call: plan where each image goes, load once, generate, write each image as
soon as its batch is decoded, and report it; then the pictures of the process the run asked for (the
denoising sequence, its animation, a grid of the run). The command line parses and calls run_generate;
`sdgen batch` has its twin, sdgen.runs.batch.run.run_batch.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from sdgen.config.specs import OutputSpec, PicturesSpec
from sdgen.engine import loader
from sdgen.engine.checking import check_request
from sdgen.engine.model_spec import ModelSpec
from sdgen.engine.pipeline import GeneratedImage, iter_generate
from sdgen.engine.request import GenerationRequest
from sdgen.errors import InvalidRequestError
from sdgen.pictures.watch import check_pictures, terminal_pictures, write_control_maps, write_pictures
from sdgen.record.metadata import encoded_image, result_record
from sdgen.record.output import Target, plan_outputs
from sdgen.runs.progress import GenerationProgress
from sdgen.runs.prologue import check_model, open_model, prepare

log = logging.getLogger("sdgen")

Emit = Callable[[str], None]  # one line of stdout


def run_generate(
    request: GenerationRequest,
    spec: ModelSpec,
    output: OutputSpec,
    emit: Emit,
    quiet: bool = False,
    pictures: PicturesSpec | None = None,
) -> list[Path | None]:
    """Make the request's images and write them where `output` says; returns where each went (None:
    stdout), then the pictures' files. Everything that can be checked is checked before any weights load."""
    written: list[Path | None] = []
    # 1. check: the model spec, the request, every image's and picture's destination, the device, the plan
    spec = check_model(spec)
    request = check_request(request, spec)
    targets = plan_outputs(request, output)
    pictures = check_pictures(pictures or PicturesSpec(), output.overwrite, spec)
    if request.hires_scale is not None and pictures.records_steps:
        raise InvalidRequestError(
            "--save-steps and --animation show one denoising run; with --hires-scale there are two at two sizes. "
            "Leave one out (the live --preview-file works with both).",
            "save_steps",
        )
    if output.save_control and output.output == "-":
        raise InvalidRequestError(
            "Invalid {name}: stdout carries the image alone; write it to a file or folder (-o) for its maps.",
            "save_control",
        )
    machine = prepare(spec)

    # 2. load once, 3. generate, 4. write each image as soon as its batch is done, 5. the pictures
    terminal = terminal_pictures(pictures, quiet)
    mode = "none" if quiet else output.progress
    with GenerationProgress(request.num_images, terminal_image=terminal, mode=mode) as progress:
        seeds = request.seeds
        log.info("Seed %d%s", seeds[0], f" (images use {seeds[0]}..{seeds[-1]})" if len(seeds) > 1 else "")
        run = open_model(machine, progress, pictures, (request.width, request.height))
        for result in iter_generate(request, run.parts, on_step=run.on_step):
            target = targets[result.index]
            progress.phase("writing", str(target.path or target.folder or "to stdout"))
            written.append(_write(result, run.parts, target, output, emit))
            run.watchers.finished(result)
    for path in write_pictures(run.watchers, run.parts, output.overwrite, output.metadata):
        log.info("Wrote %s", path)
    return written


def _write(
    result: GeneratedImage, parts: loader.StableDiffusionParts, target: Target, output: OutputSpec, emit: Emit
) -> Path | None:
    kind = target.path.suffix.lower().lstrip(".") if target.path is not None else "png"  # -o x.jpg, x.webp
    data = encoded_image(result, parts, output.metadata, kind)
    path = target.write(data, overwrite=output.overwrite)
    if path is None:  # stdout carried the PNG itself
        return None
    if output.save_control:
        write_control_maps(result, path, output.overwrite)
    if output.json:
        record = {"path": str(path), **result_record(result, parts), "seconds": round(result.seconds, 3)}
        emit(json.dumps(record, ensure_ascii=False))
    else:
        emit(str(path))
    return path
