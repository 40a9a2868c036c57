"""Training data: face-set splits as torch datasets, balanced batches, and a cache of frozen-stage maps.

Crops are used as stored: DFDC crops are tight square face boxes and faces written by `dfscan extract`
are already cut by `crop_face` with the manifest margin, so the only geometry here is the resize.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Iterator, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from dfscan.faceset import FaceRecord, FaceSet

Augment = Callable[[np.ndarray], np.ndarray]


def select_records(face_set: FaceSet, split: str, limit: int | None = None, seed: int = 0) -> list[FaceRecord]:
    """Records of one split; with `limit`, a class-balanced random subset of that size."""
    records = face_set.split(split)
    if not records:
        raise ValueError(f"face set {face_set.root} has no {split!r} rows")
    if limit is None or limit >= len(records):
        return records
    rng = random.Random(seed)
    by_label = {lab: [r for r in records if r.label == lab] for lab in ("real", "fake")}
    chosen: list[FaceRecord] = []
    for i, lab in enumerate(("real", "fake")):
        want = limit // 2 + (limit % 2 if i == 0 else 0)
        chosen += rng.sample(by_label[lab], min(want, len(by_label[lab])))
    rng.shuffle(chosen)
    return chosen


def load_image(path: Path, size: int) -> np.ndarray:
    """RGB uint8, resized to size x size (INTER_AREA down, linear up)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path}")
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if rgb.shape[0] != size or rgb.shape[1] != size:
        interp = cv2.INTER_AREA if rgb.shape[0] > size else cv2.INTER_LINEAR
        rgb = cv2.resize(rgb, (size, size), interpolation=interp)
    return rgb


def normalise(rgb: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    x = (rgb.astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


class FaceDataset(Dataset):
    """(image tensor CHW normalised, label 0 real / 1 fake) for a list of records."""

    def __init__(self, face_set: FaceSet, records: list[FaceRecord], size: int,
                 mean: Sequence[float], std: Sequence[float], augment: Augment | None = None):
        self.face_set, self.records = face_set, records
        self.size, self.mean, self.std, self.augment = size, mean, std, augment

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> list[int]:
        return [r.is_fake for r in self.records]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        record = self.records[i]
        rgb = load_image(self.face_set.image_path(record), self.size)
        if self.augment is not None:
            rgb = self.augment(rgb)
        return normalise(rgb, self.mean, self.std), record.is_fake


class BalancedBatchSampler(Sampler[list[int]]):
    """Batches with half real, half fake faces (triplet mining needs both classes in every batch).

    One epoch = len(labels) // batch_size batches; the smaller class is re-sampled as needed. The RNG
    state is exposed so a resumed run draws the same batches.
    """

    def __init__(self, labels: Sequence[int], batch_size: int, seed: int = 0):
        if batch_size < 2:
            raise ValueError("balanced batches need batch_size >= 2")
        self.by_class = [np.flatnonzero(np.asarray(labels) == c) for c in (0, 1)]
        if any(len(ix) == 0 for ix in self.by_class):
            raise ValueError("balanced sampling needs both real and fake faces")
        self.batch_size, self.n = batch_size, len(labels)
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return max(1, self.n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        half = self.batch_size // 2
        streams = [self._stream(ix) for ix in self.by_class]
        for _ in range(len(self)):
            batch = [next(streams[0]) for _ in range(self.batch_size - half)]
            batch += [next(streams[1]) for _ in range(half)]
            yield [int(i) for i in self.rng.permutation(batch)]

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[list[int]]:
        """The batches of `epoch`, deterministic given (seed, epoch); the first `start` are skipped."""
        self.rng = np.random.default_rng([self.seed, epoch])
        for i, batch in enumerate(iter(self)):
            if i >= start:
                yield batch

    def _stream(self, idx: np.ndarray) -> Iterator[int]:
        while True:
            yield from self.rng.permutation(idx)


# ---------------------------------------------------------------- frozen-stage feature cache

class FeatureCache:
    """Maps of the frozen stages for one split: float16 array (N, C, H, W) + labels, on disk as .npy."""

    def __init__(self, maps: np.ndarray, labels: np.ndarray):
        self.maps, self.labels = maps, labels

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: Sequence[int], flip: bool = False, rng: np.random.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.asarray(self.maps[np.asarray(idx)], dtype=np.float32))
        if flip and rng is not None and x.dim() == 4:
            # horizontal flip of the map ~ features of the flipped image (the frozen part is convolutional)
            mask = torch.from_numpy(rng.random(len(idx)) < 0.5)
            x[mask] = x[mask].flip(-1)
        return x, torch.as_tensor(self.labels[np.asarray(idx)], dtype=torch.float32)

    @classmethod
    def load(cls, path: Path, mmap: bool = False) -> "FeatureCache":
        maps = np.load(path.with_suffix(".maps.npy"), mmap_mode="r" if mmap else None)
        labels = np.load(path.with_suffix(".labels.npy"))
        return cls(maps, labels)


@torch.no_grad()
def build_feature_cache(backbone: torch.nn.Module, dataset: FaceDataset, stage: int, path: Path | None,
                        batch_size: int = 64, progress: bool = True) -> FeatureCache:
    """Run `backbone.features_until(., stage)` once over `dataset` and keep the maps (float16).

    With `path`, the maps go to `<path>.maps.npy` (a memmap, written as they come) and are reused when
    already complete.
    """
    if path is not None:
        maps_path, labels_path = path.with_suffix(".maps.npy"), path.with_suffix(".labels.npy")
        if maps_path.is_file() and labels_path.is_file():
            cache = FeatureCache.load(path)
            if len(cache) == len(dataset):
                return cache
    backbone.eval()
    n = len(dataset)
    first = backbone.features_until(dataset[0][0][None], stage)
    if stage >= backbone.num_stages:
        first = backbone.pool(first)
    shape = (n, *first.shape[1:])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        maps = np.lib.format.open_memmap(maps_path.with_suffix(".tmp.npy"), "w+", np.float16, shape)
    else:
        maps = np.empty(shape, np.float16)
    labels = np.asarray(dataset.labels, np.int64)
    bar = _progress(range(0, n, batch_size), "caching", progress, total=(n + batch_size - 1) // batch_size)
    for start in bar:
        xs = torch.stack([dataset[i][0] for i in range(start, min(n, start + batch_size))])
        out = backbone.features_until(xs, stage)
        if stage >= backbone.num_stages:
            out = backbone.pool(out)  # everything frozen: keep the pooled features only
        maps[start:start + len(xs)] = out.numpy().astype(np.float16)
    if path is not None:
        maps.flush()
        del maps
        maps_path.with_suffix(".tmp.npy").replace(maps_path)
        np.save(labels_path, labels)
        return FeatureCache.load(path)
    return FeatureCache(maps, labels)


def _progress(it, desc: str, enabled: bool, total: int | None = None):
    if not enabled:
        return it
    try:
        from tqdm import tqdm
    except ImportError:
        return it
    return tqdm(it, desc=desc, total=total, unit="batch", mininterval=10)
