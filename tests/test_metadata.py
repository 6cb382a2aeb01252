"""A1111 parameters text and the sdgen JSON chunk."""

from __future__ import annotations

import json

from sdgen.engine.checking import check_request
from sdgen.engine.pipeline import GeneratedImage
from sdgen.engine.request import GenerationRequest
from sdgen.record.metadata import a1111_parameters, png_info, result_record


def fake_result(**overrides) -> GeneratedImage:
    from PIL import Image

    values = dict(prompt="a cute kitten", seed=42, num_inference_steps=48, width=64, height=64)
    values.update(overrides)
    request = check_request(GenerationRequest(**values))
    return GeneratedImage(request, request.jobs[0], Image.new("RGB", (64, 64)), 1.0)


def test_a1111_text_matches_the_documented_form(tiny_parts) -> None:
    text = a1111_parameters(fake_result(negative_prompt="blurry, ugly"), tiny_parts)
    lines = text.splitlines()
    assert lines[0] == "a cute kitten"
    assert lines[1] == "Negative prompt: blurry, ugly"
    assert lines[2].startswith(
        "Steps: 48, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 42, Size: 64x64, Model: tiny-sd"
    )


def test_no_negative_line_when_empty_and_always_a_schedule_type(tiny_parts) -> None:
    text = a1111_parameters(fake_result(scheduler="euler-a"), tiny_parts)
    assert text.splitlines()[1].startswith("Steps: 48, Sampler: Euler a, Schedule type: Uniform, CFG scale: 7.5,")


def test_values_with_commas_or_colons_are_quoted(tiny_parts, monkeypatch) -> None:
    from dataclasses import replace

    parts = replace(tiny_parts, source=replace(tiny_parts.source, model="org/name,with: comma"))
    text = a1111_parameters(fake_result(), parts)
    assert 'Model: "name,with: comma"' in text


def test_json_record_is_lossless(tiny_parts) -> None:
    record = result_record(fake_result(negative_prompt="x"), tiny_parts)
    assert record["prompt"] == "a cute kitten" and record["seed"] == 42 and record["steps"] == 48
    assert record["scheduler"] == "dpm++2m-karras"
    assert record["scheduler_class"] == "DPMSolverMultistepScheduler"
    assert record["scheduler_options"] == {"use_karras_sigmas": True}
    assert record["dtype"] == "float32" and record["device"] == "cpu" and record["rng"] == "cpu"
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG", pnginfo=png_info(fake_result(), tiny_parts))
    written = Image.open(io.BytesIO(buffer.getvalue())).text
    assert json.loads(written["sdgen"])["seed"] == 42
    assert written["parameters"].startswith("a cute kitten\nSteps: 48")
