"""docs/reference.md is made from the option table, and the lists derived from the table keep the names
that older PNGs and manifests use."""

from __future__ import annotations

from pathlib import Path

import pytest

from sdgen.cli import reference
from sdgen.config import options
from sdgen.config.options import REQUEST
from sdgen.runs.batch.input import line_kinds, record_keys

ROOT = Path(__file__).resolve().parent.parent


def test_docs_reference_is_the_one_the_table_makes() -> None:
    committed = (ROOT / reference.PATH).read_text(encoding="utf-8")
    assert committed == reference.render(), f"{reference.PATH} is stale: run {reference.COMMAND}"


def test_the_reference_names_every_option_flag_settings_key_line_key_and_record_field() -> None:
    text = reference.render()
    for row in options.OPTIONS.values():
        assert f"| `{row.key}` | `{row.long_flag}" in text
        if row.layered:
            assert f"`SDGEN_{row.key.upper()}`" in text
    for name in (*line_kinds(), *record_keys()):
        assert f"`{name}`" in text


@pytest.mark.parametrize("row", list(options.OPTIONS.values()), ids=lambda row: row.key)
def test_each_row_is_consistent(row) -> None:
    table = options.OPTIONS
    if row.needs is not None:
        assert row.needs in table and table[row.needs].target == row.target and row.shapes_picture
    if row.batch_line is not None:
        assert row.target == REQUEST  # a line sets one prompt's request; the model is the run's
    if row.shapes_picture:
        assert row.record is not None  # recorded, so --from replays it and a resume can compare it
    if row.shares_unet_call or row.unet_field:
        assert row.shapes_picture and row.target == REQUEST


def test_the_derived_lists_keep_the_names_older_images_and_manifests_use() -> None:
    """The hand-kept lists these replaced, as they were: a name dropped or renamed here would stop older
    PNGs from replaying and older batches from resuming."""
    table = options.table()
    assert set(table.image_fields()) == {
        "prompt", "negative_prompt", "seed", "steps", "guidance_scale", "scheduler", "schedule", "width", "height",
        "strength",
        "init_image", "mask", "invert_mask", "mask_blur", "outpaint", "inpaint_fill", "sd_upscale",
        "sd_upscale_upscaler", "sd_upscale_overlap",
        "sd_upscale_seam_fix", "sd_upscale_seam_strength", "detail", "detail_prompt", "detail_strength", "detail_steps",
        "detail_padding", "detail_blur", "restore_faces", "restore_faces_visibility",
        "lora", "embedding", "clip_skip", "weighting",
        "hires_scale", "hires_steps", "hires_strength", "hires_upscaler", "cache_interval", "cfg_end",
        "eta_noise_seed_delta", "tcd_eta",
        "subseed", "subseed_strength", "seed_resize_from", "tiling",
        "guidance_rescale", "freeu", "pag_scale", "sag_scale", "control",
        "adapter", "ip_adapter", "ip_image", "ip_scale", "ip_encoder",
    }
    assert set(line_kinds()) == {
        *table.image_fields(), "num_images", "lora_dir", "embedding_dir", "style", "control_dir", "adapter_dir",
        "upscaler_dir",
    }
    assert record_keys() == {
        "path", "seconds", "status", "error", "line", "index", "model", "revision", "commit", "device", "dtype",
        "vae_dtype", "rng", "sdgen_version", "scheduler_class", "scheduler_options", "unet_sha256", "loras",
        "embeddings", "prompt_template", "vae", "vae_hash", "decoder", "token_merging", "model_config",
        "prediction_type", "styles", "backend", "quantize", "input",
    }
    assert {str(row.record) for row in table.recorded()} == {
        *table.image_fields(), "model", "revision", "dtype", "rng", "lora_dir", "embedding_dir", "control_dir", "vae",
        "adapter_dir", "upscaler_dir", "model_config", "prediction_type", "decoder", "token_merging", "backend",
        "quantize",
    } - {"prompt"}
    older = {"lora": [], "embedding": [], "clip_skip": 1, "weighting": True, "cache_interval": 1, "cfg_end": 1.0,
             "hires_scale": None, "hires_steps": None, "hires_strength": None, "hires_upscaler": None,
             "guidance_rescale": 0.0, "freeu": None, "pag_scale": 0.0, "sag_scale": 0.0}
    assert older.items() <= table.unrecorded().items()
