"""Names, slugs and atomic, non-overwriting writes."""

from __future__ import annotations

import re

import pytest

from sdgen.errors import OutputError
from sdgen.options import describe
from sdgen.output import render_name, slugify, write_atomic


@pytest.mark.parametrize(
    "prompt",
    [
        "../../etc/passwd",
        "line\nbreak\rand\x00nul",
        "x" * 5000,
        "🦊🔥 a fox",
        ".hidden",
        "C:\\Windows\\system32",
        "",
    ],
)
def test_slugs_are_safe_for_any_prompt(prompt: str) -> None:
    slug = slugify(prompt)
    assert slug and len(slug) <= 60
    assert set(slug) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")
    assert not slug.startswith((".", "-"))


def test_slug_examples() -> None:
    assert slugify("A Cute Kitten, 4k!") == "a-cute-kitten-4k"
    assert slugify("../../etc/passwd") == "etc-passwd"
    assert slugify("🦊") == "image"
    assert slugify("Café crème") == "cafe-creme"


def test_render_name_template() -> None:
    name = render_name("{index:05d}-{seed}-{slug}", index=3, seed=42, prompt="a fox", steps=20, scheduler="euler")
    assert name == "00003-42-a-fox.png"
    with pytest.raises(OutputError) as caught:
        render_name("{nope}", index=0, seed=0, prompt="", steps=1, scheduler="ddim")
    assert re.search("Invalid --name '{nope}'", describe(caught.value))


def test_write_is_atomic_and_never_overwrites(tmp_path) -> None:
    target = tmp_path / "sub" / "a.png"
    write_atomic(target, b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(OutputError) as caught:
        write_atomic(target, b"second")
    assert re.search("already exists; pass --overwrite", describe(caught.value))
    assert target.read_bytes() == b"first"
    write_atomic(target, b"third", overwrite=True)
    assert target.read_bytes() == b"third"
    assert sorted(p.name for p in target.parent.iterdir()) == ["a.png"], "no temporary files left behind"


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch) -> None:
    import os

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "a.png", b"data")
    assert list(tmp_path.iterdir()) == []
