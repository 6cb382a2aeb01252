"""Choose the device and dtypes a run uses, and the random number generators it draws from.

Decisions (unit-tested with the hardware probe faked, see tests/test_devices.py):
- `auto` device: the first CUDA GPU, else Apple's MPS, else the CPU.
- `auto` dtype: float16 on CUDA (what diffusers recommends for SD1.5 on GPUs, and the `fp16` weight
  variant halves the download); float32 on MPS and CPU.
- MPS: diffusers documents SD1.5 on MPS in float32 (`pipe.to("mps")` with no dtype), and users report
  black or NaN images from the SD1.5 VAE in float16 on MPS, which is why A1111's macOS advice is
  `--no-half-vae`. So `auto` stays float32 there, and an explicit float16/bfloat16 on MPS keeps the
  VAE in float32.
- CPU: float16 matmuls and convolutions are slow or missing on CPUs, so float16 is refused there.
  `auto` picks bfloat16 on CPUs with native bf16 units (Intel AMX or AVX512-BF16, read from the CPU
  flags): scripts/bench.py measured the SD1.5 U-Net step and VAE decode several times faster than float32
  there (docs/performance.md). Elsewhere bfloat16 is emulated and slower, so `auto` stays float32.
  float32 stays one flag away (`--dtype float32`) and is the reference-exact setting.
- Random numbers: drawn from a CPU `torch.Generator` by default, so a seed gives the same picture on
  CUDA, MPS and CPU; `rng="device"` draws on the device instead (faster, not portable).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sdgen.errors import NAME, DeviceNotAvailableError, InvalidRequestError

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEVICE_CHOICES = ("auto", "cuda", "cuda:N", "mps", "cpu")
DTYPE_CHOICES = ("auto", "float16", "bfloat16", "float32")
DTYPE_ALIASES = {
    "fp16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    "fp32": "float32",
    "float": "float32",
}
RNG_CHOICES = ("cpu", "device")

# torch's spellings too (accelerate hands each process "cpu", "cpu:0", "cuda:1" or "mps")
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda)(:\d+)?$")


@dataclass(frozen=True)
class HardwareProbe:
    """What accelerators this machine has; tests build it by hand instead of probing."""

    cuda_device_count: int = 0
    mps_available: bool = False
    cpu_native_bf16: bool = False  # AMX-BF16 or AVX512-BF16: bfloat16 matmuls in hardware

    @classmethod
    def detect(cls) -> HardwareProbe:
        import torch

        mps = getattr(torch.backends, "mps", None)
        return cls(
            cuda_device_count=torch.cuda.device_count() if torch.cuda.is_available() else 0,
            mps_available=bool(mps is not None and mps.is_available()),
            cpu_native_bf16=bool(cpu_flags() & {"amx_bf16", "avx512_bf16"}),
        )


def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags Linux reports (empty elsewhere: then bfloat16 is not chosen automatically)."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


@dataclass(frozen=True)
class Placement:
    """Where a run happens and in which precision each part runs."""

    device: str  # "cuda:0", "mps" or "cpu"
    dtype: str  # U-Net and text encoder
    vae_dtype: str  # the VAE may be kept in float32 where float16 overflows
    rng: str = "cpu"  # where random numbers are drawn: "cpu" or "device"

    @property
    def weight_variant(self) -> str | None:
        """Half-precision runs ask for the Hub's `fp16` weight files: half the download, and for bfloat16
        on a CPU a lower peak RSS than converting the float32 files (scripts/bench.py). fp16 keeps more
        mantissa bits than bfloat16, so the only change is a second rounding in the last bit of some
        weights. float32 runs read the full-precision files."""
        return "fp16" if self.dtype in ("float16", "bfloat16") else None


def normalize_device(device: str) -> str:
    """Check the spelling of a device name (no hardware probe): auto, cpu, mps, cuda or cuda:N, also in
    torch's forms with an index (cpu:0, mps:0), which mean the one CPU or Apple GPU."""
    name = device.strip().lower()
    match = _DEVICE_PATTERN.match(name)
    if not match or (match.group(1) == "auto" and match.group(2)):
        raise InvalidRequestError(
            f"Invalid {NAME} {device!r}: use one of auto, cpu, mps, cuda or cuda:N (e.g. cuda:1).", "device"
        )
    return name if match.group(1) == "cuda" else match.group(1)


