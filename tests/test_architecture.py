"""The shape of the code: short functions, a thin command line, no import cycles, folders in layers that import
downwards only, a light `sdgen --help`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sdgen"
MAX_FUNCTION_LINES = 75
MAX_CLI_MODULE_LINES = 250
MAX_MODULE_LINES = 400


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def sdgen_imports(path: Path, known: set[str]) -> set[str]:
    """The sdgen modules a file imports, at the top or inside functions; `if TYPE_CHECKING:` blocks excepted."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    imported = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names if alias.name.split(".")[0] == "sdgen"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "sdgen":
            for alias in node.names:  # `from sdgen.models import hub` imports the submodule hub
                submodule = f"{node.module}.{alias.name}"
                imported.add(submodule if submodule in known else node.module)
    return imported & known


def test_no_function_is_longer_than_75_lines() -> None:
    long = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{name}.{node.name}: {length} lines")
    assert not long


def test_no_module_is_longer_than_400_lines() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert not {name: lines for name, lines in sizes.items() if lines > MAX_MODULE_LINES}


def test_the_command_line_stays_thin() -> None:
    """Each module of the command line parses and calls one library function per command: short files."""
    sizes = {path.name: len(path.read_text().splitlines()) for path in (PACKAGE / "cli").glob("*.py")}
    assert {"app.py", "common.py", "generate.py", "pictures.py", "tools.py"} <= set(sizes)
    assert all(lines <= MAX_CLI_MODULE_LINES for lines in sizes.values()), sizes


def test_no_import_cycles_among_sdgen_modules() -> None:
    graph = import_graph()
    state: dict[str, str] = {}  # depth-first search: "open" while on the path, "done" after

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            assert state.get(target) != "open", " -> ".join([*path, name, target])
            if target not in state:
                visit(target, [*path, name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


# The folders of sdgen/ from the bottom up. A module may import modules of its own folder and of the levels
# below it, never of its level's other folders or of a level above: the order in which the code reads.
# Imports count wherever they are, at the top of a module, inside a function or in a package's __init__
# (sdgen/__init__.py's lazy `_LAZY` table too); only `if TYPE_CHECKING:` blocks are left out.
LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(level.split())
    for level in (
        "base",  # sdgen/errors.py, interrupts.py, version.py: what every module may name
        "hardware testing",  # the device, dtype and machine; the tiny test models (they import no sdgen module)
        "config",  # the option table, the layered settings, the scheduler table, the checked image loader
        "prompts",  # emphasis, wildcards, LoRA and embedding tags, prompt limits
        "models",  # finding weights: names, the Hub cache, folders, checkpoint files, VAEs, adapters
        # the algorithm in reading order: the checked request (it checks model files and prompts, hence above
        # them), loading the parts, text, latents, the denoising loop and its plug-ins, inpainting, generate()
        "engine",
        "record",  # what an image keeps: its metadata (sdgen's record, A1111's text), output names and writing
        "pictures",  # previews, sheets, the denoising sequence, the live preview
        "explain",  # pictures of noising and of noise schedules
        "runs serve",  # a command's work (generate, batch, grid, convert, doctor, progress); the HTTP server
        "cli",  # the command line
        "api",  # sdgen/__init__.py (the public API, re-exporting the engine lazily) and __main__.py
    )
)
ROOT_MODULES = {"sdgen.errors": "base", "sdgen.interrupts": "base", "sdgen.version": "base", "sdgen": "api",
                "sdgen.__main__": "api"}


def folder_of(module: str) -> str:
    """The layer name of a module: its folder under sdgen/, or the name ROOT_MODULES gives a top-level module."""
    parts = module.split(".")
    return ROOT_MODULES.get(module) or parts[1]


def level_of(folder: str) -> int:
    return next(index for index, level in enumerate(LAYERS) if folder in level)


def lazy_table(path: Path, known: set[str]) -> set[str]:
    """The modules a package's `_LAZY = {name: module}` table imports on first use (PEP 562 __getattr__)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Assign) and any(getattr(target, "id", "") == "_LAZY" for target in node.targets):
            found |= {value.value for value in getattr(node.value, "values", []) if isinstance(value, ast.Constant)}
    return found & known


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: (sdgen_imports(path, known) | lazy_table(path, known)) - {name} for name, path in found.items()}


def wrong_way(graph: dict[str, set[str]]) -> list[str]:
    """Each import from a folder to another of the same level or of a level above."""
    wrong = []
    for name, targets in graph.items():
        for target in sorted(targets):
            here, there = folder_of(name), folder_of(target)
            if here != there and level_of(there) >= level_of(here):
                wrong.append(f"{name} -> {target} ({here} may not import {there})")
    return sorted(wrong)


def test_every_folder_has_a_layer() -> None:
    folders = {folder_of(name) for name in modules()}
    placed = set().union(*LAYERS)
    assert folders <= placed, f"add these folders to LAYERS: {sorted(folders - placed)}"


def test_imports_go_one_way_between_folders() -> None:
    assert wrong_way(import_graph()) == []


def test_a_wrong_way_import_is_caught(tmp_path: Path) -> None:
    """The check sees imports inside functions and a lazy table, and flags an import up or across the layers."""
    source = tmp_path / "module.py"
    source.write_text(
        "def f():\n    from sdgen.engine.pipeline import generate\n"
        "_LAZY = {'run': 'sdgen.runs.generate'}\n"
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import sdgen.cli.app\n"
    )
    known = set(modules())
    imported = sdgen_imports(source, known) | lazy_table(source, known)
    assert imported == {"sdgen.engine.pipeline", "sdgen.runs.generate"}
    assert wrong_way({"sdgen.config.options": imported}) == [
        "sdgen.config.options -> sdgen.engine.pipeline (config may not import engine)",
        "sdgen.config.options -> sdgen.runs.generate (config may not import runs)",
    ]
    assert wrong_way({"sdgen.runs.generate": {"sdgen.serve.app"}})  # the same level: neither imports the other
    assert wrong_way({"sdgen.engine.text": {"sdgen.errors", "sdgen.engine.latents"}}) == []


def test_the_command_line_imports_no_heavy_library() -> None:
    """`sdgen --help` stays instant: torch, diffusers, transformers, accelerate, numpy and Pillow load only
    inside the commands that need them."""
    heavy = ("torch", "diffusers", "transformers", "accelerate", "numpy", "PIL", "huggingface_hub")
    code = f"import sys, sdgen.cli; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_every_package_ships_in_the_wheel() -> None:
    """pyproject.toml lists the packages by hand (configs/ ships as sdgen.configs): a new folder must be added."""
    from sdgen.config.settings import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert packages <= listed, packages - listed
