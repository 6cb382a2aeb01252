"""A1111 styles: the styles.csv format, how a style joins a prompt (modules/styles.py), --style through the
request, the CLI, the config, batch lines, the record, --from and the server (webuiapi)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sdgen.cli import app
from sdgen.engine.checking import check_request
from sdgen.engine.request import GenerationRequest
from sdgen.errors import InvalidRequestError
from sdgen.prompts.styles import apply_styles, merge_prompt, read_styles, styles_listing
from sdgen.record.metadata import parse_a1111

runner = CliRunner()

STYLES_CSV = (
    "\ufeffname,prompt,negative_prompt\n"
    'cinematic,"cinematic shot of {prompt}, film grain","cartoon, drawing"\n'
    "sharp, highly detailed, blurry\n"
    'quoted,"a, b",\n'
)


@pytest.fixture
def styles_file(tmp_path: Path) -> Path:
    path = tmp_path / "styles.csv"
    path.write_text(STYLES_CSV, encoding="utf-8")
    return path


def test_a1111_merge_rules() -> None:
    assert merge_prompt("cinematic shot of {prompt}, film grain", "a fox") == "cinematic shot of a fox, film grain"
    assert merge_prompt("highly detailed", "a fox ") == "a fox, highly detailed"
    assert merge_prompt("highly detailed", "") == "highly detailed"
    assert merge_prompt("", "a fox") == "a fox"


def test_the_file_is_read_as_a1111_reads_it(styles_file: Path, tmp_path: Path) -> None:
    styles = read_styles(str(styles_file))
    assert list(styles) == ["cinematic", "sharp", "quoted"]  # byte-order mark, quotes, spaces after commas
    assert styles["sharp"] == ("sharp", "highly detailed", "blurry") and styles["quoted"].prompt == "a, b"
    old = tmp_path / "old.csv"
    old.write_text("name,text\nplain,oil painting\n")  # A1111's old two-column header
    assert read_styles(str(old))["plain"].prompt == "oil painting"
    assert styles_listing(str(old)) == [{"name": "plain", "prompt": "oil painting", "negative_prompt": ""}]


def test_styles_apply_in_order_to_both_prompts(styles_file: Path) -> None:
    prompt, negative = apply_styles("a fox", "ugly", ["cinematic", "sharp"], str(styles_file))
    assert prompt == "cinematic shot of a fox, film grain, highly detailed"
    assert negative == "ugly, cartoon, drawing, blurry"


def test_unknown_style_names_it_and_the_choices(styles_file: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        apply_styles("a fox", "", ["noir"], str(styles_file))
    assert caught.value.key == "style"
    assert "'noir'" in str(caught.value) and "'cinematic', 'sharp', 'quoted'" in str(caught.value)
    with pytest.raises(InvalidRequestError, match="no such file"):
        apply_styles("a fox", "", ["noir"], str(tmp_path / "missing.csv"))


def test_the_request_applies_styles_once_and_keeps_their_names(styles_file: Path) -> None:
    request = GenerationRequest("a fox", styles=("sharp",), styles_file=str(styles_file), width=64, height=64, seed=1)
    checked = check_request(request)
    assert (checked.prompt, checked.negative_prompt, checked.applied_styles) == (
        "a fox, highly detailed", "blurry", ("sharp",))
    assert check_request(checked).prompt == checked.prompt  # validating again applies nothing twice


def tiny(model: Path, *extra: str) -> list[str]:
    return ["--model", str(model), "--device", "cpu", "-W", "64", "-H", "64", "--steps", "2", "-s", "9", *extra]


def test_cli_style_recorded_as_a1111_records_it_and_replayed_without_the_file(tiny_model_dir, styles_file, tmp_path):
    out = tmp_path / "styled.png"
    args = ["a fox", *tiny(tiny_model_dir), "--style", "cinematic", "--style", "sharp", "--styles-file",
            str(styles_file), "-o", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    parsed = parse_a1111(Image.open(out).info["parameters"])  # A1111's infotext: the prompts with the styles in
    assert parsed["prompt"] == "cinematic shot of a fox, film grain, highly detailed"
    assert parsed["negative_prompt"] == "cartoon, drawing, blurry"
    record = json.loads(Image.open(out).info["sdgen"])
    assert record["styles"] == ["cinematic", "sharp"] and record["prompt"] == parsed["prompt"]
    styles_file.unlink()  # --from needs no styles file: the record holds the styled prompts
    again = tmp_path / "again.png"
    assert runner.invoke(app, ["--from", str(out), "-o", str(again)]).exit_code == 0
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(Image.open(out)))
    typed = tmp_path / "typed.png"
    assert runner.invoke(app, [parsed["prompt"], *tiny(tiny_model_dir), "-N", parsed["negative_prompt"],
                               "-o", str(typed)]).exit_code == 0
    assert np.array_equal(np.asarray(Image.open(typed)), np.asarray(Image.open(out)))  # a style is its text


def test_the_default_file_sits_beside_the_config_and_env_names_another(no_weights_load, tmp_path, styles_file):
    config = tmp_path / "config.toml"  # styles.csv is beside it (the fixture wrote it there)
    result = runner.invoke(app, ["a fox", "--style", "noir"], env={"SDGEN_CONFIG": str(config)})
    assert result.exit_code == 2 and "--style 'noir'" in result.output and "'cinematic'" in result.output
    result = runner.invoke(app, ["a fox", "--style", "noir"], env={"SDGEN_STYLES_FILE": str(tmp_path / "none.csv")})
    assert result.exit_code == 2 and "no such file" in result.output


def test_a_config_file_sets_the_styles_file(no_weights_load, tmp_path, styles_file) -> None:
    config = tmp_path / "elsewhere" / "config.toml"
    config.parent.mkdir()
    config.write_text(f'styles_file = "{styles_file}"\n')
    result = runner.invoke(app, ["a fox", "--style", "noir"], env={"SDGEN_CONFIG": str(config)})
    assert result.exit_code == 2 and "'sharp'" in result.output


def test_a_batch_line_names_styles(tiny_model_dir, styles_file, tmp_path) -> None:
    lines = tmp_path / "in.jsonl"
    lines.write_text(json.dumps({"prompt": "a fox", "style": ["sharp"]}) + "\n")
    args = ["batch", str(lines), "-o", str(tmp_path / "out") + "/", *tiny(tiny_model_dir), "--json",
            "--styles-file", str(styles_file)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert record["prompt"] == "a fox, highly detailed" and record["styles"] == ["sharp"]


def test_server_lists_and_applies_styles(tiny_model_dir, hf_home, styles_file) -> None:
    import requests
    import webuiapi

    from sdgen.serve.app import create_app
    from sdgen.serve.server import serving

    from .serving import make_engine

    engine = make_engine(tiny_model_dir, styles_file=str(styles_file))
    try:
        with serving(create_app(engine), engine) as url:
            listed = requests.get(f"{url}/sdapi/v1/prompt-styles", timeout=10).json()
            assert listed[1] == {"name": "sharp", "prompt": "highly detailed", "negative_prompt": "blurry"}
            api = webuiapi.WebUIApi(baseurl=f"{url}/sdapi/v1", sampler="Euler", steps=2)
            result = api.txt2img(prompt="a fox", styles=["sharp"], seed=9, width=64, height=64,
                                 subseed=3, subseed_strength=0.5, tiling=True)
            assert result.info["all_prompts"] == ["a fox, highly detailed"] and result.info["styles"] == ["sharp"]
            assert (result.info["subseed"], result.info["subseed_strength"]) == (3, 0.5)
            assert "Tiling: True" in result.info["infotexts"][0]
            answer = requests.post(f"{url}/sdapi/v1/txt2img", json={"prompt": "a", "styles": ["noir"], "steps": 1},
                                   timeout=60)
            assert answer.status_code == 422 and "noir" in answer.text and answer.json()["field"] == "styles"
    finally:
        engine.close()
