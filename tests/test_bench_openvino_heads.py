"""scripts/bench_openvino_heads.py end to end on the tiny model's converted U-Net: both forms compile, run and
are timed, and their outputs compared (the tiny U-Net has no attention wide enough to pad: the same output)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .conftest import SIZE

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_openvino_heads.py"


def test_the_script_times_both_forms_of_a_cached_unet(ov_parts, ov_cache):
    from sdgen.engine.pipeline import generate
    from sdgen.engine.request import GenerationRequest

    generate(GenerationRequest(prompt="a fox", width=SIZE, height=SIZE, num_inference_steps=1, seed=0), ov_parts)
    xml = next(ov_cache.rglob("unet/*/model.xml"))
    done = subprocess.run([sys.executable, str(SCRIPT), str(xml), "--size", str(SIZE), "--text-width", "32",
                           "--precision", "f32", "--calls", "2"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines[:2]] == ["plain", "padded"]
    assert all("(2 calls)" in line for line in lines[:2])
    assert lines[2].startswith("largest output difference 0 ")
