"""The rich progress display, driven through its callbacks."""

from __future__ import annotations

import torch

from sdgen.engine.denoise import StepInfo
from sdgen.runs.progress import GenerationProgress


def step(index: int, seeds: tuple[int, ...]) -> StepInfo:
    latents = torch.zeros(len(seeds), 4, 2, 2)
    return StepInfo(index, 3, torch.tensor(999 - index), latents, latents, seeds)


def test_progress_tracks_parts_then_batches() -> None:
    with GenerationProgress(num_images=3, enabled=True) as progress:
        progress.on_part("tokenizer", 0)
        progress.on_part("unet", 3 * 2**30)
        assert progress._progress.tasks[0].description == "Loading unet (3,072 MiB)"
        progress.on_step(step(0, (1, 2)))
        assert [t.description for t in progress._progress.tasks] == ["Denoising images 1-2 of 3"]
        progress.on_step(step(1, (1, 2)))
        assert progress._progress.tasks[-1].completed == 2
        progress.on_step(step(0, (3,)))
        assert [t.description for t in progress._progress.tasks] == ["Denoising image 3 of 3"]


def test_disabled_progress_draws_nothing(capsys) -> None:
    with GenerationProgress(num_images=1, enabled=False) as progress:
        progress.on_part("unet", 10)
        progress.on_step(step(0, (1,)))
    assert capsys.readouterr().err == ""


def test_streaming_batches_have_no_total() -> None:
    with GenerationProgress(num_images=0, enabled=True) as progress:
        progress.on_step(step(0, (7,)))
        assert [t.description for t in progress._progress.tasks] == ["Denoising image 1"]
