"""Resident pages of mapped model files given back (sdgen/models/mapped_files.py): a read-only shared mapping's
pages leave the process and read back the same bytes; a writable or private mapping is never touched."""

from __future__ import annotations

import mmap
import os
import time
from pathlib import Path

import pytest

from sdgen.models import mapped_files
from sdgen.models.mapped_files import drop_resident_pages, resident_pages_dropped

MIB = 2**20


def resident_mib(path: Path) -> float:
    """This process's resident memory of its mappings of `path`, from /proc/self/smaps."""
    name, total, current = str(path.resolve()), 0, None
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and not fields[0].endswith(":"):
            current = fields[5] if len(fields) >= 6 else None
        elif fields[0] == "Rss:" and current == name:
            total += int(fields[1])
    return total / 1024


def _touch(mapping: mmap.mmap) -> int:
    return sum(mapping[offset] for offset in range(0, len(mapping), mmap.PAGESIZE))


@pytest.fixture
def weights(tmp_path) -> tuple[Path, bytes]:
    data = os.urandom(16 * MIB)
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    return path, data


def test_a_read_only_mapping_leaves_the_process_and_reads_back_the_same_bytes(weights):
    path, data = weights
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapping:
        _touch(mapping)
        assert resident_mib(path) > 15
        assert drop_resident_pages([path]) == 16 * MIB
        assert resident_mib(path) < 1
        assert mapping[:] == data  # faulted back in from the page cache, unchanged


def test_a_writable_or_private_mapping_is_left_alone(weights):
    path, data = weights
    with path.open("r+b") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_WRITE) as writable:
        _touch(writable)
        assert drop_resident_pages([path]) == 0
        assert resident_mib(path) > 15
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY) as private:
        private[0:4] = b"sdgn"  # a private copy's written page exists only in this process
        _touch(private)
        assert drop_resident_pages([path]) == 0
        assert private[0:4] == b"sdgn" and private[4:] == data[4:]


def test_pages_are_dropped_while_the_block_runs_and_after_it(weights):
    path, _ = weights
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapping:
        with resident_pages_dropped([path]):
            _touch(mapping)
            assert resident_mib(path) > 15
            time.sleep(mapped_files.EVERY_S * 3)
            assert resident_mib(path) < 1  # while a compile would still be running
            _touch(mapping)
        assert resident_mib(path) < 1  # and once more as it ends


def test_an_unmapped_file_or_a_system_without_proc_drops_nothing(weights, tmp_path, monkeypatch):
    path, _ = weights
    assert drop_resident_pages([path]) == 0
    monkeypatch.setattr(mapped_files, "MAPS", tmp_path / "no-such-proc" / "maps")
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as mapping:
        _touch(mapping)
        assert drop_resident_pages([path]) == 0
        assert resident_mib(path) > 15
