"""ControlNet everywhere a request goes besides the command line (sdgen/engine/plugins/control_text.py and the
places that use it): batch lines with control images beside the prompts file, --save-control, the grid's
ControlNet axes and control column, the strip's control column, A1111's `ControlNet N` fields read back (the
model's name with the extension's hash), `sdgen info`, and which step savers work with a ControlNet."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sdgen.engine.pipeline import generate
from sdgen.engine.plugins import controlnet as controlnet_plugin
from sdgen.engine.plugins.control_text import control_maps, with_changes, with_image_folder
from sdgen.errors import InvalidRequestError, UsageError

from . import test_controlnet, test_stepsavers
from .conftest import SIZE
from .test_pipeline import PROMPT, pixels, reference_pipeline, request

controlnet_dirs, control_images = test_controlnet.controlnet_dirs, test_controlnet.control_images  # its fixtures
COMMON = ["--steps", "2", "--device", "cpu", "--dtype", "float32"]


def test_the_maps_saved_are_the_hints_the_controlnet_sees(tiny_parts, controlnet_dirs, control_images, monkeypatch):
    """control_maps (what --save-control, the strip and the grids show) is the fitted, preprocessed image
    the run's predictor hands the ControlNet, at the picture's size."""
    seen = []
    hint = controlnet_plugin.ControlNetPredictor._hint

    def kept(self, position, image, model_input):
        made = hint(self, position, image, model_input)
        seen.append(made)
        return made

    monkeypatch.setattr(controlnet_plugin.ControlNetPredictor, "_hint", kept)
    control = f"{controlnet_dirs[0]}={control_images[1]}:invert:fill"
    asked = request(num_inference_steps=2, width=SIZE + 16, controls=(control,))
    [result] = generate(asked, tiny_parts)
    [made] = control_maps(asked, result.image.size)
    assert made.size == result.image.size == (SIZE + 16, SIZE)
    expected = (seen[0][0].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(np.asarray(made).astype(np.float32) - expected).max() <= 0.5


def test_a_batch_line_reads_its_control_image_beside_the_prompts_file_and_saves_its_map(
    tiny_model_dir, controlnet_dirs, control_images, tmp_path, monkeypatch
) -> None:
    from PIL import Image
    from typer.testing import CliRunner

    from sdgen.cli import app

    folder = tmp_path / "prompts"
    folder.mkdir()
    shutil.copy(control_images[1], folder / "disc.png")
    source = folder / "lines.jsonl"
    source.write_text(json.dumps({"prompt": "a fox", "seed": 3, "control": [f"{controlnet_dirs[0]}=disc.png:0.7"]}))
    monkeypatch.chdir(tmp_path)  # not the prompts file's folder
    runner = CliRunner()
    common = ["--model", str(tiny_model_dir), *COMMON]
    result = runner.invoke(app, ["batch", str(source), *common, "--save-control", "-o", "out/"])
    assert result.exit_code == 0, result.output
    [made] = sorted(Path("out").glob("*-fox.png"))
    saved = made.with_name(f"{made.stem}-control-0.png")
    assert np.array_equal(pixels(Image.open(saved)), pixels(Image.open(folder / "disc.png").convert("RGB")))
    with Image.open(made) as image:
        assert json.loads(image.info["sdgen"])["control"] == [f"{controlnet_dirs[0]}={folder / 'disc.png'}:0.7"]
    info = runner.invoke(app, ["info", str(made)])
    assert 'ControlNet 0: "Module: none, Model: tiny-controlnet-0, Weight: 0.7' in info.output
    assert with_image_folder(f"m={control_images[0]}:0.5", folder) == f"m={control_images[0]}:0.5", "absolute kept"
    to_stdout = runner.invoke(app, ["a fox", *common, "--control", f"{controlnet_dirs[0]}={source.parent / 'disc.png'}",
                                    "--save-control", "-o", "-"])
    assert to_stdout.exit_code == 2 and "--save-control" in to_stdout.output and "stdout" in to_stdout.output


def test_the_grid_varies_the_first_controls_weight_and_guidance_end(
    tiny_parts, controlnet_dirs, control_images, tmp_path, monkeypatch
) -> None:
    from PIL import Image

    from sdgen.config.specs import OutputSpec
    from sdgen.record.output import picture_target
    from sdgen.runs import grid
    from sdgen.runs.grid import _control_cells, cell_requests, generate_cells, parse_axis

    control = f"{controlnet_dirs[0]}={control_images[0]}:1:0:1:prompt"
    base = request(num_inference_steps=2, controls=(control,))
    x, y = parse_axis("control-weight=0.4,1.5", "x"), parse_axis("control-guidance-end=0.5", "y")
    rows = cell_requests(base, x, y)
    assert [cell.controls for cell in rows[0]] == [
        (f"{controlnet_dirs[0]}={control_images[0]}:0.4:0:0.5:prompt:crop:none",),
        (f"{controlnet_dirs[0]}={control_images[0]}:1.5:0:0.5:prompt:crop:none",),
    ]
    made = generate_cells(rows, tiny_parts, 2, None)
    changed = with_changes(control, weight=1.5, end=0.5)
    [alone] = generate(request(num_inference_steps=2, controls=(changed,)), tiny_parts)
    assert np.array_equal(pixels(made[(0, 1)].image), pixels(alone.image))
    [column] = _control_cells(rows, alone.image.size)
    assert column.caption == "control 0" and column.image.size == alone.image.size
    widths = []
    for name in ("steered", "plain"):
        output = OutputSpec(output=str(tmp_path / f"{name}.png"))
        path = grid._write_grid(rows, made, (x, y), tiny_parts, picture_target(output, "-", ""), output, str)
        widths.append(Image.open(path).width)
        monkeypatch.setattr(grid, "_control_cells", lambda rows, size: [])
    assert widths[0] > widths[1], "the control map is the first column"
    with pytest.raises(InvalidRequestError, match="start < end"):
        cell_requests(base, parse_axis("control-start=0.6", "x"), y)
    with pytest.raises(UsageError, match="first --control"):
        cell_requests(request(), x, None)


def test_the_strip_shows_the_control_maps_first(control_images) -> None:
    from PIL import Image

    from sdgen.pictures.sequence import Frame, contact_sheet

    picture = Image.open(control_images[0]).convert("RGB")
    kept = {5: [Frame(0, 2, 999.0, picture, picture), Frame(1, 2, 500.0, picture, picture)]}
    plain, plain_boxes = contact_sheet(kept, {5: picture}, "a fox")
    steered, boxes = contact_sheet(kept, {5: picture}, "a fox", controls={5: [picture]})
    assert [len(row) for row in boxes] == [len(row) + 1 for row in plain_boxes] and steered.width > plain.width


A1111_TEXT = (
    "a fox\nNegative prompt: blurry\nSteps: 2, Sampler: Euler a, CFG scale: 7, Seed: 3, Size: 64x64, "
    'ControlNet 0: "Module: invert (from white bg & black line), Model: control_v11p_sd15_canny [d14c016b], '
    "Weight: 0.8, Resize Mode: Resize and Fill, Processor Res: 512, Threshold A: 100, Threshold B: 200, "
    'Guidance Start: 0.1, Guidance End: 0.9, Pixel Perfect: False, Control Mode: My prompt is more important", '
    'ControlNet 1: "Module: none, Model: None, Weight: 1, Resize Mode: Crop and Resize, Guidance Start: 0, '
    'Guidance End: 1, Control Mode: Balanced"'
)


def test_a1111s_controlnet_fields_read_back_and_ask_for_the_image(tmp_path) -> None:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from sdgen.record.replay import replay_values, request_values_from_image

    info = PngInfo()
    info.add_text("parameters", A1111_TEXT)
    made = tmp_path / "a1111.png"
    Image.new("RGB", (SIZE, SIZE)).save(made, pnginfo=info)
    assert request_values_from_image(made)["control"] == [
        "control_v11p_sd15_canny=<the control image>:0.8:0.1:0.9:prompt:fill:invert"
    ], "the unused unit (Model None) is left out; invert has no settings to read"
    with pytest.raises(InvalidRequestError, match="does not hold; pass --control") as error:
        replay_values(made, set())
    assert "\n" not in str(error.value)
    assert "control" not in replay_values(made, {"control"}), "a --control given beside --from replaces them"
    bad = A1111_TEXT.replace("invert (from white bg & black line)", "reference_only")
    with pytest.raises(InvalidRequestError, match="preprocessor 'reference_only'"):
        controlnet_plugin.units_from_a1111({"ControlNet 0": bad.split('ControlNet 0: "')[1].split('"')[0]})


def test_the_infotext_names_a_single_file_as_the_extension_does(tiny_parts, controlnet_dirs, control_images, tmp_path):
    """A single file gets A1111's old 8-digit hash (sha256 of the 64 KiB at 1 MiB), as the extension's list
    shows it; the text reads back to the same unit."""
    from sdgen.engine.plugins import a1111_fields

    weights = tmp_path / "control_v11p_sd15_tiny.safetensors"
    shutil.copy(controlnet_dirs[0] / "diffusion_pytorch_model.safetensors", weights)
    with open(weights, "ab") as handle:  # past 1 MiB, so the hashed bytes are there
        handle.write(bytes(range(256)) * 5000)
    data = weights.read_bytes()
    digest = hashlib.sha256(data[0x100000 : 0x100000 + 0x10000]).hexdigest()[:8]
    asked = request(controls=("tiny=x.png:0.5:0:0.8:control:resize",), control_dir=str(tmp_path))
    [(label, text)] = [field for field in a1111_fields(asked) if field[0].startswith("ControlNet")]
    assert f"Model: control_v11p_sd15_tiny [{digest}]" in text
    assert controlnet_plugin.units_from_a1111({label: text}) == {
        "control": ["control_v11p_sd15_tiny=<the control image>:0.5:0:0.8:control:resize:none"]
    }


def test_which_step_savers_steer_with_a_controlnet(tiny_parts, controlnet_dirs, control_images) -> None:
    from sdgen.engine.checking import check_request
    from sdgen.engine.request import ModelSpec

    control = (f"{controlnet_dirs[0]}={control_images[0]}",)
    for key in ("sag_scale", "pag_scale"):
        with pytest.raises(InvalidRequestError, match=f"--{key.replace('_', '-')} makes its extra U-Net pass"):
            check_request(request(controls=control, **{key: 1.0}), ModelSpec().checked())
    savers = dict(freeu="1.5,1.6,0.9,0.2", cfg_end=0.5, guidance_rescale=0.7, scheduler="lcm", num_inference_steps=2)
    [steered] = generate(request(controls=control, **savers), tiny_parts)
    [plain] = generate(request(**savers), tiny_parts)
    assert not np.array_equal(pixels(steered.image), pixels(plain.image)), "the ControlNet steers with them on"


attention_at_full_resolution = test_stepsavers.attention_at_full_resolution  # its fixture: where ToMe merges


def test_token_merging_with_a_controlnet_matches_diffusers_controlnet_pipeline_under_tomesd(
    attention_at_full_resolution, control_images, tmp_path
) -> None:
    """ToMe works with a ControlNet: tomesd patches the U-Net only, and the U-Net both pipelines call is the
    one sdgen's load patched (2 steps, no guidance: cheap)."""
    import torch
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
    from PIL import Image

    from sdgen.engine.loader import load_model
    from sdgen.engine.request import ModelSpec
    from sdgen.testing.tiny_controlnet import save_tiny_controlnet

    spec = ModelSpec(model=str(attention_at_full_resolution), device="cpu", dtype="float32", token_merging=0.5)
    merged = load_model(spec)
    assert merged.plugins["token_merging"] == 0.5
    folder = save_tiny_controlnet(merged.unet, tmp_path / "controlnet", 0)
    size = dict(width=SIZE, height=SIZE, num_inference_steps=2, guidance_scale=1.0)
    base = reference_pipeline(merged, "euler-a")
    parts = {name: getattr(base, name) for name in ("vae", "text_encoder", "tokenizer", "unet", "scheduler")}
    pipe = StableDiffusionControlNetPipeline(
        **parts, controlnet=ControlNetModel.from_pretrained(folder).eval(), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    image = Image.open(control_images[0]).convert("RGB")
    expected = pipe(
        PROMPT, image=image, generator=torch.Generator("cpu").manual_seed(7), **size
    ).images[0]
    asked = dict(size, seed=7, scheduler="euler-a", controls=(f"{folder}={control_images[0]}",))
    [made] = generate(request(**asked), merged)
    assert np.abs(pixels(made.image) - pixels(expected)).max() <= 1
