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

from dfscan.faceset import FaceRecord, FaceSet, load_crop as load_image  # one face-set loader, shared with eval
from dfscan.model.scorer import to_network_input

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


def normalise(rgb: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """One HWC uint8 crop as a CHW tensor, normalised exactly as the scanner feeds the exported embedder."""
    return torch.from_numpy(np.ascontiguousarray(to_network_input(rgb[None], mean, std)[0]))


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


_LANDMARKS: dict[tuple[str, int, float], np.ndarray] = {}  # (image path, side, crop margin) -> 68 points


class PseudoFakeDataset(Dataset):
    """A FaceDataset plus a self-blended twin (label fake) for a share of its real faces (`--pseudo-fakes
    sbi[:FRACTION]`, Shiohara & Yamasaki 2022). Item n + k is the blend of the k-th chosen real face.

    Each call blends afresh (a new draw per epoch in end-to-end training); a frozen-stage cache calls each
    item once, which makes it a pre-generated pool of one blend per face. Landmarks are found once per
    face, from the detector box the face set's crop geometry implies.
    """

    def __init__(self, base: FaceDataset, fraction: float = 1.0, seed: int = 0, fresh: bool = True):
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"pseudo-fake fraction must be in (0, 1], not {fraction}")
        self.base, self.seed, self.fresh, self.calls = base, seed, fresh, 0
        self.twins = self.choose_twins(base.records, fraction, seed)
        self._landmarker = None

    @staticmethod
    def choose_twins(records: Sequence[FaceRecord], fraction: float, seed: int) -> list[int]:
        reals = [i for i, r in enumerate(records) if r.label == "real"]
        if not reals:
            return []
        rng = np.random.default_rng(seed)
        return sorted(rng.choice(reals, int(round(len(reals) * fraction)), replace=False).tolist())

    @classmethod
    def twinned_records(cls, records: Sequence[FaceRecord], fraction: float, seed: int) -> list[FaceRecord]:
        """The records in item order: the originals, then the real face behind each blended twin."""
        return list(records) + [records[i] for i in cls.choose_twins(records, fraction, seed)]

    def __len__(self) -> int:
        return len(self.base) + len(self.twins)

    @property
    def records(self) -> list[FaceRecord]:
        return self.base.records + [self.base.records[i] for i in self.twins]

    @property
    def labels(self) -> list[int]:
        return self.base.labels + [1] * len(self.twins)

    def _margin(self, record: FaceRecord) -> float:
        return float(self.base.face_set.geometry_of(record).get("crop", {}).get("margin", 0.0))

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if i < len(self.base):
            return self.base[i]
        from dfscan.train.sbi import Landmarker, box_in_crop, self_blend  # noqa: PLC0415

        k = self.twins[i - len(self.base)]
        record = self.base.records[k]
        path = self.base.face_set.image_path(record)
        rgb = load_image(path, max(self.base.size, 256))
        key = (str(path), rgb.shape[0], self._margin(record))
        if key not in _LANDMARKS:  # shared by the train, plain-train and val datasets over the same faces
            self._landmarker = self._landmarker or Landmarker()
            _LANDMARKS[key] = self._landmarker(rgb, box_in_crop(rgb.shape[0], key[2]))
        self.calls += 1
        # torch.initial_seed() differs per epoch and DataLoader worker: fresh blends without shared state
        fresh = [torch.initial_seed() % (1 << 32), self.calls] if self.fresh else []
        rng = np.random.default_rng([self.seed, k, *fresh])
        fake = self_blend(rgb, _LANDMARKS[key], rng)[0]
        fake = cv2.resize(fake, (self.base.size, self.base.size), interpolation=cv2.INTER_AREA)
        if self.base.augment is not None:
            fake = self.base.augment(fake)
        return normalise(fake, self.base.mean, self.base.std), 1


def parse_pseudo_fakes(spec: str | None) -> float | None:
    """`sbi` -> 1.0, `sbi:0.5` -> 0.5, None -> None."""
    if not spec:
        return None
    kind, _, fraction = spec.partition(":")
    if kind.strip().lower() != "sbi":
        raise ValueError(f"--pseudo-fakes must be sbi or sbi:FRACTION, not {spec!r}")
    try:
        value = float(fraction) if fraction else 1.0
    except ValueError:
        raise ValueError(f"--pseudo-fakes fraction must be a number in (0, 1], not {fraction!r}") from None
    if not 0.0 < value <= 1.0:
        raise ValueError(f"--pseudo-fakes fraction must be in (0, 1], not {value}")
    return value


class BalancedBatchSampler(Sampler[list[int]]):
    """Batches with half real, half fake faces (triplet mining needs both classes in every batch); with
    `groups` (a domain per item), each half is also spread evenly over the domains that have that label,
    so no source dominates a batch and "which footage is this" cannot stand in for "real or fake".

    One epoch = len(labels) // batch_size batches; smaller cells are re-sampled as needed. The RNG
    state is exposed so a resumed run draws the same batches.
    """

    def __init__(self, labels: Sequence[int], batch_size: int, seed: int = 0, groups: Sequence[str] | None = None):
        if batch_size < 2:
            raise ValueError("balanced batches need batch_size >= 2")
        labels_arr = np.asarray(labels)
        groups_arr = np.asarray(groups if groups is not None else [""] * len(labels_arr))
        self.cells: list[list[np.ndarray]] = []  # per class: the index arrays of its domains
        for c in (0, 1):
            in_class = labels_arr == c
            self.cells.append([np.flatnonzero(in_class & (groups_arr == g)) for g in sorted(set(groups_arr[in_class]))])
        if any(not cells for cells in self.cells):
            raise ValueError("balanced sampling needs both real and fake faces")
        self.batch_size, self.n = batch_size, len(labels_arr)
        self.seed = seed
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return max(1, self.n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        half = self.batch_size // 2
        streams = [[self._stream(ix) for ix in cells] for cells in self.cells]
        for _ in range(len(self)):
            batch = self._draw(streams[0], self.batch_size - half) + self._draw(streams[1], half)
            yield [int(i) for i in self.rng.permutation(batch)]

    def _draw(self, streams: list[Iterator[int]], k: int) -> list[int]:
        order = np.concatenate([self.rng.permutation(len(streams)) for _ in range(k // len(streams) + 1)])[:k]
        return [next(streams[g]) for g in order]

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
