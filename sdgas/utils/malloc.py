"""glibc malloc settings for CPU training: freed activation buffers stay in the process for the next iteration.

A training step on the CPU allocates and frees the same large activation and gradient buffers every iteration
(docs/cpu_inference_forms.md). glibc serves every block
above its mmap threshold (at most 32 MiB, whatever MALLOC_MMAP_THRESHOLD_ asks for) with fresh pages from the kernel
and unmaps it when freed, so each iteration page-faults its whole working set in again and the kernel zeroes it:
system time, not computation. `keep_freed_memory` makes glibc take every block from its heap and keep freed memory
for reuse. Values are untouched; only where the bytes live changes. The process keeps its peak memory until exit.
"""

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt parameters, <malloc.h>
TRIM_THRESHOLD = 2**31 - 1  # free bytes at the heap top before glibc returns them to the OS (mallopt takes an int)


def keep_freed_memory() -> bool:
    """No mmap-served blocks (M_MMAP_MAX 0) and a 2 GiB trim threshold in glibc's malloc, process-wide.

    Returns whether both settings took effect (False where the C library is not glibc, e.g. macOS or musl).
    Blocks the heap cannot hold still fall back to mmap inside glibc, so allocation never fails because of it.
    """
    name = ctypes.util.find_library("c") if platform.system() == "Linux" else None
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return False
    if libc is None or not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):
        return False
    return libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
