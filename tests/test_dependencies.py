"""The test install is reproducible: the README's test command is what CI runs, and the lock it installs
with pins every dependency pyproject.toml names, at a version pyproject.toml allows."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "test-constraints.txt"

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def locked_versions() -> dict[str, Version]:
    """name -> pinned version for this Python (the lock is universal: markers split some pins by Python)."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate(default_environment()):
            (specifier,) = requirement.specifier
            pins[canonical(requirement.name)] = Version(specifier.version)
    return pins


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_the_readme_test_command_is_what_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    install = next(line for line in readme.splitlines() if line.startswith("pip install -c "))
    commands = install.split(" && ")
    assert "requirements/test-constraints.txt" in commands[0]
    ci = (ROOT / ".ci" / "run").read_text()
    for command in commands:
        if command.startswith("pip install"):  # the lock's install, and the packages that go in --no-deps
            assert command in ci, command


def test_the_lock_pins_every_dependency_within_its_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = [*project["dependencies"], *extras["dev"], *extras["plots"], *extras["serve"]]
    pins = locked_versions()
    for text in wanted:
        requirement = Requirement(text)
        if requirement.name == "sdgen" or (requirement.marker and not requirement.marker.evaluate()):
            continue
        name = canonical(requirement.name)
        assert name in pins, f"{name} is not in {LOCK.name}: run scripts/lock.sh"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{name}=={pins[name]} in the lock is outside pyproject's {requirement.specifier}: run scripts/lock.sh"
        )
    assert pins["torch"] == Version("2.13.0")  # the CPU build CI installs
