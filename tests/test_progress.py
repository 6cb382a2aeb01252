"""The rich progress display, driven through its callbacks."""

from __future__ import annotations

import torch

from sdgen.engine.denoise import StepInfo
from sdgen.runs.progress import GenerationProgress


def step(index: int, seeds: tuple[int, ...]) -> StepInfo:
    latents = torch.zeros(len(seeds), 4, 2, 2)
    return StepInfo(index, 3, torch.tensor(999 - index), latents, latents, seeds)


def test_progress_tracks_parts_then_batches() -> None:
    with GenerationProgress(num_images=3, enabled=True) as progress:
        progress.on_part("tokenizer", 0)
        progress.on_part("unet", 3 * 2**30)
        assert progress._progress.tasks[0].description == "Loading unet (3,072 MiB)"
        progress.on_step(step(0, (1, 2)))
        assert [t.description for t in progress._progress.tasks] == ["Denoising images 1-2 of 3"]
        progress.on_step(step(1, (1, 2)))
        assert progress._progress.tasks[-1].completed == 2
        progress.on_step(step(0, (3,)))
        assert [t.description for t in progress._progress.tasks] == ["Denoising image 3 of 3"]


def test_disabled_progress_draws_nothing(capsys) -> None:
    with GenerationProgress(num_images=1, enabled=False) as progress:
        progress.on_part("unet", 10)
        progress.on_step(step(0, (1,)))
    assert capsys.readouterr().err == ""


def test_streaming_batches_have_no_total() -> None:
    with GenerationProgress(num_images=0, enabled=True) as progress:
        progress.on_step(step(0, (7,)))
        assert [t.description for t in progress._progress.tasks] == ["Denoising image 1"]


# --- the phases, as plain lines and on a terminal --------------------------------------------------------

import os  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402

from typer.testing import CliRunner  # noqa: E402

from sdgen.cli import app  # noqa: E402
from sdgen.runs.progress import resolved_mode  # noqa: E402

STAMP = r"\d\d:\d\d:\d\d "


def test_auto_is_rich_on_a_terminal_and_plain_otherwise(tmp_path) -> None:
    class Terminal:
        def isatty(self) -> bool:
            return True

    assert resolved_mode("auto", Terminal()) == "rich"
    with open(tmp_path / "log", "w") as not_a_terminal:
        assert resolved_mode("auto", not_a_terminal) == "plain"
    assert resolved_mode("none", Terminal()) == "none"


def test_plain_progress_prints_a_timestamped_line_per_phase_and_step(capsys) -> None:
    with GenerationProgress(num_images=2, mode="plain") as progress:
        progress.phase("importing", "torch")
        progress.on_part("unet", 3 * 2**20)
        progress.on_step(step(0, (1, 2)))
        progress.on_step(step(1, (1, 2)))
        progress.on_step(step(2, (1, 2)))
        progress.phase("writing", "out/a.png")
    lines = capsys.readouterr().err.splitlines()
    assert [re.sub(STAMP, "", line, count=1) for line in lines] == [
        "Importing torch",
        "Loading unet (3 MiB)",
        "Denoising images 1-2 of 2: step 1/3",
        *[line[9:] for line in lines[3:5]],
        "Decoding images 1-2 of 2",
        "Writing out/a.png",
    ]
    assert all(re.match(STAMP, line) for line in lines)
    assert re.fullmatch(r"Denoising images 1-2 of 2: step 2/3, [\d.]+ it/s", lines[3][9:])
    assert list(progress.timings) == ["importing", "loading", "denoising", "decoding", "writing"]


def test_a_run_off_a_terminal_shows_every_phase_and_verbose_times_them(tiny_model_dir, tmp_path) -> None:
    args = ["a fox", "--model", str(tiny_model_dir), "--steps", "2", "-o", f"{tmp_path}/", "-v"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    said = [re.sub(STAMP, "", line, count=1) for line in result.stderr.splitlines()]
    for phase in ("Importing", "Loading unet", "Loading vae", "Denoising image 1 of 1: step 2/2", "Decoding"):
        assert any(line.startswith(phase) for line in said), (phase, said)
    assert f"Writing {tmp_path}" in said
    timings = r"^Timings: importing [\d.]+ s, loading [\d.]+ s, denoising [\d.]+ s, decoding"
    assert re.search(timings, result.stderr, re.M)
    quiet = CliRunner().invoke(app, [*args[:-1], "--progress", "none"])
    assert quiet.exit_code == 0 and not re.search(STAMP, quiet.stderr)


def test_a_bad_progress_kind_is_refused_before_loading(no_weights_load) -> None:
    result = CliRunner().invoke(app, ["a fox", "--progress", "fancy"])
    assert result.exit_code == 2
    assert result.stderr == "sdgen: error: Invalid --progress 'fancy': choose one of auto, rich, plain, none.\n"


def test_on_a_terminal_notes_print_on_their_own_lines_above_the_display(tiny_model_dir, tmp_path, monkeypatch) -> None:
    """A pseudo-terminal as stderr: rich draws, and sdgen's notes (the seed, one while the bar shows a part
    loading) are lines of their own, not glued onto the bar."""
    import logging
    import pty
    import threading

    leader, follower = pty.openpty()
    seen: list[bytes] = []

    def read() -> None:
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:
                return
            if not chunk:
                return
            seen.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    on_part = GenerationProgress.on_part

    def noting(self, part: str, size: int) -> None:
        on_part(self, part, size)
        logging.getLogger("sdgen").info("Note: loaded a part")

    monkeypatch.setattr(GenerationProgress, "on_part", noting)
    terminal = open(follower, "w", buffering=1)  # noqa: SIM115 - closed below
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setenv("COLUMNS", "100")
    args = ["a fox", "--model", str(tiny_model_dir), "--steps", "2", "--seed", "3", "-o", f"{tmp_path}/"]
    try:
        app(args, prog_name="sdgen", standalone_mode=False)
    finally:
        terminal.close()
        reader.join(timeout=10)
        os.close(leader)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(seen).decode(errors="replace"))
    assert "Seed 3" in text and "Loading" in text and "Denoising image 1 of 1" in text
    shown = [[seg for seg in line.split("\r") if seg.strip()] for line in text.split("\n")]
    shown = [segments[-1].strip() for segments in shown if segments]  # what each line ends up showing
    assert "Seed 3" in shown, shown
    assert shown.count("Note: loaded a part") == 4 == sum("Note" in line for line in shown), shown
    assert not re.search(STAMP + "Loading", text)  # rich, not the plain lines
