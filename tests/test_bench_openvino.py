"""scripts/bench_openvino.py's sdgen configurations run in process on the tiny model (the whole script, every
configuration in its own process, is `--tiny`: about a minute for two configurations, too long for the suite)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import bench_openvino  # noqa: E402


def test_ov_unpadded_runs_with_the_heads_left_as_they_are(tiny_model_dir, ov_cache, monkeypatch):
    from sdgen.engine import openvino_parts
    from sdgen.models import openvino_graph
    from sdgen.models.caches import list_caches

    monkeypatch.setattr(openvino_parts, "pads_heads", openvino_parts.pads_heads)  # put back after the test
    monkeypatch.setattr(openvino_graph, "cpu_flags", lambda: {"amx_bf16", "avx512_bf16"})  # where sdgen pads
    result = bench_openvino.run_sdgen("ov-unpadded", tiny_model_dir, 64, 2)
    assert result["step"] > 0 and result["torch_loads"] is not None
    assert not openvino_parts.pads_heads("bfloat16", "unet")  # the script's own choice, not sdgen's
    forms = {entry.form for entry in list_caches(ov_cache)}
    assert forms and not any(form.endswith(openvino_graph.PADDED) for form in forms), forms
