"""The first hour on the command line: a mistyped command, help that says each thing once and whole,
`sdgen schedulers`' default, `sdgen config --edit`."""

from __future__ import annotations

import re
import sys

import tomllib
from typer.testing import CliRunner

from sdgen.cli import app
from sdgen.config import settings
from sdgen.config.schedulers import DEFAULT_SCHEDULER

runner = CliRunner()


def test_a_one_word_prompt_that_near_misses_a_command_is_refused_before_anything_loads(no_weights_load) -> None:
    result = runner.invoke(app, ["scheduler"])
    assert result.exit_code == 2
    assert result.stderr == (
        "sdgen: error: 'scheduler' is not a command; did you mean `sdgen schedulers`? "
        "(To draw the word, write `sdgen -- scheduler`.)\n"
    )
    assert "did you mean `sdgen doctor`" in runner.invoke(app, ["doctr"]).stderr


def test_after_dashes_or_far_from_any_command_a_word_is_a_prompt(no_weights_load, tmp_path) -> None:
    for args in (["--", "scheduler"], ["kitten"]):
        result = runner.invoke(app, ["--model", str(tmp_path / "nothere"), *args])
        assert "is not a command" not in result.stderr
        assert "Model" in result.stderr and result.exit_code == 1  # it went on to generate


def test_help_shows_each_default_once_and_list_options_plainly() -> None:
    text = runner.invoke(app, ["generate", "--help"]).stdout
    entries = [" ".join(entry.split()) for entry in re.split(r"\n(?=  -)", text)]
    for flag in ("--cache-interval", "--cfg-end", "--token-merging"):
        entry = next(entry for entry in entries if entry.startswith(flag + " "))
        assert entry.count("[default:") == 1, entry
    schedule = runner.invoke(app, ["schedule", "--help"], env={"COLUMNS": "200"}).stdout
    assert "<list[" not in schedule and "--steps <int>" in schedule and "--scheduler <text>" in schedule


def test_the_command_list_gives_whole_words_and_closed_parentheses() -> None:
    text = runner.invoke(app, ["--help"], env={"COLUMNS": "100"}).stdout
    listing = text.split("Commands:")[1]
    entries = re.split(r"\n  (?=\S)", listing.strip())
    assert len(entries) >= 14
    for entry in entries:
        name, description = entry.split(maxsplit=1)
        description = " ".join(description.split())
        assert description.endswith((".", "...", ")")), entry
        assert description.count("(") == description.count(")") and description.count("`") % 2 == 0, entry
    assert "generate Generate images from a prompt (the default command: `sdgen PROMPT`)." in " ".join(listing.split())


def test_schedulers_marks_the_default() -> None:
    lines = runner.invoke(app, ["schedulers"]).stdout.splitlines()
    marked = [line for line in lines if line.endswith("(default)")]
    assert len(marked) == 1 and marked[0].startswith(f"{DEFAULT_SCHEDULER} ")


def test_config_edit_makes_the_folder_and_a_template_then_opens_the_editor(tmp_path) -> None:
    config = tmp_path / "new" / "folder" / "config.toml"
    editor = tmp_path / "editor.py"
    editor.write_text("import sys\nopen(sys.argv[1], 'a').write('steps = 7\\n')\n")
    env = {"SDGEN_CONFIG": str(config), "EDITOR": f"{sys.executable} {editor}", "VISUAL": ""}
    result = runner.invoke(app, ["config", "--edit"], env=env)
    assert result.exit_code == 0, result.output
    assert result.stderr == f"sdgen: made {config}\n"
    text = config.read_text()
    assert text.startswith("# sdgen's user config (TOML)") and "# guidance_scale = 7.5" in text
    assert tomllib.loads(text) == {"steps": 7}  # the template is all comments
    shown = runner.invoke(app, ["config"], env=env).stdout
    assert re.search(r"^steps\s+7\s+user config", shown, re.M)
    uncommented = "\n".join(line[2:] for line in text.splitlines() if re.match(r"# \w+ = ", line))
    assert set(tomllib.loads(uncommented)) == set(settings.options.setting_kinds())  # every key, valid TOML
