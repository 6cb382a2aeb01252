"""The denoising sequence: which steps, the frames from the per-step callback, the contact sheet, the
animation, and that none of it changes the final image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sdgen.cli import app
from sdgen.engine.pipeline import generate
from sdgen.engine.request import GenerationRequest
from sdgen.pictures.previews import make_previewer
from sdgen.pictures.sequence import SequenceRecorder, animation_frames, chosen_steps, contact_sheet
from sdgen.record.metadata import read_image_metadata

runner = CliRunner()


@pytest.mark.parametrize(
    ("total", "every", "frames", "expected"),
    [
        (48, None, 8, [5, 11, 17, 23, 29, 35, 41, 47]),
        (48, 12, 8, [11, 23, 35, 47]),
        (10, 4, 8, [3, 7, 9]),  # the last step always
        (3, None, 8, [0, 1, 2]),  # never more frames than steps
        (20, None, 1, [19]),
    ],
)
def test_chosen_steps(total, every, frames, expected) -> None:
    assert chosen_steps(total, every, frames) == expected


def test_the_sheet_holds_the_callbacks_frames_and_the_final_image(tiny_parts) -> None:
    request = GenerationRequest(
        "a kitten", seed=7, width=64, height=64, num_inference_steps=6, num_images=2, batch_size=2
    )
    previewer = make_previewer("full", tiny_parts, (64, 64))
    recorder = SequenceRecorder(previewer, every=2)
    seen = {}

    def callback(info) -> None:  # an independent per-step callback: what the loop hands out
        recorder.on_step(info)
        seen[info.index] = (previewer(info.latents), previewer(info.pred_x0), float(info.timestep))

    results = generate(request, tiny_parts, on_step=callback)
    finals = {r.seed: r.image for r in results}
    assert list(recorder.kept) == [7, 8]
    frames = recorder.kept[8]
    assert [f.step for f in frames] == [1, 3, 5]
    for frame in frames:
        noisy, clean, timestep = seen[frame.step]
        assert np.array_equal(np.asarray(frame.noisy), np.asarray(noisy[1]))
        assert np.array_equal(np.asarray(frame.clean), np.asarray(clean[1]))
        assert frame.caption == f"step {frame.step + 1}/6\nt={int(timestep)}"

    sheet, boxes = contact_sheet(recorder.kept, finals, title="a kitten")
    assert len(boxes) == 4 and all(len(row) == 4 for row in boxes)  # 2 rows per image; 3 frames + final
    crop = lambda box: np.asarray(sheet.crop((box[0], box[1], box[0] + box[2], box[1] + box[3])))  # noqa: E731
    assert np.array_equal(crop(boxes[2][1]), np.asarray(frames[1].noisy))  # image 2, x_t row, 2nd frame
    assert np.array_equal(crop(boxes[3][2]), np.asarray(frames[2].clean))  # image 2, x0 row, 3rd frame
    assert np.array_equal(crop(boxes[0][3]), np.asarray(finals[7]))  # the final image last
    pictures = animation_frames(recorder.kept, finals)
    assert len(pictures) == 4 and len({p.size for p in pictures}) == 1


def test_the_last_frame_is_the_end_of_the_loop(tiny_parts) -> None:
    request = GenerationRequest("a fox", seed=1, width=64, height=64, num_inference_steps=4, scheduler="ddim")
    recorder = SequenceRecorder(make_previewer("full", tiny_parts, (64, 64)), frames=2)
    [result] = generate(request, tiny_parts, on_step=recorder.on_step)
    # x_t after the last step is the final latents: its full preview is the final image
    assert np.array_equal(np.asarray(recorder.kept[1][-1].noisy), np.asarray(result.image))


def tiny_args(model, *extra: str) -> list[str]:
    return ["--model", str(model), "-W", "64", "-H", "64", "--steps", "5", "--seed", "3", "--dtype", "float32", *extra]


def test_the_final_image_is_the_same_with_every_picture_option(tiny_model_dir, tiny_autoencoder_dir, tmp_path) -> None:
    plain = runner.invoke(app, ["a fox", *tiny_args(tiny_model_dir, "-o", str(tmp_path / "plain.png"))])
    assert plain.exit_code == 0, plain.output
    expected = (tmp_path / "plain.png").read_bytes()
    for quality in ("approx", "tiny", "full"):
        out = tmp_path / quality
        args = [
            "--preview",
            quality,
            "--preview-model",
            str(tiny_autoencoder_dir),
            "--save-steps",
            f"{out}-steps.png",
            "--animation",
            f"{out}.gif",
            "--preview-file",
            f"{out}-live.png",
            "--grid",
            f"{out}-grid.png",
        ]
        result = runner.invoke(app, ["a fox", *tiny_args(tiny_model_dir, "-o", f"{out}.png", *args)])
        assert result.exit_code == 0, result.output
        assert (tmp_path / f"{quality}.png").read_bytes() == expected, quality
        for suffix in ("-steps.png", ".gif", "-live.png", "-grid.png"):
            Image.open(f"{out}{suffix}").load()


def test_the_strip_and_animation_say_how_they_were_made(tiny_model_dir, tmp_path) -> None:
    args = ["--frames", "3", "--save-steps", str(tmp_path / "s.png"), "--animation", str(tmp_path / "s.webp")]
    result = runner.invoke(app, ["a fox", *tiny_args(tiny_model_dir, "-o", str(tmp_path / "i.png"), *args)])
    assert result.exit_code == 0, result.output
    parameters, record = read_image_metadata(tmp_path / "s.png")
    assert parameters.startswith("a fox\nSteps: 5,") and "Seed: 3" in parameters
    assert record["picture"] == "denoising sequence" and record["preview"] == "full"
    assert [f["step"] for f in record["frames"]] == [2, 3, 5]
    assert record["images"][0]["seed"] == 3
    webp_parameters, _ = read_image_metadata(tmp_path / "s.webp")
    assert webp_parameters == parameters
    with Image.open(tmp_path / "s.webp") as animation:
        assert animation.n_frames == 4  # 3 steps, then the final image


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--preview", "best"], "Invalid --preview 'best': choose one of auto, approx, tiny, full, none."),
        (["--animation", "x.mp4"], "Invalid --animation 'x.mp4': use a file name ending in .gif or .webp."),
        (["--save-steps", "x.jpg"], "Invalid --save-steps 'x.jpg': use a file name ending in .png."),
        (["--every", "0"], "Invalid --every 0: must be a whole number from 1 to 1000."),
        (["--save-steps", "s.png", "--preview", "none"], "Invalid --preview 'none': --save-steps, --animation"),
    ],
)
def test_bad_picture_options_fail_before_loading(args, message, no_weights_load, tmp_path) -> None:
    result = runner.invoke(app, ["a fox", "-o", str(tmp_path / "x.png"), *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"sdgen: error: {message}"), result.stderr


def test_an_existing_strip_is_refused_before_loading(tmp_path, no_weights_load) -> None:
    (tmp_path / "s.png").write_bytes(b"mine")
    result = runner.invoke(app, ["a fox", "-o", str(tmp_path / "x.png"), "--save-steps", str(tmp_path / "s.png")])
    assert result.exit_code == 2 and "already exists; pass --overwrite" in result.stderr
    assert (tmp_path / "s.png").read_bytes() == b"mine"


def test_a_strip_or_grid_replays_its_first_image(tiny_model_dir, tmp_path) -> None:
    args = tiny_args(tiny_model_dir, "-n", "2", "-o", f"{tmp_path}/", "--save-steps", str(tmp_path / "s.png"))
    assert runner.invoke(app, ["a fox", *args, "--grid", str(tmp_path / "g.png")]).exit_code == 0
    for picture in ("s.png", "g.png"):
        again = tmp_path / f"again-{picture}"
        result = runner.invoke(app, ["--from", str(tmp_path / picture), "-o", str(again)])
        assert result.exit_code == 0, result.output
        assert Image.open(again).tobytes() == Image.open(tmp_path / "00000-3-a-fox.png").tobytes()
