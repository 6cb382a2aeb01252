"""The tiny model (sdgen/testing/tiny_model.py): what its docstring promises of its size holds."""

from __future__ import annotations

import re


def test_the_docstring_says_the_size_make_tiny_writes(tiny_model_dir) -> None:
    from sdgen.testing import tiny_model

    said = re.search(r"about (\d+) MB", tiny_model.__doc__ or "")
    assert said is not None, "the docstring should say how big the tiny model is"
    files = [path for path in tiny_model_dir.rglob("*") if path.is_file() and ".fp16." not in path.name]
    written = sum(path.stat().st_size for path in files) / 1e6  # make-tiny writes no fp16 variant
    assert abs(written - int(said.group(1))) <= 0.25 * written, written
