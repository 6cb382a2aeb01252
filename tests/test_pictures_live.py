"""The live preview: a PNG rewritten every K steps that a viewer can read at any moment, and the picture in
the progress display where the terminal can show one."""

from __future__ import annotations

import subprocess
import sys
import time

from PIL import Image

from sdgen.engine.pipeline import generate
from sdgen.engine.request import GenerationRequest
from sdgen.pictures.live import LivePreview, terminal_image_class
from sdgen.pictures.previews import make_previewer
from sdgen.runs.progress import GenerationProgress


def test_the_file_is_always_a_whole_png_while_the_run_goes_on(tiny_model_dir, tmp_path) -> None:
    live = tmp_path / "latest.png"
    args = ["--model", str(tiny_model_dir), "-W", "64", "-H", "64", "--steps", "40", "--device", "cpu"]
    run = subprocess.Popen(
        [sys.executable, "-m", "sdgen", "a fox", *args, "-o", str(tmp_path / "out.png"), "--preview-file", str(live)],
        stderr=subprocess.PIPE,
    )
    reads, sizes = 0, set()
    while run.poll() is None:
        if live.exists():
            with Image.open(live) as picture:  # a torn file would fail here
                picture.load()
                sizes.add(picture.size)
            reads += 1
        time.sleep(0.005)
    assert run.wait() == 0, run.stderr.read()
    assert reads > 10 and sizes == {(64, 64)}
    # the last write is the finished image itself
    assert Image.open(live).tobytes() == Image.open(tmp_path / "out.png").tobytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.png", "out.png"]  # no temporary files left


def test_every_k_steps_and_at_the_last(tiny_parts, tmp_path) -> None:
    shown = []
    live = LivePreview(
        make_previewer("approx", tiny_parts, (64, 64)), every=3, path=tmp_path / "p.png", show=shown.append
    )
    generate(
        GenerationRequest("a fox", seed=1, width=64, height=64, num_inference_steps=7), tiny_parts, on_step=live.on_step
    )
    assert live.writes == 3 and len(shown) == 3  # steps 3, 6 and 7
    assert shown[-1].size == (64, 64)


def test_a_batch_is_previewed_side_by_side(tiny_parts) -> None:
    shown = []
    live = LivePreview(make_previewer("approx", tiny_parts, (64, 64)), every=10, show=shown.append)
    request = GenerationRequest("a fox", seed=1, width=64, height=64, num_inference_steps=2, num_images=3, batch_size=3)
    generate(request, tiny_parts, on_step=live.on_step)
    assert shown[-1].size == (192, 64)


def test_the_progress_display_shows_the_picture_where_the_terminal_can(tiny_parts) -> None:
    class FakeTerminalImage:  # stands in for textual-image's sixel/kitty renderable
        def __init__(self, picture, height):
            self.picture, self.height = picture, height

        def __rich_console__(self, console, options):
            yield "[picture]"

    with GenerationProgress(1, enabled=True, terminal_image=FakeTerminalImage) as progress:
        assert progress.shows_pictures
        progress.show(Image.new("RGB", (64, 64)))
        assert isinstance(progress.preview, FakeTerminalImage) and progress.preview.height == 12
        assert progress.preview in list(progress._progress.get_renderables())
    with GenerationProgress(1, enabled=True, terminal_image=None) as progress:
        progress.show(Image.new("RGB", (64, 64)))
        assert progress.preview is None  # a terminal that cannot show images shows nothing


def test_no_terminal_no_probe() -> None:
    assert terminal_image_class() is None  # pytest's stdout is not a terminal: the library is not even asked


def test_a_batch_and_a_grid_keep_a_live_preview_too(tiny_model_dir, tmp_path) -> None:
    from typer.testing import CliRunner

    from sdgen.cli import app

    prompts = tmp_path / "p.txt"
    prompts.write_text("a fox\nan owl\n")
    common = ["-m", str(tiny_model_dir), "-W", "64", "-H", "64", "--steps", "2", "--dtype", "float32"]
    result = CliRunner().invoke(
        app, ["batch", str(prompts), *common, "-o", f"{tmp_path}/out/", "--preview-file", str(tmp_path / "b.png")]
    )
    assert result.exit_code == 0, result.output
    last = sorted((tmp_path / "out").glob("*.png"))[-1]
    assert Image.open(tmp_path / "b.png").tobytes() == Image.open(last).tobytes()  # the last image made
    grid = ["grid", "a fox", "--x", "seed=1,2", *common, "-o", str(tmp_path / "g.png")]
    result = CliRunner().invoke(app, [*grid, "--preview-file", str(tmp_path / "g-live.png")])
    assert result.exit_code == 0, result.output
    Image.open(tmp_path / "g-live.png").load()
