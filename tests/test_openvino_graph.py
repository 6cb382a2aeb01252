"""sdgen/models/openvino_graph.py: a cached model's compile-time form (static shapes, and attention heads padded
where AMX runs them faster), on small OpenVINO models built here: the padded attention gives the same output,
only the attentions the measurements favour are padded, and each form is its own file."""

from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from sdgen.models import openvino_graph

# (queries, keys, head width, padded?): SD1.5's top-level self-attention at 512x512 has 4096 keys 40 wide
ATTENTIONS = ((2048, 2048, 40, True), (2048, 77, 40, False), (2048, 2048, 16, False), (2048, 2048, 64, False))


def _model(masked: bool = False):
    """One attention per ATTENTIONS row, each on its own inputs (two heads), each result an output."""
    inputs, outputs = [], []
    for queries, keys, width, _ in ATTENTIONS:
        query, key, value = (ops.parameter([1, 2, rows, width], np.float32) for rows in (queries, keys, keys))
        mask = ops.parameter([1, 1, queries, keys], np.float32) if masked else None
        attention = ops.scaled_dot_product_attention(query, key, value, attention_mask=mask, causal=False)
        inputs += [query, key, value] + ([mask] if masked else [])
        outputs.append(attention)
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
    assert openvino_graph.pad_attention_heads(padded) == sum(row[3] for row in ATTENTIONS)
    pads = [op for op in padded.get_ops() if op.get_type_name() == "Pad"]
    assert len(pads) == 3  # query, key and value of the one attention that qualifies
    assert {tuple(pad.input_value(0).get_partial_shape().to_shape())[-1] for pad in pads} == {40}
    after = _run(padded, feeds)
    for row, old, new in zip(ATTENTIONS, before, after, strict=True):
        assert new.shape == old.shape
        np.testing.assert_allclose(new, old, atol=2e-6, err_msg=str(row))


def test_an_attention_on_int8_hybrids_quantized_query_is_left_as_it_is():
    # int8-hybrid's FakeQuantize on the query (and key) sends the attention to OpenVINO's int8 kernel, where
    # padding measured no gain
    query, key, value = (ops.parameter([1, 2, 2048, 40], np.float32) for _ in range(3))
    low, high = ops.constant(np.float32(-4)), ops.constant(np.float32(4))
    quantized = ops.fake_quantize(query, low, high, low, high, 256)
    model = ov.Model([ops.scaled_dot_product_attention(quantized, key, value, causal=False)], [query, key, value])
    assert openvino_graph.pad_attention_heads(model) == 0
    assert "Pad" not in [op.get_type_name() for op in model.get_ops()]


def test_heads_are_padded_for_bf16_on_amx_only(monkeypatch):
    for flags, precision, expected in (({"amx_bf16", "avx512_bf16"}, "bfloat16", True),
                                       ({"amx_bf16"}, "float32", False),
                                       ({"avx512_bf16"}, "bfloat16", False), (set(), "float32", False)):
        monkeypatch.setattr(openvino_graph, "cpu_flags", lambda flags=flags: flags)
        assert openvino_graph.pads_heads(precision) is expected, (flags, precision)


def _saved(tmp_path, model, name):
    folder = tmp_path / name
    folder.mkdir()
    ov.save_model(model, str(folder / "model.xml"), compress_to_fp16=False)
    return folder / "model.xml"


def test_each_form_is_its_own_file_and_shares_the_weights_where_nothing_is_padded(tmp_path):
    core = ov.Core()
    shapes = tuple(tuple(port.get_partial_shape().to_shape()) for port in _model().inputs)
    xml = _saved(tmp_path, _model(), "attention")
    plain = openvino_graph.static_model(core, str(xml), shapes)
    padded = openvino_graph.static_model(core, str(xml), shapes, pad_heads=True)
    assert plain != padded
    assert openvino_graph.static_model(core, str(xml), shapes, pad_heads=True) == padded  # saved once
    kinds = [op.get_type_name() for op in core.read_model(padded).get_ops()]
    assert kinds.count("Pad") == 3 and "Pad" not in [op.get_type_name() for op in core.read_model(plain).get_ops()]
    # a model with no attention to pad (a VAE's, a text encoder's) keeps one copy of its weights on disk
    weights = ops.constant(np.arange(4096, dtype=np.float32).reshape(64, 64))
    source = ops.parameter([1, 64], np.float32)
    linear = _saved(tmp_path, ov.Model([ops.matmul(source, weights, False, False)], [source]), "linear")
    form = openvino_graph.static_model(core, str(linear), ((1, 64),), pad_heads=True)
    shared = (tmp_path / "linear" / form).with_suffix(".bin")
    assert shared.stat().st_ino == (tmp_path / "linear" / "model.bin").stat().st_ino


def test_compile_for_cpu_pads_as_the_runs_precision_and_cpu_say(tmp_path, monkeypatch):
    from sdgen.models import openvino as ov_models

    asked = []
    monkeypatch.setattr(ov_models, "pads_heads", lambda precision: asked.append(precision) or True)
    shapes = tuple(tuple(port.get_partial_shape().to_shape()) for port in _model().inputs)
    xml = _saved(tmp_path, _model(), "attention")
    rng = np.random.default_rng(1)
    feeds = [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]
    compiled = ov_models.compile_for_cpu(str(xml), "float32", shapes)
    assert asked == ["float32"]
    for old, new in zip(_run(_model(), feeds), [np.array(value) for value in compiled(feeds).values()], strict=True):
        np.testing.assert_allclose(new, old, atol=2e-6)
    (static,) = xml.parent.glob("static-*.xml")
    assert "Pad" in [op.get_type_name() for op in ov.Core().read_model(static).get_ops()]


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
