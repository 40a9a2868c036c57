"""Hand freed heap memory back to the operating system between chunks of a long scan.

Why: each chunk of a scan decodes 32 frames (about 200 MB at 1080p) and runs the face detector and the
classifier on them, from several onnxruntime threads. Everything is freed when the chunk is done, but
glibc's allocator keeps most of the freed pages in its per-thread arenas and hands them out again only
to requests that happen to fit, so the process's resident memory grew about 0.6 MB per frame for as long
as the video lasted (measured: bench/memory.py). `malloc_trim(0)` returns every free page; the next chunk
gets fresh pages from the kernel. On other C libraries (macOS, musl) this is a no-op.
"""
from __future__ import annotations

import ctypes
import functools
import sys
from typing import Callable


@functools.lru_cache(maxsize=None)
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(None).malloc_trim  # the process's own C library, whichever it is
    except (OSError, AttributeError):
        return None  # not glibc
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return freed heap pages to the OS; True if the C library could (glibc)."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
