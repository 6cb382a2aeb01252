"""What an image remembers of how it was made: A1111's `parameters` text and sdgen's own JSON chunk.

The A1111 text is what A1111, sd-parsers and sd-prompt-reader read; the JSON chunk is lossless and is
what sdgen replays first.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from sdgen.config import options
from sdgen.config.options import MODEL, REQUEST
from sdgen.config.optiontable import PROMPT, Option
from sdgen.config.schedulers import from_a1111, scheduler_spec
from sdgen.config.settings import as_kind, kind_name
from sdgen.engine import plugins
from sdgen.engine.loader import StableDiffusionParts
from sdgen.engine.pipeline import GeneratedImage
from sdgen.engine.request import HIRES_UPSCALERS, GenerationRequest
from sdgen.errors import InvalidRequestError, os_reason
from sdgen.prompts.networks import short_hash
from sdgen.version import __version__

if TYPE_CHECKING:  # pragma: no cover
    from PIL.PngImagePlugin import PngInfo

log = logging.getLogger("sdgen")

A1111_KEY = "parameters"
SDGEN_KEY = "sdgen"


def _quote(value: object) -> str:
    """A1111 quotes values holding `,` `:` or a newline as JSON strings, so its parser can split them."""
    text = str(value)
    return json.dumps(text, ensure_ascii=False) if any(c in text for c in ',:\n"') else text


# The rows whose A1111 field is written in A1111's own place and form below; every other request row with an
# A1111 name is a plain `Name: value` field (_plain_fields), so a new row needs no code here.
_A1111_IN_PLACE = frozenset({
    "steps", "scheduler", "guidance_scale", "seed", "width", "height", "strength", "negative_prompt", "hires_scale",
    "hires_steps", "hires_strength", "hires_upscaler", "weighting",
})


def a1111_parameters(result: GeneratedImage, parts: StableDiffusionParts) -> str:
    """`prompt \\n Negative prompt: ... \\n Steps: 25, Sampler: DPM++ 2M, Schedule type: Karras, ...`"""
    request = result.request
    name = options.table().a1111_names()  # the field names come from the table's rows
    spec = scheduler_spec(request.scheduler)
    fields: list[tuple[str, object]] = [
        (name["steps"], request.num_inference_steps),
        (name["scheduler"], spec.a1111_sampler),
    ]
    if spec.a1111_schedule_type:
        fields.append(("Schedule type", spec.a1111_schedule_type))
    fields += [
        (name["guidance_scale"], _number(request.guidance_scale)),
        (name["seed"], result.seed),
        (name["width"], f"{request.width}x{request.height}"),
        (name["model"], _model_name(parts.source.model)),
    ]
    if parts.vae_name is not None:  # --vae
        fields.append((name["vae"], parts.vae_name))
        if parts.vae_hash:
            fields.append(("VAE hash", parts.vae_hash))
    if request.is_img2img:
        fields.append((name["strength"], _number(request.strength)))
    if request.hires_scale is not None:  # A1111's hires fix fields; Size stays the first pass's size
        fields.append((name["hires_strength"], _number(request.hires_strength)))
        fields.append((name["hires_scale"], _number(request.hires_scale)))
        if request.hires_steps is not None:
            fields.append((name["hires_steps"], request.hires_steps))
        fields.append((name["hires_upscaler"], HIRES_UPSCALERS[request.hires_upscaler]))
    fields += _plain_fields(request)
    fields += plugins.a1111_fields(request)  # guidance modifiers, under A1111's or Forge's extension names
    fields += _prompt_fields(request)
    fields.append(("Version", f"sdgen {__version__}"))
    lines = [request.prompt.replace("\n", " ")]
    if request.negative_prompt:
        lines.append("Negative prompt: " + request.negative_prompt.replace("\n", " "))
    lines.append(", ".join(f"{key}: {_quote(value)}" for key, value in fields))
    return "\n".join(lines)


def _plain_fields(request: GenerationRequest) -> list[tuple[str, object]]:
    """The rows with an A1111 name not written in place (Mask blur, Clip skip ...): those with a value that
    means something (a row they need is set) and, unless they need one, is not the built-in value."""
    table = options.table()
    fields: list[tuple[str, object]] = []
    for row in table.rows.values():
        if row.a1111 and row.target == REQUEST and row.key not in _A1111_IN_PLACE:
            value = table.value(row, request)
            if value is not None and (row.needs is not None or value != row.default):
                fields.append((row.a1111, _number(value) if isinstance(value, float) else value))
    return fields


def _model_name(model: str) -> str:
    """A1111's `Model`: a checkpoint file's name without its extension, a Hub id's or folder's last part."""
    last = model.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    return last.rsplit(".", 1)[0] if last.lower().endswith((".safetensors", ".ckpt", ".pt", ".pth", ".bin")) else last


def _prompt_fields(request: GenerationRequest) -> list[tuple[str, object]]:
    """A1111's fields for emphasis off, LoRAs and embeddings (with its short hashes), and the
    Dynamic Prompts extension's `Template`."""
    fields: list[tuple[str, object]] = []
    if not request.weighting:
        fields.append((options.table().a1111_names()["weighting"], "None"))
    hashed = [(lora.name, short_hash(lora.source)) for lora in request.lora_refs]
    if hashed:
        fields.append(("Lora hashes", ", ".join(f"{name}: {digest}" for name, digest in hashed if digest)))
    embedded = [(ref.token, short_hash(ref.path)) for ref in request.embedding_refs]
    if embedded:
        fields.append(("TI hashes", ", ".join(f"{token}: {digest}" for token, digest in embedded)))
    if request.prompt_template is not None:
        fields.append(("Template", request.prompt_template.replace("\n", " ")))
    return [(key, value) for key, value in fields if value != ""]


