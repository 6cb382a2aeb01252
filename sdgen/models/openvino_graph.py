"""Rewrites of converted OpenVINO models (docs/openvino.md "How it works"), called by sdgen/models/openvino.py
under the lock every read and write of a model file takes: the attention heads padded where this CPU runs them
faster (in the cached bf16 forms, f16-padded and int8-padded), and each cached model's static-shape form for a
run (shapes/DIGEST/model.xml in the cached model's folder, so OpenVINO compiles from a file and imports the
compiled blob of a later run without reading the model again); saving a model, a full disk said in one line.
"""

from __future__ import annotations

import contextlib
import filecmp
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sdgen.errors import WriteError, os_reason
from sdgen.hardware.devices import cpu_flags
from sdgen.models.caches import SHAPES, SHAPES_FILE

# SD1.5's top-level heads are 40 wide, and OpenVINO's fused attention kernel on AMX runs heads 64 wide faster.
# Padded to 64 with zeros, (q.k) and the softmax are unchanged and the padded output columns are zero and
# dropped, so the result is the same up to rounding order. Measured on an Intel Xeon with AMX, 2 threads, bf16,
# one attention [2, 8, N, 40] of N keys: 4096 keys 121 -> 105 ms, 9216 keys 659 -> 605 ms, 1024 keys 8.8 ->
# 8.8 ms, 256 keys 0.9 -> 1.2 ms, 77 keys (the text's: cross-attention) 6.5 -> 8.4 ms; heads 48 and 56 wide
# gain like 40, 16 wide loses. Without AMX (oneDNN capped at AVX512_CORE_BF16) and in f32 padding is slower
# (4096 keys: 282 -> 386 ms; f32 218 -> 288 ms), so it is done only there, and on self-attention only (its keys
# are the image's: 4096 at 512x512). Nor where int8-hybrid quantized the query (OpenVINO's int8 attention: the
# full-size U-Net 1.25 -> 1.29 s).
PADDED_HEAD = 64
MIN_HEAD = 33
PADDED = "-padded"  # the weights' forms with padded heads: f16-padded, int8-padded


# parts with no head to pad, which keep their plain forms (a padded copy would be the same model, on disk twice):
# CLIP's heads are 64 wide, the VAE's one attention 512
NO_NARROW_HEADS = frozenset({"text_encoder", "vae_decoder", "vae_encoder"})


def pads_heads(precision: str, part: str = "unet") -> bool:
    """Whether a run at this precision on this CPU uses the forms with padded attention heads for this part."""
    return precision == "bfloat16" and part not in NO_NARROW_HEADS and "amx_bf16" in cpu_flags()


def pad_attention_heads(model: Any) -> int:
    """Pad the heads of each self-attention (ScaledDotProductAttention whose query and key are projected from
    one tensor) with heads MIN_HEAD..63 wide to PADDED_HEAD, keeping its scale (1/sqrt of the true width),
    unless its query is quantized; the number padded. Shapes may be dynamic: only the heads' width is read."""
    import numpy as np
    import openvino.opset13 as ops

    padded = 0
    for attention in model.get_ordered_ops():
        if attention.get_type_name() != "ScaledDotProductAttention":
            continue
        query, key, value = (attention.input_value(index) for index in range(3))
        shapes = [source.get_partial_shape() for source in (query, key, value)]
        if any(shape.rank.is_dynamic or len(shape) != 4 or shape[3].is_dynamic for shape in shapes):
            continue
        width = shapes[0][3].get_length()
        if not MIN_HEAD <= width < PADDED_HEAD or shapes[2][3].get_length() != width:
            continue
        projection = _projection(query)
        if projection is None or projection != _projection(key):  # not a self-attention, or int8-hybrid's
            continue
        begin, end = ops.constant(np.zeros(4, np.int64)), ops.constant(np.array([0, 0, 0, PADDED_HEAD - width]))
        mask = attention.input_value(3) if attention.get_input_size() > 3 else None
        scale = (attention.input_value(4) if attention.get_input_size() > 4
                 else ops.constant(np.array(1 / np.sqrt(width), np.float32)))
        wide = ops.scaled_dot_product_attention(
            *(ops.pad(source, begin, end, "constant") for source in (query, key, value)),
            attention_mask=mask, scale=scale, causal=attention.get_attributes()["causal"],
        )
        result = ops.slice(wide, np.array([0]), np.array([width]), np.array([1]), np.array([3]))
        result.set_friendly_name(attention.get_friendly_name())
        for target in list(attention.output(0).get_target_inputs()):
            target.replace_source_output(result.output(0))
        padded += 1
    return padded


