"""What A1111 reads in the text sdgen writes (issue 24): the sampler, seed, size and steps that made the
image, the RNG, the inverted mask, multi-line prompts as written, and the steps of an image-to-image or
hires pass counted as A1111 counts them. Read back twice: by an independent parser written here from
A1111's rules (modules/infotext_utils.py, parse_generation_parameters; docs/usage.md#what-a1111-reads), with
A1111's step counting written out by hand (modules/sd_samplers_common.py, setup_img2img_steps), and by
sdgen's own reader from the A1111 text alone, which must make the same picture."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from sdgen.config import options
from sdgen.config.schedulers import scheduler_spec
from sdgen.engine.pipeline import generate
from sdgen.engine.request import GenerationRequest
from sdgen.record.metadata import a1111_parameters, request_values_from_image

# A1111's patterns, as its infotext_utils.py has them
A1111_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
A1111_SIZE = re.compile(r"^(\d+)x(\d+)$")


def a1111_parse(text: str) -> dict[str, str]:
    """parse_generation_parameters' rules: the last line holds the fields when it has 3 or more; every
    line before it is the prompt, up to a line starting `Negative prompt:`; quoted values are JSON; a
    WxH value becomes KEY-1 and KEY-2; a missing RNG means GPU."""
    *lines, last = text.strip().split("\n")
    if len(A1111_PARAM.findall(last)) < 3:
        lines, last = [*lines, last], ""
    prompt, negative, negative_started = "", "", False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            negative_started, line = True, line[16:].strip()
        if negative_started:
            negative += ("\n" if negative else "") + line
        else:
            prompt += ("\n" if prompt else "") + line
    fields = {"Prompt": prompt, "Negative prompt": negative}
    for key, value in A1111_PARAM.findall(last):
        if value[:1] == '"' and value[-1:] == '"':
            value = json.loads(value)
        size = A1111_SIZE.match(value)
        if size:
            fields[f"{key}-1"], fields[f"{key}-2"] = size.groups()
        else:
            fields[key] = value
    fields.setdefault("RNG", "GPU")
    fields.setdefault("Mask mode", "Inpaint masked")
    return fields


def a1111_steps_run(fields: dict[str, str], hires: bool) -> int:
    """The steps A1111 runs for these fields: image-to-image t_enc + 1 of `Steps`; the hires pass `Hires steps`
    (or Steps) of int(that / strength); none for a strength of 0."""
    steps, strength = int(fields["Steps"]), float(fields["Denoising strength"])
    if hires:
        return int(fields.get("Hires steps") or steps) if strength > 0 else 0
    return int(min(strength, 0.999) * steps) + 1


class StepCounter:
    def __init__(self) -> None:
        self.runs: list[int] = []

    def __call__(self, info) -> None:
        if info.index == 0:
            self.runs.append(0)
        self.runs[-1] += 1


def made(tiny_parts, request: GenerationRequest):
    counter = StepCounter()
    [result] = generate(request, tiny_parts, on_step=counter)
    return result, counter.runs


def a1111_only(tmp_path: Path, result, text: str) -> Path:
    """The image as A1111 would have it: the parameters text and no sdgen record."""
    info = PngInfo()
    info.add_text("parameters", text)
    path = tmp_path / "a1111-only.png"
    result.image.save(path, pnginfo=info)
    return path


def remade(tiny_parts, path: Path, **given):
    values = request_values_from_image(path) | given
    values.pop("rng", None)  # a model option: the tiny parts draw on the CPU as the text says
    request = GenerationRequest.from_settings(options.builtin_defaults() | values)
    return generate(request, tiny_parts)[0]


def test_a_multi_line_txt2img_round_trip(tiny_parts, tmp_path) -> None:
    request = GenerationRequest("a fox\nin the snow,\nat dawn", negative_prompt="blurry\nugly", seed=12,
                                num_inference_steps=3, width=72, height=64, scheduler="euler-a", clip_skip=2,
                                guidance_scale=6.5)
    result, runs = made(tiny_parts, request)
    text = a1111_parameters(result, tiny_parts)
    fields = a1111_parse(text)
    assert fields["Prompt"] == "a fox\nin the snow,\nat dawn" and fields["Negative prompt"] == "blurry\nugly"
    assert fields["Sampler"] == scheduler_spec("euler-a").a1111_sampler == "Euler a"
    assert (fields["Seed"], fields["Size-1"], fields["Size-2"], fields["Steps"]) == ("12", "72", "64", "3")
    assert (fields["CFG scale"], fields["Clip skip"], fields["RNG"]) == ("6.5", "2", "CPU")
    assert runs == [int(fields["Steps"])]
    again = remade(tiny_parts, a1111_only(tmp_path, result, text))
    assert again.request.prompt == request.prompt and again.request.negative_prompt == request.negative_prompt
    assert np.array_equal(np.asarray(again.image), np.asarray(result.image))


@pytest.mark.parametrize(("hires_steps", "strength"), [(5, 0.7), (6, 0.35)])
def test_a_hires_pass_round_trip_runs_the_steps_a1111_counts(tiny_parts, tmp_path, hires_steps, strength) -> None:
    request = GenerationRequest("a castle", seed=4, num_inference_steps=3, width=64, height=64, scheduler="euler",
                                hires_scale=1.5, hires_steps=hires_steps, hires_strength=strength)
    result, runs = made(tiny_parts, request)
    text = a1111_parameters(result, tiny_parts)
    fields = a1111_parse(text)
    assert (fields["Sampler"], fields["Seed"], fields["Size-1"], fields["Steps"]) == ("Euler", "4", "64", "3")
    assert fields["Hires upscale"] == "1.5"
    assert runs == [3, a1111_steps_run(fields, hires=True)]
    # of a schedule as long as sdgen's: A1111's int(Hires steps / min(strength, 0.999))
    assert int(int(fields["Hires steps"]) / min(float(fields["Denoising strength"]), 0.999)) == hires_steps
    again = remade(tiny_parts, a1111_only(tmp_path, result, text))
    assert np.array_equal(np.asarray(again.image), np.asarray(result.image))


def test_an_inverted_mask_img2img_round_trip(tiny_parts, tmp_path) -> None:
    init, mask = tmp_path / "init.png", tmp_path / "mask.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(init)
    blank = Image.new("L", (64, 64), 0)
    blank.paste(255, (16, 16, 48, 48))
    blank.save(mask)
    request = GenerationRequest("a cat", seed=9, num_inference_steps=4, width=64, height=64, scheduler="euler",
                                init_image=str(init), mask=str(mask), invert_mask=True, strength=0.6)
    result, runs = made(tiny_parts, request)
    text = a1111_parameters(result, tiny_parts)
    fields = a1111_parse(text)
    assert fields["Mask mode"] == "Inpaint not masked" and fields["Mask blur"] == "4"
    assert runs == [a1111_steps_run(fields, hires=False)] == [2]
    values = request_values_from_image(a1111_only(tmp_path, result, text))
    assert values["invert_mask"] is True
    again = remade(tiny_parts, a1111_only(tmp_path, result, text), init_image=str(init), mask=str(mask))
    assert np.array_equal(np.asarray(again.image), np.asarray(result.image))


def test_hires_with_no_denoising_upscales_only(tiny_parts) -> None:
    request = GenerationRequest("a castle", seed=4, num_inference_steps=2, width=64, height=64, scheduler="euler",
                                hires_scale=2.0, hires_strength=0.0)
    result, runs = made(tiny_parts, request)
    assert runs == [2] and result.image.size == (128, 128)  # A1111 runs no step with denoising 0
    fields = a1111_parse(a1111_parameters(result, tiny_parts))
    assert fields["Denoising strength"] == "0" and "Hires steps" not in fields
    assert a1111_steps_run(fields, hires=True) == 0
