"""What every dataset reader returns: `VideoItem`s (a video, its label, split and source), and the splits.

`source` is the real video the faces come from (for a real video, itself): the group key that keeps a
source and every fake made from it in one split. Splits not given by a dataset are assigned by a hash of
the group key, so they are stable across runs, machines and subsets.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from dfscan.faceset import SPLITS

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")
DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)  # train, val, test


@dataclass
class VideoItem:
    path: Path
    label: str                 # real | fake
    split: str | None          # train | val | test; None until assigned
    source: str                # the real video the faces come from (for a real video, itself)
    video: str = ""            # unique id of the video within the dataset (default: path relative to root)
    group: str = ""            # split group key when coarser than `source` (e.g. a Celeb-DF identity)

    @property
    def group_key(self) -> str:
        return self.group or self.source


def _unit_hash(key: str, salt: str = "") -> float:
    digest = hashlib.sha256(f"{salt}{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def split_for(key: str, fractions: Sequence[float] = DEFAULT_FRACTIONS, salt: str = "") -> str:
    """The split a group key falls in: stable across runs, machines and dataset subsets."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or sum(fractions) <= 0:
        raise ValueError(f"split fractions must be three non-negative numbers, got {fractions}")
    total = float(sum(fractions))
    u = _unit_hash(key, salt)
    edge = 0.0
    for name, fraction in zip(SPLITS, fractions):
        edge += fraction / total
        if u < edge:
            return name
    return SPLITS[-1] if fractions[2] > 0 else ("val" if fractions[1] > 0 else "train")


def assign_splits(items: Iterable[VideoItem], fractions: Sequence[float] = DEFAULT_FRACTIONS,
                  salt: str = "") -> list[VideoItem]:
    """Give every item without a split one by the hash of its group key, so no source straddles splits."""
    items = list(items)
    for item in items:
        if item.split is None:
            item.split = split_for(item.group_key, fractions, salt)
    return items


def check_grouping(items: Iterable[VideoItem]) -> dict[str, set[str]]:
    """Sources found in more than one split (empty when the split is clean)."""
    seen: dict[str, set[str]] = {}
    for item in items:
        seen.setdefault(item.source, set()).add(str(item.split))
    return {s: splits for s, splits in seen.items() if len(splits) > 1}


def videos_in(folder: Path) -> list[Path]:
    """The video files directly in `folder`, sorted (none if it is missing)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def relative_id(path: Path, root: Path) -> str:
    """`path` relative to the dataset root, as a POSIX string (the video's id in the dataset)."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()