def _projection(source: Any) -> tuple[str, int] | None:
    """What a query or key was projected from (the MatMul's input), so a self-attention's two are equal; None
    where no MatMul feeds the heads directly (int8-hybrid's FakeQuantize sits between them)."""
    node = source.get_node()
    while node.get_type_name() in ("Transpose", "Reshape"):  # the heads' split
        node = node.input_value(0).get_node()
    if node.get_type_name() != "MatMul":
        return None
    projected = node.input_value(0)
    return projected.get_node().get_name(), projected.get_index()


def save_model(model: Any, xml: Path, compress_to_fp16: bool = False, key: Mapping[str, Any] | None = None) -> None:
    """openvino.save_model (and the key.json of its fields beside it, where given), a failure in one line:
    OpenVINO says only `iostream error` when the disk is full."""
    import openvino

    try:
        openvino.save_model(model, str(xml), compress_to_fp16=compress_to_fp16)
        if key is not None:
            (xml.parent / "key.json").write_text(json.dumps(key, sort_keys=True, default=str, indent=1))
    except (OSError, RuntimeError) as error:
        free = shutil.disk_usage(xml.parent).free
        reason = os_reason(error) if isinstance(error, OSError) else f"{free / 2**20:.0f} MB free there"
        raise WriteError(
            f"Could not write OpenVINO's model into {xml.parent} ({reason}); free some disk space (sdgen cache "
            "prune) or point SDGEN_CACHE_DIR at a folder with room."
        ) from None


def _remove_older_forms(folder: Path) -> None:
    """An older sdgen's static-shape forms beside model.xml (static-DIGEST.xml, its .bin a hard link to the
    model's): never read since each shape has its own folder, so removed when the model is next used."""
    for path in (*folder.glob("static-*.xml"), *folder.glob("static-*.bin")):
        with contextlib.suppress(OSError):  # another process removed it first, or still has it open (Windows)
            path.unlink()


def static_model(core: Any, xml: str, shapes: tuple[tuple[int, ...], ...]) -> str:
    """The model.xml with these static input shapes, saved once in a folder of its own in the entry
    (shapes/DIGEST/: the model, the shapes as shapes.json, and compile_for_cpu's compiled blobs and last use),
    so `sdgen cache prune` can drop a size no longer run (its blobs: int8's hold their own weights) and keep
    the model. Reshaping changes no weight, so its .bin is a hard link to model.bin where the two are
    the same bytes (checked once)."""
    base = Path(xml)
    _remove_older_forms(base.parent)
    shape_list = [list(shape) for shape in shapes]
    folder = base.parent / SHAPES / hashlib.sha256(json.dumps(shape_list).encode()).hexdigest()[:12]
    target = folder / "model.xml"
    if target.is_file():
        return str(target)
    import openvino

    model = core.read_model(xml)
    model.reshape({index: openvino.PartialShape(shape) for index, shape in enumerate(shape_list)})
    try:
        folder.parent.mkdir(exist_ok=True)
        temporary = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
    except OSError as error:
        raise _unwritable(folder.parent, error) from None
    try:
        save_model(model, temporary / "model.xml")
        del model
        (temporary / SHAPES_FILE).write_text(json.dumps(shape_list))
        weights, saved = base.with_suffix(".bin"), temporary / "model.bin"
        if saved.stat().st_size == weights.stat().st_size and filecmp.cmp(saved, weights, shallow=False):
            with contextlib.suppress(OSError):  # no hard links on this file system: the copy just written stays
                os.link(weights, temporary / "linked.bin")
                os.replace(temporary / "linked.bin", saved)
        _move_into_place(temporary, folder, target)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return str(target)


def _move_into_place(temporary: Path, folder: Path, target: Path) -> None:
    """Rename the finished folder into place: whole, or not at all. One there already with its model is another
    process's, made meanwhile (the same model: kept); one without (a prune that met a compile noting its last
    use) is replaced."""
    for attempt in range(2):
        try:
            os.rename(temporary, folder)
            return
        except OSError as error:
            if target.is_file():
                return
            if attempt:
                raise _unwritable(folder.parent, error) from None
            shutil.rmtree(folder, ignore_errors=True)


def _unwritable(folder: Path, error: OSError) -> WriteError:
    return WriteError(f"Could not write into {folder} ({os_reason(error)}); check its permissions or point "
                      "SDGEN_CACHE_DIR at a folder of your own.")
