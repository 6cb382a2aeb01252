"""X/Y grids: axes of any generation option, each cell the single run with its parameters, one load."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sdgen.cli import app
from sdgen.engine.pipeline import generate
from sdgen.engine.request import GenerationRequest
from sdgen.record.metadata import read_image_metadata
from sdgen.runs.grid import Axis, cell_requests, generate_cells, parse_axis

runner = CliRunner()


def test_axes_take_any_option_of_the_picture_typed() -> None:
    assert parse_axis("guidance-scale=1,3,7.5", "x") == Axis("guidance_scale", (1.0, 3.0, 7.5))
    assert parse_axis("steps=10, 25", "y") == Axis("steps", (10, 25))
    assert parse_axis('prompt="a fox, red","a cat"', "x") == Axis("prompt", ("a fox, red", "a cat"))
    assert parse_axis("cfg=2", "x").key == "guidance_scale"
    assert parse_axis('negative-prompt=blurry,"ugly, dark"', "x") == Axis("negative_prompt", ("blurry", "ugly, dark"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sharpness=1,2", "Invalid x 'sharpness=1,2': write NAME=V1,V2,... with NAME one of prompt, steps"),
        ("steps", "Invalid x 'steps': write NAME=V1,V2"),
        ("steps=10,ten", "Invalid --x steps='ten': must be a whole number."),
        ("steps=", "Invalid x 'steps=': give 1 to 64 values"),
    ],
)
def test_bad_axes(text, message) -> None:
    from sdgen.errors import UsageError

    with pytest.raises(UsageError) as error:
        parse_axis(text, "x")
    assert str(error.value).startswith(message)


def test_same_seed_everywhere_unless_the_seed_is_an_axis() -> None:
    base = GenerationRequest("a fox", width=64, height=64)
    rows = cell_requests(base, parse_axis("guidance-scale=1,7.5", "x"), parse_axis("steps=2,3", "y"))
    assert len({r.seed for row in rows for r in row}) == 1
    assert [[(r.guidance_scale, r.num_inference_steps) for r in row] for row in rows] == [
        [(1.0, 2), (7.5, 2)],
        [(1.0, 3), (7.5, 3)],
    ]
    rows = cell_requests(base, parse_axis("seed=4,5", "x"), None)
    assert [r.seed for r in rows[0]] == [4, 5]


def test_each_cell_is_the_single_run_with_its_parameters(tiny_parts) -> None:
    base = GenerationRequest("a fox", seed=11, width=64, height=64, num_inference_steps=3)
    x, y = parse_axis("guidance-scale=1,7.5", "x"), parse_axis("scheduler=ddim,euler-a", "y")
    rows = cell_requests(base, x, y)
    made = generate_cells(rows, tiny_parts, batch_size=1, on_step=None)
    for (r, c), result in made.items():
        [alone] = generate(rows[r][c], tiny_parts)
        assert np.array_equal(np.asarray(result.image), np.asarray(alone.image)), (r, c)
    # batched: cells sharing size, steps, scheduler and guidance go through the U-Net together (prompts here)
    rows = cell_requests(base, parse_axis("prompt=a fox,a cat,a owl", "x"), None)
    made = generate_cells(rows, tiny_parts, batch_size=3, on_step=None)
    for (r, c), result in made.items():
        [alone] = generate(rows[r][c], tiny_parts)
        difference = np.abs(np.asarray(result.image, dtype=int) - np.asarray(alone.image, dtype=int))
        assert difference.max() <= 1  # batched sums may differ by 1/255


def test_the_command_writes_a_labelled_grid_with_each_cells_record(tiny_model_dir, tmp_path) -> None:
    out = tmp_path / "grid.png"
    args = [
        "grid",
        "a fox",
        "--x",
        "guidance-scale=1,7.5",
        "--y",
        "steps=2,3",
        "-m",
        str(tiny_model_dir),
        "-W",
        "64",
        "-H",
        "64",
        "--seed",
        "9",
        "--dtype",
        "float32",
        "-o",
        str(out),
        "--json",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["x"], r["y"], r["guidance_scale"], r["steps"], r["seed"]) for r in records] == [
        (1.0, 2, 1.0, 2, 9),
        (7.5, 2, 7.5, 2, 9),
        (1.0, 3, 1.0, 3, 9),
        (7.5, 3, 7.5, 3, 9),
    ]
    grid = Image.open(out)
    assert grid.width > 2 * 64 and grid.height > 2 * 64
    parameters, record = read_image_metadata(out)
    assert "CFG scale: 1," in parameters and record["picture"] == "grid"
    assert record["x"] == {"key": "guidance_scale", "values": [1.0, 7.5]} and len(record["cells"]) == 4


def test_a_run_of_several_images_as_one_grid(tiny_model_dir, tmp_path) -> None:
    args = [
        "a fox",
        "-n",
        "5",
        "-m",
        str(tiny_model_dir),
        "-W",
        "64",
        "-H",
        "64",
        "--steps",
        "2",
        "--seed",
        "1",
        "-o",
        f"{tmp_path}/",
        "--grid",
        str(tmp_path / "all.png"),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    _, record = read_image_metadata(tmp_path / "all.png")
    assert record["picture"] == "grid of a run" and [r["seed"] for r in record["images"]] == [1, 2, 3, 4, 5]
    grid = np.asarray(Image.open(tmp_path / "all.png"))
    first = np.asarray(Image.open(tmp_path / "00000-1-a-fox.png"))
    found = any(np.array_equal(grid[y : y + 64, x : x + 64], first) for y in range(0, 60) for x in range(0, 30))
    assert found  # the first image, whole, in the top left cell


def test_bad_grids_fail_before_loading(no_weights_load) -> None:
    result = runner.invoke(app, ["grid", "a fox", "--x", "steps=0,10"])
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "sdgen: error: Invalid --steps 0: must be a whole number from 1 to 1000. (a value of --x)"
    )


def test_list_axes_take_one_lora_per_value_and_label_file_names() -> None:
    axis = parse_axis("lora=/loras/ink.safetensors:0.5,/loras/ink.safetensors:1", "y")
    assert axis.values == (["/loras/ink.safetensors:0.5"], ["/loras/ink.safetensors:1"])
    assert axis.label(axis.values[0]) == "lora: ink.safetensors:0.5"
    assert parse_axis("clip-skip=1,2", "x").values == (1, 2)