# The fields of a record that are no option: what the run found or did (docs/reference.md lists them).
RECORD_FACTS: Mapping[str, str] = MappingProxyType({
    "sdgen_version": "the sdgen that made it",
    "scheduler_class": "the diffusers scheduler class of the sampler",
    "scheduler_options": "the options that class was made with (Karras sigmas ...)",
    "prompt_template": "the prompt before its wildcards were expanded",
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
    "index": "its image within the line: seed = the line's seed + index (manifest records)",
    "status": "done or failed (manifest records); done or todo (--dry-run --json)",
    "error": "why it failed (manifest records)",
})


def image_record(
    request: GenerationRequest, seed: int, model: str, parts: StableDiffusionParts | None = None
) -> dict[str, Any]:
    """Everything needed to make an image again, losslessly, under the CLI's names.

    The one record of an image: the PNG's sdgen chunk is this, a `--json` line adds where the file went
    and how long it took, a batch manifest record adds its line, index, path and status. Without `parts`
    (a plan, a failure before loading) it holds what the request alone says. Its fields are the rows'
    `record` names (sdgen/config/options.py): a row that shapes the picture is always there (None: not used),
    another only with a value.
    """
    table = options.table()
    record: dict[str, Any] = {"sdgen_version": __version__, PROMPT: request.prompt}
    for row in table.recorded(REQUEST):
        value = table.record_value(row, request)
        if row.shapes_picture or value is not None:
            record[str(row.record)] = value
    spec = scheduler_spec(request.scheduler)
    record.update(seed=seed, scheduler_class=spec.class_name, scheduler_options=spec.options, model=model)
    if request.prompt_template is not None:
        record["prompt_template"] = request.prompt_template
    if request.lora_refs:
        record["loras"] = [
            {"name": lora.name, "source": lora.source, "scale": lora.scale, "hash": short_hash(lora.source)}
            for lora in request.lora_refs
        ]
    if request.embedding_refs:
        record["embeddings"] = [{"token": ref.token, "path": ref.path} for ref in request.embedding_refs]
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
    record = image_record(result.request, result.seed, parts.source.model, parts)
    record["vae_dtype"] = result.vae_dtype or record["vae_dtype"]
    return record


def png_info(result: GeneratedImage, parts: StableDiffusionParts) -> PngInfo:
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(A1111_KEY, a1111_parameters(result, parts))
    info.add_text(SDGEN_KEY, json.dumps(result_record(result, parts), ensure_ascii=False, sort_keys=True))
    return info


def _number(value: float) -> str:
    """7.5 -> '7.5', 7.0 -> '7': A1111 writes CFG scale and strength without a trailing .0."""
    return f"{value:g}"


# ---- reading back -------------------------------------------------------------------------------

