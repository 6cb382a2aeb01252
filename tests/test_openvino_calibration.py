"""int8-hybrid's calibration (sdgen/engine/openvino_calibration.py) on the tiny model: the float U-Net's inputs
recorded in sdgen's own loop, once; the cached model read back without calibrating again."""

from __future__ import annotations

import numpy as np

from .test_openvino import _load, _pixels


def test_int8_hybrid_calibrates_once_through_sdgens_loop(tiny_parts, tiny_model_dir, ov_cache, monkeypatch):
    # int8-hybrid quantizes the U-Net's activations too (optimum-intel's hybrid recipe), calibrated on the float
    # U-Net's inputs in sdgen's own loop; shortened here to 2 prompts x 2 steps (4 guided calls). Its change
    # of the tiny model's picture is larger than int8's (measured at the full 4 x 4 calibration: max 40, mean
    # 6.5 levels; docs/openvino.md): the bound only says it is the same picture, not noise (mean ~60).
    import sdgen.engine.openvino_calibration as calibration

    monkeypatch.setattr(calibration, "CALIBRATION_PROMPTS", calibration.CALIBRATION_PROMPTS[:2])
    monkeypatch.setattr(calibration, "CALIBRATION_STEPS", 2)
    recorded = []
    original = calibration.calibration_inputs

    def counting(*args):
        samples = original(*args)
        recorded.append([tuple(x.shape) for x in samples[0]] + [len(samples)])
        return samples

    monkeypatch.setattr(calibration, "calibration_inputs", counting)
    parts = _load(tiny_model_dir, dtype="float32", quantize="int8-hybrid")
    difference = np.abs(_pixels(tiny_parts) - _pixels(parts))
    print(f"int8-hybrid against torch float32: max {difference.max()}, mean {difference.mean():.3f} levels")
    assert 0 < difference.mean() < 20, difference.mean()
    # the guided call's inputs: (latents, timestep, [negative, positive] states), 2 prompts x 2 steps
    assert recorded == [[(2, 4, 32, 32), (1,), (2, 77, 32), 4]], recorded
    again = _load(tiny_model_dir, dtype="float32", quantize="int8-hybrid")  # the cached model: no calibration
    assert np.array_equal(_pixels(again), _pixels(parts))
    assert len(recorded) == 1, recorded
