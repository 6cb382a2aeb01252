"""Wildcards and alternatives through dynamicprompts: reproducible from each image's seed, every
combination on request, and clear errors before loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdgen.engine.checking import check_request
from sdgen.engine.request import GenerationRequest
from sdgen.errors import InvalidRequestError
from sdgen.prompts.wildcards import expand_all, expand_random, has_wildcards


@pytest.fixture
def wildcards(tmp_path: Path) -> Path:
    (tmp_path / "colors.txt").write_text("red\ngreen\nblue\n")
    return tmp_path


def test_only_prompts_with_wildcard_syntax_are_expanded() -> None:
    assert has_wildcards("{a|b} fox") and has_wildcards("a __colors__ fox")
    assert not has_wildcards("a fox, (snow:1.2), <lora:x:0.5>, snake_case_word")


def test_random_expansion_is_a_function_of_the_seed(wildcards: Path) -> None:
    template = "a {big|small} __colors__ fox"
    first = expand_random(template, [1, 2, 3, 4, 5, 6], str(wildcards))
    assert first == expand_random(template, [1, 2, 3, 4, 5, 6], str(wildcards))
    assert expand_random(template, [4], str(wildcards)) == [first[3]]  # image 4 alone: the same prompt
    assert len(set(first)) > 1 and all(p.startswith("a ") and p.endswith(" fox") for p in first)


def test_combinatorial_makes_every_combination(wildcards: Path) -> None:
    prompts = expand_all("a {big|small} __colors__ fox", str(wildcards))
    assert sorted(prompts) == sorted(f"a {s} {c} fox" for s in ("big", "small") for c in ("red", "green", "blue"))


@pytest.mark.parametrize(
    ("template", "folder", "message"),
    [
        ("a __colors__ fox", None, "set --wildcard-dir"),
        ("a __nope__ fox", "DIR", "wildcard __nope__ has no file nope.txt"),
        ("a {big|small fox", "DIR", "the wildcard syntax does not parse"),
    ],
)
def test_errors_name_the_prompt(wildcards, template, folder, message) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        expand_random(template, [1], folder and str(wildcards))


def test_a_request_gives_each_image_its_own_prompt_and_keeps_the_template(wildcards: Path) -> None:
    request = GenerationRequest("a {big|small} __colors__ fox", seed=10, num_images=4, wildcard_dir=str(wildcards))
    checked = check_request(request)
    assert checked.num_images == 4 and len(checked.jobs) == 4
    image = checked.jobs[2]
    assert image.prompt == expand_random(request.prompt, [12], str(wildcards))[0]
    assert image.template == "a {big|small} __colors__ fox" and image.expanded and image.seed == 12
    assert check_request(checked) == checked  # validating again changes nothing


def test_combinatorial_request_multiplies_the_images(wildcards: Path) -> None:
    request = check_request(GenerationRequest("{a|b} __colors__", seed=1, num_images=2, wildcard_dir=str(wildcards),
                                combinatorial=True))
    assert request.num_images == 12 and request.seeds == list(range(1, 13))
    assert request.jobs[0].prompt == request.jobs[1].prompt != request.jobs[2].prompt


def test_a_prompt_without_wildcards_is_untouched() -> None:
    request = check_request(GenerationRequest("a {single} fox", seed=1))
    assert request.jobs[0].prompt == "a single fox"
    plain = check_request(GenerationRequest("a fox", seed=1, num_images=3))
    assert [job.prompt for job in plain.jobs] == ["a fox"] * 3 and not plain.jobs[1].expanded