# A1111's own pattern for `key: value` pairs, where a value may be a JSON-quoted string.
_PARAM = re.compile(r'\s*(\w[\w \-/+]*):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def read_image_metadata(path: str | Path) -> tuple[str | None, dict[str, Any] | None]:
    """(A1111 parameters text, sdgen record) from a PNG's text chunks, a GIF's comment or a JPEG/WebP's EXIF
    UserComment."""
    from sdgen.config.images import ImageRefused, open_image

    try:  # the header and text chunks only, of the formats sdgen reads: no pixel is decoded
        with open_image(Path(path), repr(str(path)), None, max_pixels=None) as image:
            info = dict(image.info)
            # a PNG's getexif decodes the whole image to look past its pixels: read EXIF from other formats
            exif = image.getexif() if image.format != "PNG" or "exif" in image.info else None
    except ImageRefused as error:
        raise InvalidRequestError(f"Cannot read {str(path)!r}: {error.reason}.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # broken EXIF and the like
        reason = os_reason(error) if isinstance(error, OSError) else type(error).__name__
        raise InvalidRequestError(f"Cannot read {str(path)!r}: not a readable image ({reason}).") from None
    parameters = info.get(A1111_KEY) or info.get("comment")  # PNG text chunk; a GIF's comment
    if parameters is None and exif is not None:
        comment = exif.get_ifd(0x8769).get(0x9286)  # Exif IFD -> UserComment, where A1111 puts it in JPEG/WebP
        parameters = _decode_user_comment(comment) if comment else None
    record = None
    if SDGEN_KEY in info:
        try:
            record = json.loads(info[SDGEN_KEY])
        except json.JSONDecodeError:
            record = None
    if isinstance(parameters, bytes):
        parameters = parameters.decode("utf-8", "replace")
    return parameters, record


def _decode_user_comment(comment: bytes | str) -> str | None:
    """EXIF UserComment: an 8-byte charset prefix, then the text (A1111 writes UNICODE, i.e. UTF-16)."""
    if isinstance(comment, str):
        return comment
    prefix, body = comment[:8], comment[8:]
    if prefix.startswith(b"UNICODE"):
        big, little = body.decode("utf-16-be", "replace"), body.decode("utf-16-le", "replace")
        return big if big.isprintable() or "\n" in big and big.replace("\n", "").isprintable() else little
    return body.decode("utf-8", "replace").rstrip("\x00") or None


def parse_a1111(text: str) -> dict[str, Any]:
    """Split A1111 `parameters` text into prompt, negative prompt and its `key: value` fields."""
    lines = text.strip().split("\n")
    fields: dict[str, str] = {}
    if lines and len(_PARAM.findall(lines[-1])) >= 3:
        fields = {key.strip(): _unquote(value) for key, value in _PARAM.findall(lines.pop())}
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    for line in lines:
        if line.startswith("Negative prompt:") or negative_lines:
            negative_lines.append(line.removeprefix("Negative prompt:").strip() if not negative_lines else line)
        else:
            prompt_lines.append(line)
    return {"prompt": "\n".join(prompt_lines), "negative_prompt": "\n".join(negative_lines), "fields": fields}


def _unquote(value: str) -> str:
    value = value.strip()
    if value.startswith('"') and value.endswith('"'):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


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
        if name["hires_scale"] in fields:
            upscaler = fields.get(name["hires_upscaler"], "Latent")
            known = {a1111.lower(): key for key, a1111 in HIRES_UPSCALERS.items()}
            if upscaler.lower() not in known:
                raise InvalidRequestError(
                    f"{str(path)!r} was made with hires upscaler {upscaler!r}, which sdgen does not have; "
                    "pass --hires-upscaler latent or lanczos."
                )
            values["hires_upscaler"] = known[upscaler.lower()]
    except ValueError as error:
        raise InvalidRequestError(f"{str(path)!r} has unreadable A1111 parameters ({error}).") from None
    sampler = fields.get(name["scheduler"])
    if sampler:
        # In an infotext no "Schedule type" means the sampler's plain schedule (A1111 before 1.9)
        schedule = "karras" if fields.get("Schedule type") == "Karras" else "uniform"
        try:
            values["scheduler"] = from_a1111(sampler, schedule)
        except InvalidRequestError:
            raise InvalidRequestError(
                f"{str(path)!r} was made with sampler {sampler!r}, which sdgen does not have; pass --scheduler."
            ) from None
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
    if recorded.get("dtype") == "float16" and "device" not in given:
        recorded.pop("dtype")  # float16 was a CUDA choice; let auto pick again on this machine
    if "model" in recorded:  # say which weights an image is about to make sdgen load (or download)
        model = recorded["model"]
        log.warning("Note: %s was made with model %r; using it (pass --model to choose another).", path, model)
    return recorded
