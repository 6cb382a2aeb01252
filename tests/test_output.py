"""Names, slugs and atomic, non-overwriting writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sdgen.config.options import describe
from sdgen.errors import OutputError
from sdgen.record.output import render_name, slugify, write_atomic


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


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_no_part_file(tmp_path, monkeypatch) -> None:
    import errno
    import os

    from sdgen.errors import WriteError

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(WriteError) as caught:
        write_atomic(tmp_path / "a.png", b"data")
    assert str(caught.value).startswith(f"Cannot write '{tmp_path / 'a.png'}': No space left on device.")
    assert "\n" not in str(caught.value) and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "where, reason",
    [("file/sub", "a file is in the way, not a folder"), ("/proc/sdgen-test/out", "No such file or directory")],
)
def test_a_folder_that_cannot_be_made_is_found_before_loading(tmp_path, where, reason) -> None:
    from sdgen.record.output import check_writable_folder

    (tmp_path / "file").write_text("x")
    folder = tmp_path / where if not where.startswith("/") else Path(where)
    with pytest.raises(OutputError, match=reason):
        check_writable_folder(folder)


def test_numbered_names_follow_the_template_and_skip_taken_numbers(tmp_path, monkeypatch) -> None:
    from sdgen.record import output
    from sdgen.record.output import index_pattern, next_index, write_numbered

    pattern = index_pattern("img-{index:04d}")
    assert pattern.match("img-0012.png").group(1) == "0012" and not pattern.match("img-12-x.png")
    assert index_pattern("{index:05d}-{seed}-{slug}").match("00007-42-a-fox.png").group(1) == "00007"
    (tmp_path / "img-0004.png").write_bytes(b"old")
    fields = {"seed": 1, "prompt": "a fox", "steps": 2, "scheduler": "ddim"}
    assert write_numbered(tmp_path, "img-{index:04d}", fields, b"a").name == "img-0005.png"
    # another run takes img-0006 between our look at the folder and our write: we take the next one
    stale = iter([6, 6])
    monkeypatch.setattr(output, "next_index", lambda folder, pattern=None: next(stale, next_index(folder, pattern)))
    (tmp_path / "img-0006.png").write_bytes(b"theirs")
    assert write_numbered(tmp_path, "img-{index:04d}", fields, b"b").name == "img-0007.png"
    assert (tmp_path / "img-0006.png").read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"img-000{i}.png" for i in (4, 5, 6, 7)]
