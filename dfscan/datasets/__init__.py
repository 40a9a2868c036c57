"""Dataset readers: a downloaded dataset tree (FaceForensics++, Celeb-DF v2, DFDC) or a labelled folder or
CSV -> `VideoItem`s with label, split and source. Torch-free, so `dfscan extract`
and `dfscan eval` list videos the same way on a scan-only install.

    from dfscan.datasets import read_dataset
    items = read_dataset("celebdf", "/data/Celeb-DF-v2")      # every item with a split
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from dfscan.datasets.celebdf import celebdf_source, read_celebdf, read_celebdf_test_list
from dfscan.datasets.dfdc import dfdc_folder_split, read_dfdc
from dfscan.datasets.ffpp import FFPP_COMPRESSIONS, FFPP_METHODS, read_ffpp, read_ffpp_splits
from dfscan.datasets.generic import parse_label, read_csv, read_folder, read_labelled_videos
from dfscan.datasets.items import (DEFAULT_FRACTIONS, SPLITS, VIDEO_EXTENSIONS, VideoItem, assign_splits,
                                   check_grouping, split_for)

DATASETS = ("ff++", "celebdf", "dfdc", "folder", "csv")

__all__ = ["DATASETS", "DEFAULT_FRACTIONS", "FFPP_COMPRESSIONS", "FFPP_METHODS", "SPLITS", "VIDEO_EXTENSIONS",
           "VideoItem", "assign_splits", "celebdf_source", "check_grouping", "dfdc_folder_split", "parse_label",
           "read_celebdf", "read_celebdf_test_list", "read_csv", "read_dataset", "read_dfdc", "read_ffpp",
           "read_ffpp_splits", "read_folder", "read_labelled_videos", "split_for"]


def read_dataset(dataset: str, root: str | Path, compression: str = "c23", methods: Sequence[str] | None = None,
                 fractions: Sequence[float] = DEFAULT_FRACTIONS) -> list[VideoItem]:
    """Any supported dataset as VideoItems, every one with a split."""
    if dataset == "ff++":
        items = read_ffpp(root, compression, methods)
    elif dataset == "celebdf":
        items = read_celebdf(root)
        # the official test list is the test set; the rest goes to train/val only
        fractions = (fractions[0], fractions[1], 0.0)
    elif dataset == "dfdc":
        items = read_dfdc(root)
    elif dataset == "folder":
        items = read_folder(root)
    elif dataset == "csv":
        items = read_csv(root)
    else:
        raise ValueError(f"dataset must be one of {DATASETS}, not {dataset!r}")
    return assign_splits(items, fractions)
