"""`sdgen models list|info|rm|download` on a temporary Hugging Face cache and models folder, and --model NAME
found in --models-dir."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from typer.testing import CliRunner

from sdgen.cli import app
from sdgen.testing.ldm import model_to_ldm

from .conftest import TINY_HUB_ID, put_in_hub_cache

runner = CliRunner()


@pytest.fixture(scope="module")
def models_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    (folder / "SD15").mkdir()
    save_file(model_to_ldm(tiny_model_dir), str(folder / "SD15" / "tiny-finetune.safetensors"))
    save_file({"conditioner.embedders.1.model.ln_final.weight": torch.ones(2)}, str(folder / "xl.safetensors"))
    return folder


def lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines()]


def test_list_shows_the_cache_and_the_models_folder(hf_home, models_dir) -> None:
    result = runner.invoke(app, ["models", "list", "--models-dir", str(models_dir), "--json"])
    assert result.exit_code == 0, result.output
    found = {entry["name"]: entry for entry in lines(result.stdout)}
    assert found[TINY_HUB_ID]["kind"] == "SD 1.x" and found[TINY_HUB_ID]["where"] == "cache"
    assert any(revision.startswith("main=") for revision in found[TINY_HUB_ID]["revisions"])
    assert found["SD15/tiny-finetune.safetensors"]["kind"] == "SD 1.x"
    assert found["xl.safetensors"]["kind"].startswith("not loadable: this is an SDXL checkpoint")
    table = runner.invoke(app, ["models", "list", "--models-dir", str(models_dir)])
    assert table.exit_code == 0 and "tiny-finetune" in table.stdout


def test_info_on_a_file_a_folder_and_a_cached_id(hf_home, models_dir, tiny_model_dir) -> None:
    file = runner.invoke(app, ["models", "info", str(models_dir / "SD15" / "tiny-finetune.safetensors"), "--json"])
    assert file.exit_code == 0, file.output
    [info] = lines(file.stdout)
    assert (info["family"], info["in_channels"], info["prediction_type"]) == ("SD 1.x", 4, "epsilon")
    assert info["loads_with"].endswith("sd15")
    [folder] = lines(runner.invoke(app, ["models", "info", str(tiny_model_dir), "--json"]).stdout)
    assert folder["native_size"] == 64 and folder["format"] == "diffusers folder"
    [cached] = lines(runner.invoke(app, ["models", "info", TINY_HUB_ID, "--json"]).stdout)
    assert cached["family"] == "SD 1.x"
    missing = runner.invoke(app, ["models", "info", "nobody/nothing"])
    assert missing.exit_code == 1 and "sdgen models download" in missing.stderr


def test_rm_removes_every_revision_and_asks_first(hf_home, tiny_model_dir) -> None:
    put_in_hub_cache(tiny_model_dir, "someone/throwaway", "e" * 40)
    kept = runner.invoke(app, ["models", "rm", "someone/throwaway"], input="n\n")
    assert kept.exit_code == 2 and "Kept someone/throwaway" in kept.stderr
    removed = runner.invoke(app, ["models", "rm", "someone/throwaway", "--yes"])
    assert removed.exit_code == 0, removed.output
    listed = runner.invoke(app, ["models", "list", "--json"]).stdout
    assert "someone/throwaway" not in listed and TINY_HUB_ID in listed
    again = runner.invoke(app, ["models", "rm", "someone/throwaway", "--yes"])
    assert again.exit_code == 1 and "not in the Hugging Face cache" in again.stderr


def test_download_offline_says_what_is_missing(hf_home, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(app, ["models", "download", "nobody/nothing"])
    assert result.exit_code == 1 and "not in the Hugging Face cache" in result.stderr
    cached = runner.invoke(app, ["models", "download", TINY_HUB_ID])  # already there: its folder
    assert cached.exit_code == 0 and "snapshots" in cached.stdout


def test_a_model_name_is_found_in_the_models_folder(models_dir, tiny_model_dir, tmp_path) -> None:
    args = ["a fox", "--models-dir", str(models_dir), "--model", "tiny-finetune", "--model-config",
            str(tiny_model_dir), "--steps", "2", "--seed", "1", "--dtype", "float32", "-W", "64", "-H", "64",
            "-o", str(tmp_path / "a.png")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    folder = runner.invoke(app, ["a fox", "--model", str(tiny_model_dir), "--steps", "2", "--seed", "1",
                                 "-W", "64", "-H", "64", "--dtype", "float32", "-o", str(tmp_path / "b.png")])
    assert folder.exit_code == 0, folder.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png")))
    wrong = runner.invoke(app, ["a fox", "--models-dir", str(tmp_path / "nope"), "--model", "x", "-o", f"{tmp_path}/"])
    assert wrong.exit_code == 2 and "Invalid --models-dir" in wrong.stderr
