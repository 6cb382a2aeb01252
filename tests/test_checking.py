"""check_request: a request as given -> a CheckedRequest with nothing left to decide, each input read once."""

from __future__ import annotations

import dataclasses

from PIL import Image
from typer.testing import CliRunner

from sdgen.engine.checking import check_request
from sdgen.engine.request import CheckedRequest, GenerationRequest, ImageJob


def test_a_checked_request_is_its_own_type_with_every_open_field_decided() -> None:
    checked = check_request(GenerationRequest("a fox", num_images=3))
    assert isinstance(checked, CheckedRequest) and not isinstance(GenerationRequest("a fox"), CheckedRequest)
    checked_types = {field.name: field.type for field in dataclasses.fields(CheckedRequest)}
    given_types = {field.name: field.type for field in dataclasses.fields(GenerationRequest)}
    for name in ("seed", "width", "height"):  # Optional as given, decided once checked
        assert checked_types[name] == "int" and given_types[name] == "int | None", name
    assert isinstance(checked.seed, int) and (checked.width, checked.height) == (512, 512)
    assert check_request(checked) is checked  # checking again is free: a checked request is used as it is


def test_each_image_is_a_job_and_the_seed_rule_lives_in_one_place(tmp_path) -> None:
    (tmp_path / "animals.txt").write_text("fox\nowl\nwhale\n")
    checked = check_request(GenerationRequest("a __animals__", seed=40, num_images=3, wildcard_dir=str(tmp_path)))
    assert [job.index for job in checked.jobs] == [0, 1, 2]
    assert [job.seed for job in checked.jobs] == checked.seeds == [40, 41, 42]
    assert all(isinstance(job, ImageJob) and job.template == "a __animals__" for job in checked.jobs)
    assert all(job.prompt.startswith("a ") and job.expanded for job in checked.jobs)
    fields = {field.name for field in dataclasses.fields(ImageJob)}
    assert fields == {"index", "seed", "prompt", "template", "lora_refs", "embedding_refs", "subseed"}


def test_the_init_image_is_decoded_once_per_check(tmp_path, monkeypatch) -> None:
    from sdgen.config import images

    path = tmp_path / "start.png"
    Image.new("RGB", (64, 64), "white").save(path)
    decoded = []
    real = images.load_checked_image
    monkeypatch.setattr(images, "load_checked_image", lambda *a, **k: decoded.append(a[0]) or real(*a, **k))
    checked = check_request(GenerationRequest("a fox", init_image=str(path), mask=str(path), seed=1))
    assert len(decoded) == 2  # the init image and the mask, once each
    assert checked.init_pixels is not None and checked.init_pixels.pixels().size == (64, 64)
    assert checked.mask_pixels is not None and checked.mask_pixels.pixels("L").mode == "L"
    assert len(decoded) == 2  # the run reads the kept pixels


def test_a_plain_run_reads_the_checkpoint_header_and_the_init_image_once(
    tiny_model_dir, tmp_path, monkeypatch
) -> None:
    """`sdgen PROMPT --model FILE --init-image X`: one header read, one decode, from the check to the PNG."""
    from safetensors.torch import save_file

    from sdgen.cli.app import app
    from sdgen.config import images
    from sdgen.models import single_file
    from sdgen.testing.ldm import model_to_ldm

    save_file(model_to_ldm(tiny_model_dir), str(tmp_path / "tiny.safetensors"))
    Image.new("RGB", (64, 64), "gray").save(tmp_path / "start.png")
    headers, decoded = [], []
    real_shapes, real_load = single_file._shapes, images.load_checked_image
    monkeypatch.setattr(single_file, "_shapes", lambda path: headers.append(path) or real_shapes(path))
    monkeypatch.setattr(images, "load_checked_image", lambda *a, **k: decoded.append(a[0]) or real_load(*a, **k))
    args = ["a fox", "--model", str(tmp_path / "tiny.safetensors"), "--model-config", str(tiny_model_dir),
            "--init-image", str(tmp_path / "start.png"), "--strength", "0.5", "--steps", "2", "--seed", "1",
            "-o", str(tmp_path / "out.png")]
    result = CliRunner().invoke(app, args, env={"HF_HUB_OFFLINE": "1"})
    assert result.exit_code == 0, result.output
    assert len(headers) == 1, headers
    assert [str(path) for path in decoded] == [str(tmp_path / "start.png")]


def test_a_checkpoint_by_name_in_models_dir_or_by_path_gets_one_default_size(tiny_model_dir, tmp_path) -> None:
    """--models-dir DIR --model NAME and the path to the same file: the same model, the same native size, and
    the library's GenerationRequest without a size takes it too (not 512)."""
    from safetensors.torch import save_file

    from sdgen.engine.request import GenerationRequest, ModelSpec
    from sdgen.testing.ldm import model_to_ldm

    save_file(model_to_ldm(tiny_model_dir), str(tmp_path / "tiny.safetensors"))
    config = str(tiny_model_dir)
    by_name = ModelSpec(model="tiny", models_dir=str(tmp_path), model_config=config).checked()
    by_path = ModelSpec(model=str(tmp_path / "tiny.safetensors"), model_config=config).checked()
    assert by_name.model == by_path.model and by_name.native_size == by_path.native_size == 64
    request = check_request(GenerationRequest("a fox"), by_name)
    assert (request.width, request.height) == (64, 64)
