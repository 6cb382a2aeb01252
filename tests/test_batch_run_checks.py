"""sdgen batch (sdgen/runs/batch/run.py) before anything loads: a dry run checks the Hub parts as a real run
does, and one output folder is not silently shared by two inputs."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from sdgen.cli import app


@pytest.mark.parametrize(
    ("extra", "line", "what", "repo"),
    [
        (["--vae", "stabilityai/sd-vae-ft-mse"], {"prompt": "a fox"}, "VAE (--vae)", "stabilityai/sd-vae-ft-mse"),
        ([], {"prompt": "a fox", "control": ["lllyasviel/sd-controlnet-canny=CONTROL"]}, "ControlNet (--control)",
         "lllyasviel/sd-controlnet-canny"),
    ],
)
def test_a_dry_run_offline_names_a_part_missing_from_the_cache_in_one_line(
    tiny_model_dir, tmp_path, no_weights_load, extra, line, what, repo
) -> None:
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tmp_path / "control.png")
    text = json.dumps(line).replace("CONTROL", str(tmp_path / "control.png"))
    (tmp_path / "prompts.jsonl").write_text(text + "\n")
    args = ["batch", str(tmp_path / "prompts.jsonl"), "--model", str(tiny_model_dir), "--dry-run", *extra,
            "-o", f"{tmp_path}/out/"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.stdout == "" and result.stderr.count("\n") == 1, result.output
    assert result.stderr.startswith(f"sdgen: error: {what} {repo!r} is not in the Hugging Face cache"), result.stderr
    assert f"run `sdgen models download {repo}` with network access, or pass a local path." in result.stderr
