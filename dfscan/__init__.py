"""dfscan: forensic video scanner for manipulated faces.

    >>> import dfscan
    >>> result = dfscan.scan_video("clip.mp4")          # VideoResult
    >>> result.label, result.score, result.to_json()
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "scan_video", "iter_scan", "Scanner", "ScanSettings", "VideoResult"]

_LAZY = {
    "scan_video": "dfscan.scan",
    "iter_scan": "dfscan.scan",
    "Scanner": "dfscan.scan",
    "ScanSettings": "dfscan.scan",
    "VideoResult": "dfscan.results",
}


def __getattr__(name: str) -> Any:
    # Lazy so that `import dfscan` (and the CLI's --help) doesn't load onnxruntime or numpy-heavy code.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dfscan' has no attribute {name!r}")
