"""glibc malloc tuning for the ingest loop: keep freed memory for reuse.

Every batch allocates and frees the same large numpy temporaries (a (1000, 256) float32
is 1 MB). By default glibc serves such blocks with fresh mmap()s, or trims the heap they
leave, so each batch touches new pages and pays a page fault per 4 KB: measured on this
KVM machine, a 1 MB temporary costs ~1.5 ms of faults against ~0.08 ms of arithmetic
(BENCHMARKS.md). Raising both thresholds keeps those blocks in the heap, reused warm.
The price is that up to TRIM_THRESHOLD of freed memory may stay resident.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # glibc <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # glibc's maximum on 64-bit: blocks below it come from the heap
TRIM_THRESHOLD = 64 * 2**20  # free memory at the heap's top kept before giving it back


def keep_freed_memory() -> bool:
    """Apply the thresholds (process-wide, idempotent); False where libc is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
