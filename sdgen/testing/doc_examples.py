"""The shell examples of README.md and docs/*.md, as data: the parse test (tests/test_doc_examples.py) checks
every sdgen command against the real command line, and scripts/check_doc_examples.py runs every line.

A shell example is a command line of a ```bash (sh, shell, console) block, continuation lines joined, blank
lines and comment lines left out. Nothing here imports sdgen: this is text handling only.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

SHELL = ("bash", "sh", "shell", "console")
_ENV = re.compile(r"[A-Z_][A-Z0-9_]*=.*")


@dataclass(frozen=True)
class Example:
    page: str  # relative to the repository root: README.md, docs/usage.md
    line: int  # where the command starts
    text: str  # the whole shell line, continuation lines joined
    env: tuple[tuple[str, str], ...]
    args: tuple[str, ...] | None  # sdgen's arguments; None: not an sdgen command
    block: int = 0  # which shell block of the page (lines of one block share a server, a folder)

    @property
    def command(self) -> str:
        """The line without its comment."""
        return self.text.split("  #")[0].strip()

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: `{self.text}`"


def pages(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def shell_lines(page: Path) -> list[tuple[int, int, str]]:
    """(block, line number, command) of each command line in the page's shell blocks, continuations joined."""
    found: list[tuple[int, int, str]] = []
    inside, pending, start, block = False, "", 0, 0
    for number, line in enumerate(page.read_text().splitlines(), 1):
        fence = re.match(r"^\s*```(\w*)", line)
        if fence:
            inside = not inside and fence.group(1) in SHELL
            block += inside
            continue
        if not inside or (not pending and (not line.strip() or line.lstrip().startswith("#"))):
            continue
        start = start if pending else number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        if line.split("  #")[0].rstrip().endswith(("|", "&&")):  # a pipeline going on on the next line
            pending += line.split("  #")[0].rstrip() + " "
            continue
        found.append((block, start, (pending + line).strip()))
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
        while segment and _ENV.fullmatch(segment[0]):
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


def all_examples(root: Path) -> list[Example]:
    """Every command line of every shell block, sdgen or not (args None where no sdgen command is in it)."""
    found = []
    for page in pages(root):
        name = str(page.relative_to(root))
        for block, number, text in shell_lines(page):
            part = None
            if re.search(r"\bsdgen\b", text):
                part = sdgen_part(shlex.split(text, comments=True))
            env = tuple(sorted(part[0].items())) if part else ()
            found.append(Example(name, number, text, env, tuple(part[1]) if part else None, block))
    return found


def examples(root: Path) -> list[Example]:
    """The lines that name sdgen (what the parse test checks)."""
    return [example for example in all_examples(root) if re.search(r"\bsdgen\b", example.text)]


# The one rewrite rule of scripts/check_doc_examples.py: what would take minutes on the tiny model is made
# small, the flags and the kinds of value staying as written.
MAX_SIDE, SIDE_DIVISOR, MAX_STEPS, MAX_COUNT = 128, 8, 4, 2  # 4 steps: a strength of 0.25 still runs one
_SIDE = re.compile(r"(?<!\S)(-W|-H|--width|--height)(\s+)(\d+)")
_OVERLAP = re.compile(r"(?<!\S)(--sd-upscale-overlap)(\s+)(\d+)")
_SIZE = re.compile(r"\b(\d{3,4})x(\d{3,4})\b")
_STEPS = re.compile(r"(?<!\S)(--steps|--hires-steps|SDGEN_STEPS=)(\s*)(\d+)")
_JSON_STEPS = re.compile(r'("steps":\s*)(\d+)')
_AXIS_STEPS = re.compile(r"\bsteps=([\d,]+)")
_COUNT = re.compile(r"(?<!\S)(-n|--batch-size)(\s+)(\d+)")
_PORT = re.compile(r"(?<!\S)(--port\s+)\d+|((?:127\.0\.0\.1|localhost):)\d+")
_LISTEN = re.compile(r"\s--listen(?!\S)")


def side(value: int) -> int:
    """A width or height over MAX_SIDE divided by SIDE_DIVISOR (a multiple of 8 still, 64 at least: sdgen's
    smallest side), else as it is."""
    return value if value <= MAX_SIDE else max(64, value // SIDE_DIVISOR // 8 * 8)


def steps(value: int) -> int:
    return min(value, MAX_STEPS)


def shrink(text: str, port: int | None = None) -> str:
    """The example as run: widths and heights over 128 divided by 8, 64 at least (768 -> 96, 384 -> 64), and SD
    upscale's tile overlap with them (96 -> 12), step counts (--steps, --hires-steps, "steps": N, a grid's
    steps=..., SDGEN_STEPS) capped at 4, -n and --batch-size capped at 2; with `port`, the server's --port and
    the clients' 127.0.0.1:PORT made that port, and --listen dropped (servers bind 127.0.0.1 only).
    """
    text = _SIDE.sub(lambda m: f"{m[1]}{m[2]}{side(int(m[3]))}", text)
    text = _OVERLAP.sub(lambda m: f"{m[1]}{m[2]}{int(m[3]) // SIDE_DIVISOR}", text)  # tiles 8 times smaller
    text = _SIZE.sub(lambda m: f"{side(int(m[1]))}x{side(int(m[2]))}", text)
    text = _STEPS.sub(lambda m: f"{m[1]}{m[2]}{steps(int(m[3]))}", text)
    text = _JSON_STEPS.sub(lambda m: f"{m[1]}{steps(int(m[2]))}", text)
    text = _AXIS_STEPS.sub(lambda m: "steps=" + ",".join(str(steps(int(v))) for v in m[1].split(",") if v), text)
    text = _COUNT.sub(lambda m: f"{m[1]}{m[2]}{min(int(m[3]), MAX_COUNT)}", text)
    if port is not None:
        text = _PORT.sub(lambda m: f"{m[1] or m[2]}{port}", text)
        text = _LISTEN.sub("", text)
    return text
