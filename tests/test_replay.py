"""Metadata round trip: `sdgen info` reads it back (also A1111 files made elsewhere); `--from` replays it."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from sdgen.cli import app
from sdgen.record.metadata import parse_a1111, request_values_from_image

runner = CliRunner()

A1111_TEXT = (
    "a castle on a hill, golden hour\n"
    "Negative prompt: blurry, lowres\n"
    'Steps: 3, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 77, Size: 64x64, Model: "x,y"'
)


def tiny(model, *extra: str) -> list[str]:
    return ["--model", str(model), "--device", "cpu", *extra]


def user_comment(text: str) -> bytes:
    return b"UNICODE\x00" + text.encode("utf-16-be")  # what A1111 (piexif) writes into JPEG and WebP


@pytest.fixture
def original(tiny_model_dir, tmp_path):
    path = tmp_path / "orig.png"
    args = tiny(
        tiny_model_dir,
        "-W",
        "64",
        "-H",
        "64",
        "--steps",
        "3",
        "-s",
        "21",
        "--scheduler",
        "euler-a",
        "-N",
        "dull, grey",
        "-g",
        "5.5",
        "-o",
        str(path),
    )
    result = runner.invoke(app, ["a fox: red, small", *args])
    assert result.exit_code == 0, result.output
    return path


def test_from_replays_pixel_identically(original, tiny_model_dir, tmp_path) -> None:
    again = tmp_path / "again.png"
    result = runner.invoke(app, ["--from", str(original), "--device", "cpu", "-o", str(again)])
    assert result.exit_code == 0, result.output
    assert again.read_bytes() == original.read_bytes()


def test_the_image_beats_settings_but_not_flags(original, tmp_path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('steps = 7\nscheduler = "ddim"\n')
    env = {"SDGEN_CONFIG": str(config), "SDGEN_GUIDANCE_SCALE": "9", "SDGEN_PRESET": "quality"}
    again = tmp_path / "again.png"
    result = runner.invoke(app, ["--from", str(original), "--device", "cpu", "-o", str(again)], env=env)
    assert result.exit_code == 0, result.output
    assert again.read_bytes() == original.read_bytes()  # steps 3, euler-a, guidance 5.5 from the image


def test_flags_beside_from_override(original, tmp_path) -> None:
    other = tmp_path / "other.png"
    result = runner.invoke(
        app, ["--from", str(original), "--device", "cpu", "--seed", "22", "--json", "-o", str(other)]
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["seed"] == 22 and record["prompt"] == "a fox: red, small" and record["scheduler"] == "euler-a"
    assert record["negative_prompt"] == "dull, grey" and record["guidance_scale"] == 5.5
    assert other.read_bytes() != original.read_bytes()


def test_info_prints_both_records(original) -> None:
    result = runner.invoke(app, ["info", str(original)])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        f"{original}:",
        "  a fox: red, small",
        "  Negative prompt: dull, grey",
        "  Steps: 3, Sampler: Euler a, Schedule type: Uniform, CFG scale: 5.5, Seed: 21, Size: 64x64, Model: tiny-sd, "
        "RNG: CPU, "
        "Version: sdgen 0.1.0",
    ]
    assert "    scheduler_class: EulerAncestralDiscreteScheduler" in lines
    result = runner.invoke(app, ["info", "--json", str(original)])
    record = json.loads(result.stdout)
    assert record["sdgen"]["seed"] == 21 and record["a1111"]["fields"]["CFG scale"] == "5.5"


@pytest.mark.parametrize("kind", ["png", "jpeg", "webp"])
def test_a1111_parameters_from_other_tools(tmp_path, kind: str) -> None:
    path = tmp_path / f"a1111.{kind}"
    image = Image.new("RGB", (64, 64), "purple")
    if kind == "png":
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text("parameters", A1111_TEXT)
        image.save(path, pnginfo=info)
    else:
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0x9286] = user_comment(A1111_TEXT)
        image.save(path, format=kind.upper(), exif=exif)
    values = request_values_from_image(path)
    assert values == {
        "prompt": "a castle on a hill, golden hour",
        "negative_prompt": "blurry, lowres",
        "steps": 3,
        "guidance_scale": 6.5,
        "seed": 77,
        "width": 64,
        "height": 64,
        "scheduler": "dpm++2m-karras",
        "schedule": "automatic",
    }
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 0 and "  Negative prompt: blurry, lowres" in result.stdout.splitlines()


def test_from_an_a1111_png_generates(tiny_model_dir, tmp_path) -> None:
    from PIL.PngImagePlugin import PngInfo

    source = tmp_path / "a1111.png"
    info = PngInfo()
    info.add_text("parameters", A1111_TEXT)
    Image.new("RGB", (64, 64)).save(source, pnginfo=info)
    result = runner.invoke(app, ["--from", str(source), *tiny(tiny_model_dir, "--json", "-o", str(tmp_path / "o.png"))])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert (record["seed"], record["steps"], record["scheduler"], record["guidance_scale"]) == (
        77,
        3,
        "dpm++2m-karras",
        6.5,
    )


def test_legacy_a1111_sampler_names_and_unknown_ones(tmp_path) -> None:
    from PIL.PngImagePlugin import PngInfo

    from sdgen.errors import InvalidRequestError

    for sampler, expected in (
        ("DPM++ 2M Karras", "dpm++2m-karras"),
        ("Euler a", "euler-a"),
        ("LMS Karras", "lms-karras"),
    ):
        info = PngInfo()
        info.add_text("parameters", f"cat\nSteps: 5, Sampler: {sampler}, CFG scale: 7, Seed: 1, Size: 64x64")
        Image.new("RGB", (8, 8)).save(tmp_path / "x.png", pnginfo=info)
        assert request_values_from_image(tmp_path / "x.png")["scheduler"] == expected
    info = PngInfo()
    info.add_text("parameters", "cat\nSteps: 5, Sampler: Euler Dy, CFG scale: 7, Seed: 1, Size: 64x64")
    Image.new("RGB", (8, 8)).save(tmp_path / "y.png", pnginfo=info)
    with pytest.raises(InvalidRequestError, match="made with sampler 'Euler Dy' and schedule type None, which sdgen"):
        request_values_from_image(tmp_path / "y.png")


def test_image_without_parameters(tmp_path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    result = runner.invoke(app, ["--from", str(tmp_path / "plain.png"), "--model", "never/loaded"])
    assert result.exit_code == 2
    assert "holds no generation parameters" in result.stderr
    result = runner.invoke(app, ["info", str(tmp_path / "plain.png")])
    assert result.stdout.splitlines() == [f"{tmp_path / 'plain.png'}:", "  (no generation parameters)"]


def test_parse_a1111_multiline_prompt() -> None:
    parsed = parse_a1111("line one\nline two\nNegative prompt: bad\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 3")
    assert parsed["prompt"] == "line one\nline two" and parsed["negative_prompt"] == "bad"
    assert parsed["fields"]["Sampler"] == "Euler"


def png_with(tmp_path, name: str, **text: str):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    path = tmp_path / name
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


@pytest.mark.parametrize(
    "chunk, message",
    [
        ('["not", "a", "record"]', "has an sdgen record that is not a JSON object"),
        ('{"prompt": "a fox", "steps": "many"}', "records steps = 'many', which is not a whole number; pass --steps"),
        ('{"prompt": ["a", "list"]}', "records prompt = ['a', 'list'], which is not text"),
        ('{"prompt": "a fox", "scheduler": 5}', "records scheduler = 5, which is not text"),
        (
            '{"prompt": "a fox", "width": 1000000000}',
            "Invalid --width 1000000000: must be a whole number from 64 to 4096. (set by image)",
        ),
        ('{"prompt": "a fox", "scheduler": "warp-drive"}', "Unknown --scheduler 'warp-drive': choose one of"),
        ('{"prompt": "a fox", "guidance_scale": true}', "records guidance_scale = True, which is not a number"),
    ],
)
def test_hostile_sdgen_records_are_one_line_errors_before_loading(tmp_path, no_weights_load, chunk, message) -> None:
    path = png_with(tmp_path, "hostile.png", sdgen=chunk)
    result = runner.invoke(app, ["--from", str(path), "-o", f"{tmp_path}/out/"])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("sdgen: error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "text, message",
    [
        ("a fox\nSteps: many, Sampler: Euler, Seed: 1, Size: 64x64", "has unreadable A1111 parameters"),
        ("a fox\nSteps: 3, Sampler: Warp, Seed: 1, Size: 64x64", "was made with sampler 'Warp'"),
        ("a fox\nSteps: 3, Sampler: Euler, Seed: 1, Size: 64x64000000", "Invalid --height 64000000: must be"),
    ],
)
def test_hostile_a1111_text_is_a_one_line_error(tmp_path, no_weights_load, text, message) -> None:
    path = png_with(tmp_path, "a1111.png", parameters=text)
    result = runner.invoke(app, ["--from", str(path), "-o", f"{tmp_path}/out/"])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("sdgen: error: ") and message in result.stderr


def test_a_model_named_only_by_the_image_is_shown_before_it_loads(hf_home, tmp_path) -> None:
    record = '{"prompt": "a fox", "model": "someone/else", "width": 64, "height": 64}'
    path = png_with(tmp_path, "other.png", sdgen=record)
    result = runner.invoke(app, ["--from", str(path), "-o", f"{tmp_path}/out/"])
    lines = result.stderr.splitlines()
    assert lines[0] == f"Note: {path} was made with model 'someone/else'; using it (pass --model to choose another)."
    assert result.exit_code == 1 and lines[-1].startswith("sdgen: error: Model 'someone/else' is not in the")
