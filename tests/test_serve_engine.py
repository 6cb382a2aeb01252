"""The engine without a model: limits, progress arithmetic, the queue's order, size and cancellation."""

from __future__ import annotations

import threading

import pytest

from sdgen.engine.checking import check_request
from sdgen.engine.request import GenerationRequest, ModelSpec
from sdgen.errors import InvalidRequestError
from sdgen.serve.engine import Engine, Limits, Progress, QueueFull, ShuttingDown


def checked(**fields) -> GenerationRequest:
    return check_request(GenerationRequest("a fox", seed=1, **fields))


def test_limits_refuse_with_the_flag_to_change() -> None:
    limits = Limits(max_pixels=512 * 512, max_steps=50, max_batch=4)
    limits.check(checked(width=512, height=512, num_inference_steps=50, num_images=4))
    for fields, flag in [
        ({"width": 768, "height": 512}, "--max-pixels"),
        ({"width": 512, "height": 512, "hires_scale": 2.0}, "--max-pixels"),  # the hires pass's size counts
        ({"num_inference_steps": 51}, "--max-steps"),
        ({"hires_scale": 1.5, "hires_steps": 80, "width": 256, "height": 256}, "--max-steps"),
        ({"num_images": 5}, "--max-batch"),
    ]:
        with pytest.raises(InvalidRequestError, match=flag):
            limits.check(checked(**fields))
    Limits(None, None, None).check(checked(width=2048, height=2048, num_inference_steps=999, num_images=99))


def test_progress_follows_a1111s_formula() -> None:
    assert Progress().fraction() == 0.0  # idle: what webuiapi's util_wait_for_ready waits for
    state = Progress(job_count=2, job_no=1, sampling_step=5, sampling_steps=10)
    assert state.fraction() == pytest.approx(0.01 + 0.5 + 0.25)
    assert state.state()["job_count"] == 2 and state.state()["stopping_generation"] is False


@pytest.fixture
def engine():
    started = Engine({"clip_skip": 1, "model": "m"}, ModelSpec(model="m"), Limits(max_queue=2), load=lambda spec: spec)
    started.start()
    yield started
    started.close()


def test_jobs_run_one_at_a_time_in_order_and_a_full_queue_refuses(engine) -> None:
    gate, order = threading.Event(), []
    running = threading.Event()
    first = engine.submit(lambda: running.set() or gate.wait(10) and order.append("first"))
    assert running.wait(10)
    waiting = [engine.submit(lambda n=n: order.append(n)) for n in range(2)]
    with pytest.raises(QueueFull) as full:
        engine.submit(lambda: None)
    assert full.value.retry_after >= 1 and engine.waiting() == 2
    assert waiting[0].cancel()  # a client that left: dropped before it starts
    assert engine.waiting() == 1
    gate.set()
    for future in (first, waiting[1]):
        future.result(timeout=10)
    assert order == ["first", 1]


def test_a_failing_job_fails_alone(engine) -> None:
    def broken() -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        engine.submit(broken).result(timeout=10)
    assert engine.submit(lambda: 42).result(timeout=10) == 42


def test_closing_refuses_new_work_and_cancels_the_queued(engine) -> None:
    gate = threading.Event()
    engine.submit(lambda: gate.wait(10))
    queued = engine.submit(lambda: None)
    engine.close()
    gate.set()
    assert queued.cancelled()
    with pytest.raises(ShuttingDown):
        engine.submit(lambda: None)


def test_options_are_checked_and_the_others_kept(engine) -> None:
    """Issue 24: a key sdgen does not act on is kept and sent back (it used to be dropped); a bad value of one
    it acts on is refused."""
    engine.set_options({"CLIP_stop_at_last_layers": 2, "samples_format": "jpg", "outdir_samples": "/elsewhere",
                        "not_an_a1111_key": [1, 2]})
    assert engine.options["CLIP_stop_at_last_layers"] == 2 and engine.options["samples_format"] == "jpg"
    assert engine.options["outdir_samples"] == "/elsewhere" and engine.options["not_an_a1111_key"] == [1, 2]
    for bad in ({"samples_format": "gif"}, {"CLIP_stop_at_last_layers": 0}, {"CLIP_stop_at_last_layers": "2"},
                {"jpeg_quality": 0}, {"webp_lossless": "yes"}, {"eta_noise_seed_delta": -1}, {"randn_source": "TPU"}):
        with pytest.raises(InvalidRequestError):
            engine.set_options(bad)
    assert engine.options["samples_format"] == "jpg"  # a refused change keeps nothing


def test_interrupt_and_skip_only_touch_a_running_request(engine) -> None:
    engine.interrupt()
    engine.skip()
    assert not engine.progress.interrupted and not engine.progress.skipped
