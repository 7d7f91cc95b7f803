"""backend.tune_allocator: glibc's malloc keeps freed memory, so big temporaries stop faulting.

Each check runs in a fresh Python process: the setting is process-wide and permanent.
"""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest
from convnet_core import backend

ON_GLIBC = sys.platform == "linux" and platform.libc_ver()[0] == "glibc"

# Allocates, writes and frees a 40 MiB array 10 times (above the 32 MiB that glibc's
# dynamic mmap threshold can reach) and prints the page faults that took.
FAULTS_OF_TEMPORARIES = """
import resource, sys
import numpy
from convnet_core import backend
applied = backend.tune_allocator() if sys.argv[1] == "tuned" else None
numpy.ones(10 << 20, dtype=numpy.float32)  # warm-up: the first block is always fresh
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    numpy.ones(10 << 20, dtype=numpy.float32)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_OF_TEMPORARIES, mode],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0], int(out[1])


def test_tuned_allocator_reuses_freed_blocks():
    applied, tuned = _faults("tuned")
    if ON_GLIBC:
        assert applied == "True"
        _, default = _faults("default")
        # default: each 40 MiB block is a fresh mmap whose pages fault in again every round
        # (10,240 pages of 4 KiB, or at least 20 of 2 MiB where huge pages are on)
        assert default >= 10 * 20
        assert tuned < 50  # tuned: the same heap block every round
    else:
        assert applied == "False"  # a no-op elsewhere


@pytest.mark.parametrize(
    "kwargs", [{"mmap_threshold": -1}, {"trim_threshold": -5}, {"mmap_threshold": 2**31}]
)
def test_tune_allocator_rejects_bad_thresholds(kwargs):
    with pytest.raises(ValueError, match="tune_allocator: thresholds"):
        backend.tune_allocator(**kwargs)
