"""DFDC (the DeepFake Detection Challenge training parts).

`metadata.json` names each fake's `original`. Its `split` field is "train" for every training part. Where
the parts found include validation and test folders, the split is Bondi et al.'s by folder
(`dfdc_train_part_40`-`49` test, `35`-`39` val, the rest train; a fake goes with its original's folder);
otherwise splits are assigned by source. DFDC's actors recur across folders: identities can straddle.
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from dfscan.datasets.items import VideoItem

log = logging.getLogger(__name__)


def read_dfdc(root: str | Path) -> list[VideoItem]:
    """DFDC training parts (`dfdc_train_part_*/metadata.json`); the root may also be a single part."""
    root = Path(root)
    metas = sorted(root.glob("dfdc_train_part_*/metadata.json")) or sorted(root.glob("*/metadata.json"))
    if (root / "metadata.json").is_file():
        metas.insert(0, root / "metadata.json")
    items: list[VideoItem] = []
    part_of: dict[str, int | None] = {}
    for meta_path in metas:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        part = _dfdc_part(meta_path.parent.name)
        for name, entry in sorted(meta.items()):
            path = meta_path.parent / name
            part_of.setdefault(name, part)
            if not path.is_file():
                log.warning("DFDC metadata names a missing file: %s", path)
                continue
            label = str(entry.get("label", "")).lower()
            if label not in ("real", "fake"):
                log.warning("DFDC %s: unknown label %r, skipped", path, entry.get("label"))
                continue
            source = entry.get("original") if label == "fake" and entry.get("original") else name
            items.append(VideoItem(path, label, None, source, name))
    parts = {p for p in part_of.values() if p is not None}
    if any(dfdc_folder_split(p) == "val" for p in parts) and any(dfdc_folder_split(p) == "test" for p in parts):
        for item in items:
            part = part_of.get(item.source, part_of.get(item.video))
            item.split = dfdc_folder_split(part) if part is not None else None
    return items


def _dfdc_part(folder: str) -> int | None:
    match = re.fullmatch(r"dfdc_train_part_(\d+)", folder)
    return int(match.group(1)) if match else None


def dfdc_folder_split(part: int) -> str:
    """Bondi et al.'s DFDC split: folders 40-49 test, 35-39 val, the other 40 train."""
    return "test" if 40 <= part <= 49 else "val" if 35 <= part <= 39 else "train"
