"""FaceForensics++ (and Google's DeepFakeDetection inside it).

Fakes are `<target>_<donor>.mp4`; the frames are the target's video, so `source` is `<target>`.
DeepFakeDetection fakes are `<target>_<donor>__<scene>__<code>.mp4`, made from the actors' real video
`<target>__<scene>.mp4`; it has no official split, so it is grouped by target actor.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

from dfscan.datasets.items import VideoItem, relative_id, videos_in
from dfscan.faceset import SPLITS

log = logging.getLogger(__name__)

FFPP_METHODS = ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures", "FaceShifter", "DeepFakeDetection")
FFPP_COMPRESSIONS = ("raw", "c23", "c40")


def read_ffpp_splits(root: Path) -> dict[str, str]:
    """Map 'a_b' (both orders) and each id to its official split, from splits/{train,val,test}.json."""
    split_of: dict[str, str] = {}
    for folder in (root / "splits", root / "dataset" / "splits", root):
        if not (folder / "train.json").is_file():
            continue
        for name in SPLITS:
            path = folder / f"{name}.json"
            if not path.is_file():
                continue
            for a, b in json.loads(path.read_text(encoding="utf-8")):
                for key in (f"{a}_{b}", f"{b}_{a}", str(a), str(b)):
                    split_of[key] = name
        break
    return split_of


def _ffpp_methods(root: Path, methods: Sequence[str] | None) -> list[str]:
    present = [m for m in FFPP_METHODS if (root / "manipulated_sequences" / m).is_dir()]
    if not methods:
        return present
    unknown = [m for m in methods if m not in FFPP_METHODS]
    if unknown:
        raise ValueError(f"unknown FaceForensics++ methods {unknown}; known: {', '.join(FFPP_METHODS)}")
    missing = [m for m in methods if m not in present]
    if missing:
        log.warning("FaceForensics++ methods not found under %s: %s", root, ", ".join(missing))
    return [m for m in methods if m in present]


def read_ffpp(root: str | Path, compression: str = "c23", methods: Sequence[str] | None = None) -> list[VideoItem]:
    """FaceForensics++ videos with the official splits (items the split files don't cover get split=None)."""
    root = Path(root)
    if compression not in FFPP_COMPRESSIONS:
        raise ValueError(f"compression must be one of {FFPP_COMPRESSIONS}, not {compression!r}")
    split_of = read_ffpp_splits(root)
    chosen = _ffpp_methods(root, methods)
    items: list[VideoItem] = []
    for path in videos_in(root / "original_sequences" / "youtube" / compression / "videos"):
        items.append(VideoItem(path, "real", split_of.get(path.stem), path.stem, relative_id(path, root)))
    for method in chosen:
        if method == "DeepFakeDetection":
            items.extend(_read_dfd(root, compression))
            continue
        for path in videos_in(root / "manipulated_sequences" / method / compression / "videos"):
            target = path.stem.split("_")[0]
            items.append(VideoItem(path, "fake", split_of.get(path.stem), target, relative_id(path, root)))
    return items


def _read_dfd(root: Path, compression: str) -> list[VideoItem]:
    """Google's DeepFakeDetection set inside FF++: no official split, so it is grouped by target actor."""
    items: list[VideoItem] = []
    for path in videos_in(root / "original_sequences" / "actors" / compression / "videos"):
        actor = path.stem.split("__")[0]
        items.append(VideoItem(path, "real", None, path.stem, relative_id(path, root), group=f"actor{actor}"))
    for path in videos_in(root / "manipulated_sequences" / "DeepFakeDetection" / compression / "videos"):
        parts = path.stem.split("__")
        target = parts[0].split("_")[0]
        scene = parts[1] if len(parts) > 1 else ""
        items.append(VideoItem(path, "fake", None, f"{target}__{scene}", relative_id(path, root),
                               group=f"actor{target}"))
    return items
