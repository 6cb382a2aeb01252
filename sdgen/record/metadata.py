"""What an image remembers of how it was made: A1111's `parameters` text and sdgen's own JSON chunk.

The A1111 text is what A1111, sd-parsers and sd-prompt-reader read; the JSON chunk is lossless and is
what sdgen replays first.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from sdgen.config import options
from sdgen.config.options import MODEL, REQUEST
from sdgen.config.optiontable import PROMPT, Option
from sdgen.config.schedulers import a1111_names, runner
from sdgen.engine import plugins
from sdgen.engine.loader import StableDiffusionParts
from sdgen.engine.pipeline import GeneratedImage
from sdgen.engine.request import HIRES_UPSCALERS, CheckedRequest, ImageJob
from sdgen.models.hashes import model_short_hash
from sdgen.models.single_file import is_checkpoint_file
from sdgen.models.upscalers import upscaler_name
from sdgen.prompts.networks import short_hash
from sdgen.record import accounting
from sdgen.record.formats import A1111_KEY, SDGEN_KEY, image_bytes, parse_a1111, read_image_metadata
from sdgen.record.replay import replay_values, request_values_from_image  # the readers, re-exported
from sdgen.version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from PIL.PngImagePlugin import PngInfo

log = logging.getLogger("sdgen")

__all__ = [
    "A1111_KEY", "SDGEN_KEY", "parse_a1111", "read_image_metadata", "replay_values", "request_values_from_image"
]  # where the readers and writers find them


def _quote(value: object) -> str:
    """A1111 quotes values holding `,` `:` or a newline as JSON strings, so its parser can split them."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ',:\n"') else text


# The rows whose A1111 field is written in A1111's own place and form below; every other request row with an
# A1111 name is a plain `Name: value` field (_plain_fields), so a new row needs no code here.
_A1111_IN_PLACE = frozenset({
    "steps", "scheduler", "schedule", "guidance_scale", "seed", "width", "height", "strength", "negative_prompt",
    "hires_scale", "hires_steps", "hires_strength", "hires_upscaler", "weighting", "tiling",
})


def a1111_parameters(result: GeneratedImage, parts: StableDiffusionParts) -> str:
    """`prompt \\n Negative prompt: ... \\n Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, ...`"""
    request = result.request
    name = options.table().a1111_names()  # the field names come from the table's rows
    sampler, schedule = a1111_names(request.scheduler, request.schedule)
    fields: list[tuple[str, object]] = [
        (name["steps"], request.num_inference_steps),
        (name["scheduler"], sampler),
        (name["schedule"], schedule),  # always: A1111's "Automatic" may mean another schedule than sdgen's
    ]
    fields += [
        (name["guidance_scale"], _number(request.guidance_scale)),
        (name["seed"], result.seed),
        (name["width"], f"{request.width}x{request.height}"),
    ]
    if is_checkpoint_file(parts.source.model):  # A1111's hash of a single file (hashed once per file version)
        fields.append(("Model hash", model_short_hash(parts.source.model)))
    fields.append((name["model"], _model_name(parts.source.model)))
    if parts.vae_name is not None:  # --vae
        fields.append((name["vae"], parts.vae_name))
        if parts.vae_hash:
            fields.append(("VAE hash", parts.vae_hash))
    fields += _pass_fields(request)
    if request.tiling:  # A1111 writes "Tiling: True" (both axes); one axis is named, x or y
        fields.append((name["tiling"], "True" if request.tiling == "both" else request.tiling))
    fields += _plain_fields(request, result.job)
    fields += plugins.a1111_fields(request)  # guidance modifiers, under A1111's or Forge's extension names
    if request.mask is not None and request.invert_mask:
        fields.append(("Mask mode", "Inpaint not masked"))  # A1111's name for repainting the black side
    fields += _prompt_fields(request, result.job)
    if parts.placement.rng == "cpu" or parts.placement.device == "cpu":
        fields.append(("RNG", "CPU"))  # A1111 leaves out its default, GPU: noise drawn on the CUDA device
    fields.append(("Version", f"sdgen {__version__}"))
    lines = [result.job.prompt]  # as A1111 writes it: newlines kept, only the last line holds the fields
    if request.negative_prompt:
        lines.append("Negative prompt: " + request.negative_prompt)
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in fields))
    return "\n".join(lines)


