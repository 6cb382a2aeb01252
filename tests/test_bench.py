"""scripts/bench.py's table: ratios against diffusers and GFLOP/s from the FLOP counts in docs/performance.md."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

import bench  # noqa: E402


def run(step: float, decode: float, e2e: float, rss: float, dtype: str = "float32") -> dict:
    return {
        "load": 1.0,
        "text": 0.1,
        "first_step": step,
        "step": step,
        "decode": decode,
        "e2e": e2e,
        "peak_rss": rss,
        "dtype": dtype,
    }


def test_table_reports_ratios_and_gflops_per_config() -> None:
    results = {
        "diffusers": [run(7.0, 12.0, 180.0, 5.0), run(8.0, 11.0, 170.0, 5.0)],  # best: 7, 11, 170
        "sdgen": [run(2.0, 2.2, 50.0, 4.0, "bfloat16")],
    }
    text = bench.table(512, 20, "dpm++2m-karras", results)
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in text.splitlines()
        if line.startswith("| ") and "config" not in line
    }
    assert rows["diffusers"][0] == "float32" and rows["diffusers"][8:12] == ["1.00", "1.00", "1.00", "1.00"]
    sdgen = rows["sdgen"]
    assert sdgen[0] == "bfloat16" and sdgen[4] == "2.00" and sdgen[5] == "2.20"
    assert sdgen[8:12] == ["3.50", "5.00", "3.40", "0.80"]  # step, decode, e2e speed-ups; RSS ratio
    assert sdgen[12] == "805" and sdgen[13] == "1141"  # 1.61 TFLOP / 2.0 s; 2.51 TFLOP / 2.2 s
    assert "### 512x512, 20 steps" in text


def test_quarter_size_quarter_flops() -> None:
    text = bench.table(256, 4, "euler", {"sdgen": [run(0.5, 0.5, 10.0, 3.0)]})
    row = [line for line in text.splitlines() if line.startswith("| sdgen")][0].split("|")
    assert row[14].strip() == "805" and row[10].strip() == "-"  # no diffusers row: no ratios


def test_table_names_the_machine_and_how_close_to_its_peak_each_config_runs() -> None:
    where = {"cpu": "AMD EPYC 7R32 (AVX2, FMA; 2 threads)", "kind": "float32 only",
             "peaks": {"float32": 200.0, "bfloat16": 40.0}}
    text = bench.table(512, 20, "euler", {"sdgen-fp32": [run(16.1, 20.0, 300.0, 4.0)]}, where)
    assert "CPU: AMD EPYC 7R32 (AVX2, FMA; 2 threads), float32 only. Measured GEMM peak: float32 200 GFLOP/s" in text
    row = [line for line in text.splitlines() if line.startswith("| sdgen-fp32")][0].split("|")
    assert row[14].strip() == "100" and row[16].strip() == "50%"  # 1.61 TFLOP / 16.1 s = 100 of 200 GFLOP/s


def test_presets_feed_the_bench_as_the_cli_reads_them() -> None:
    model, request = bench.preset_options("turbo")
    assert model == {"token_merging": 0.5, "decoder": "madebyollin/taesd"}
    assert request == {"cache_interval": 3, "cfg_end": 0.5}
    model, request = bench.preset_options("lcm")
    assert model == {} and request == {"scheduler": "lcm", "num_inference_steps": 4, "guidance_scale": 1.0}