def normalize_dtype(dtype: str) -> str:
    """Map aliases (fp16, bf16 ...) to torch's names; reject anything else."""
    name = DTYPE_ALIASES.get(dtype.strip().lower(), dtype.strip().lower())
    if name not in DTYPE_CHOICES:
        raise InvalidRequestError(f"Invalid {NAME} {dtype!r}: use one of {', '.join(DTYPE_CHOICES)}.", "dtype")
    return name


def normalize_rng(rng: str) -> str:
    name = rng.strip().lower()
    if name not in RNG_CHOICES:
        raise InvalidRequestError(f"Invalid {NAME} {rng!r}: use cpu (portable, the default) or device.", "rng")
    return name


def choose_device(device: str = "auto", probe: HardwareProbe | None = None) -> str:
    """Resolve `auto`, `cuda`, `cuda:N`, `mps` or `cpu` to a device that exists here."""
    name = normalize_device(device)
    if name == "cpu":
        return "cpu"
    probe = probe or HardwareProbe.detect()
    if name == "auto":
        if probe.cuda_device_count > 0:
            return "cuda:0"
        return "mps" if probe.mps_available else "cpu"
    if name == "mps":
        if not probe.mps_available:
            raise DeviceNotAvailableError(
                "Device 'mps' is not available: this machine or this torch build has no Apple MPS support. "
                "Use --device auto or --device cpu.",
                "device",
            )
        return "mps"
    index = int(name.partition(":")[2] or 0)
    if probe.cuda_device_count == 0:
        raise DeviceNotAvailableError(
            f"Device {device!r} is not available: torch sees no CUDA GPU (is this a CPU-only torch build?). "
            "Use --device auto or --device cpu.",
            "device",
        )
    if index >= probe.cuda_device_count:
        found = ", ".join(f"cuda:{i}" for i in range(probe.cuda_device_count))
        raise DeviceNotAvailableError(
            f"Device {device!r} is not available: found {probe.cuda_device_count} CUDA GPU(s) ({found})."
            " Pick one of those or use --device auto.",
            "device",
        )
    return f"cuda:{index}"


def choose_dtype(dtype: str, device: str, probe: HardwareProbe | None = None) -> tuple[str, str]:
    """Return (model dtype, VAE dtype) for a resolved device; see the module docstring for why."""
    name = normalize_dtype(dtype)
    kind = device.partition(":")[0]
    if name == "auto" and kind == "cpu":
        name = "bfloat16" if (probe or HardwareProbe.detect()).cpu_native_bf16 else "float32"
    elif name == "auto":
        name = "float16" if kind == "cuda" else "float32"
    if kind == "cpu" and name == "float16":
        raise DeviceNotAvailableError(
            f"Invalid {NAME} float16 on the CPU: CPUs lack fast float16 kernels. Use float32 or bfloat16.", "dtype"
        )
    vae_dtype = "float32" if kind == "mps" else name
    return name, vae_dtype


def choose_placement(
    device: str = "auto", dtype: str = "auto", rng: str = "cpu", probe: HardwareProbe | None = None
) -> Placement:
    """The one decision of where and how a run happens."""
    resolved = choose_device(device, probe)
    model_dtype, vae_dtype = choose_dtype(dtype, resolved, probe)
    return Placement(device=resolved, dtype=model_dtype, vae_dtype=vae_dtype, rng=normalize_rng(rng))


def torch_dtype(name: str) -> torch.dtype:
    import torch

    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[name]


def make_generator(seed: int, placement: Placement) -> torch.Generator:
    """One generator per image (seed S+i for image i): the same draws as diffusers' reference."""
    import torch

    where = "cpu" if placement.rng == "cpu" else placement.device
    return torch.Generator(where).manual_seed(seed)
