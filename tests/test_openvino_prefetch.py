"""sdgen/engine/openvino_prefetch.py: a model's last run recorded, and its compiled models made in a background
thread by the next load; a part asked for with other shapes is compiled as before. A one-layer OpenVINO model
stands in for a cached part (the tiny SD model's warm start: tests/test_openvino.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sdgen.engine.openvino_prefetch import Prefetch, record_file

SOURCE_FIELDS = {"model": "m", "commit": "abc", "unet_sha256": None}


class Source:
    model, commit, unet_sha256 = "m", "abc", None


@pytest.fixture
def part_xml(tmp_path, monkeypatch):
    """A cached part with a dynamic batch: relu of (batch, 3)."""
    import openvino
    import openvino.opset13 as ops

    monkeypatch.setenv("SDGEN_CACHE_DIR", str(tmp_path / "cache"))
    x = ops.parameter([-1, 3], np.float32, name="x")
    folder = tmp_path / "part"
    folder.mkdir()
    openvino.save_model(openvino.Model([ops.relu(x)], [x]), str(folder / "model.xml"))
    return str(folder / "model.xml")


def test_a_recorded_run_is_compiled_ahead_and_taken_by_the_next_load(part_xml):
    first = Prefetch.of(Source(), "float32", "none")
    assert not first.pending  # nothing recorded yet
    first.record("unet", part_xml, ((2, 3),))
    first.record("controlnet:abc", part_xml, ((2, 3),))  # only the parts every run calls are recorded
    assert set(json.loads(first.file.read_text())) == {"unet"}

    second = Prefetch.of(Source(), "float32", "none")
    compiled = second.take("unet", part_xml, ((2, 3),))
    assert [list(port.get_partial_shape().to_shape()) for port in compiled.inputs] == [[2, 3]]
    result = compiled.create_infer_request().infer([np.array([[-1, 2, 3], [4, -5, 6]], np.float32)])
    assert np.array_equal(next(iter(result.values())), [[0, 2, 3], [4, 0, 6]])
    assert second.take("unet", part_xml, ((2, 3),)) is None  # taken once


def test_a_part_dropped_is_never_taken(part_xml):
    Prefetch.of(Source(), "float32", "none").record("unet", part_xml, ((2, 3),))
    later = Prefetch.of(Source(), "float32", "none")
    assert set(later.pending) == {"unet"}
    later.drop("unet")  # another form of the U-Net runs (DeepCache's passes, a ControlNet's inputs)
    assert not later.pending and later.take("unet", part_xml, ((2, 3),)) is None


def test_other_shapes_other_precision_or_a_bad_record_prefetch_nothing_usable(part_xml):
    Prefetch.of(Source(), "float32", "none").record("unet", part_xml, ((2, 3),))
    assert Prefetch.of(Source(), "float32", "none").take("unet", part_xml, ((1, 3),)) is None  # another size
    assert not Prefetch.of(Source(), "bfloat16", "none").pending  # recorded per precision and --quantize
    assert not Prefetch.of(Source(), "float32", "int8").pending
    file = record_file(SOURCE_FIELDS, "float32", "none")
    for bad in ("{not json", '{"unet": {"xml": 3, "shapes": []}}', '{"unet": {"xml": "x", "shapes": [["2"]]}}',
                json.dumps({"unet": {"xml": part_xml + ".gone", "shapes": [[2, 3]]}})):
        file.write_text(bad)
        assert not Prefetch.of(Source(), "float32", "none").pending, bad
