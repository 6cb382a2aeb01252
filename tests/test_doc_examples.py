"""Every shell example in README.md and docs/*.md stays true.

Each `sdgen ...` command in a ```bash block (the sdgen part of a pipeline, `accelerate launch -m sdgen ...`
and `VAR=value sdgen ...` included) is parsed by the real command line: the command and subcommand exist,
every flag is one the command takes, each value has the right type, arguments are all there. A chosen
subset (RUN) is also run end to end, in-process, against the tiny model at 64x64 and 1 step (flags appended
to the example, so the example's own flags are the ones checked). Lines of a shell block that name sdgen but
are not an sdgen command (pip, the bench script) are listed in NOT_SDGEN with the reason; a new one fails
until it is listed there, and every failure names its page and line.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from sdgen.cli import app

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = ("bash", "sh", "shell", "console")

# Lines of a shell block that mention sdgen but are no sdgen command, by how they start, and why not run here.
NOT_SDGEN = {
    "pip install": "installs packages (the network)",
    "python scripts/bench.py": "the benchmark: minutes on the real SD1.5 weights (docs/performance.md)",
}

# Examples run end to end on the tiny model, by page and a piece of the command unique on that page.
RUN = {
    "README.md": (
        'sdgen "a fox in the snow" --seed 42 -n 4',
        'sdgen "a fox" --scheduler euler-a',
        'sdgen "a wide valley" -W 768 -H 512 -o valley.png',
        "sdgen info outputs/*.png",
        "sdgen models list",
    ),
    "docs/settings.md": ("sdgen config --preset lcm --json",),
    "docs/samplers.md": ("sdgen schedulers",),
    "docs/install.md": ('sdgen "a fox" --model tiny/ --steps 2 -o tiny-out/',),
}
TINY = ["--steps", "1", "-W", "64", "-H", "64", "--device", "cpu"]  # appended: the run is quick, the flags checked


@dataclass(frozen=True)
class Example:
    page: str
    line: int
    text: str  # the whole shell line, continuation lines joined
    env: tuple[tuple[str, str], ...]
    args: tuple[str, ...] | None  # sdgen's arguments; None: not an sdgen command (NOT_SDGEN says why)

    @property
    def command(self) -> str:
        """The line without its comment."""
        return self.text.split("  #")[0].strip()

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: `{self.text}`"


def shell_lines(page: Path) -> list[tuple[int, str]]:
    """(line number, command) of each command line in the page's shell blocks, continuations joined."""
    found: list[tuple[int, str]] = []
    inside, pending, start = False, "", 0
    for number, line in enumerate(page.read_text().splitlines(), 1):
        fence = re.match(r"^\s*```(\w*)", line)
        if fence:
            inside = not inside and fence.group(1) in SHELL
            continue
        if not inside or (not pending and (not line.strip() or line.lstrip().startswith("#"))):
            continue
        start = start if pending else number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        found.append((start, (pending + line).strip()))
        pending = ""
    return found


def sdgen_part(words: list[str]) -> tuple[dict[str, str], list[str]] | None:
    """The environment and arguments of the sdgen command in a pipeline or chain, or None if it has none."""
    segment: list[str] = []
    for word in [*words, "|"]:
        if word not in ("|", "&&", ";", "&"):
            segment.append(word)
            continue
        env = {}
        while segment and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", segment[0]):
            key, _, value = segment.pop(0).partition("=")
            env[key] = value
        if segment[:1] == ["sdgen"]:
            return env, segment[1:]
        if "-m" in segment and segment[segment.index("-m") + 1 : segment.index("-m") + 2] == ["sdgen"]:
            return env, segment[segment.index("-m") + 2 :]  # accelerate launch ... -m sdgen ARGS
        if "sdgen" in segment[:6] and segment[0] in ("xargs", "time"):
            return env, segment[segment.index("sdgen") + 1 :]
        segment = []
    return None


def examples() -> list[Example]:
    found = []
    for page in PAGES:
        name = str(page.relative_to(ROOT))
        for number, text in shell_lines(page):
            if not re.search(r"\bsdgen\b", text):
                continue
            words = shlex.split(text, comments=True)
            part = sdgen_part(words)
            env = tuple(sorted(part[0].items())) if part else ()
            found.append(Example(name, number, text, env, tuple(part[1]) if part else None))
    return found


EXAMPLES = examples()


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


@pytest.fixture(scope="module")
def example_folder(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Path:
    """The examples' working folder, with the tests' tiny model as tiny/ (what `sdgen models make-tiny tiny/`
    writes: tests/test_doctor.py); the examples run in RUN's order, so `sdgen info outputs/*.png` reads what
    an earlier one wrote."""
    folder = tmp_path_factory.mktemp("examples")
    (folder / "tiny").symlink_to(tiny_model_dir)
    return folder


def chosen() -> list[Example]:
    picked = []
    for page, pieces in RUN.items():
        for piece in pieces:
            matches = [e for e in EXAMPLES if e.page == page and e.args is not None and piece in e.command]
            assert len(matches) == 1, f"{page}: RUN's {piece!r} matches {len(matches)} examples; make it unique"
            picked.append(matches[0])
    return picked


@pytest.mark.parametrize("example", chosen(), ids=str)
def test_chosen_examples_run_on_the_tiny_model(example: Example, example_folder: Path, monkeypatch) -> None:
    monkeypatch.chdir(example_folder)
    args = [str(p) for a in example.args for p in (sorted(Path().glob(a)) if "*" in a else [a])]
    generates = not args or args[0] not in {c.name for c in app.registered_commands} | {"models", "control"}
    model = ["--model", str(example_folder / "tiny")]
    if args and args[0] in ("generate", "batch", "grid"):
        generates = True
    if generates:
        args = [*args, *model, *TINY]
    result = CliRunner().invoke(app, args, env={**dict(example.env), "SDGEN_PROGRESS": "none"})
    assert result.exit_code == 0, f"{example}: exit {result.exit_code}\n{result.output}"
