"""dfscan.datasets: the dataset readers as a package of their own, usable without torch (reader behaviour per
dataset layout is tested in test_extract.py)."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

from dfscan.datasets import check_grouping, read_dataset, read_labelled_videos

WILD_CLIPS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "wild_clips"


def test_datasets_package_imports_no_torch():
    code = ("import sys, dfscan.datasets as d; d.read_dataset; "
            "print(sorted(m for m in ('torch', 'torchvision', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_training_extraction_uses_the_same_readers():
    pytest.importorskip("torch")
    import dfscan.datasets as datasets
    from dfscan.train import extract

    assert extract.VideoItem is datasets.VideoItem
    assert not hasattr(extract, "read_dataset")  # one place: extraction does not carry a copy of the readers


@pytest.mark.skipif(not (WILD_CLIPS / "labels.csv").is_file(), reason=f"shared wild_clips not found at {WILD_CLIPS}")
def test_wild_clips_listing_gives_its_videos_with_their_labels_and_splits():
    with open(WILD_CLIPS / "labels.csv", newline="", encoding="utf-8") as fh:
        listed = {row["file"]: row for row in csv.DictReader(fh) if row["file"].startswith("videos/")}
    items = read_dataset("csv", WILD_CLIPS / "labels.csv")
    assert {item.video for item in items} == set(listed)  # the crops under images/ are not videos
    for item in items:
        assert item.path == WILD_CLIPS / item.video and item.path.is_file()
        assert (item.label, item.split) == (listed[item.video]["label"], listed[item.video]["split"])
        assert item.source == listed[item.video]["source"]
    assert not check_grouping(items)  # its split groups by source repository
    assert [i.video for i in read_labelled_videos(WILD_CLIPS / "labels.csv")] == [i.video for i in items]
