"""`sdgen batch` end to end on the tiny model: formats, overrides, batching, resume, bad lines, streaming,
dry runs, and two processes through accelerate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sdgen.cli import app
from sdgen.runs.batch.plan import derived_seed

runner = CliRunner()


def tiny(model, *extra: str) -> list[str]:
    return ["--model", str(model), "-W", "64", "-H", "64", "--steps", "2", "--device", "cpu", *extra]


def batch(model, source, out, *extra: str, **kwargs):
    return runner.invoke(app, ["batch", str(source), *tiny(model, "-o", f"{out}/", *extra)], **kwargs)


def pngs(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def sdgen_process(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sdgen", *args], env={**os.environ}, **kwargs)


@pytest.mark.parametrize(
    "name, text",
    [
        ("p.txt", "a red fox\n# skipped\n\nan owl\n"),
        ("p.jsonl", '{"prompt": "a red fox"}\n\n\n{"prompt": "an owl"}\n'),
        ("p.csv", 'prompt,seed\n"a red fox",\n\n"an owl",\n'),
        ("p.tsv", "prompt\tsteps\na red fox\t\n\nan owl\t2\n"),
    ],
)
def test_every_format_gives_the_same_named_images(tiny_model_dir, tmp_path, name, text) -> None:
    source = tmp_path / name
    source.write_text(text)
    result = batch(tiny_model_dir, source, tmp_path / "out")
    assert result.exit_code == 0, result.output
    first = 1 if name.endswith(("txt", "jsonl")) else 2  # csv/tsv: line 1 is the header
    assert result.stdout.splitlines() == [
        f"{tmp_path}/out/{first:05d}-{derived_seed(0, first)}-a-red-fox.png",
        f"{tmp_path}/out/00004-{derived_seed(0, 4)}-an-owl.png",
    ]
    assert "sdgen batch: 2 made, 0 skipped, 0 failed in" in result.stderr
    records = [json.loads(t) for t in (tmp_path / "out/manifest.jsonl").read_text().splitlines()]
    assert [(r["line"], r["status"], r["prompt"]) for r in records] == [
        (first, "done", "a red fox"),
        (4, "done", "an owl"),
    ]


def test_lines_override_flags(tiny_model_dir, tmp_path) -> None:
    source = tmp_path / "p.jsonl"
    line = {
        "prompt": "a fox",
        "seed": 7,
        "steps": 3,
        "negative_prompt": "blurry",
        "scheduler": "euler-a",
        "num_images": 2,
        "guidance_scale": 5,
    }
    source.write_text(json.dumps(line) + '\n{"prompt": "an owl"}\n')
    result = batch(tiny_model_dir, source, tmp_path / "out", "-g", "6", "--json")
    assert result.exit_code == 0, result.output
    fox, fox2, owl = (json.loads(t) for t in result.stdout.splitlines())
    assert (fox["seed"], fox2["seed"], fox["steps"], fox["scheduler"], fox["guidance_scale"]) == (7, 8, 3, "euler-a", 5)
    assert (owl["steps"], owl["scheduler"], owl["guidance_scale"]) == (2, "dpm++2m-karras", 6)
    text = Image.open(fox2["path"]).text["parameters"]
    assert "Negative prompt: blurry" in text
    assert "Steps: 3, Sampler: Euler a, Schedule type: Uniform, CFG scale: 5, Seed: 8" in text


def test_batched_images_match_one_by_one(tiny_model_dir, tmp_path) -> None:
    source = tmp_path / "p.txt"
    source.write_text("".join(f"prompt {i}\n" for i in range(5)))
    assert batch(tiny_model_dir, source, tmp_path / "one").exit_code == 0
    assert batch(tiny_model_dir, source, tmp_path / "four", "--batch-size", "4").exit_code == 0
    one, four = pngs(tmp_path / "one"), pngs(tmp_path / "four")
    assert one.keys() == four.keys() and len(one) == 5
    for name in one:
        a, b = (np.asarray(Image.open(tmp_path / d / name)).astype(int) for d in ("one", "four"))
        assert np.abs(a - b).max() <= 1  # batched GEMMs sum in another order: 1/255 at most


def test_generate_json_output_replays_through_batch(tiny_model_dir, tmp_path) -> None:
    made = runner.invoke(app, ["a fox", *tiny(tiny_model_dir, "-s", "5", "-n", "2", "--json", "-o", f"{tmp_path}/a/")])
    assert made.exit_code == 0, made.output
    (tmp_path / "records.jsonl").write_text(made.stdout)
    again = batch(tiny_model_dir, tmp_path / "records.jsonl", tmp_path / "b", "--name", "{seed}")
    assert again.exit_code == 0, again.output
    originals = sorted(json.loads(t)["path"] for t in made.stdout.splitlines())
    assert [Path(p).read_bytes() for p in originals] == [(tmp_path / "b" / f"{s}.png").read_bytes() for s in (5, 6)]


def test_an_interrupted_batch_keeps_a_record_per_image_and_resumes_past_a_torn_line(tiny_model_dir, tmp_path):
    source = tmp_path / "p.txt"
    source.write_text("".join(f"prompt {i}\n" for i in range(8)))
    assert batch(tiny_model_dir, source, tmp_path / "whole").exit_code == 0
    process = sdgen_process(
        ["batch", str(source), *tiny(tiny_model_dir, "-o", f"{tmp_path}/cut/")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    first = process.stdout.readline()  # one image finished
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    done_before = len(pngs(tmp_path / "cut"))
    assert first and 1 <= done_before < 8
    records = (tmp_path / "cut/manifest.jsonl").read_text().splitlines()
    assert len(records) == done_before  # every finished image has its record
    assert not [p for p in (tmp_path / "cut").iterdir() if p.suffix == ".part" or p.name.startswith(".")]
    with open(tmp_path / "cut/manifest.jsonl", "a") as manifest:
        manifest.write('{"line": 8, "index": 0, "prompt": "pro')  # a record torn by a harder kill
    resumed = batch(tiny_model_dir, source, tmp_path / "cut")
    assert resumed.exit_code == 0, resumed.output
    made = 8 - done_before
    assert len(resumed.stdout.splitlines()) == made
    assert f"{made} made, {done_before} skipped, 0 failed" in resumed.stderr
    assert pngs(tmp_path / "cut") == pngs(tmp_path / "whole")
    records = [json.loads(t) for t in (tmp_path / "cut/manifest.jsonl").read_text().splitlines() if t.endswith("}")]
    assert sorted(r["line"] for r in records if r["status"] == "done") == list(range(1, 9))


def test_resume_respects_a_crash_between_image_and_record_and_refuses_foreign_files(tiny_model_dir, tmp_path) -> None:
    source = tmp_path / "p.txt"
    source.write_text("a fox\nan owl\n")
    assert batch(tiny_model_dir, source, tmp_path / "out").exit_code == 0
    manifest = tmp_path / "out/manifest.jsonl"
    first = [{**json.loads(line), "seconds": None} for line in manifest.read_text().splitlines()]
    manifest.unlink()  # the images stay, their records are lost
    again = batch(tiny_model_dir, source, tmp_path / "out")
    assert again.exit_code == 0 and "0 made, 2 skipped" in again.stderr  # recognised by their own metadata
    assert [json.loads(line) for line in manifest.read_text().splitlines()] == first  # and recorded again
    assert batch(tiny_model_dir, source, tmp_path / "out").exit_code == 0
    assert len(manifest.read_text().splitlines()) == 2  # once: a recorded image is not recorded again
    edited = tmp_path / "edited.txt"
    edited.write_text("a fox\nan owl\n")
    changed = batch(tiny_model_dir, edited, tmp_path / "out", "--steps", "3")
    assert changed.exit_code == 1
    assert "exists but was not made from this line's settings; pass --overwrite" in changed.stderr
    assert batch(tiny_model_dir, edited, tmp_path / "out", "--steps", "3", "--overwrite").exit_code == 0


def test_bad_lines_are_reported_and_the_rest_is_made(tiny_model_dir, tmp_path) -> None:
    source = tmp_path / "p.jsonl"
    source.write_text(
        '{"prompt": "a fox"}\n{"prompt": \n{"prompt": "a cat", "stpes": 3}\n{"prompt": "an owl", "width": 65}\n'
    )
    result = batch(tiny_model_dir, source, tmp_path / "out")
    assert result.exit_code == 1
    assert len(result.stdout.splitlines()) == 1
    assert "sdgen: line 2: invalid JSON" in result.stderr
    assert "sdgen: line 3: unknown key 'stpes'" in result.stderr
    assert "sdgen: line 4: Invalid --width 65" in result.stderr
    assert "1 made, 0 skipped, 3 failed" in result.stderr
    failed = [json.loads(t) for t in (tmp_path / "out/manifest.jsonl").read_text().splitlines()][:3]
    assert [(r["line"], r["status"]) for r in failed] == [(2, "failed"), (3, "failed"), (4, "failed")]


def test_fail_fast_and_dry_run_load_no_weights(tiny_model_dir, tmp_path, no_weights_load) -> None:
    source = tmp_path / "p.txt"
    source.write_text("a fox\nan owl\n")
    dry = batch(tiny_model_dir, source, tmp_path / "out", "-n", "2", "--dry-run")
    assert dry.exit_code == 0, dry.output
    lines = dry.stdout.splitlines()
    assert len(lines) == 4 and lines[0].startswith("todo\tline 1\tseed ") and lines[0].endswith("-a-fox.png")
    assert "2 items, 4 images planned, 0 already done, 4 to make (16 U-Net image-passes); 0 bad lines" in dry.stderr
    assert not (tmp_path / "out").exists()
    source.write_text("a fox\n" + '{"prompt": 1}\n')
    bad = batch(tiny_model_dir, source, tmp_path / "out", "--format", "jsonl", "--fail-fast")
    assert bad.exit_code == 2 and bad.stderr.startswith("sdgen: error: line 1: invalid JSON")


def test_stdin_streams_results_before_the_input_ends(tiny_model_dir, tmp_path) -> None:
    args = ["batch", "-", *tiny(tiny_model_dir, "--json", "-q", "-o", f"{tmp_path}/out/")]
    process = sdgen_process(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdin.write(b"a fox\n")
    process.stdin.flush()
    first = json.loads(process.stdout.readline())  # produced while stdin is still open
    assert first["prompt"] == "a fox" and first["line"] == 1
    rest, stderr = process.communicate(b"an owl\n", timeout=120)
    assert process.returncode == 0, stderr
    assert [json.loads(t)["prompt"] for t in rest.splitlines()] == ["an owl"]


def test_batch_name_setting_names_batch_files_and_not_single_runs(tiny_model_dir, tmp_path) -> None:
    source = tmp_path / "p.txt"
    source.write_text("a fox\n")
    env = {"SDGEN_BATCH_NAME": "b-{seed}-{slug}", "SDGEN_NAME": "single-{seed}"}
    result = batch(tiny_model_dir, source, tmp_path / "out", "--seed", "3", env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{tmp_path}/out/b-{derived_seed(3, 1)}-a-fox.png\n"
    single = runner.invoke(app, ["a fox", *tiny(tiny_model_dir, "-s", "5", "-o", f"{tmp_path}/one/")], env=env)
    assert single.stdout == f"{tmp_path}/one/single-5.png\n"


def test_a_full_disk_mid_batch_keeps_finished_work_and_a_rerun_completes_it(tiny_model_dir, tmp_path, monkeypatch):
    import errno

    source = tmp_path / "p.txt"
    source.write_text("".join(f"prompt {i}\n" for i in range(4)))
    assert batch(tiny_model_dir, source, tmp_path / "whole").exit_code == 0
    real_fsync, calls = os.fsync, []

    def disk_fills_at_the_second_image(fd):
        calls.append(fd)
        if len(calls) >= 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    with monkeypatch.context() as patched:
        patched.setattr(os, "fsync", disk_fills_at_the_second_image)
        full = batch(tiny_model_dir, source, tmp_path / "out")
    assert full.exit_code == 1
    lines = full.stderr.splitlines()
    assert lines[-2].startswith("sdgen batch: 1 made, 0 skipped, 0 failed stopped: cannot write after")
    assert lines[-1].startswith(f"sdgen: error: Cannot write '{tmp_path}/out/00002-") and "No space left" in lines[-1]
    first_image = sorted(pngs(tmp_path / "whole"))[0]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [first_image, "manifest.jsonl"]  # no .part
    assert [json.loads(t)["line"] for t in (tmp_path / "out/manifest.jsonl").read_text().splitlines()] == [1]
    again = batch(tiny_model_dir, source, tmp_path / "out")  # space freed
    assert again.exit_code == 0 and "3 made, 1 skipped, 0 failed" in again.stderr
    assert pngs(tmp_path / "out") == pngs(tmp_path / "whole")


def test_a_running_batch_holds_its_folder_and_sigterm_stops_it_with_its_summary(
    tiny_model_dir, tmp_path, no_weights_load
):
    source = tmp_path / "p.txt"
    source.write_text("".join(f"prompt {i}\n" for i in range(30)))
    args = ["batch", str(source), *tiny(tiny_model_dir, "--steps", "30", "-o", f"{tmp_path}/out/")]
    process = sdgen_process(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout.readline()  # it is running
        second = runner.invoke(app, args)
        assert second.exit_code == 2
        assert second.stderr == (
            f"sdgen: error: Another sdgen batch (process {process.pid}) is writing to '{tmp_path}/out' "
            f"(lock '{tmp_path}/out/.sdgen-batch.lock'); wait for it to finish, or use another -o folder.\n"
        )
        process.send_signal(signal.SIGTERM)
        rest, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 143, stderr
    lines = stderr.decode().splitlines()
    assert lines[-2].startswith("sdgen batch: ") and " interrupted by SIGTERM after " in lines[-2]
    assert lines[-1] == "sdgen: interrupted by SIGTERM; finished images are kept."
    made = len(pngs(tmp_path / "out"))
    assert lines[-2].startswith(f"sdgen batch: {made} made")
    assert len((tmp_path / "out/manifest.jsonl").read_text().splitlines()) == made  # a record for each image
    assert not [p for p in (tmp_path / "out").iterdir() if p.suffix == ".part" or p.name.startswith(".")]


def test_messy_prompt_files_are_read_and_bad_lines_reported(tiny_model_dir, tmp_path) -> None:
    source = tmp_path / "p.txt"
    source.write_bytes(b"\xef\xbb\xbfa red fox\r\nan \xff owl\r\nnul\x00here\r\na cat\r\n")
    result = batch(tiny_model_dir, source, tmp_path / "out")
    assert result.exit_code == 1
    assert [Path(p).name.split("-", 2)[2] for p in result.stdout.split()] == ["a-red-fox.png", "a-cat.png"]
    assert "sdgen: line 2: not UTF-8 text (invalid start byte at byte 4)" in result.stderr
    assert "sdgen: line 3: holds a NUL byte (column 4)" in result.stderr
    assert "2 made, 0 skipped, 2 failed" in result.stderr
    prompts = [Image.open(p).text["parameters"].splitlines()[0] for p in result.stdout.split()]
    assert prompts == ["a red fox", "a cat"]  # no byte order mark, no carriage return


def test_out_of_memory_fails_that_chunk_and_the_rest_goes_on(tiny_model_dir, tmp_path, monkeypatch) -> None:
    import sdgen.engine.pipeline

    real, calls = sdgen.engine.pipeline._generate_batch, []

    def first_chunk_runs_out(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError()
        return real(*args, **kwargs)

    monkeypatch.setattr(sdgen.engine.pipeline, "_generate_batch", first_chunk_runs_out)
    source = tmp_path / "p.txt"
    source.write_text("a fox\nan owl\na cat\n")
    result = batch(tiny_model_dir, source, tmp_path / "out", "--batch-size", "2")
    assert result.exit_code == 1
    assert result.stderr.count("Out of memory making 2 image(s) at 64x64 on cpu (MemoryError)") == 2  # lines 1, 2
    assert "sdgen: line 1: Out of memory" in result.stderr and "try --batch-size 1" in result.stderr
    assert result.stdout.strip().endswith("-a-cat.png") and "1 made, 0 skipped, 2 failed" in result.stderr


def test_a_peer_gone_is_one_line_naming_gloos_reason() -> None:
    from sdgen.errors import GenerationError
    from sdgen.runs.batch.processes import together

    def closed() -> None:  # what gloo raises in the barrier when the other machine's process was killed
        raise RuntimeError("\n[/__w/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by "
                           "peer [127.0.0.1]:11701. This is typically caused by a remote worker crashing. GLHF!")

    with pytest.raises(GenerationError) as stopped:
        together("finished its share", closed)
    message = str(stopped.value)
    assert "\n" not in message and "pair.cc" not in message and "GLHF" not in message
    assert "(Connection closed by peer [127.0.0.1]:11701)" in message and "run the same launch again" in message
    assert together("started", lambda: 3) == 3
