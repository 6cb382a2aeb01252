"""Detail repair (sdgen/engine/detail.py, sdgen/models/detectors.py): OpenCV's shipped face detector finds the
face in a photograph shipped in the tests (tests/data/grace_hopper.jpg), the face is inpainted and pasted
only inside its mask, the region is widened as A1111 widens it, the checks come before loading, and the
repair is off by default."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sdgen.engine.checking import check_request
from sdgen.engine.detail import box_mask, repaired, widened
from sdgen.engine.pipeline import generate
from sdgen.engine.request import GenerationRequest
from sdgen.engine.tasks import GeneratedImage
from sdgen.errors import InvalidRequestError
from sdgen.models.detectors import detect, find_detector

PHOTO = Path(__file__).parent / "data" / "grace_hopper.jpg"


def test_the_built_in_face_detector_finds_the_face_in_a_photograph() -> None:
    [(left, top, right, bottom)] = detect(find_detector("face"), Image.open(PHOTO))
    assert 60 < left < 100 and 30 < top < 70 and 170 < right < 210 and 150 < bottom < 190  # her face, 256x300
    assert detect(find_detector("face"), Image.new("RGB", (256, 256), "gray")) == []


def test_the_region_is_widened_to_the_generations_aspect_and_kept_inside() -> None:
    assert widened((100, 100, 140, 120), 10, (512, 512), (64, 64)) == (90, 80, 150, 140)  # square, padded
    assert widened((0, 0, 20, 40), 0, (512, 512), (128, 64)) == (0, 0, 80, 40)  # wider, shifted inside
    assert widened((200, 0, 512, 512), 32, (512, 512), (64, 64)) == (0, 0, 512, 512)  # as large as the picture


def test_the_face_is_repainted_inside_its_mask_only(tiny_parts) -> None:
    request = check_request(GenerationRequest(prompt="a portrait", seed=3, num_inference_steps=4, width=64,
                                              height=64, details=("face",), detail_strength=0.5))
    photo = Image.open(PHOTO).convert("RGB")
    result = GeneratedImage(request, request.jobs[0], photo, 0.0, "float32")
    parts_run = []

    def run_part(given: GenerationRequest) -> GeneratedImage:
        parts_run.append(given)
        return generate(given, tiny_parts)[0]

    fixed = repaired(result, run_part)
    [box] = detect(find_detector("face"), photo)
    outside = np.asarray(box_mask(photo.size, box, request.detail_blur)) == 0
    before, after = np.asarray(photo).astype(int), np.asarray(fixed.image).astype(int)
    assert np.array_equal(after[outside], before[outside])  # not one pixel outside the mask
    assert np.abs(after[~outside] - before[~outside]).mean() > 5  # the face is repainted
    [part] = parts_run
    assert (part.strength, part.num_inference_steps, part.width, part.height) == (0.5, 4, 64, 64)
    assert part.prompt == "a portrait" and part.details == ()


def test_detail_repair_is_off_by_default_and_checked_before_loading(no_weights_load, tmp_path) -> None:
    assert GenerationRequest(prompt="a fox").details == ()
    bad = [({"details": ("elbow",)}, "no such detector"), ({"details": ("face",), "detail_strength": 0.0},
           "must be more than 0"), ({"details": ("face",), "detail_strength": 0.1, "num_inference_steps": 4},
           "runs no step")]
    (tmp_path / "hands.pt").write_bytes(b"not a model")
    bad.append(({"details": (str(tmp_path / "hands.pt"),)}, "a pickle that ultralytics loads whole"))
    for overrides, message in bad:
        with pytest.raises(InvalidRequestError, match=message):
            check_request(GenerationRequest(prompt="a fox", **overrides))


def test_a_generation_with_nothing_to_repair_is_unchanged_and_records_the_settings(tiny_parts) -> None:
    from sdgen.record.metadata import a1111_parameters

    common = dict(prompt="a fox", seed=4, num_inference_steps=3, width=64, height=64)
    [plain] = generate(GenerationRequest(**common), tiny_parts)
    [checked] = generate(GenerationRequest(**common, details=("face",), detail_prompt="a smiling face"), tiny_parts)
    assert np.array_equal(np.asarray(plain.image), np.asarray(checked.image))  # noise has no face to repaint
    text = a1111_parameters(checked, tiny_parts)
    assert "ADetailer prompt: a smiling face" in text and "ADetailer denoising strength: 0.4" in text


def test_a_yolo_file_with_unsafe_pickles_allowed_needs_ultralytics(tmp_path) -> None:
    (tmp_path / "hands.pt").write_bytes(b"not a model")
    with pytest.raises(InvalidRequestError, match="needs ultralytics"):
        find_detector(str(tmp_path / "hands.pt"), allow_pickle=True)
