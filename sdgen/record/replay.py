"""Reading an image back: the settings that made it, from sdgen's record (lossless) or A1111's text (what A1111,
Forge and other tools write), for `--from IMAGE` and `sdgen info` (the writing side: sdgen/record/metadata.py)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sdgen.config import options
from sdgen.config.optiontable import PROMPT, Option
from sdgen.config.schedulers import resolve_infotext
from sdgen.config.settings import as_kind, kind_name
from sdgen.engine import plugins
from sdgen.engine.request import HIRES_UPSCALERS
from sdgen.errors import InvalidRequestError
from sdgen.record import accounting
from sdgen.record.formats import parse_a1111, read_image_metadata

if TYPE_CHECKING:  # pragma: no cover
    pass

log = logging.getLogger("sdgen")


def request_values_from_image(path: str | Path) -> dict[str, Any]:
    """The generation options an image was made with, under the CLI's names: sdgen's chunk first, else A1111."""
    parameters, record = read_image_metadata(path)
    if isinstance(record, dict) and "picture" in record:  # a strip or grid: its first image
        images = record.get("images") or record.get("cells")
        record = images[0] if isinstance(images, list) and images else None
    if record is not None:
        return _typed_record(path, record)
    if not parameters:
        raise InvalidRequestError(
            f"{str(path)!r} holds no generation parameters (no sdgen chunk, no A1111 `parameters`); "
            "give the prompt and options on the command line instead."
        )
    parsed = parse_a1111(parameters)
    fields = parsed["fields"]
    values: dict[str, Any] = {PROMPT: parsed["prompt"], "negative_prompt": parsed["negative_prompt"]}
    name = options.table().a1111_names()
    try:
        if name["width"] in fields:
            width, height = fields[name["width"]].lower().split("x")
            values["width"], values["height"] = int(width), int(height)
        values |= _a1111_numbers(fields, values)
        values |= plugins.values_from_a1111(fields)
        if fields.get(name["weighting"]) == "None":
            values["weighting"] = False
        values |= _a1111_noise_fields(fields)
        if name["hires_scale"] in fields:
            upscaler = fields.get(name["hires_upscaler"], "Latent")
            known = {a1111.lower(): key for key, a1111 in HIRES_UPSCALERS.items()}
            # another name is an upscaler model's, found by name in --upscaler-dir when the request is checked
            values["hires_upscaler"] = known.get(upscaler.lower(), upscaler)
        values |= _a1111_counting(fields, values)
        values |= _a1111_facts(fields)
    except (ValueError, OverflowError) as error:  # a number too large for an int (inf), as unreadable
        raise InvalidRequestError(f"{str(path)!r} has unreadable A1111 parameters ({error}).") from None
    sampler = fields.get(name["scheduler"])
    if sampler:
        schedule = fields.get(name["schedule"])
        try:
            values["scheduler"], values["schedule"] = resolve_infotext(sampler, schedule)
        except InvalidRequestError as error:
            raise InvalidRequestError(
                f"{str(path)!r} was made with sampler {sampler!r} and schedule type {schedule!r}, which sdgen "
                f"cannot run ({error}); pass --scheduler and --schedule."
            ) from None
    return values


def _a1111_counting(fields: Mapping[str, str], values: Mapping[str, Any]) -> dict[str, Any]:
    """Image-to-image's and the hires pass's steps as A1111 counted them, in sdgen's counting
    (sdgen/record/accounting.py): the same steps of the same schedule run."""
    name = options.table().a1111_names()
    strength = fields.get(name["strength"])
    if strength is None:
        return {}
    steps = values.get("steps", options.default("steps"))
    if name["hires_scale"] not in fields:  # image-to-image (replayed with --init-image)
        return {"strength": accounting.sdgen_img2img_strength(steps, float(strength))}
    if float(strength) == 0:  # A1111 runs no step: the upscaled image is the result
        return {"hires_strength": 0.0, "hires_steps": None}
    schedule, sdgen_strength = accounting.sdgen_hires(int(fields.get(name["hires_steps"]) or steps), float(strength))
    return {"hires_steps": schedule, "hires_strength": sdgen_strength}


def _a1111_facts(fields: Mapping[str, str]) -> dict[str, Any]:
    """A1111's fields of what a run did that sdgen has flags for: the inverted mask and the RNG (GPU and NV:
    noise drawn on a CUDA device, as --rng device draws it there). A1111 leaves out its default, GPU; sdgen
    then keeps its own default, the CPU (docs/usage.md#what-a1111-reads)."""
    values: dict[str, Any] = {}
    if "RNG" in fields:
        values["rng"] = "cpu" if fields["RNG"].upper() == "CPU" else "device"
    if fields.get("Mask mode") == "Inpaint not masked":
        values["invert_mask"] = True
    return values


def _a1111_numbers(fields: Mapping[str, str], known: Mapping[str, Any]) -> dict[str, Any]:
    """The rows whose A1111 field is a plain number (Steps, CFG scale, Seed, Clip skip, the hires pass's),
    read where the row they need is there too (Denoising strength is the hires pass's with Hires upscale)."""
    table = options.table()
    found: dict[str, Any] = {}
    for row in table.rows.values():
        if row.kind not in (int, float) or row.a1111 not in fields or row.key in known:
            continue
        needed = table.rows[row.needs].a1111 if row.needs is not None else None
        if row.needs is None or needed in fields:
            found[row.key] = row.kind(fields[str(row.a1111)])
    return found


def _a1111_noise_fields(fields: Mapping[str, str]) -> dict[str, Any]:
    """Seed resize from (WxH) and Tiling (True: both axes; sdgen's x or y); the request checks them."""
    name = options.table().a1111_names()
    found: dict[str, Any] = {}
    if fields.get(name["seed_resize_from"]):
        found["seed_resize_from"] = fields[name["seed_resize_from"]]
    tiling = fields.get(name["tiling"], "").strip().lower()
    if tiling:
        found["tiling"] = "both" if tiling == "true" else tiling
    return found


def _typed_record(path: str | Path, record: Any) -> dict[str, Any]:
    """The replayable values of an sdgen chunk (the prompt and every row with a record field), each checked
    for its type: an image is input like any other, and one made (or edited) to break sdgen gets a
    one-line error, not a traceback."""
    if not isinstance(record, dict):
        raise InvalidRequestError(f"{str(path)!r} has an sdgen record that is not a JSON object; pass the options.")
    rows: dict[str, Option | None] = {PROMPT: None, **{str(row.record): row for row in options.table().recorded()}}
    values = {}
    for name, row in rows.items():
        if record.get(name) is None:
            continue
        key, kind = (PROMPT, str) if row is None else (row.key, row.kind)
        try:
            values[key] = as_kind(record[name], kind)
        except TypeError:
            raise InvalidRequestError(
                f"{str(path)!r} records {name} = {record[name]!r}, which is not {kind_name(kind)}; "
                f"pass --{key.replace('_', '-')} yourself."
            ) from None
    return values


def replay_values(path: str | Path, given: set[str]) -> dict[str, Any]:
    """The --from layer: an image's values for every option not typed beside --from."""
    recorded = {key: value for key, value in request_values_from_image(path).items() if key not in given}
    if recorded.get("mask") and not Path(recorded["mask"]).is_file():
        raise InvalidRequestError(f"{str(path)!r} was made with mask {recorded['mask']!r}, which is gone; pass --mask.")
    if recorded.get("init_image") and not Path(recorded["init_image"]).is_file():
        raise InvalidRequestError(
            f"{str(path)!r} was made from init image {recorded['init_image']!r}, which is gone; pass --init-image."
        )
    if recorded.get("control"):  # A1111's text holds no control image; sdgen's record names the file
        from sdgen.engine.plugins.control_text import missing_images

        problem = missing_images(recorded["control"])
        if problem:
            raise InvalidRequestError(f"{str(path)!r} {problem}.")
    if recorded.get("dtype") == "float16" and "device" not in given:
        recorded.pop("dtype")  # float16 was a CUDA choice; let auto pick again on this machine
    if "model" in recorded:  # say which weights an image is about to make sdgen load (or download)
        model = recorded["model"]
        log.warning("Note: %s was made with model %r; using it (pass --model to choose another).", path, model)
    return recorded