def _pass_fields(request: CheckedRequest) -> list[tuple[str, object]]:
    """Image-to-image's and the hires pass's fields, with the steps counted as A1111 counts them
    (sdgen/record/accounting.py): A1111 reading them runs the steps sdgen ran."""
    name = options.table().a1111_names()
    fields: list[tuple[str, object]] = []
    if request.is_img2img:
        fields.append((name["strength"], accounting.a1111_img2img_strength(request.num_inference_steps,
                                                                           request.strength)))
    if request.hires_scale is not None:  # A1111's hires fix fields; Size stays the first pass's size
        steps = request.hires_steps or request.num_inference_steps
        if request.hires_strength == 0:  # upscale only, as A1111 does with no denoising
            run, strength = None, "0"
        else:
            run, strength = accounting.a1111_hires(steps, request.hires_strength)
        fields.append((name["hires_strength"], strength))
        fields.append((name["hires_scale"], _number(request.hires_scale)))
        if run is not None:
            fields.append((name["hires_steps"], run))
        upscaler = request.hires_upscaler  # an upscaler model goes by its file's name, as A1111 writes it
        fields.append((name["hires_upscaler"], HIRES_UPSCALERS.get(upscaler) or upscaler_name(upscaler)))
    return fields


def _plain_fields(request: CheckedRequest, job: ImageJob) -> list[tuple[str, object]]:
    """The rows with an A1111 name not written in place (Mask blur, Clip skip ...): those with a value that
    means something (a row they need is set) and, unless they need one, is not the built-in value."""
    table = options.table()
    fields: list[tuple[str, object]] = []
    for row in table.rows.values():
        if row.a1111 and row.target == REQUEST and row.key not in _A1111_IN_PLACE:
            value = table.value(row, request, job)
            if value is not None and (row.needs is not None or value != row.default):
                fields.append((row.a1111, _number(value) if isinstance(value, float) else value))
    return fields


def _model_name(model: str) -> str:
    """A1111's `Model`: a checkpoint file's name without its extension, a Hub id's or folder's last part."""
    last = model.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return last.rsplit(".", 1)[0] if last.lower().endswith((".safetensors", ".ckpt", ".pt", ".pth", ".bin")) else last


def _prompt_fields(request: CheckedRequest, job: ImageJob) -> list[tuple[str, object]]:
    """A1111's fields for emphasis off, LoRAs and embeddings (with its short hashes), and the
    Dynamic Prompts extension's `Template`."""
    fields: list[tuple[str, object]] = []
    if not request.weighting:
        fields.append((options.table().a1111_names()["weighting"], "None"))
    hashed = [(lora.name, short_hash(lora.source)) for lora in job.lora_refs]
    if hashed:
        fields.append(("Lora hashes", ", ".join(f"{name}: {digest}" for name, digest in hashed if digest)))
    embedded = [(ref.token, short_hash(ref.path)) for ref in job.embedding_refs]
    if embedded:
        fields.append(("TI hashes", ", ".join(f"{token}: {digest}" for token, digest in embedded)))
    if job.expanded:
        fields.append(("Template", job.template.replace("\n", " ")))
    return [(key, value) for key, value in fields if value != ""]


# The fields of a record that are no option: what the run found or did (docs/reference.md lists them).
RECORD_FACTS: Mapping[str, str] = MappingProxyType({
    "sdgen_version": "the sdgen that made it",
    "scheduler_class": "the diffusers scheduler class of the sampler",
    "scheduler_options": "the options that class was made with (Karras sigmas ...)",
    "prompt_template": "the prompt before its wildcards were expanded",
    "styles": "the --style names applied (the prompts hold their text, as in A1111; --from does not apply them again)",
    "loras": "the LoRAs used (--lora and the prompt's tags): name, source, scale, A1111 hash",
    "embeddings": "the embeddings used: token, file",
    "vae_hash": "A1111's hash of the VAE that replaced the model's",
    "commit": "the Hub commit the model came from",
    "unet_sha256": "the sha256 of the U-Net's weights",
    "device": "where it ran (not replayed: --from chooses again)",
    "vae_dtype": "the dtype that decoded it (float32 after the NaN guard's retry)",
    "path": "where the file went (--json lines, manifest records)",
    "seconds": "how long it took (--json lines, manifest records)",
    "line": "its line in the batch input (manifest records)",
    "input": "the batch input it came from: the file's absolute path, or - for stdin (manifest records)",
    "index": "its image within the line: seed = the line's seed + index (manifest records)",
    "status": "done or failed (manifest records); done or todo (--dry-run --json)",
    "error": "why it failed (manifest records)",
})


