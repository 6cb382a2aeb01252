"""Know the machine: the CPU's model and vector units, the threads torch uses, and a measured matrix-multiply
peak in GFLOP/s, so speed figures can say how close to the limit each part runs (`sdgen doctor`,
scripts/bench.py).

The peak is what torch's own GEMM (MKL or oneDNN) reaches on large square matrices: the most useful work
per second a U-Net built of matmuls and convolutions can hope for on this CPU in that dtype.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass

from sdgen.hardware.devices import cpu_flags

# Linux's flag -> the name people know, in the order they were added to x86 CPUs
VECTOR_UNITS = (
    ("avx2", "AVX2"),
    ("fma", "FMA"),
    ("avx512f", "AVX-512"),
    ("avx512_vnni", "AVX512-VNNI"),
    ("avx512_bf16", "AVX512-BF16"),
    ("amx_bf16", "AMX-BF16"),
    ("amx_fp16", "AMX-FP16"),
    ("asimd", "NEON"),  # ARM
    ("sve", "SVE"),
)
BF16_UNITS = {"avx512_bf16", "amx_bf16"}


@dataclass(frozen=True)
class CpuInfo:
    model: str  # "AMD EPYC 9R14", "Intel(R) Xeon(R) Platinum 8488C", or platform.processor() off Linux
    vector_units: tuple[str, ...]  # ("AVX2", "FMA", "AVX-512", ...)
    native_bf16: bool  # bfloat16 matmuls in hardware: sdgen's `auto` dtype is bfloat16 here
    kernel_level: str  # the widest vector code torch's own kernels use here ("AVX512", "AVX2", "DEFAULT")
    threads: int  # torch's intra-op threads (one per physical core by default)

    @property
    def kind(self) -> str:
        """The two kinds of CPU sdgen's tables are split by."""
        return "bfloat16 units" if self.native_bf16 else "float32 only"

    def summary(self) -> str:
        units = ", ".join(self.vector_units) or "none reported"
        return f"{self.model} ({units}; {self.threads} threads)"


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's name; a name without a model number (a VM's "AMD EPYC") gets its family and model, which tell
    its generation apart (AMD family 25: Zen 3/4, 26: Zen 5)."""
    fields: dict[str, str] = {}
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), " ".join(value.split()))
    except OSError:
        pass
    name = next((fields[key] for key in ("model name", "Model", "Hardware") if fields.get(key)), "")
    if not name:
        return platform.processor() or platform.machine() or "unknown"
    if not any(char.isdigit() for char in name) and fields.get("cpu family") and fields.get("model"):
        return f"{name} (family {fields['cpu family']}, model {fields['model']})"
    return name


def vector_units(flags: set[str]) -> tuple[str, ...]:
    return tuple(name for flag, name in VECTOR_UNITS if flag in flags)


def cpu_info(cpuinfo: str = "/proc/cpuinfo") -> CpuInfo:
    import torch

    flags = cpu_flags(cpuinfo)
    return CpuInfo(
        model=cpu_model(cpuinfo),
        vector_units=vector_units(flags),
        native_bf16=bool(flags & BF16_UNITS),
        kernel_level=torch.backends.cpu.get_cpu_capability(),
        threads=torch.get_num_threads(),
    )


def gemm_peak(dtype: str = "float32", size: int = 2048, seconds: float = 1.5) -> float:
    """GFLOP/s of a (size x size) @ (size x size) product on the CPU, 2 n^3 FLOPs: the best of as many runs
    as fit in `seconds` (after a warm-up that picks and builds kernels), over two ways torch computes it:
    torch.matmul (MKL's BLAS in float32) and a 1x1 convolution (oneDNN, which runs the U-Net's and VAE's
    convolutions). They differ by CPU: MKL takes slower code paths on AMD CPUs."""
    import torch

    from sdgen.hardware.devices import torch_dtype

    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=generator).to(torch_dtype(dtype))
    b = torch.randn(size, size, generator=generator).to(torch_dtype(dtype))
    side = 2 ** (size.bit_length() // 2)  # the size positions as a (side, size / side) image
    image = b.reshape(1, size, side, size // side)
    weight = a.reshape(size, size, 1, 1)
    products = (lambda: a @ b, lambda: torch.nn.functional.conv2d(image, weight))
    best = float("inf")
    with torch.inference_mode():
        for product in products:
            product()
            deadline = time.perf_counter() + seconds / len(products)
            while True:
                started = time.perf_counter()
                product()
                best = min(best, time.perf_counter() - started)
                if started + best > deadline:
                    break
    return 2 * size**3 / best / 1e9


def gemm_peaks(native_bf16: bool) -> dict[str, float]:
    """float32 and bfloat16 peaks. Without bf16 units bfloat16 is emulated and slow: a smaller matrix keeps
    the measurement short."""
    return {"float32": gemm_peak("float32"), "bfloat16": gemm_peak("bfloat16", 2048 if native_bf16 else 512)}
