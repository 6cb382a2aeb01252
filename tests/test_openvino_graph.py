"""sdgen/models/openvino_graph.py on small OpenVINO models built here: padded attention heads give the same
output, only the attentions the measurements favour are padded (self-attention, heads 33-63 wide, query not
quantized), static-shape forms share the weights on disk, and a model that cannot be written is one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from sdgen.models import openvino_graph

# (heads' width, self-attention?, padded?): SD1.5's top-level self-attention has heads 40 wide; its
# cross-attention's keys and values come from the text
ATTENTIONS = ((40, True, True), (40, False, False), (16, True, False), (64, True, False))
TOKENS, TEXT, HEADS = 96, 7, 2


def _heads(source, width):
    """A projection of `source` split into heads: [batch, heads, tokens, width], as diffusers' attention does."""
    rng = np.random.default_rng(width)
    weight = ops.constant(rng.standard_normal((source.get_partial_shape()[2].get_length(), HEADS * width),
                                              dtype=np.float32) * 0.2)
    projected = ops.matmul(source, weight, False, False)
    split = ops.reshape(projected, ops.constant(np.array([0, -1, HEADS, width])), True)
    return ops.transpose(split, ops.constant(np.array([0, 2, 1, 3])))


def _model(masked: bool = False, dynamic: bool = False):
    """One attention per ATTENTIONS row on an image's tokens (and the text's), each result an output."""
    image = ops.parameter([-1 if dynamic else 1, -1 if dynamic else TOKENS, 24], np.float32)
    text = ops.parameter([-1 if dynamic else 1, -1 if dynamic else TEXT, 24], np.float32)
    inputs, outputs = [image, text], []
    for width, self_attention, _ in ATTENTIONS:
        keys = image if self_attention else text
        mask = None
        if masked:
            mask = ops.parameter([1, 1, TOKENS, TOKENS if self_attention else TEXT], np.float32)
            inputs.append(mask)
        query, key, value = _heads(image, width), _heads(keys, width), _heads(keys, width)
        outputs.append(ops.scaled_dot_product_attention(query, key, value, attention_mask=mask, causal=False))
    return ov.Model(outputs, inputs)


def _run(model, feeds):
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return [np.array(value) for value in compiled(feeds).values()]


@pytest.mark.parametrize("masked", [False, True])
def test_padded_heads_give_the_same_attention(masked):
    rng = np.random.default_rng(0)
    feeds = [rng.standard_normal(port.get_partial_shape().to_shape(), dtype=np.float32)
             for port in _model(masked).inputs]
    before = _run(_model(masked), feeds)
    padded = _model(masked)
    assert openvino_graph.pad_attention_heads(padded) == sum(row[2] for row in ATTENTIONS)
    pads = [op for op in padded.get_ops() if op.get_type_name() == "Pad"]
    assert len(pads) == 3  # query, key and value of the one attention that qualifies
    assert {tuple(pad.input_value(0).get_partial_shape().to_shape())[-1] for pad in pads} == {40}
    after = _run(padded, feeds)
    for row, old, new in zip(ATTENTIONS, before, after, strict=True):
        assert new.shape == old.shape
        np.testing.assert_allclose(new, old, atol=2e-6, err_msg=str(row))


def test_a_model_with_dynamic_shapes_is_padded_as_the_cache_saves_it():
    # the cached forms keep dynamic shapes (any size, batch and prompt length): only the heads' width is read
    model = _model(dynamic=True)
    assert openvino_graph.pad_attention_heads(model) == 1
    model.reshape({0: [1, TOKENS, 24], 1: [1, TEXT, 24]})
    rng = np.random.default_rng(1)
    feeds = [rng.standard_normal(shape, dtype=np.float32) for shape in ((1, TOKENS, 24), (1, TEXT, 24))]
    for old, new in zip(_run(_model(), feeds), _run(model, feeds), strict=True):
        np.testing.assert_allclose(new, old, atol=2e-6)


def test_an_attention_on_int8_hybrids_quantized_query_is_left_as_it_is():
    # int8-hybrid's FakeQuantize between the projection and the heads sends the attention to OpenVINO's int8
    # kernel, where padding measured no gain
    image = ops.parameter([1, TOKENS, 24], np.float32)
    low, high = ops.constant(np.float32(-4)), ops.constant(np.float32(4))

    def quantized_heads(source):
        heads = _heads(source, 40)
        split = heads.input_value(0).get_node()  # transpose <- reshape <- MatMul
        quantized = ops.fake_quantize(split.input_value(0), low, high, low, high, 256)
        split.input(0).replace_source_output(quantized.output(0))
        return heads

    attention = ops.scaled_dot_product_attention(quantized_heads(image), quantized_heads(image), _heads(image, 40),
                                                 causal=False)
    model = ov.Model([attention], [image])
    assert openvino_graph.pad_attention_heads(model) == 0
    assert "Pad" not in [op.get_type_name() for op in model.get_ops()]


