"""scripts/check_cuda.py on the CPU with the tiny model: the same code the GPU check runs, its report's shape,
and sdgen's picture equal to diffusers' (float32 on a CPU) within 1/255."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import check_cuda  # noqa: E402


def test_the_cpu_check_reports_both_pipelines_and_their_agreement(tiny_model_dir, tmp_path: Path, capsys) -> None:
    out = tmp_path / "check.json"
    args = ["--device", "cpu", "--tiny", "--model", str(tiny_model_dir), "--steps", "3", "--no-compile"]
    assert check_cuda.main([*args, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [row["name"] for row in report["rows"]] == ["diffusers float32", "sdgen float32"]
    assert report["batches"] == [1, 2] and report["size"] == 64 and report["device"].startswith("CPU ")
    for row in report["rows"]:
        assert row["its_batch1"] > 0 and row["its_batch4"] > 0 and row["end_to_end_s"] > 0
        assert row["peak_gpu_mib"] is None
    assert report["agreement"]["fp32_max_diff"] <= 1 and report["agreement"]["ok"] is True
    printed = capsys.readouterr().out
    assert "| sdgen float32 |" in printed and "(bound 1): ok" in printed


def test_without_cuda_the_gpu_check_says_so_in_one_line(capsys) -> None:
    import torch

    if torch.cuda.is_available():  # a GPU machine runs the real check instead
        return
    assert check_cuda.main(["--device", "cuda"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
