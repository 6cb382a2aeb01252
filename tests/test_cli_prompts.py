"""Prompts as A1111 users write them, end to end through the command line, batches, --from and settings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sdgen.cli import app
from sdgen.prompts.networks import short_hash
from sdgen.record.metadata import read_image_metadata
from sdgen.testing.tiny_adapters import build_tiny_embedding, build_tiny_lora

runner = CliRunner()


def tiny(model, *extra: str) -> list[str]:
    return ["--model", str(model), "-W", "64", "-H", "64", "--steps", "2", "--device", "cpu", "--dtype", "float32",
            *extra]


@pytest.fixture(scope="module")
def files(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("prompt-files")
    build_tiny_lora(tiny_model_dir, folder / "loras" / "detail.safetensors")
    build_tiny_lora(tiny_model_dir, folder / "loras" / "other.safetensors", seed=1)
    build_tiny_embedding(tiny_model_dir, folder / "embeddings" / "badhands.safetensors")
    build_tiny_embedding(tiny_model_dir, folder / "mystyle.pt", seed=2)
    (folder / "wildcards").mkdir()
    (folder / "wildcards" / "animals.txt").write_text("fox\nowl\n")
    return folder


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(np.int16)


def test_lora_tag_clip_skip_and_embeddings_are_recorded_and_replayed(tiny_model_dir, files, tmp_path) -> None:
    prompt = "a mystyle fox <lora:detail:0.7>, (snow:1.3)"
    args = [prompt, *tiny(tiny_model_dir, "--seed", "3", "--clip-skip", "2", "--lora-dir", str(files / "loras"),
                          "--embedding", str(files / "mystyle.pt"), "--embedding-dir", str(files / "embeddings"),
                          "-N", "badhands", "-o", str(tmp_path / "made.png"))]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    parameters, record = read_image_metadata(tmp_path / "made.png")
    assert parameters.splitlines()[0] == prompt  # A1111's prompt text, tag and emphasis as typed
    lora_hash = short_hash(str(files / "loras" / "detail.safetensors"))
    assert "Clip skip: 2" in parameters and f'Lora hashes: "detail: {lora_hash}"' in parameters
    assert 'TI hashes: "mystyle: ' in parameters and "badhands: " in parameters
    assert record["clip_skip"] == 2 and record["loras"][0]["scale"] == 0.7
    assert [e["token"] for e in record["embeddings"]] == ["mystyle", "badhands"]

    again = runner.invoke(app, ["--from", str(tmp_path / "made.png"), "-o", str(tmp_path / "again.png")])
    assert again.exit_code == 0, again.output
    assert np.array_equal(pixels(tmp_path / "again.png"), pixels(tmp_path / "made.png"))
    without = runner.invoke(app, [prompt.split(" <")[0], *tiny(tiny_model_dir, "--seed", "3", "-o",
                                                               str(tmp_path / "plain.png"))])
    assert without.exit_code == 0 and not np.array_equal(pixels(tmp_path / "plain.png"), pixels(tmp_path / "made.png"))


def test_no_weighting_is_recorded_the_a1111_way(tiny_model_dir, tmp_path) -> None:
    args = ["a (fox:1.5)", *tiny(tiny_model_dir, "--seed", "1", "--no-weighting", "-o", str(tmp_path / "a.png"))]
    assert runner.invoke(app, args).exit_code == 0
    parameters, _ = read_image_metadata(tmp_path / "a.png")
    assert "Emphasis: None" in parameters
    weighted = runner.invoke(app, ["a (fox:1.5)", *tiny(tiny_model_dir, "--seed", "1", "-o", str(tmp_path / "b.png"))])
    assert weighted.exit_code == 0 and not np.array_equal(pixels(tmp_path / "a.png"), pixels(tmp_path / "b.png"))


def test_a1111_text_alone_replays_clip_skip_and_emphasis(tmp_path) -> None:
    from PIL.PngImagePlugin import PngInfo

    from sdgen.record.metadata import request_values_from_image

    info = PngInfo()
    info.add_text("parameters", "a (fox:1.2) <lora:x:0.5>\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, "
                                "Size: 512x512, Clip skip: 2, Emphasis: None")
    Image.new("RGB", (8, 8)).save(tmp_path / "a1111.png", pnginfo=info)
    values = request_values_from_image(tmp_path / "a1111.png")
    assert values["prompt"] == "a (fox:1.2) <lora:x:0.5>"
    assert values["clip_skip"] == 2 and values["weighting"] is False


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lora", "missing.safetensors"], "Invalid --lora 'missing.safetensors': no such file"),
        (["--clip-skip", "0"], "Invalid --clip-skip 0"),
        (["--embedding", "gone.pt"], "Invalid --embedding 'gone.pt': no such file"),
        (["--wildcard-dir", "/nonexistent-folder"], "no such folder"),
    ],
)
def test_bad_prompt_options_exit_2_before_loading(no_weights_load, tmp_path, extra, message) -> None:
    result = runner.invoke(app, ["a __animals__ <lora:x>" if "--wildcard-dir" in extra else "a fox",
                                 *extra, "-o", f"{tmp_path}/"])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_tag_without_a_lora_dir_says_how_to_fix_it(no_weights_load, tmp_path) -> None:
    result = runner.invoke(app, ["a fox <lora:detail:0.5>", "-o", f"{tmp_path}/"])
    assert result.exit_code == 2 and "set --lora-dir" in result.stderr


def test_wildcards_give_each_image_its_prompt_and_combinatorial_all(tiny_model_dir, files, tmp_path) -> None:
    wildcards = str(files / "wildcards")
    result = runner.invoke(app, ["a {red|blue} __animals__", *tiny(
        tiny_model_dir, "--seed", "5", "-n", "4", "--wildcard-dir", wildcards, "-o", f"{tmp_path}/random/")])
    assert result.exit_code == 0, result.output
    names = [Path(line).name for line in result.stdout.splitlines()]
    assert len(names) == 4 and all(n.split("-", 2)[2] in {f"a-{c}-{a}.png" for c in ("red", "blue")
                                                          for a in ("fox", "owl")} for n in names)
    parameters, record = read_image_metadata(tmp_path / "random" / names[0])
    assert 'Template: "a {red|blue} __animals__"' in parameters or "Template: a {red|blue} __animals__" in parameters
    assert record["prompt_template"] == "a {red|blue} __animals__" and "{" not in record["prompt"]

    every = runner.invoke(app, ["a {red|blue} __animals__", *tiny(
        tiny_model_dir, "--seed", "5", "--combinatorial", "--wildcard-dir", wildcards, "-o", f"{tmp_path}/all/",
        "--json")])
    assert every.exit_code == 0, every.output
    records = [json.loads(line) for line in every.stdout.splitlines()]
    assert sorted(r["prompt"] for r in records) == ["a blue fox", "a blue owl", "a red fox", "a red owl"]
    assert [r["seed"] for r in records] == [5, 6, 7, 8]


def test_batch_lines_switch_loras_and_equal_single_runs(tiny_model_dir, files, tmp_path) -> None:
    detail, other = files / "loras" / "detail.safetensors", files / "loras" / "other.safetensors"
    lines = [
        {"prompt": "a fox", "seed": 1, "lora": f"{detail}:0.8"},
        {"prompt": "a fox", "seed": 1},
        {"prompt": "an owl", "seed": 2, "lora": [f"{detail}:0.5", f"{other}:0.5"], "clip_skip": 2},
        {"prompt": "a mystyle owl", "seed": 3, "embedding": str(files / "mystyle.pt")},
    ]
    source = tmp_path / "lines.jsonl"
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = runner.invoke(app, ["batch", str(source), *tiny(tiny_model_dir, "-o", f"{tmp_path}/batch/",
                                                             "--batch-size", "2")])
    assert result.exit_code == 0, result.output
    made = sorted((tmp_path / "batch").glob("*.png"))
    assert len(made) == 4
    for number, (line, path) in enumerate(zip(lines, made, strict=True)):
        flags = []
        for spec in [line["lora"]] if isinstance(line.get("lora"), str) else line.get("lora", []):
            flags += ["--lora", spec]
        if "clip_skip" in line:
            flags += ["--clip-skip", str(line["clip_skip"])]
        if "embedding" in line:
            flags += ["--embedding", line["embedding"]]
        single = tmp_path / f"single-{number}.png"
        alone = runner.invoke(app, [line["prompt"], *tiny(tiny_model_dir, "--seed", str(line["seed"]), *flags,
                                                          "-o", str(single))])
        assert alone.exit_code == 0, alone.output
        assert np.abs(pixels(single) - pixels(path)).max() <= 1, path.name
    assert not np.array_equal(pixels(made[0]), pixels(made[1]))  # line 2 really ran without the LoRA
    replay = runner.invoke(app, ["batch", str(tmp_path / "batch" / "manifest.jsonl"),
                                 *tiny(tiny_model_dir, "-o", f"{tmp_path}/replay/")])
    assert replay.exit_code == 0, replay.output  # a manifest is valid input, with its LoRA records
    for first, second in zip(made, sorted((tmp_path / "replay").glob("*.png")), strict=True):
        assert np.array_equal(pixels(first), pixels(second))


def test_batch_wildcard_line_makes_one_item_per_expansion(tiny_model_dir, files, tmp_path) -> None:
    source = tmp_path / "prompts.txt"
    source.write_text("a {red|blue} __animals__\n")
    args = ["batch", str(source), *tiny(tiny_model_dir, "-o", f"{tmp_path}/out/", "--combinatorial",
                                        "--wildcard-dir", str(files / "wildcards"), "--dry-run")]
    planned = runner.invoke(app, args)
    assert planned.exit_code == 0, planned.output
    assert all(text in planned.output for text in ("a-red-fox", "a-blue-owl"))


def test_settings_layers_set_prompt_options(tiny_model_dir, files, tmp_path, monkeypatch) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'clip_skip = 2\nlora = ["{files / "loras" / "detail.safetensors"}:0.4"]\n')
    monkeypatch.setenv("SDGEN_CONFIG", str(config))
    result = runner.invoke(app, ["a fox", *tiny(tiny_model_dir, "--seed", "1", "-o", str(tmp_path / "c.png"))])
    assert result.exit_code == 0, result.output
    _, record = read_image_metadata(tmp_path / "c.png")
    assert record["clip_skip"] == 2 and record["loras"][0]["scale"] == 0.4
    monkeypatch.setenv("SDGEN_CLIP_SKIP", "3")
    result = runner.invoke(app, ["a fox", *tiny(tiny_model_dir, "--seed", "1", "-o", str(tmp_path / "e.png"))])
    assert result.exit_code == 0 and read_image_metadata(tmp_path / "e.png")[1]["clip_skip"] == 3


EDITED = "a [cat:dog:0.5] in (snow:1.2) AND a [red|blue] __animals__ :0.8 BREAK ink <lora:detail:0.5>"


def test_prompt_editing_and_and_run_from_the_command_line_and_replay(tiny_model_dir, files, tmp_path) -> None:
    """Editing, alternation and AND mixed with emphasis, BREAK, a LoRA tag and a wildcard: the PNG keeps the
    prompt as typed (wildcard expanded, template kept), --from makes the same pixels, and the edit is made
    (--no-weighting, the brackets read as text, gives another picture)."""
    folders = ["--lora-dir", str(files / "loras"), "--wildcard-dir", str(files / "wildcards")]
    made = tmp_path / "edited.png"
    result = runner.invoke(app, [EDITED, *tiny(tiny_model_dir, "--seed", "4", "--steps", "4", *folders,
                                                "-o", str(made))])
    assert result.exit_code == 0, result.output
    parameters, record = read_image_metadata(made)
    assert parameters.splitlines()[0] in {EDITED.replace("__animals__", name) for name in ("fox", "owl")}
    assert record["prompt_template"] == EDITED
    again = runner.invoke(app, ["--from", str(made), "-o", str(tmp_path / "again.png")])
    assert again.exit_code == 0, again.output
    assert np.array_equal(pixels(tmp_path / "again.png"), pixels(made))
    literal = runner.invoke(app, [EDITED, *tiny(tiny_model_dir, "--seed", "4", "--steps", "4", *folders,
                                                 "--no-weighting", "-o", str(tmp_path / "literal.png"))])
    assert literal.exit_code == 0, literal.output
    assert not np.array_equal(pixels(tmp_path / "literal.png"), pixels(made))


def test_batch_lines_with_other_schedules_share_batches_and_equal_single_runs(tiny_model_dir, tmp_path) -> None:
    lines = ["a [cat:dog:0.5] in snow", "a cat :1.2 AND a dog :0.8", "a [fox|owl] [in snow::2]", "a plain fox"]
    source = tmp_path / "lines.txt"
    source.write_text("".join(line + "\n" for line in lines))
    result = runner.invoke(app, ["batch", str(source), *tiny(tiny_model_dir, "--steps", "4", "--seed", "9",
                                                             "-o", f"{tmp_path}/batch/", "--batch-size", "4")])
    assert result.exit_code == 0, result.output
    made = sorted((tmp_path / "batch").glob("*.png"))
    assert len(made) == len(lines)
    for path in made:
        parameters, record = read_image_metadata(path)
        single = tmp_path / f"single-{path.name}"
        alone = runner.invoke(app, ["--from", str(path), "-o", str(single)])
        assert alone.exit_code == 0, alone.output
        assert record["prompt"] in lines and parameters.splitlines()[0] == record["prompt"]
        assert np.abs(pixels(single) - pixels(path)).max() <= 1, path.name


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["-g", "1"], "Invalid --guidance-scale 1.0 for the prompt"), (["--cfg-end", "0.5"], "Invalid --cfg-end 0.5")],
)
def test_and_without_guidance_exits_2_before_loading(no_weights_load, tmp_path, extra, message) -> None:
    result = runner.invoke(app, ["a cat AND a dog", *extra, "-o", f"{tmp_path}/"])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "AND" in result.stderr and len(result.stderr.strip().splitlines()) == 1
