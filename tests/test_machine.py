"""The CPU facts sdgen reports (doctor, bench): read from a fake /proc/cpuinfo, and a real GEMM timing."""

from __future__ import annotations

from sdgen.hardware.machine import cpu_info, cpu_model, gemm_peak, vector_units

AMD_AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC 7R32\nflags\t\t: fpu sse2 avx fma avx2\n"
XEON_AMX = (
    "model name\t: Intel(R) Xeon(R) Platinum 8488C\n"
    "flags\t: avx2 fma avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile\n"
)


def write(tmp_path, text: str) -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    return str(path)


def test_an_avx2_cpu_is_the_float32_kind(tmp_path) -> None:
    info = cpu_info(write(tmp_path, AMD_AVX2))
    assert info.model == "AMD EPYC 7R32"
    assert info.vector_units == ("AVX2", "FMA")
    assert not info.native_bf16 and info.kind == "float32 only"
    assert info.threads >= 1 and info.kernel_level
    assert info.summary().startswith("AMD EPYC 7R32 (AVX2, FMA; ")


def test_an_amx_xeon_is_the_bfloat16_kind(tmp_path) -> None:
    info = cpu_info(write(tmp_path, XEON_AMX))
    assert info.vector_units == ("AVX2", "FMA", "AVX-512", "AVX512-VNNI", "AVX512-BF16", "AMX-BF16")
    assert info.native_bf16 and info.kind == "bfloat16 units"


def test_a_name_without_a_model_number_gets_its_family_and_model(tmp_path) -> None:
    vm = "processor\t: 0\ncpu family\t: 26\nmodel\t\t: 2\nmodel name\t: AMD EPYC\nflags\t: avx2\n"
    assert cpu_model(write(tmp_path, vm)) == "AMD EPYC (family 26, model 2)"
    assert cpu_model(write(tmp_path, AMD_AVX2)) == "AMD EPYC 7R32"  # a model number: the name as it is


def test_no_cpuinfo_falls_back_to_platform(tmp_path) -> None:
    assert cpu_model(str(tmp_path / "missing")) != ""
    assert vector_units(set()) == ()


def test_gemm_peak_is_a_positive_rate() -> None:
    assert 0.1 < gemm_peak("float32", size=128, seconds=0.05) < 1e6
    assert 0.01 < gemm_peak("bfloat16", size=64, seconds=0.05) < 1e6
