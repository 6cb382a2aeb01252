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


def test_a_second_input_into_one_folder_is_named_in_one_note_and_the_same_input_is_not(
    tiny_model_dir, tmp_path
) -> None:
    first, second = tmp_path / "a.txt", tmp_path / "b.txt"
    first.write_text("a fox\n")
    second.write_text("a dog\n")
    common = ["--model", str(tiny_model_dir), "--steps", "1", "--progress", "none", "-o", f"{tmp_path}/out/"]
    runner = CliRunner()
    made = runner.invoke(app, ["batch", str(first), *common])
    assert made.exit_code == 0, made.output
    record = json.loads((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()[0])
    assert record["input"] == str(first) and record["status"] == "done"
    again = runner.invoke(app, ["batch", str(first), *common])  # resumed / repeated: nothing to say
    assert again.exit_code == 0 and "Note:" not in again.stderr, again.output
    other = runner.invoke(app, ["batch", str(second), "--dry-run", *common])
    assert other.exit_code == 0, other.output
    notes = [line for line in other.stderr.splitlines() if line.startswith("Note:")]
    assert notes == [
        f"Note: '{tmp_path}/out/manifest.jsonl' already holds records of the input '{first}'; this run's, of "
        f"'{second}', go into the same manifest: use -o NEW/ to keep them apart."
    ], other.stderr
    fed_back = runner.invoke(app, ["batch", f"{tmp_path}/out/manifest.jsonl", "--dry-run", *common[:-1],
                                   f"{tmp_path}/again/"])
    assert fed_back.exit_code == 0 and "Note:" not in fed_back.stderr, fed_back.output  # "input" is a record field
