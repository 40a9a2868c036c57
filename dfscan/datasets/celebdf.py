"""Celeb-DF v2.

`Celeb-synthesis/idX_idY_NNNN.mp4` is the real video `Celeb-real/idX_NNNN.mp4` (target identity X, video
NNNN) with the face of identity Y swapped in, so `source` is `idX_NNNN` (the authors' frame lists read
`id0_id1_0000_00060.png` as frame 60 of `id0_0000.mp4`, face swapped to id1). Train/val are grouped by the
target identity `idX`, so all videos of one person's footage share a split (the donor identity Y can still
appear in another split: Celeb-DF's identities are too interlinked to avoid it). The official test list
is the test split.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

from dfscan.datasets.items import VideoItem, relative_id, videos_in

log = logging.getLogger(__name__)

CELEB_FAKE = re.compile(r"^(id\d+)_(id\d+)_(\d+)$")
CELEB_REAL = re.compile(r"^(id\d+)_(\d+)$")


def celebdf_source(stem: str) -> tuple[str, str]:
    """(source video, group) for a Celeb-DF file stem; see the module docstring for the convention."""
    fake = CELEB_FAKE.match(stem)
    if fake:
        target, _donor, index = fake.groups()
        return f"{target}_{index}", target
    real = CELEB_REAL.match(stem)
    if real:
        return stem, real.group(1)
    return stem, stem  # YouTube-real: one video per person


def read_celebdf_test_list(root: Path) -> dict[str, str]:
    """Relative path -> label from List_of_testing_videos.txt (lines `label path`, label 1 = real)."""
    path = root / "List_of_testing_videos.txt"
    if not path.is_file():
        return {}
    listed: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2:
            listed[parts[1].replace("\\", "/")] = "real" if parts[0] == "1" else "fake"
    return listed


def read_celebdf(root: str | Path) -> list[VideoItem]:
    """Celeb-DF v2: the official test list is the test split; the rest is left for train/val grouping."""
    root = Path(root)
    test_list = read_celebdf_test_list(root)
    items: list[VideoItem] = []
    for folder, label in (("Celeb-real", "real"), ("YouTube-real", "real"), ("Celeb-synthesis", "fake")):
        for path in videos_in(root / folder):
            rel = relative_id(path, root)
            source, group = celebdf_source(path.stem)
            if folder == "YouTube-real":
                source = group = f"YouTube-real/{path.stem}"  # YouTube-real stems (00000) are bare numbers
            listed = test_list.get(rel)
            if listed is not None and listed != label:
                log.warning("Celeb-DF test list labels %s %s, its folder says %s", rel, listed, label)
            items.append(VideoItem(path, label, "test" if listed else None, source, rel, group=group))
    return items
