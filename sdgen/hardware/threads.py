"""How many CPU threads torch runs on: one per physical core this process may use, or `--threads N`.

Hyperthreads (SMT siblings) share a core's vector units, so a second thread per core adds contention, not
multiply rate, in the big matrix products of a U-Net step. /proc/cpuinfo names each logical CPU's package
(`physical id`) and core (`core id`); the cores counted are those of the CPUs in this process's affinity
mask (os.sched_getaffinity: taskset, cgroups' cpusets, a container's --cpuset-cpus). Where cpuinfo says
nothing about cores (some VMs, non-Linux) the allowed logical CPUs are counted instead, and the reason says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sdgen.errors import InvalidRequestError

MAX_THREADS = 1024


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    reason: str  # one line for `sdgen doctor`: where the number came from


def allowed_cpus() -> set[int]:
    """The logical CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return set(os.sched_getaffinity(0))
    return set(range(os.cpu_count() or 1))


def physical_cores(allowed: set[int], cpuinfo: str = "/proc/cpuinfo") -> int | None:
    """The distinct (package, core) pairs among the allowed logical CPUs; None when cpuinfo does not say."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    cores = set()
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        if "processor" not in fields or "core id" not in fields:
            continue
        if fields["processor"].isdigit() and int(fields["processor"]) in allowed:
            cores.add((fields.get("physical id", "0"), fields["core id"]))
    return len(cores) or None


def choose_threads(requested: int | None = None, cpuinfo: str = "/proc/cpuinfo") -> ThreadChoice:
    """`requested` (--threads) if given, else one thread per physical core this process may use."""
    if requested is not None:
        if isinstance(requested, bool) or not isinstance(requested, int) or not 1 <= requested <= MAX_THREADS:
            raise InvalidRequestError(
                f"Invalid --threads {requested!r}: give a whole number from 1 to {MAX_THREADS} "
                "(leave it out for one per physical core).",
                "threads",
            )
        return ThreadChoice(requested, "--threads")
    allowed = allowed_cpus()
    cores = physical_cores(allowed, cpuinfo)
    if cores is None:
        return ThreadChoice(len(allowed), f"{len(allowed)} logical CPUs allowed (no core ids in {cpuinfo})")
    siblings = len(allowed) - cores
    detail = f", {siblings} hyperthread siblings left out" if siblings > 0 else ""
    return ThreadChoice(cores, f"one per physical core: {cores} cores of {len(allowed)} allowed CPUs{detail}")


def apply_threads(requested: int | None = None) -> ThreadChoice:
    """Set torch's intra-op threads to the choice (before any work runs) and return it."""
    import torch

    choice = choose_threads(requested)
    if torch.get_num_threads() != choice.threads:
        torch.set_num_threads(choice.threads)
    return choice
