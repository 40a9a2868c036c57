"""Labelled videos of any origin: a folder with `real/` and `fake/`, or a CSV listing (as the shared
wild_clips labels)."""
from __future__ import annotations

import csv
from pathlib import Path

from dfscan.datasets.items import VIDEO_EXTENSIONS, VideoItem, relative_id
from dfscan.faceset import SPLITS
from dfscan.inputs import confined, labels_text


def parse_label(value: str) -> str:
    """real/fake in any case, or 0/1 with 1 = fake (the usual detection convention)."""
    text = str(value).strip().lower()
    if text in ("real", "0", "original", "pristine"):
        return "real"
    if text in ("fake", "1", "manipulated", "deepfake"):
        return "fake"
    raise ValueError(f"label {value!r} is not real/fake/0/1")


def read_folder(root: str | Path) -> list[VideoItem]:
    """A folder with `real/` and `fake/` subfolders (searched recursively). Each video is its own source."""
    root = Path(root)
    if not (root / "real").is_dir() and not (root / "fake").is_dir():
        raise ValueError(f"{root} has neither a real/ nor a fake/ subfolder")
    items: list[VideoItem] = []
    for label in ("real", "fake"):
        folder = root / label
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix.lower() in VIDEO_EXTENSIONS:
                rel = relative_id(path, root)
                items.append(VideoItem(path, label, None, rel, rel))
    return items


def read_csv(csv_path: str | Path) -> list[VideoItem]:
    """A CSV `path,label[,split,source]` (`file` for `path` too, as in the shared wild_clips labels); paths
    are relative to the CSV's folder and must stay inside it. Rows that name no video file (images) are skipped."""
    csv_path = Path(csv_path)
    with labels_text(csv_path):
        return _read_csv_rows(csv_path)


def _read_csv_rows(csv_path: Path) -> list[VideoItem]:
    items: list[VideoItem] = []
    labelled: dict[Path, tuple[str, int]] = {}  # each video's label and the line that gave it
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        path_key = "path" if "path" in fields else "file"
        if path_key not in fields or "label" not in fields:
            raise ValueError(f"{csv_path} needs a header with at least `path,label`")
        for line, row in enumerate(reader, start=2):
            raw = row[path_key].strip()
            if Path(raw).suffix.lower() not in VIDEO_EXTENSIONS:
                continue
            try:
                path = confined(csv_path.parent, raw)
            except ValueError as exc:
                raise ValueError(f"{csv_path}:{line}: {exc}") from None
            try:
                label = parse_label(row["label"])
            except ValueError as exc:
                raise ValueError(f"{csv_path}:{line}: {exc}") from None
            split = (row.get("split") or "").strip().lower() or None
            if split is not None and split not in SPLITS:
                raise ValueError(f"{csv_path}:{line}: split {split!r} is not one of {SPLITS}")
            source = (row.get("source") or "").strip() or raw
            if path in labelled:  # the same video twice: one item, and never two labels
                if labelled[path][0] != label:
                    raise ValueError(f"{csv_path}:{line}: {raw} is labelled {label} here and "
                                     f"{labelled[path][0]} on line {labelled[path][1]}")
                continue
            labelled[path] = (label, line)
            items.append(VideoItem(path, label, split, source, raw))
    return items


def read_labelled_videos(folder_or_csv: str | Path) -> list[VideoItem]:
    """The generic reader: a CSV file or a real/ + fake/ folder."""
    path = Path(folder_or_csv)
    return read_csv(path) if path.is_file() else read_folder(path)
