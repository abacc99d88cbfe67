"""host.allocator: freed memory is kept for the next allocation, not faulted in again."""

import platform
import subprocess
import sys

import pytest

CHURN = """
import resource, sys
import numpy as np
if sys.argv[1] == "keep":
    from host.allocator import keep_freed_memory
    assert keep_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):  # a training step's maps: a few of megabytes each, then all freed
    maps = [np.ones(9 * 2**20, np.uint8) for _ in range(3)]
    del maps
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_megabyte_allocations_reuse_their_pages_once_told_to_keep_them():
    faults = {}
    for mode in ("plain", "keep"):
        out = subprocess.run(
            [sys.executable, "-c", CHURN, mode], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        faults[mode] = int(out.stdout)
    pages = 9 * 2**20 // 4096
    # freed to the kernel and faulted in again, round after round (76,077 faults when written)
    assert faults["plain"] >= 5 * 3 * pages, faults
    assert faults["keep"] <= 2 * 3 * pages, faults  # the first round's only
