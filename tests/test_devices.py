"""Device and dtype decisions, with the hardware probe faked."""

from __future__ import annotations

import re

import pytest

from sdgen.config.options import describe
from sdgen.errors import DeviceNotAvailableError, InvalidRequestError
from sdgen.hardware.devices import HardwareProbe, Placement, choose_dtype, choose_placement, make_generator

CPU_ONLY = HardwareProbe(cuda_device_count=0, mps_available=False)
TWO_GPUS = HardwareProbe(cuda_device_count=2, mps_available=False)
MAC = HardwareProbe(cuda_device_count=0, mps_available=True)
AMX_CPU = HardwareProbe(cpu_native_bf16=True)


@pytest.mark.parametrize(
    "probe, expected",
    [
        (TWO_GPUS, Placement("cuda:0", "float16", "float16")),
        (MAC, Placement("mps", "float32", "float32")),
        (CPU_ONLY, Placement("cpu", "float32", "float32")),
        (AMX_CPU, Placement("cpu", "bfloat16", "bfloat16")),
        (HardwareProbe(cuda_device_count=1, cpu_native_bf16=True), Placement("cuda:0", "float16", "float16")),
    ],
)
def test_auto_prefers_cuda_fp16_then_mps_then_cpu(probe, expected) -> None:
    assert choose_placement("auto", "auto", probe=probe) == expected


def test_auto_fp16_on_cuda_asks_for_the_fp16_weight_variant() -> None:
    assert choose_placement(probe=TWO_GPUS).weight_variant == "fp16"
    assert choose_placement(probe=CPU_ONLY).weight_variant is None
    assert choose_placement("cuda", "bfloat16", probe=TWO_GPUS).weight_variant == "fp16"
    assert choose_placement("cpu", "float32", probe=AMX_CPU).weight_variant is None


def test_explicit_cuda_index() -> None:
    assert choose_placement("cuda:1", probe=TWO_GPUS).device == "cuda:1"
    assert choose_placement("CUDA", "float32", probe=TWO_GPUS) == Placement("cuda:0", "float32", "float32")


def test_missing_devices_are_clear_errors() -> None:
    with pytest.raises(
        DeviceNotAvailableError, match=r"'cuda:2' is not available: found 2 CUDA GPU\(s\) \(cuda:0, cuda:1\)"
    ):
        choose_placement("cuda:2", probe=TWO_GPUS)
    with pytest.raises(DeviceNotAvailableError, match="torch sees no CUDA GPU"):
        choose_placement("cuda", probe=CPU_ONLY)
    with pytest.raises(DeviceNotAvailableError, match="'mps' is not available"):
        choose_placement("mps", probe=TWO_GPUS)


def test_misspelled_device_and_dtype() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        choose_placement("gpu", probe=CPU_ONLY)
    assert re.search("Invalid --device 'gpu'", describe(caught.value))
    with pytest.raises(InvalidRequestError) as caught:
        choose_placement("cpu", "float8", probe=CPU_ONLY)
    assert re.search("Invalid --dtype 'float8'", describe(caught.value))


def test_mps_keeps_the_vae_in_float32_when_half_precision_is_asked() -> None:
    assert choose_placement("mps", "float16", probe=MAC) == Placement("mps", "float16", "float32")
    assert choose_placement("mps", "bf16", probe=MAC) == Placement("mps", "bfloat16", "float32")


def test_cpu_refuses_float16_but_allows_bfloat16() -> None:
    with pytest.raises(DeviceNotAvailableError, match="float16 on the CPU"):
        choose_dtype("fp16", "cpu")
    assert choose_dtype("bfloat16", "cpu") == ("bfloat16", "bfloat16")


def test_auto_device_on_cpu_needs_no_probe_for_explicit_cpu() -> None:
    assert choose_placement("cpu", "fp32") == Placement("cpu", "float32", "float32")


def test_rng_policy_cpu_generator_by_default() -> None:
    import torch

    placement = Placement("cuda:0", "float16", "float16")  # no GPU needed: the generator stays on the CPU
    generator = make_generator(42, placement)
    assert generator.device.type == "cpu"
    assert torch.equal(torch.randn(3, generator=generator), torch.randn(3, generator=make_generator(42, placement)))
    with pytest.raises(InvalidRequestError) as caught:
        choose_placement("cpu", rng="gpu")
    assert re.search("Invalid --rng 'gpu'", describe(caught.value))
    assert choose_placement("cpu", rng="device").rng == "device"


def test_bfloat16_is_automatic_only_with_native_units_and_float32_stays_one_flag_away() -> None:
    assert choose_placement("cpu", "auto", probe=AMX_CPU).dtype == "bfloat16"
    assert choose_placement("cpu", "float32", probe=AMX_CPU).dtype == "float32"
    assert choose_placement("cpu", "auto", probe=CPU_ONLY).dtype == "float32"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path) -> None:
    from sdgen.hardware.devices import cpu_flags

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 amx_tile\n")
    assert {"avx512_bf16", "amx_tile"} <= cpu_flags(str(info))
    assert cpu_flags(str(tmp_path / "missing")) == set()


@pytest.mark.parametrize(
    "given, meant, placed",
    [
        ("cpu", "cpu", "cpu"),
        ("cpu:0", "cpu", "cpu"),
        ("CPU", "cpu", "cpu"),
        ("mps:0", "mps", "mps"),
        ("cuda", "cuda", "cuda:0"),
        ("cuda:1", "cuda:1", "cuda:1"),
    ],
)
def test_torch_device_spellings_are_accepted(given, meant, placed) -> None:
    """accelerate hands each process a torch device name such as cpu:0 (`--device auto` under
    `accelerate launch` on a CPU failed with "Invalid --device 'cpu:0'")."""
    from sdgen.hardware.devices import normalize_device

    assert normalize_device(given) == meant
    probe = HardwareProbe(cuda_device_count=2, mps_available=True)
    assert choose_placement(given, "float32", probe=probe).device == placed


def test_auto_takes_no_index() -> None:
    with pytest.raises(InvalidRequestError):
        choose_placement("auto:0", probe=CPU_ONLY)
