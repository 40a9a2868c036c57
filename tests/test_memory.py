"""Bounded memory of long scans: freed heap goes back to the OS after every chunk (dfscan.memory).

The length sweep itself (peak RSS of 10/40/80 s 1080p clips) is bench/memory.py: too slow for CI."""
from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest

from dfscan.settings import CHUNK_FRAMES
from dfscan.scan import ScanSettings, Scanner

GLIBC = sys.platform.startswith("linux") and hasattr(ctypes.CDLL(None), "gnu_get_libc_version")

RETENTION_PROBE = """
import os
import numpy as np
from dfscan.memory import release_free_memory

def resident_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGESIZE") / 2**20

# Freeing a large mmapped block raises glibc's mmap threshold, so the 1 MB blocks after it come from the
# heap; small blocks allocated between them keep the heap from shrinking when the large ones are freed:
# the pattern of a scan's chunks (frames and tensors freed, per-frame records kept).
first = np.ones(8 * 2**20, np.uint8)
del first
big, kept = [], []
for _ in range(200):
    big.append(np.ones(2**20, np.uint8))
    kept.append(np.ones(4096, np.uint8))
big.clear()
freed = resident_mb()
released = release_free_memory()
print(released, round(freed), round(resident_mb()))
"""

@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_freed_heap_that_glibc_keeps_is_returned():
    out = subprocess.run([sys.executable, "-c", RETENTION_PROBE], capture_output=True, text=True, check=True)
    released, freed_mb, after_mb = out.stdout.split()
    assert released == "True"
    assert int(freed_mb) - int(after_mb) > 150  # glibc kept the 200 MB freed resident until asked

def test_a_scan_releases_memory_every_chunk_frames_and_at_the_end(bundles, face_video, monkeypatch):
    calls = []
    monkeypatch.setattr("dfscan.scan.release_free_memory", lambda: calls.append(1) or True)
    result = Scanner(bundles["neutral"], device="cpu").scan(face_video, ScanSettings(all_frames=True))
    n_frames = len(result.frames)
    assert n_frames == 40 and result.score is not None
    assert len(calls) == -(-n_frames // CHUNK_FRAMES)  # after 32+ frames, and after the last of the 40
