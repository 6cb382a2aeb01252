"""The shape of the code: short functions, a thin command line, no import cycles, a light `sdgen --help`."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "sdgen"
MAX_FUNCTION_LINES = 75
MAX_CLI_MODULE_LINES = 250


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


def test_the_command_line_stays_thin() -> None:
    """Each module of the command line parses and calls one library function per command: short files."""
    sizes = {path.name: len(path.read_text().splitlines()) for path in (PACKAGE / "cli").glob("*.py")}
    assert {"app.py", "common.py", "generate.py", "pictures.py", "tools.py"} <= set(sizes)
    assert all(lines <= MAX_CLI_MODULE_LINES for lines in sizes.values()), sizes


def test_no_import_cycles_among_sdgen_modules() -> None:
    found = modules()
    graph = {name: sdgen_imports(path, set(found)) - {name} for name, path in found.items()}
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


def test_the_command_line_imports_no_heavy_library() -> None:
    """`sdgen --help` stays instant: torch, diffusers, transformers, accelerate, numpy and Pillow load only
    inside the commands that need them."""
    heavy = ("torch", "diffusers", "transformers", "accelerate", "numpy", "PIL", "huggingface_hub")
    code = f"import sys, sdgen.cli; print(' '.join(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_every_package_ships_in_the_wheel() -> None:
    """pyproject.toml lists the packages by hand (configs/ ships as sdgen.configs): a new folder must be added."""
    from sdgen.settings import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {name for name, path in modules().items() if path.name == "__init__.py"}
    assert packages <= listed, packages - listed
