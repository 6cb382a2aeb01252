"""docs/reference.md, made from the option table: every option with its flag, commands, settings key,
SDGEN_* variable, batch-line key, record field and A1111 field, then those lists on their own.

`python scripts/gen_reference.py` writes the file; tests/test_reference.py fails when it is stale, so the
reference can never drift from the table the way hand-kept lists did.
"""

from __future__ import annotations

from sdgen.config import options
from sdgen.config.options import GENERATE, MODEL, Option
from sdgen.config.optiontable import PROMPT
from sdgen.config.settings import ENV_PREFIX
from sdgen.record.metadata import RECORD_FACTS

PATH = "docs/reference.md"
COMMAND = "python scripts/gen_reference.py"
# How each command is typed, in the order the reference lists them.
COMMAND_NAMES = {GENERATE: "PROMPT", "batch": "batch", "grid": "grid", "serve": "serve", "noise": "noise",
                 "schedule": "schedule"}
# What sdgen writes in A1111's text besides the rows' fields (sdgen/record/metadata.py's a1111_parameters).
A1111_FACTS = {
    "Schedule type": "the sampler's schedule (Karras ...)",
    "VAE hash": "A1111's hash of the VAE",
    "Lora hashes": "the LoRAs used, by name and A1111 hash",
    "TI hashes": "the embeddings used, by token and A1111 hash",
    "Template": "the prompt before its wildcards were expanded",
    "Version": "the sdgen that made it",
}


def render() -> str:
    """The whole of docs/reference.md, from the current table."""
    rows = list(options.OPTIONS.values())
    parts = [
        "# Reference: every option",
        "",
        f"<!-- Made from the option table (sdgen/config/options.py) by `{COMMAND}`; do not edit by hand. -->",
        "",
        "One row of `sdgen/config/options.py` per option. **Picture** says whether the option shapes the picture: "
        "*split* where images that differ in it never share a U-Net call, *shared* where they may (prompts, "
        "seeds, text-side options), *the run's* for the model's options (one model per run). A command's own "
        "arguments (`sdgen grid --x`, `sdgen serve --port` ...) are in its `--help`.",
        "",
        "| key | flag | commands | settings key, environment | batch line | record | A1111 | picture | default "
        "| help |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *(_option_line(row) for row in rows),
        "",
        *_settings_section(rows),
        *_batch_section(),
        *_record_section(),
        *_a1111_section(rows),
    ]
    return "\n".join(parts).rstrip("\n") + "\n"


def _code(text: str | None) -> str:
    return f"`{text}`" if text else ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _flag(row: Option) -> str:
    flag = row.long_flag
    if row.kind is bool and row.layered:
        flag = f"{flag}/--no-{flag[2:]}"
    return ", ".join(_code(name) for name in (flag, row.short) if name)


def _picture(row: Option) -> str:
    if not row.shapes_picture:
        return ""
    if row.target == MODEL:
        return "the run's"
    return "shared" if row.shares_unet_call else "split"


def _default(row: Option) -> str:
    if row.kind is bool:
        return "on" if row.default else "off"
    if row.default is None:
        return _cell(row.empty or "none")
    shown = _code(str(row.default)) if row.default != "" else '`""`'
    return shown + (f" ({_cell(row.empty)})" if row.empty else "")


def _help(row: Option) -> str:
    own = [f"*{COMMAND_NAMES.get(command, command)}*: {text}" for command, text in row.help_for.items()]
    return _cell(" ".join([row.help, *own]))


def _option_line(row: Option) -> str:
    commands = ", ".join(name for command, name in COMMAND_NAMES.items() if command in row.commands)
    layered = f"{_code(row.key)}, {_code(ENV_PREFIX + row.key.upper())}" if row.layered else "command line only"
    cells = [_code(row.key), _flag(row), commands, layered, _code(row.batch_line), _code(row.record),
             _cell(row.a1111 or ""), _picture(row), _default(row), _help(row)]
    return "| " + " | ".join(cells) + " |"


def _listing(keys: list[str]) -> str:
    return ", ".join(_code(key) for key in keys)


def _settings_section(rows: list[Option]) -> list[str]:
    layered = [row.key for row in rows if row.layered]
    return [
        "## Settings keys",
        "",
        f"Presets, the config file and `{ENV_PREFIX}<KEY>` variables may set these {len(layered)} keys: "
        f"{_listing(layered)}.",
        "",
        f"Command line only: {_listing([row.key for row in rows if not row.layered])}.",
        "",
    ]


def _batch_section() -> list[str]:
    from sdgen.runs.batch.input import line_kinds, record_keys

    return [
        "## Batch-line keys",
        "",
        f"A line of `sdgen batch` may set {_listing(list(line_kinds()))} (`-` or `_` in names). Fields of "
        f"sdgen's own records are accepted and ignored, so `--json` output and a `manifest.jsonl` can be fed "
        f"back in: {_listing(sorted(record_keys()))}.",
        "",
    ]


def _record_section() -> list[str]:
    table = options.table()
    lines = [
        "## The image record",
        "",
        "sdgen's JSON chunk in each PNG, each `--json` line and each manifest record. `--from IMAGE` replays "
        "the options' fields; a field of an option that shapes the picture is always there (null: not used), "
        "another only with a value. A record made before a field existed resumes as if it held the option's "
        "built-in value.",
        "",
        "| field | what |",
        "|---|---|",
        f"| {_code(PROMPT)} | the prompt, wildcards expanded |",
    ]
    for row in table.recorded():
        when = "after loading" if row.target == MODEL else "always" if row.shapes_picture else "when set"
        needs = f", null without `{row.needs}`" if row.needs else ""
        lines.append(f"| {_code(row.record)} | option {_code(row.key)} ({when}{needs}) |")
    lines += [f"| {_code(name)} | {_cell(text)} |" for name, text in RECORD_FACTS.items()]
    return [*lines, ""]


def _a1111_section(rows: list[Option]) -> list[str]:
    names: dict[str, list[str]] = {}
    for row in rows:
        if row.a1111:
            names.setdefault(row.a1111, []).append(row.key)
    lines = ["## A1111 fields", "", "What sdgen writes in A1111's `parameters` text. `--from` an image without sdgen's "
             "record (one made by A1111 or another tool) reads back the prompts, the numbers, the sampler, the "
             "size, emphasis and the hires pass.", "",
             "| A1111 field | from |", "|---|---|"]
    lines += [f"| {name} | {_listing(keys)} |" for name, keys in names.items()]
    lines += [f"| {name} | {_cell(text)} |" for name, text in A1111_FACTS.items()]
    return [*lines, ""]
