"""`sdgen PROMPT` when things go wrong: folders that cannot be written, full disks, signals, concurrent runs
into one folder, running out of memory, broken init images. Finished images are never lost."""

from __future__ import annotations

import errno
import os
import signal
import struct
import subprocess
import sys
import zlib

import pytest
from PIL import Image
from typer.testing import CliRunner

from sdgen.cli import app

runner = CliRunner()


def tiny(model, *extra: str) -> list[str]:
    return ["--model", str(model), "-W", "64", "-H", "64", "--steps", "2", "--device", "cpu", *extra]


def one_line_error(result, code: int, starts: str) -> None:
    assert result.exit_code == code, result.output
    assert result.stderr.startswith(starts), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


def test_an_output_folder_that_cannot_be_made_fails_before_loading(no_weights_load) -> None:
    result = runner.invoke(app, ["a fox", "--model", "never/loaded", "-o", "/proc/sdgen-test/"])
    one_line_error(result, 2, "sdgen: error: Cannot write to '/proc/sdgen-test': No such file or directory")


def test_a_full_disk_stops_with_one_line_and_keeps_finished_images(tiny_model_dir, tmp_path, monkeypatch) -> None:
    real_fsync, calls = os.fsync, []

    def second_write_fails(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", second_write_fails)
    result = runner.invoke(app, ["a fox", *tiny(tiny_model_dir, "-n", "3", "-s", "1", "-o", f"{tmp_path}/")])
    assert result.exit_code == 1
    assert result.stdout == f"{tmp_path}/00000-1-a-fox.png\n"  # the first image, reported and whole
    assert "sdgen: error: Cannot write " in result.stderr and "No space left on device." in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000-1-a-fox.png"]  # no .part file
    Image.open(tmp_path / "00000-1-a-fox.png").load()


def test_two_runs_into_one_folder_each_claim_their_own_numbers(tiny_model_dir, tmp_path) -> None:
    args = [sys.executable, "-m", "sdgen", "a fox", *tiny(tiny_model_dir, "-n", "2", "-o", f"{tmp_path}/")]
    runs = [
        subprocess.Popen([*args, "-s", str(seed), "--name", "img-{index:04d}"], stdout=subprocess.PIPE, text=True)
        for seed in (10, 20)
    ]
    reported = []
    for run in runs:
        out, _ = run.communicate(timeout=240)
        assert run.returncode == 0
        reported += out.split()
    assert sorted(reported) == [f"{tmp_path}/img-{i:04d}.png" for i in range(4)]
    seeds = sorted(int(Image.open(path).text["parameters"].split("Seed: ")[1].split(",")[0]) for path in reported)
    assert seeds == [10, 11, 20, 21]  # four images, none thrown away


def test_a_fixed_name_that_exists_is_still_refused_before_loading(tmp_path, no_weights_load) -> None:
    (tmp_path / "fox.png").write_bytes(b"mine")
    result = runner.invoke(app, ["a fox", "--model", "m/m", "-o", f"{tmp_path}/", "--name", "fox"])
    one_line_error(result, 2, f"sdgen: error: '{tmp_path / 'fox.png'}' already exists")
    result = runner.invoke(app, ["a fox", "--model", "m/m", "-n", "2", "-o", f"{tmp_path}/", "--name", "{slug}"])
    one_line_error(result, 2, "sdgen: error: Invalid --name '{slug}': gives every image the same file name")


@pytest.mark.parametrize("signum, code", [(signal.SIGHUP, 129)])  # SIGTERM (143): test_batch_run, one handler
def test_sigterm_and_sighup_stop_after_the_current_write(tiny_model_dir, tmp_path, signum, code) -> None:
    args = [*tiny(tiny_model_dir), "--steps", "8", "-n", "50", "--seed", "1", "-o", f"{tmp_path}/"]
    process = subprocess.Popen(
        [sys.executable, "-m", "sdgen", "a fox", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    first = process.stdout.readline().decode().strip()
    process.send_signal(signum)
    rest, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    name = signal.Signals(signum).name
    assert stderr.decode().endswith(f"sdgen: interrupted by {name}; finished images are kept.\n")
    written = sorted(str(p) for p in tmp_path.iterdir())
    assert written == sorted([first, *rest.decode().split()]) and 1 <= len(written) < 50  # no .part files
    for path in written:
        Image.open(path).load()


def test_running_out_of_memory_is_one_line_with_what_to_try(tiny_model_dir, tmp_path, monkeypatch) -> None:
    import sdgen.engine.pipeline

    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: 9 GB")

    monkeypatch.setattr(sdgen.engine.pipeline, "_generate_batch", no_memory)
    result = runner.invoke(app, ["a fox", *tiny(tiny_model_dir, "-q", "-o", f"{tmp_path}/")])
    one_line_error(result, 1, "sdgen: error: Out of memory making 1 image(s) at 64x64 on cpu (RuntimeError: ")
    assert "try --batch-size 1, --vae-tiling, --offload model (CUDA) or a smaller size." in result.stderr


def png_header_only(width: int, height: int) -> bytes:
    """A 100-byte PNG whose header claims a size (a decompression bomb's calling card)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"", "not an image (empty file)"),
        (b"GIF89 but not really", "not an image sdgen reads (it reads PNG, JPEG, WebP, BMP or GIF)"),
        ("truncated", "not an image sdgen can read: a truncated or corrupt PNG file ("),
        (png_header_only(40000, 40000), "1600000000 pixels, too many pixels to open safely (at most 16777216"),
        (png_header_only(5000, 4000), "5000x4000 pixels, too many pixels to open safely (at most 16777216"),
    ],
)
def test_broken_init_images_fail_before_loading(tmp_path, no_weights_load, content, reason) -> None:
    path = tmp_path / "init.png"
    if content == "truncated":
        Image.effect_noise((64, 64), 50).save(path)
        content = path.read_bytes()[: len(path.read_bytes()) // 2]
    path.write_bytes(content)
    result = runner.invoke(app, ["a fox", "--model", "m/m", "--init-image", str(path), "-o", f"{tmp_path}/"])
    one_line_error(result, 2, f"sdgen: error: Invalid --init-image '{path}': {reason}")
