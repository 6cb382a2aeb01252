"""The sandbox of scripts/check_doc_examples.py (sdgen/testing/doc_sandbox.py): a folder put in the cache is
found offline by huggingface_hub under its id, and the examples' environment is the sandbox's alone."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from sdgen.testing.doc_sandbox import STAND_INS, environment, put_in_hub_cache


def test_a_folder_put_in_the_cache_is_what_the_hub_gives_offline(tmp_path: Path) -> None:
    from huggingface_hub import snapshot_download

    folder = tmp_path / "repo"
    (folder / "unet").mkdir(parents=True)
    (folder / "unet" / "config.json").write_text('{"a": 1}')
    (folder / "model_index.json").write_text("{}")
    hub = tmp_path / "hub"
    put_in_hub_cache(hub, folder, "someone/tiny", "f" * 40)
    found = Path(snapshot_download("someone/tiny", cache_dir=hub, local_files_only=True))
    assert found == hub / "models--someone--tiny" / "snapshots" / ("f" * 40)
    assert (found / "unet" / "config.json").read_text() == '{"a": 1}' and (found / "unet" / "config.json").is_symlink()
    assert (hub / "models--someone--tiny" / "refs" / "main").read_text() == "f" * 40


def test_the_examples_run_offline_in_the_sandboxs_home_without_the_callers_settings(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SDGEN_STEPS", "40")
    monkeypatch.setenv("HF_TOKEN", "not to be seen")
    env = environment(tmp_path, Path("/venv/bin"))
    assert env["HOME"] == str(tmp_path / "home") and env["HF_HOME"] == str(tmp_path / "hf")
    assert env["HF_HUB_OFFLINE"] == "1" and "HF_TOKEN" not in env and env["SDGEN_STEPS"] == "4"
    assert env["PATH"].split(os.pathsep)[:2] == [str(tmp_path / "bin"), "/venv/bin"]


def test_the_stand_ins_read_what_they_are_given(tmp_path: Path) -> None:
    for name, text in STAND_INS.items():
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o755)
    (tmp_path / "a.png").write_bytes(b"\x89PNG\r\n")
    run = lambda line: subprocess.run(["sh", "-c", line], cwd=tmp_path, timeout=20).returncode  # noqa: E731
    assert run("./producer | ./consumer") == 0
    assert run("cat a.png | ./display -") == 0 and run("echo text | ./display -") != 0
    assert run("./montage -geometry +2+2 a.png") == 0 and run("./montage b.png") != 0
