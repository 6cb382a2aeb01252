"""`sdgen doctor --model PATH` and `sdgen models make-tiny DIR`: trying sdgen before downloading a real model."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from sdgen.cli import app
from sdgen.hardware.devices import choose_placement
from sdgen.runs import doctor

runner = CliRunner()


def test_make_tiny_writes_a_model_that_says_it_makes_noise_then_doctor_checks_it(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "tiny"
    made = runner.invoke(app, ["models", "make-tiny", str(folder)])
    assert made.exit_code == 0, made.output
    assert made.stdout == f"{folder}\n"
    assert "it makes noise, not pictures" in made.stderr and f'sdgen "a fox" --model {folder}' in made.stderr
    assert {p.name for p in folder.iterdir()} >= {"unet", "vae", "text_encoder", "tokenizer", "scheduler"}
    again = runner.invoke(app, ["models", "make-tiny", str(folder)])
    assert again.exit_code == 2 and "it exists and is not an empty folder" in again.stderr

    monkeypatch.setattr(doctor, "gemm_peaks", lambda bf16: {"float32": 1.0, "bfloat16": 1.0})  # seconds, not needed
    cache = tmp_path / "cache"  # sdgen's own cache: one stale entry (an older OpenVINO's U-Net), its size said
    (cache / "openvino" / "ov-2024.0.0" / "unet" / "k").mkdir(parents=True)
    (cache / "openvino" / "ov-2024.0.0" / "unet" / "k" / "model.bin").write_bytes(b"0" * 5000)
    monkeypatch.setenv("SDGEN_CACHE_DIR", str(cache))
    checked = runner.invoke(app, ["doctor", "--device", "cpu", "--dtype", "float32", "--model", str(folder)])
    assert checked.exit_code == 0, checked.output
    lines = checked.stdout.splitlines()
    assert f"your model    {folder}: found, native size 64x64" in lines
    assert f"sdgen cache   {cache}: 1 entry, 8.0 KB (8.0 KB stale: `sdgen cache prune`)" in lines, lines
    (engine,) = [line for line in lines if line.startswith("OpenVINO      ")]
    assert engine.endswith("; --backend openvino runs f32 here"), engine  # --dtype float32: never padded
    assert lines[-1].startswith("your model    ok: loaded in ") and "1 step at 64x64" in lines[-1]


def test_doctor_says_what_the_openvino_back_end_would_run_here(monkeypatch) -> None:
    from sdgen.models import openvino_graph

    monkeypatch.setattr(openvino_graph, "cpu_flags", lambda: {"amx_bf16", "avx512_bf16"})
    assert doctor._openvino("auto", True).endswith("runs bf16 here, attention heads padded (AMX)")
    assert doctor._openvino("float32", True).endswith("runs f32 here")
    monkeypatch.setattr(openvino_graph, "cpu_flags", lambda: {"avx512_bf16"})
    assert doctor._openvino("auto", True).endswith("runs bf16 here")
    assert doctor._openvino("auto", False).endswith("runs f32 here")
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *rest: None)
    assert doctor._openvino("auto", True) == 'not installed (--backend openvino: pip install "sdgen[openvino]")'


def test_doctor_with_a_model_that_is_not_there_fails_with_its_line(tmp_path) -> None:
    lines = doctor._check_model(str(tmp_path / "nothere"), choose_placement("cpu", "float32"))
    assert next(lines).startswith(f"your model    FAILED: Model '{tmp_path}/nothere' is not a model folder")
    try:
        next(lines)
    except StopIteration as end:
        assert end.value is False


def test_doctor_says_its_first_lines_before_the_slow_imports() -> None:
    code = (
        "import sys; from sdgen.runs import doctor; lines = doctor.report('cpu'); "
        "print(next(lines)); print(next(lines)); print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    first, second, imported = result.stdout.splitlines()
    assert first.startswith("sdgen ") and second.startswith("python ") and imported == "False"
