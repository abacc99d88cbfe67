"""glibc's allocator, told to keep what a heavy host command frees.

A training step frees and allocates maps of megabytes each (bcnn144's first binary layer:
64 x 32 x 48 x 48 values); glibc serves each from fresh pages of the kernel (mmap above its
threshold) and gives freed memory back at once, so every step pays page faults for memory it
had a moment ago: 2.7 million minor faults in a 3-epoch run on the demo's data. Heap
allocations up to 32 MiB, and up to 2 GiB of freed memory kept, take that to 0.2 million,
the run 4-8% faster and drawing 3-5%; on the default run's larger set glibc's own moving
threshold already kept the maps, and the settings changed nothing measurable (training
notes, section 5, twenty-third round). The host commands that train or draw call this; the
edge never does (a Pi Zero has 512 MB).
"""

import ctypes

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_ABOVE = 32 * 1024 * 1024  # glibc's largest mmap threshold on 64-bit
KEEP_FREED = 2**31 - 1


def keep_freed_memory() -> bool:
    """Apply the settings to this process (and processes it forks); False where the C library
    is not glibc (musl, macOS, Windows) and nothing changed."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_ABOVE)) and bool(
        mallopt(M_TRIM_THRESHOLD, KEEP_FREED)
    )
