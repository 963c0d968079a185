"""Keep the agent's resident memory at what it holds: glibc told not to keep freed frames.

A camera frame (0.9 MB at 640 x 480) is allocated by the capture thread and freed by the frame loop
or the inference thread. glibc serves allocations of 128 KB and more with mmap at first, but raises
that threshold to the size of each such block freed (up to 32 MB), after which frame-sized buffers
come from the heap of the thread that allocated them and stay there once freed: measured with
`edgeloop bench agent`'s pipeline, 178 MB after one pass over the video and 197 MB after five,
against 142-144 MB with the threshold held (a peak of 160 MB), and the model's load 19 MB lighter.
Holding the threshold costs a page fault per 4 KB of each new frame buffer, on the capture thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger("edgeloop.agent")

M_MMAP_THRESHOLD = -3  # glibc's malloc.h
MMAP_THRESHOLD = 128 * 1024  # glibc's initial threshold, held instead of floating up


def hold_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Buffers of `threshold` bytes or more get a mapping of their own, unmapped when freed.
    -> whether the allocator took it (glibc on Linux; elsewhere nothing changes). Call it at the
    start of the process: blocks already kept by the heaps stay where they are."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # no C library to ask: its allocator keeps its own habits
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    held = mallopt(M_MMAP_THRESHOLD, threshold) == 1
    log.debug("malloc mmap threshold held at %d bytes: %s", threshold, held)
    return held