def image_record(
    request: CheckedRequest, job: ImageJob, model: str, parts: StableDiffusionParts | None = None
) -> dict[str, Any]:
    """Everything needed to make an image again, losslessly, under the CLI's names.

    The one record of an image: the PNG's sdgen chunk is this, a `--json` line adds where the file went
    and how long it took, a batch manifest record adds its line, index, path and status. Without `parts`
    (a plan, a failure before loading) it holds what the request alone says. Its fields are the rows'
    `record` names (sdgen/config/options.py): a row that shapes the picture is always there (None: not used),
    another only with a value.
    """
    table = options.table()
    record: dict[str, Any] = {"sdgen_version": __version__, PROMPT: job.prompt}
    for row in table.recorded(REQUEST):
        value = table.record_value(row, request, job)
        if row.shapes_picture or value is not None:
            record[str(row.record)] = value
    scheduler_class, scheduler_options = runner(request.scheduler, request.schedule)
    record.update(seed=job.seed, scheduler_class=scheduler_class, scheduler_options=scheduler_options, model=model)
    if job.expanded:
        record["prompt_template"] = job.template
    if request.applied_styles:
        record["styles"] = list(request.applied_styles)
    if job.lora_refs:
        record["loras"] = [
            {"name": lora.name, "source": lora.source, "scale": lora.scale, "hash": short_hash(lora.source)}
            for lora in job.lora_refs
        ]
    if job.embedding_refs:
        record["embeddings"] = [{"token": ref.token, "path": ref.path} for ref in job.embedding_refs]
    if parts is not None:
        record |= {key: value for key, value in _load_record(parts, table.recorded(MODEL)).items() if key not in record}
    return record


def _load_record(parts: StableDiffusionParts, rows: list[Option]) -> dict[str, Any]:
    """What the loaded model says: its options as given where they are not the built-in values (--vae,
    --decoder, --token-merging ...), then what loading found (the revision, device, dtype, RNG)."""
    record = {}
    for row in rows if parts.spec is not None else []:
        value = row.record_form(getattr(parts.spec, row.target_field))
        if value not in (None, "", row.default):
            record[str(row.record)] = value
    if parts.vae_name is not None:  # --vae, or the VAE a checkpoint without one was given
        record.update(vae=parts.vae_source, vae_hash=parts.vae_hash)
    record.update(
        revision=parts.source.revision,
        commit=parts.source.commit,
        unet_sha256=parts.source.unet_sha256,
        device=parts.placement.device,
        dtype=parts.placement.dtype,
        vae_dtype=parts.placement.vae_dtype,
        rng=parts.placement.rng,
    )
    return record


def result_record(result: GeneratedImage, parts: StableDiffusionParts) -> dict[str, Any]:
    """image_record of a generated image, with the VAE dtype that really decoded it."""
    record = image_record(result.request, result.job, parts.source.model, parts)
    record["vae_dtype"] = result.vae_dtype or record["vae_dtype"]
    return record


def png_info(result: GeneratedImage, parts: StableDiffusionParts) -> PngInfo:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(A1111_KEY, a1111_parameters(result, parts))
    info.add_text(SDGEN_KEY, json.dumps(result_record(result, parts), ensure_ascii=False, sort_keys=True))
    return info


def encoded_image(
    result: GeneratedImage, parts: StableDiffusionParts, metadata: bool = True, kind: str = "png", quality: int = 80,
    lossless: bool = False,
) -> bytes:
    """An image's file in one of A1111's formats, with its A1111 text and sdgen's record: a PNG's text chunks,
    a JPEG's or WebP's EXIF (sdgen/record/formats.py); quality and lossless as A1111's jpeg_quality and
    webp_lossless."""
    if kind.lower() == "png":
        from sdgen.record.output import png_bytes

        return png_bytes(result.image, png_info(result, parts) if metadata else None)
    parameters = record = None
    if metadata:
        parameters = a1111_parameters(result, parts)
        record = json.dumps(result_record(result, parts), ensure_ascii=False, sort_keys=True)
    return image_bytes(result.image, kind, parameters, record, quality, lossless)


def _number(value: float) -> str:
    """7.5 -> '7.5', 7.0 -> '7': A1111 writes CFG scale and strength without a trailing .0."""
    return f"{value:g}"


# ---- reading back -------------------------------------------------------------------------------

