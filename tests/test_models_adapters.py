"""LoRAs and embeddings against diffusers' own loaders on its own pipeline (float32, within 1/255), and
the promises around them: scale 0 is no LoRA, kohya files load, weights come back exactly, a file that
does not fit is an error naming it, a pickle is read weights-only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sdgen.engine.checking import check_request
from sdgen.engine.loader import load_model
from sdgen.engine.pipeline import generate
from sdgen.engine.request import GenerationRequest, ModelSpec
from sdgen.errors import GenerationError, ModelNotFoundError
from sdgen.testing.tiny_adapters import build_tiny_embedding, build_tiny_lora, to_kohya

from .test_pipeline import reference_pipeline

PROMPT = "a photo of an astronaut riding a horse"
SIZE, STEPS, SEED = 64, 3, 7


@pytest.fixture(scope="module")
def files(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("adapters")
    tensors = build_tiny_lora(tiny_model_dir, folder / "loras" / "detail.safetensors")
    to_kohya(tensors, folder / "loras" / "kohya" / "detail-kohya.safetensors")
    for name in ("mystyle.pt", "mystyle.safetensors", "mystyle.bin"):
        build_tiny_embedding(tiny_model_dir, folder / name)
    (folder / "embeddings").mkdir()
    build_tiny_embedding(tiny_model_dir, folder / "embeddings" / "badhands.safetensors", vectors=3, seed=1)
    return folder


@pytest.fixture(scope="module")
def parts(tiny_model_dir: Path):
    """A model of its own: these tests change weights and tokens (and check they come back)."""
    return load_model(ModelSpec(model=str(tiny_model_dir), device="cpu", dtype="float32"))


def pixels(parts, prompt: str = PROMPT, **fields) -> np.ndarray:
    request = GenerationRequest(prompt, seed=SEED, num_inference_steps=STEPS, width=SIZE, height=SIZE, **fields)
    return np.asarray(generate(request, parts)[0].image).astype(np.int16)


def reference(parts_dir: Path, prompt: str = PROMPT, lora: Path | None = None, scale: float = 1.0,
              embedding: Path | None = None, token: str | None = None) -> np.ndarray:
    """diffusers' StableDiffusionPipeline with load_lora_weights / load_textual_inversion, on fresh parts."""
    fresh = load_model(ModelSpec(model=str(parts_dir), device="cpu", dtype="float32"))
    pipe = reference_pipeline(fresh, check_request(GenerationRequest("x")).scheduler)
    if lora is not None:
        pipe.load_lora_weights(str(lora), adapter_name="reference")
        pipe.set_adapters(["reference"], adapter_weights=[scale])
    if embedding is not None:
        pipe.load_textual_inversion(str(embedding), token=token)
    image = pipe(prompt, num_inference_steps=STEPS, width=SIZE, height=SIZE,
                 generator=torch.Generator("cpu").manual_seed(SEED)).images[0]
    return np.asarray(image).astype(np.int16)


def test_lora_matches_diffusers_load_lora_weights(parts, files, tiny_model_dir) -> None:
    lora = files / "loras" / "detail.safetensors"
    ours = pixels(parts, loras=(f"{lora}:0.7",))
    assert np.abs(ours - reference(tiny_model_dir, lora=lora, scale=0.7)).max() <= 1
    assert np.abs(ours - pixels(parts)).max() > 5  # the LoRA does change the picture


def test_scale_zero_is_no_lora_and_weights_come_back_exactly(parts, files) -> None:
    before = {name: tensor.clone() for name, tensor in parts.unet.state_dict().items()}
    text_before = {name: tensor.clone() for name, tensor in parts.text_encoder.state_dict().items()}
    plain = pixels(parts)
    lora = files / "loras" / "detail.safetensors"
    assert np.array_equal(pixels(parts, loras=(f"{lora}:0",)), plain)
    pixels(parts, loras=(f"{lora}:1.3",))
    assert np.array_equal(pixels(parts), plain)
    assert all(torch.equal(before[name], tensor) for name, tensor in parts.unet.state_dict().items())
    assert all(torch.equal(text_before[name], tensor) for name, tensor in parts.text_encoder.state_dict().items())


