"""Every shell example in README.md and docs/*.md stays true.

Each `sdgen ...` command in a ```bash block (the sdgen part of a pipeline, `accelerate launch -m sdgen ...`
and `VAR=value sdgen ...` included) is parsed by the real command line: the command and subcommand exist,
every flag is one the command takes, each value has the right type, arguments are all there. Lines of a
shell block that name sdgen but are not an sdgen command (pip, the bench script) are listed in NOT_SDGEN
with the reason; a new one fails until it is listed there, and every failure names its page and line.
Running every example is scripts/check_doc_examples.py's job (CI runs it after pytest); here: its rewrite
rule and its table of what cannot run here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from typer.main import get_command

from sdgen.cli import app
from sdgen.testing.doc_examples import all_examples, examples, shell_lines, shrink, side

ROOT = Path(__file__).resolve().parent.parent

# Lines of a shell block that mention sdgen but are no sdgen command, by how they start, and why not run here.
NOT_SDGEN = {
    "pip install": "installs packages (the network)",
    "python scripts/bench.py": "the benchmark: minutes on the real SD1.5 weights (docs/performance.md)",
}

EXAMPLES = examples(ROOT)
COMMAND = get_command(app)


def parse(args: list[str]) -> None:
    """Parse `sdgen ARGS` as the command line would, down to the last subcommand, running nothing."""
    command = COMMAND
    context = command.make_context("sdgen", list(args))
    while hasattr(command, "resolve_command"):
        pending = [*getattr(context, "_protected_args", []), *context.args]
        if not pending:
            break
        name, command, rest = command.resolve_command(context, pending)
        context = command.make_context(name, rest, parent=context)


def test_every_sdgen_example_parses() -> None:
    problems = []
    for example in EXAMPLES:
        if example.args is None:
            if not any(example.text.startswith(start) for start in NOT_SDGEN):
                problems.append(f"{example}: names sdgen but is no sdgen command; add it to NOT_SDGEN with why")
            continue
        try:
            parse(list(example.args))
        except SystemExit as stop:  # a subcommand's own eager --help or --version
            if stop.code not in (0, None):
                problems.append(f"{example}: exits {stop.code}")
        except Exception as error:  # click's UsageError, BadParameter, NoSuchOption ...
            problems.append(f"{example}: {type(error).__name__}: {getattr(error, 'message', error)}")
    assert not problems, "\n".join(problems)
    assert sum(example.args is not None for example in EXAMPLES) > 150  # the extraction still finds them


def test_continuations_and_pipelines_over_lines_are_one_example(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```bash\n# a comment\ncurl -s \\\n  -d '{}' |\n  jq .x   # note\n\nsdgen a\n```\n"
                    "```python\nsdgen b\n```\n```sh\nsdgen c\n```\n")
    assert shell_lines(page) == [(1, 3, "curl -s    -d '{}' |   jq .x   # note"), (1, 7, "sdgen a"), (2, 13, "sdgen c")]


@pytest.mark.parametrize(("line", "port", "expected"), [
    ('sdgen "a" -W 768 -H 512 -n 64 --batch-size 4', None, 'sdgen "a" -W 96 -H 64 -n 2 --batch-size 2'),
    ("sdgen a -W 128 --height 2048 -n 1", None, "sdgen a -W 128 --height 256 -n 1"),
    ("SDGEN_STEPS=12 sdgen a --steps 48 --hires-steps 10 --max-steps 60", None,
     "SDGEN_STEPS=4 sdgen a --steps 4 --hires-steps 4 --max-steps 60"),
    ("sdgen grid a --y steps=3,25,50 --x seed=1,2", None, "sdgen grid a --y steps=3,4,4 --x seed=1,2"),
    ("sdgen a -W 640 --seed-resize-from 512x512", None, "sdgen a -W 80 --seed-resize-from 64x64"),
    ("sdgen a --sd-upscale 4 --sd-upscale-overlap 96", None, "sdgen a --sd-upscale 4 --sd-upscale-overlap 12"),
    ("sdgen serve --listen --port 7861", 9000, "sdgen serve --port 9000"),
    ("""curl -s http://127.0.0.1:7860/v1 -d '{"size": "512x512", "steps": 25}'""", 9000,
     """curl -s http://127.0.0.1:9000/v1 -d '{"size": "64x64", "steps": 4}'"""),
])
def test_the_rewrite_rule_makes_examples_small_and_keeps_their_flags(line, port, expected) -> None:
    assert shrink(line, port) == expected


def test_a_divided_side_stays_a_multiple_of_eight() -> None:
    assert [side(value) for value in (64, 128, 136, 384, 520, 768, 1000)] == [64, 128, 64, 64, 64, 96, 120]


def test_every_row_of_the_not_runnable_table_names_one_example() -> None:
    spec = importlib.util.spec_from_file_location("check_doc_examples", ROOT / "scripts" / "check_doc_examples.py")
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script  # its dataclasses look their module up
    spec.loader.exec_module(script)
    everything = all_examples(ROOT)
    skipped = script.not_runnable(everything)  # exits naming the row when one matches none or several
    assert set(skipped.values()) <= {reason for _, _, reason in script.NOT_RUNNABLE}
    assert len(everything) - len(skipped) > 200  # nearly everything runs
