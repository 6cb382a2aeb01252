"""Threads (sdgen/hardware/threads.py): one per physical core this process may use, from a fake /proc/cpuinfo."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdgen.errors import InvalidRequestError
from sdgen.hardware import threads


def cpuinfo(tmp_path: Path, cores: list[tuple[int, int]]) -> str:
    """One block per logical CPU: (physical id, core id)."""
    blocks = [f"processor\t: {i}\nphysical id\t: {package}\ncore id\t\t: {core}\nflags\t\t: avx2\n"
              for i, (package, core) in enumerate(cores)]
    path = tmp_path / "cpuinfo"
    path.write_text("\n".join(blocks))
    return str(path)


def test_hyperthread_siblings_count_once(tmp_path: Path, monkeypatch) -> None:
    # 2 packages x 2 cores x 2 threads: CPUs 0-3 are first threads, 4-7 their siblings
    info = cpuinfo(tmp_path, [(0, 0), (0, 1), (1, 0), (1, 1)] * 2)
    monkeypatch.setattr(threads, "allowed_cpus", lambda: set(range(8)))
    choice = threads.choose_threads(cpuinfo=info)
    assert choice.threads == 4 and "4 cores of 8 allowed CPUs, 4 hyperthread siblings left out" in choice.reason
    monkeypatch.setattr(threads, "allowed_cpus", lambda: {0, 4, 1})  # taskset -c 0,1,4: core 0 twice, core 1
    assert threads.choose_threads(cpuinfo=info).threads == 2


def test_no_core_ids_counts_the_allowed_cpus(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nmodel name\t: some VM\n\nprocessor\t: 1\nmodel name\t: some VM\n")
    monkeypatch.setattr(threads, "allowed_cpus", lambda: {0, 1, 2})
    choice = threads.choose_threads(cpuinfo=str(path))
    assert choice.threads == 3 and "no core ids" in choice.reason
    assert threads.choose_threads(cpuinfo=str(tmp_path / "missing")).threads == 3


def test_threads_flag_wins_and_is_applied_to_torch(monkeypatch) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        assert threads.apply_threads(1) == threads.ThreadChoice(1, "--threads")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("bad", [0, -2, 5000, True])
def test_bad_threads_are_refused_before_loading(bad, no_weights_load) -> None:
    from sdgen.engine.request import ModelSpec

    with pytest.raises(InvalidRequestError, match=r"^Invalid --threads .*: give a whole number from 1 to 1024"):
        ModelSpec(model="x/y", threads=bad).checked()


def test_cli_threads_flag_exits_2_on_a_bad_value() -> None:
    from typer.testing import CliRunner

    from sdgen.cli.app import app

    result = CliRunner().invoke(app, ["a fox", "--model", "never/loaded", "--threads", "0"])
    assert result.exit_code == 2, result.output
    assert "--threads 0" in result.stderr and result.stderr.count("\n") == 1