def test_kohya_layout_loads_and_equals_the_diffusers_file(parts, files) -> None:
    diffusers_file = files / "loras" / "detail.safetensors"
    kohya_file = files / "loras" / "kohya" / "detail-kohya.safetensors"
    assert np.array_equal(pixels(parts, loras=(f"{kohya_file}:0.8",)), pixels(parts, loras=(f"{diffusers_file}:0.8",)))


def test_prompt_tag_equals_the_flag_and_stays_in_the_recorded_prompt(parts, files) -> None:
    lora = files / "loras" / "detail.safetensors"
    tagged = GenerationRequest(f"{PROMPT} <lora:detail-kohya:0.6>", seed=SEED, num_inference_steps=STEPS,
                               width=SIZE, height=SIZE, lora_dir=str(files / "loras"))
    [result] = generate(tagged, parts)
    assert result.request.prompt == f"{PROMPT} <lora:detail-kohya:0.6>"
    assert [lora.name for lora in result.job.lora_refs] == ["detail-kohya"]
    flagged = pixels(parts, loras=(f"{lora}:0.6",))
    assert np.abs(np.asarray(result.image).astype(np.int16) - flagged).max() <= 1


def test_a_lora_folder_and_a_hub_id_in_the_cache_load_offline(parts, files, tmp_path, monkeypatch) -> None:
    import shutil

    from .conftest import put_in_hub_cache

    folder = tmp_path / "lora-folder"
    folder.mkdir()
    shutil.copyfile(files / "loras" / "detail.safetensors", folder / "pytorch_lora_weights.safetensors")
    put_in_hub_cache(folder, "someone/tiny-lora", "c" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    expected = pixels(parts, loras=(f"{files / 'loras' / 'detail.safetensors'}:0.6",))
    assert np.array_equal(pixels(parts, loras=(f"{folder}:0.6",)), expected)
    assert np.array_equal(pixels(parts, loras=("someone/tiny-lora:0.6",)), expected)
    with pytest.raises(ModelNotFoundError, match="'someone/not-cached' is not in the Hugging Face cache"):
        pixels(parts, loras=("someone/not-cached",))


def test_a_file_of_a_hub_repo_of_several_is_found_in_the_cache(files, tmp_path) -> None:
    """Hyper-SD's way: one repo, a LoRA file per step count, named as owner/name/file.safetensors."""
    import shutil

    from sdgen.models.adapters import _lora_file
    from sdgen.prompts.networks import resolve_loras

    from .conftest import put_in_hub_cache

    folder = tmp_path / "several"
    folder.mkdir()
    shutil.copyfile(files / "loras" / "detail.safetensors", folder / "Tiny-1step-lora.safetensors")
    shutil.copyfile(files / "loras" / "kohya" / "detail-kohya.safetensors", folder / "Tiny-4steps-lora.safetensors")
    put_in_hub_cache(folder, "someone/several-loras", "d" * 40)
    [ref] = resolve_loras(("someone/several-loras/Tiny-4steps-lora.safetensors:0.6",), "", None)
    assert (ref.source, ref.scale, ref.name) == ("someone/several-loras/Tiny-4steps-lora.safetensors", 0.6,
                                                 "Tiny-4steps-lora")
    found = Path(_lora_file(ref.source, offline=True))
    assert found.read_bytes() == (folder / "Tiny-4steps-lora.safetensors").read_bytes()
    with pytest.raises(GenerationError, match="hf download someone/several-loras Tiny-8steps-lora.safetensors"):
        _lora_file("someone/several-loras/Tiny-8steps-lora.safetensors", offline=True)


def test_two_loras_fuse_together(parts, files) -> None:
    one = files / "loras" / "detail.safetensors"
    two = files / "loras" / "kohya" / "detail-kohya.safetensors"
    both = pixels(parts, loras=(f"{one}:0.5", f"{two}:0.5"))
    assert np.abs(both - pixels(parts, loras=(f"{one}:1.0",))).max() <= 1  # the same LoRA twice adds up


def test_a_lora_for_another_model_is_an_error_naming_the_file(parts, tmp_path) -> None:
    from safetensors.torch import save_file

    wrong_shape = tmp_path / "sdxl-ish.safetensors"
    save_file({
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.ones(4, 640),
        "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.lora_up.weight": torch.ones(640, 4),
    }, str(wrong_shape))
    with pytest.raises(GenerationError, match="sdxl-ish.safetensors.*does not fit"):
        pixels(parts, loras=(str(wrong_shape),))
    no_match = tmp_path / "nothing.safetensors"
    save_file({"lora_unet_no_such_block.lora_down.weight": torch.ones(4, 8),
               "lora_unet_no_such_block.lora_up.weight": torch.ones(8, 4)}, str(no_match))
    for _ in range(2):  # the same request again fails again: never a picture made without its LoRA
        with pytest.raises(GenerationError, match="nothing.safetensors.*does not fit"):
            pixels(parts, loras=(str(no_match),))
    assert np.array_equal(pixels(parts), pixels(parts))  # the model still works


@pytest.mark.parametrize("name", ["mystyle.pt", "mystyle.safetensors", "mystyle.bin"])
def test_embedding_matches_diffusers_load_textual_inversion(parts, files, tiny_model_dir, name: str) -> None:
    prompt = "a mystyle photo of an astronaut"
    ours = pixels(parts, prompt, embeddings=(str(files / name),))
    expected = reference(tiny_model_dir, prompt, embedding=files / "mystyle.pt", token="mystyle")
    assert np.abs(ours - expected).max() <= 1
    assert np.abs(ours - pixels(parts, prompt)).max() > 5


def test_embedding_dir_loads_files_named_in_the_negative_prompt(parts, files, caplog) -> None:
    negative = "badhands, blurry"
    with_dir = GenerationRequest(PROMPT, negative_prompt=negative, embedding_dir=str(files / "embeddings"))
    [ref] = check_request(with_dir).jobs[0].embedding_refs
    assert ref.token == "badhands"
    embedding = str(files / "embeddings" / "badhands.safetensors")
    with caplog.at_level("INFO", logger="sdgen"):
        explicit = pixels(parts, negative_prompt=negative, embeddings=(embedding,))
    assert "Embeddings: badhands (badhands.safetensors)" in caplog.messages  # announced, as LoRAs are
    assert np.array_equal(pixels(parts, negative_prompt=negative, embedding_dir=str(files / "embeddings")), explicit)
    assert not np.array_equal(explicit, pixels(parts, negative_prompt=negative))  # unloaded again after


def test_a_pickle_that_runs_code_is_refused(parts, tmp_path) -> None:
    evil = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (print, ("ran code",))

    torch.save({"string_to_param": {"*": torch.ones(1, 32)}, "name": Payload()}, evil)
    with pytest.raises(GenerationError, match="evil.pt.*could not be read safely"):
        pixels(parts, "evil cat", embeddings=(str(evil),))


def test_an_embedding_of_the_wrong_width_is_an_error(parts, tmp_path) -> None:
    from safetensors.torch import save_file

    wide = tmp_path / "wide.safetensors"
    save_file({"emb_params": torch.ones(2, 768)}, str(wide))
    with pytest.raises(GenerationError, match="wide.safetensors.*does not fit"):
        pixels(parts, "a wide cat", embeddings=(str(wide),))
    assert np.array_equal(pixels(parts, "a wide cat"), pixels(parts, "a wide cat"))
