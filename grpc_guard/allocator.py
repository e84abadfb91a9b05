"""glibc malloc settings under which the in-flight limits bound the process's RSS.

The byte budget counts request bytes held by calls in flight, but freed memory only leaves RSS
if the allocator gives it back. glibc does not, by default, for request-sized buffers: after the
first large block is freed it raises its mmap threshold to that size (up to 32 MiB), so later
avatars land in its heaps and stay there when freed; and every thread that contends for malloc
(grpc's, the S3 thread pool's) gets a heap of its own. Measured on accounts with its default
limits, bursts of 16 concurrent CreateUser of 19.5 MiB, then 16 more beside 16 such UpdateAvatar
and 64 GetUser of 30 MiB: with glibc's defaults RSS peaked at 379, 443, 449, then 499 MiB and
stayed at 282-492 MiB between bursts; with these settings 353, 365, then 450 MiB, and back to
140-200 MiB after each burst.

That was for bursts alone. After the 19 hostile-upload tests (each a refused 19.5 MiB request)
accounts sat at 380-456 MiB and the next burst peaked at 547-589 MiB: the refused requests were
still held by reference cycles (see Guard._trimmed) and their freed memory by the heaps. Once
large requests end, the guard collects those cycles and calls `trim`; the same run then peaked at
385-406 MiB.

The threshold was 1 MiB at first; it is 8 MiB now. At 1 MiB every buffer of a phone photo (the
request, its parsed copy, the avatar's bytes, the S3 body) was a fresh mapping whose pages the
kernel faulted in and zeroed, and unmapped again when freed: 31.6 ms of accounts CPU per 12 MP
CreateUser, 18.2 ms at 8 MiB (`make bench-load`, bytes path). Requests near the 20 MiB limit,
the ones the hostile tests send, are still mapped apart and handed back when freed: the
16 x 19.5 MiB burst of tests/e2e/test_overload.py peaked at 360 MiB (348 at 1 MiB; 364 at
32 MiB, where the watch-stream test then peaked at 256 MiB instead of 152-184).
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # glibc <malloc.h>
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 8 * 1024 * 1024  # blocks this large come from, and go back to, the kernel
ARENA_MAX = 2  # the Dockerfile's MALLOC_ARENA_MAX, for every way the services are started


def bound_the_heap() -> bool:
    """Applies the settings for this process (call it before threads start); False where the
    C library is not glibc, and nothing changes."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) and mallopt(M_ARENA_MAX, ARENA_MAX))


def trim() -> bool:
    """glibc's malloc_trim(0): returns the free pages of every heap, holes in the middle included,
    to the kernel (a few milliseconds for a heap of hundreds of MiB); False elsewhere."""
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    return bool(malloc_trim(0))
