"""The table of options: one row makes a settings key, a flag of each command, its help and its mapping."""

from __future__ import annotations

import dataclasses
import json
from types import MappingProxyType

import pytest
from typer.testing import CliRunner

import sdgen.cli.generate
from sdgen.cli import build_app
from sdgen.config import options
from sdgen.config.options import BATCH, GENERATE, MODEL, OUTPUT, REQUEST, Option
from sdgen.engine.request import GenerationRequest, ModelSpec, OutputSpec

runner = CliRunner()
TARGETS = {REQUEST: GenerationRequest, MODEL: ModelSpec, OUTPUT: OutputSpec}


@dataclasses.dataclass(frozen=True)
class SharperRequest(GenerationRequest):
    """The code that uses the throwaway option below: a field of the request."""

    sharpness: float = 0.5


def test_a_new_row_alone_reaches_help_config_env_the_config_file_and_the_request(monkeypatch, tmp_path) -> None:
    row = Option("sharpness", float, 0.5, "How sharp (a throwaway row).", REQUEST)
    monkeypatch.setattr(options, "OPTIONS", MappingProxyType({**options.OPTIONS, "sharpness": row}))
    sees_the_row_in_help_config_env_the_config_file_and_the_request(monkeypatch, tmp_path, build_app())


def sees_the_row_in_help_config_env_the_config_file_and_the_request(monkeypatch, tmp_path, app) -> None:
    shown = runner.invoke(app, ["generate", "--help"]).stdout
    assert "--sharpness <float>" in shown and "How sharp (a throwaway row)." in shown and "[default: 0.5]" in shown
    assert "--sharpness" in runner.invoke(app, ["batch", "--help"]).stdout

    config = tmp_path / "config.toml"
    config.write_text("sharpness = 0.75\n")
    env = {"SDGEN_CONFIG": str(config)}
    assert json.loads(runner.invoke(app, ["config", "--json"]).stdout)["sharpness"] == {
        "value": 0.5,
        "source": "built-in",
    }
    assert json.loads(runner.invoke(app, ["config", "--json"], env=env).stdout)["sharpness"]["value"] == 0.75
    listed = runner.invoke(app, ["config"], env={**env, "SDGEN_SHARPNESS": "0.9"}).stdout
    assert "sharpness        0.9" in listed and "env SDGEN_SHARPNESS" in listed
    bad = runner.invoke(app, ["config"], env={"SDGEN_SHARPNESS": "very"})
    assert bad.exit_code == 2 and "Invalid SDGEN_SHARPNESS='very': must be a number." in bad.stderr

    made = []
    monkeypatch.setattr(sdgen.cli.generate, "GenerationRequest", SharperRequest)
    monkeypatch.setattr(sdgen.cli.generate, "run_generate", lambda request, *rest, **kw: made.append(request))
    assert runner.invoke(app, ["a fox", "--sharpness", "0.25"]).exit_code == 0
    assert runner.invoke(app, ["a fox"], env=env).exit_code == 0
    assert runner.invoke(app, ["a fox"], env={**env, "SDGEN_SHARPNESS": "0.9"}).exit_code == 0
    assert [request.sharpness for request in made] == [0.25, 0.75, 0.9]


PICTURE_ROW = Option(
    "sharpness", float, 0.5, "How sharp (a throwaway row).", REQUEST, shapes_picture=True, a1111="Sharpness"
)


def tiny_batch(app, model, source, out, *extra: str):
    args = ["batch", str(source), "--model", str(model), "-W", "64", "-H", "64", "--steps", "1", "--device", "cpu"]
    return runner.invoke(app, [*args, "-o", f"{out}/", *extra])