def test_heads_are_padded_for_bf16_on_amx_only(monkeypatch):
    for flags, precision, expected in (({"amx_bf16", "avx512_bf16"}, "bfloat16", True),
                                       ({"amx_bf16"}, "float32", False),
                                       ({"avx512_bf16"}, "bfloat16", False), (set(), "float32", False)):
        monkeypatch.setattr(openvino_graph, "cpu_flags", lambda flags=flags: flags)
        assert openvino_graph.pads_heads(precision) is expected, (flags, precision)
        # the text encoder's heads (64 wide) and the VAE's one (512) are never padded
        assert not any(openvino_graph.pads_heads(precision, part) for part in openvino_graph.NO_NARROW_HEADS)
    monkeypatch.setattr(openvino_graph, "cpu_flags", lambda: {"amx_bf16"})
    assert all(openvino_graph.pads_heads("bfloat16", part) for part in ("unet-ip", "unet-shallow", "controlnet"))


def test_a_static_form_shares_its_models_weights_on_disk_padded_or_not(tmp_path):
    # the padded forms are saved padded (ov_model), so a run's static-shape form changes no weight either
    core = ov.Core()
    for name, model in (("plain", _model(dynamic=True)), ("padded", _model(dynamic=True))):
        if name == "padded":
            openvino_graph.pad_attention_heads(model)
        folder = tmp_path / name
        folder.mkdir()
        openvino_graph.save_model(model, folder / "model.xml", key={"part": "unet"})
        shapes = ((1, TOKENS, 24), (1, TEXT, 24))
        form = openvino_graph.static_model(core, str(folder / "model.xml"), shapes)
        assert openvino_graph.static_model(core, str(folder / "model.xml"), shapes) == form  # saved once
        assert [list(port.get_partial_shape().to_shape()) for port in core.read_model(form).inputs] == [
            list(shape) for shape in shapes]
        shared = Path(form).with_suffix(".bin")
        assert shared.stat().st_ino == (folder / "model.bin").stat().st_ino, name
        assert (folder / "key.json").read_text().strip().startswith("{")


def test_an_older_layouts_static_forms_beside_the_model_are_removed_when_it_is_next_used(tmp_path):
    core, shapes = ov.Core(), ((1, TOKENS, 24), (1, TEXT, 24))
    openvino_graph.save_model(_model(dynamic=True), tmp_path / "model.xml")
    older = [tmp_path / "static-0123456789abcdef.xml", tmp_path / "static-0123456789abcdef.bin"]
    older[0].write_text("<net/>")
    older[1].hardlink_to(tmp_path / "model.bin")
    form = Path(openvino_graph.static_model(core, str(tmp_path / "model.xml"), shapes))
    assert not any(path.exists() for path in older) and form.is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.bin", "model.xml", "shapes"]


def test_a_model_that_cannot_be_written_is_one_line_naming_the_folder_and_the_fix(tmp_path, monkeypatch):
    from sdgen.errors import WriteError

    def full_disk(*args, **kwargs):
        raise RuntimeError("Exception from src/core/src/pass/serialize.cpp: basic_ios::clear: iostream error")

    monkeypatch.setattr(ov, "save_model", full_disk)
    with pytest.raises(WriteError) as raised:
        openvino_graph.save_model(_model(), tmp_path / "model.xml")
    message = str(raised.value)
    assert message.startswith(f"Could not write OpenVINO's model into {tmp_path} (") and "MB free there)" in message
    assert "sdgen cache prune" in message and "SDGEN_CACHE_DIR" in message and "\n" not in message


def test_a_static_form_not_made_is_one_line_a_leftover_is_replaced_another_processs_kept(tmp_path, monkeypatch):
    import errno
    import os
    import shutil

    from sdgen.errors import WriteError

    core, shapes = ov.Core(), ((1, TOKENS, 24), (1, TEXT, 24))
    openvino_graph.save_model(_model(dynamic=True), tmp_path / "model.xml")
    real_mkdtemp, real_rename = openvino_graph.tempfile.mkdtemp, os.rename

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(openvino_graph.tempfile, "mkdtemp", full_disk)
    with pytest.raises(WriteError) as raised:
        openvino_graph.static_model(core, str(tmp_path / "model.xml"), shapes)
    message = str(raised.value)
    assert message.startswith(f"Could not write into {tmp_path / 'shapes'} (") and "No space left" in message
    assert "SDGEN_CACHE_DIR" in message and "\n" not in message
    monkeypatch.setattr(openvino_graph.tempfile, "mkdtemp", real_mkdtemp)
    # a shape pruned while a compile noted its last use: the note alone left in its folder, which is replaced
    made = Path(openvino_graph.static_model(core, str(tmp_path / "model.xml"), shapes))
    shutil.rmtree(made.parent)
    made.parent.mkdir()
    (made.parent / "last-used").touch()
    assert openvino_graph.static_model(core, str(tmp_path / "model.xml"), shapes) == str(made) and made.is_file()
    shutil.rmtree(made.parent)

    def another_process_first(source, target):  # it renamed its own copy into place a moment before
        real_rename(real_mkdtemp(dir=Path(target).parent), target)
        (Path(target) / "model.xml").write_text("<net/>")
        raise OSError(errno.ENOTEMPTY, "Directory not empty")

    monkeypatch.setattr(openvino_graph.os, "rename", another_process_first)
    form = Path(openvino_graph.static_model(core, str(tmp_path / "model.xml"), shapes))
    assert form.read_text() == "<net/>" and [path.name for path in form.parent.parent.iterdir()] == [form.parent.name]
