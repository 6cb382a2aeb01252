"""The command line: a thin Typer layer that parses, builds a request and calls one library function.

app.py makes the app; generate.py holds `sdgen PROMPT` (sdgen.runs.generate.run_generate) and `sdgen batch`
(sdgen.runs.batch.run.run_batch); pictures.py the pictures of the process (noise, schedule, grid); tools.py
the small commands (schedulers, info, config, doctor); common.py what they share;
reference.py writes docs/reference.md from the option table. The options of the generation commands are made from
the table in sdgen/config/options.py. Heavy libraries (torch, diffusers) are imported only inside the library
functions that need them, so `sdgen --help` is instant.
"""

from sdgen.cli.app import app, build_app, main

__all__ = ["app", "build_app", "main"]
