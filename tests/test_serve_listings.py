"""What the server offers by name: checkpoints, VAEs, LoRAs, embeddings, read from disk without weights."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from sdgen.engine.request import ModelSpec
from sdgen.errors import InvalidRequestError
from sdgen.serve import listings


def test_the_served_and_the_servers_own_model_are_listed_and_found(tmp_path, hf_home) -> None:
    own = str(tmp_path / "my-model")
    spec = ModelSpec(model="sdgen-test/tiny-sd")  # a client switched to the cached one
    titles = [checkpoint.title for checkpoint in listings.checkpoints(spec, {"model": own})]
    assert titles[:2] == ["sdgen-test/tiny-sd", own]
    assert listings.find_checkpoint("TINY-SD [0123456789]", spec, {"model": own}).model == "sdgen-test/tiny-sd"
    assert listings.find_checkpoint("my-model", spec, {"model": own}).model == own
    with pytest.raises(InvalidRequestError, match="not one of this server's models"):
        listings.find_checkpoint("../../etc/passwd", spec, {"model": own})


def test_a_files_title_is_its_path_inside_models_dir(tmp_path) -> None:
    (tmp_path / "sub").mkdir()
    file = tmp_path / "sub" / "model.safetensors"
    file.write_bytes(b"x")
    assert listings.title(str(file), str(tmp_path)) == "sub/model.safetensors"
    assert listings.title(str(file)) == "model.safetensors"


def test_vaes_automatic_none_and_unknown(hf_home) -> None:
    spec, settings = ModelSpec(model="m"), {"vae": "stabilityai/sd-vae-ft-mse"}
    assert listings.vaes(spec, settings)[0] == {"model_name": "sd-vae-ft-mse", "filename": "stabilityai/sd-vae-ft-mse"}
    assert listings.find_vae("Automatic", spec, settings) == "stabilityai/sd-vae-ft-mse"
    assert listings.find_vae("None", spec, settings) is None
    assert listings.find_vae("sd-vae-ft-mse", spec, settings) == "stabilityai/sd-vae-ft-mse"
    with pytest.raises(InvalidRequestError, match="choose one of Automatic, None"):
        listings.find_vae("other.safetensors", spec, settings)


def test_loras_and_embeddings_from_their_folders(tmp_path) -> None:
    (tmp_path / "loras").mkdir()
    (tmp_path / "loras" / "ink.safetensors").write_bytes(b"x")
    (tmp_path / "loras" / "notes.txt").write_text("no")
    (tmp_path / "emb").mkdir()
    save_file({"emb_params": torch.zeros(3, 768)}, tmp_path / "emb" / "easyneg.safetensors")
    settings = {"lora_dir": str(tmp_path / "loras"), "embedding_dir": str(tmp_path / "emb")}
    assert [lora["name"] for lora in listings.loras(settings)] == ["ink"]
    loaded = listings.embeddings(settings)["loaded"]
    assert loaded["easyneg"]["vectors"] == 3 and loaded["easyneg"]["shape"] == 768
    assert listings.loras({}) == [] and listings.embeddings({}) == {"loaded": {}, "skipped": {}}
