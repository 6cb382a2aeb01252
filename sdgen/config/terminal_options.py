"""The option table's rows for what a run shows on the terminal while it works (the rest of the table, and what
a row says: sdgen/config/options.py)."""

from __future__ import annotations

from sdgen.config.optiontable import OUTPUT, RUNS, Option

TERMINAL_ROWS: tuple[Option, ...] = (
    Option(
        "progress", str, "auto",
        "How work is shown on stderr: rich (a live display), plain (timestamped lines), none, or auto (rich on a "
        "terminal, plain otherwise).",
        OUTPUT, commands=RUNS,
    ),
)
