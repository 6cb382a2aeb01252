"""Finding LoRAs and embeddings before any weights load: tags, specs, folders, and the errors for each."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdgen.errors import InvalidRequestError
from sdgen.prompts.networks import (
    lora_tags,
    resolve_embeddings,
    resolve_loras,
    short_hash,
    without_tags,
)


@pytest.fixture
def loras(tmp_path: Path) -> Path:
    (tmp_path / "styles").mkdir()
    for name in ("detail.safetensors", "styles/ink.safetensors", "old.ckpt"):
        (tmp_path / name).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      tensor-bytes")
    return tmp_path


def test_tags_are_read_and_removed_from_the_text() -> None:
    prompt = "a fox <lora:detail:0.8>, <lora:ink>, <LORA:x: 1.5 >snow"
    assert lora_tags(prompt) == [("detail", 0.8), ("ink", 1.0), ("x", 1.5)]
    assert without_tags(prompt) == "a fox , , snow"


def test_a_tag_with_a_bad_scale_is_named() -> None:
    with pytest.raises(InvalidRequestError, match=r"<lora:detail:strong>"):
        lora_tags("a <lora:detail:strong>")


def test_loras_from_flags_and_tags_with_scales(loras: Path) -> None:
    refs = resolve_loras((f"{loras}/detail.safetensors:0.5",), "a fox <lora:ink:0.3>", str(loras))
    assert [(Path(r.source).name, r.scale, r.name) for r in refs] == [
        ("detail.safetensors", 0.5, "detail"), ("ink.safetensors", 0.3, "ink")  # found in a subfolder
    ]


def test_the_same_lora_twice_adds_its_scales(loras: Path) -> None:
    [ref] = resolve_loras((f"{loras}/detail.safetensors:0.5",), "<lora:detail:0.25>", str(loras))
    assert ref.scale == 0.75


def test_hub_ids_and_scales_split_at_the_last_colon() -> None:
    [ref] = resolve_loras(("latent-consistency/lcm-lora-sdv1-5:0.9",), "", None)
    assert (ref.source, ref.scale) == ("latent-consistency/lcm-lora-sdv1-5", 0.9)


@pytest.mark.parametrize(
    ("specs", "prompt", "lora_dir", "message"),
    [
        (("missing.safetensors",), "", None, "Invalid lora 'missing.safetensors': no such file"),
        ((), "<lora:detail>", None, "set --lora-dir"),
        ((), "<lora:nothing>", "DIR", "no nothing.safetensors in"),
        (("DIR/old.ckpt",), "", None, "a pickle file can run code"),
    ],
)
def test_what_cannot_be_found_is_an_error_before_loading(loras, specs, prompt, lora_dir, message) -> None:
    specs = tuple(spec.replace("DIR", str(loras)) for spec in specs)
    with pytest.raises(InvalidRequestError, match=message):
        resolve_loras(specs, prompt, lora_dir and str(loras))


def test_embeddings_from_flags_and_by_name_from_the_folder(tmp_path: Path) -> None:
    for name in ("easynegative.safetensors", "badhands.pt", "unused.bin", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    refs = resolve_embeddings((f"{tmp_path}/unused.bin:mytoken",), ("a cat", "EasyNegative, badhands"), str(tmp_path))
    assert [(Path(r.path).name, r.token) for r in refs] == [
        ("unused.bin", "mytoken"), ("badhands.pt", "badhands"), ("easynegative.safetensors", "easynegative")
    ]


def test_embedding_errors_name_the_value(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InvalidRequestError, match="no such file"):
        resolve_embeddings(("gone.pt",), ("a",), None)
    with pytest.raises(InvalidRequestError, match="is a .safetensors, .pt or .bin file"):
        resolve_embeddings((str(tmp_path / "notes.txt"),), ("a",), None)
    with pytest.raises(InvalidRequestError, match="no such folder"):
        resolve_embeddings((), ("a",), str(tmp_path / "nope"))


def test_short_hash_skips_a_safetensors_header(tmp_path: Path) -> None:
    import hashlib

    one = tmp_path / "one.safetensors"
    two = tmp_path / "two.safetensors"
    one.write_bytes((2).to_bytes(8, "little") + b"{}" + b"data")
    two.write_bytes((4).to_bytes(8, "little") + b'{"a"' + b"data")
    assert short_hash(str(one)) == short_hash(str(two)) == hashlib.sha256(b"data").hexdigest()[:12]
    plain = tmp_path / "emb.pt"
    plain.write_bytes(b"whole")
    assert short_hash(str(plain)) == hashlib.sha256(b"whole").hexdigest()[:12]
    assert short_hash("owner/repo") is None