def jsonl(path, lines: list[dict]):
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_a_new_picture_row_alone_reaches_batch_lines_records_replay_resume_docs_and_u_net_calls(
    monkeypatch, tmp_path, tiny_model_dir
) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    import sdgen.runs.batch.plan
    import sdgen.runs.batch.run
    from sdgen.cli import reference
    from sdgen.record.metadata import read_image_metadata

    old_lines = jsonl(tmp_path / "old.jsonl", [{"prompt": "a fox", "seed": 1}, {"prompt": "an owl", "seed": 2}])
    assert tiny_batch(build_app(), tiny_model_dir, old_lines, tmp_path / "old").exit_code == 0  # before the row

    monkeypatch.setattr(options, "OPTIONS", MappingProxyType({**options.OPTIONS, "sharpness": PICTURE_ROW}))
    # the code that uses the option: a field of the request
    for module in (sdgen.runs.batch.plan, sdgen.runs.batch.run):
        monkeypatch.setattr(module, "GenerationRequest", SharperRequest)
    app = build_app()
    sees_the_row_in_help_config_env_the_config_file_and_the_request(monkeypatch, tmp_path, app)
    assert "sharpness" in options.table().image_fields() and "sharpness" in options.table().line_rows()

    # a batch made before the row existed resumes: its records mean the built-in value
    resumed = tiny_batch(app, tiny_model_dir, old_lines, tmp_path / "old")
    assert resumed.exit_code == 0 and "0 made, 2 skipped, 0 failed" in resumed.stderr, resumed.output

    # batch lines; two images that differ in it never share a U-Net call, two that differ in prompt and seed do
    calls = []
    real_generate_batch = sdgen.runs.batch.run.generate_batch

    def spy(tasks, *args, **kwargs):
        calls.append([task.request.sharpness for task in tasks])
        return real_generate_batch(tasks, *args, **kwargs)

    monkeypatch.setattr(sdgen.runs.batch.run, "generate_batch", spy)
    lines = [{"prompt": "a fox", "seed": 1, "sharpness": 0.25}, {"prompt": "an owl", "seed": 2, "sharpness": 0.25},
             {"prompt": "a cat", "seed": 3, "sharpness": 0.75}]
    source, out = jsonl(tmp_path / "new.jsonl", lines), tmp_path / "new"
    made = tiny_batch(app, tiny_model_dir, source, out, "--batch-size", "3")
    assert made.exit_code == 0, made.output
    assert calls == [[0.25, 0.25], [0.75]]

    # the PNG's record and A1111 text, the manifest
    paths = made.stdout.split()
    parameters, record = read_image_metadata(paths[0])
    assert record["sharpness"] == 0.25 and "Sharpness: 0.25" in parameters
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["sharpness"] for r in records] == [0.25, 0.25, 0.75]

    # a manifest is valid batch input, the option included
    planned = tiny_batch(app, tiny_model_dir, out / "manifest.jsonl", tmp_path / "again", "--dry-run", "--json")
    assert planned.exit_code == 0, planned.output
    assert [json.loads(line)["sharpness"] for line in planned.stdout.splitlines()] == [0.25, 0.25, 0.75]

    # resume: finished images are skipped; one made with another value is another picture
    assert "0 made, 3 skipped, 0 failed" in tiny_batch(app, tiny_model_dir, source, out).stderr
    jsonl(source, [*lines[:2], {**lines[2], "sharpness": 0.5}])
    conflict = tiny_batch(app, tiny_model_dir, source, out)
    assert conflict.exit_code == 1 and "exists but was not made from this line's settings" in conflict.stderr

    # --from replays it, from sdgen's record and from A1111's text alone
    a1111_only = tmp_path / "a1111.png"
    info = PngInfo()
    info.add_text("parameters", "a fox\nSteps: 2, Sampler: Euler, CFG scale: 7, Seed: 3, Size: 64x64, Sharpness: 0.75")
    Image.new("RGB", (64, 64)).save(a1111_only, pnginfo=info)
    replayed = []
    monkeypatch.setattr(sdgen.cli.generate, "run_generate", lambda request, *rest, **kw: replayed.append(request))
    for image in (paths[0], a1111_only):
        assert runner.invoke(app, ["--from", str(image)]).exit_code == 0
    assert [request.sharpness for request in replayed] == [0.25, 0.75]

    # the generated reference
    text = reference.render()
    assert "| `sharpness` | `--sharpness` | PROMPT, batch, grid, serve | `sharpness`, `SDGEN_SHARPNESS` |" in text
    assert "| `sharpness` | option `sharpness` (always) |" in text and "| Sharpness | `sharpness` |" in text


def test_a_row_whose_target_lacks_the_field_is_a_loud_mistake(monkeypatch) -> None:
    row = Option("sharpness", float, 0.5, "No field anywhere.", REQUEST)
    monkeypatch.setattr(options, "OPTIONS", MappingProxyType({**options.OPTIONS, "sharpness": row}))
    with pytest.raises(TypeError, match="option 'sharpness' feeds the request, but GenerationRequest has no field"):
        GenerationRequest.from_settings({"prompt": "a fox", "sharpness": 0.7})


@pytest.mark.parametrize(
    "option", [o for o in options.OPTIONS.values() if o.target in TARGETS], ids=lambda option: option.key
)
def test_every_row_lands_in_a_field_with_the_same_default(option) -> None:
    fields = {field.name: field for field in dataclasses.fields(TARGETS[option.target])}
    assert option.target_field in fields
    if option.default is not None:
        assert fields[option.target_field].default == option.default


@pytest.mark.parametrize("command", [GENERATE, BATCH])
def test_help_lists_every_row_of_the_command(command) -> None:
    shown = runner.invoke(build_app(), [command, "--help"]).stdout
    for option in options.options_for(command):
        assert option.long_flag in shown, option.key


def test_describe_names_the_flag_and_where_a_value_came_from() -> None:
    from sdgen.errors import InvalidRequestError

    error = InvalidRequestError("Invalid {name} 0: must be at least 1.", "steps")
    assert str(error) == "Invalid steps 0: must be at least 1."
    assert options.describe(error) == "Invalid --steps 0: must be at least 1."
    sources = {"steps": "env SDGEN_STEPS"}
    assert options.describe(error, sources) == "Invalid --steps 0: must be at least 1. (set by env SDGEN_STEPS)"
    assert options.describe(InvalidRequestError("Invalid {name} x.", "batch_name")) == "Invalid --name x."
