"""Turns face crops into fake probabilities with a bundle's two ONNX models and its calibration."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dfscan.calibration import apply_calibration
from dfscan.errors import ModelError
from dfscan.model.manifest import Manifest, bundle_hash, load_manifest
from dfscan.runtime import create_session, map_runs, parallel_runs, session_provider

CHECKOUT_BUNDLE = Path(__file__).resolve().parents[2] / "weights" / "default"
INSTALLED_BUNDLE = Path(sys.prefix) / "share" / "dfscan" / "weights" / "default"
# Faces a run of the embedder. On CPU one at a time is fastest: at batch 64 a 224 px EfficientNet-Lite0's
# activations (~100 MB a layer) leave the caches. One core of this 2-core CPU: 34 ms a face at 64, 21 at
# 8-16, 10.5 at 1 with ORT's arena off; 14, 17, 10 with it; and the cores take different faces
# (runtime.parallel_runs): 4.3-4.8 ms a face on 2 cores. Same scores bit for bit. A GPU wants large runs.
CPU_BATCH_SIZE = 1
GPU_BATCH_SIZE = 64


def to_network_input(crops: np.ndarray, mean: Any, std: Any) -> np.ndarray:
    """(N,S,S,3) uint8 RGB crops -> the embedder's (N,3,S,S) float32 input, normalised per channel."""
    batch = crops.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    return (batch - np.asarray(mean, np.float32).reshape(1, 3, 1, 1)) / np.asarray(std, np.float32).reshape(1, 3, 1, 1)


def default_bundle_path() -> Path:
    """The shipped bundle: $DFSCAN_MODEL if set, else weights/default of a checkout (editable install),
    else the copy a wheel install put under <prefix>/share/dfscan."""
    if os.environ.get("DFSCAN_MODEL"):
        return Path(os.environ["DFSCAN_MODEL"])
    if (CHECKOUT_BUNDLE / "manifest.json").is_file() or not (INSTALLED_BUNDLE / "manifest.json").is_file():
        return CHECKOUT_BUNDLE
    return INSTALLED_BUNDLE


class Scorer:
    """A loaded model bundle. `score_crops` takes RGB uint8 crops already cut by `crop_face` with
    this bundle's `input_size` and `crop_margin`, and returns calibrated fake probabilities."""

    def __init__(self, bundle_dir: str | Path | None = None, device: str = "auto", threads: int | None = None):
        self.bundle_dir = Path(bundle_dir) if bundle_dir is not None else default_bundle_path()
        self.manifest: Manifest = load_manifest(self.bundle_dir)
        self.hash = bundle_hash(self.bundle_dir)
        self.members: list[Scorer] = []
        if self.manifest.ensemble is not None:
            self._load_members(device, threads)
            return
        files = self.manifest.files
        session_threads, self.workers = parallel_runs(device, threads)
        self._embedder = create_session(self.bundle_dir / files["embedder"]["path"], device, session_threads)
        self._classifier = create_session(self.bundle_dir / files["classifier"]["path"], device, session_threads)
        self.provider = session_provider(self._embedder)
        self.batch_size = CPU_BATCH_SIZE if self.provider == "CPUExecutionProvider" else GPU_BATCH_SIZE
        self._inputs = (self._embedder.get_inputs()[0].name, self._classifier.get_inputs()[0].name)
        self._check_io()

    def _load_members(self, device: str, threads: int | None) -> None:
        """An ensemble: every member is a bundle of its own (hashes checked on load), with the same crop."""
        ensemble = self.manifest.ensemble or {}
        self.members = [Scorer(self.bundle_dir / m["path"], device, threads) for m in ensemble["members"]]
        pre = self.manifest.preprocess
        for member in self.members:
            mp = member.manifest.preprocess
            if (mp.input_size, mp.crop_margin, mp.mean, mp.std) != (pre.input_size, pre.crop_margin, pre.mean, pre.std):
                raise ModelError(f"ensemble member {member.bundle_dir} preprocesses faces differently")
        self.provider = self.members[0].provider

    def member_scores(self, crops: np.ndarray) -> np.ndarray:
        """(members, N) calibrated fake probabilities of each member of an ensemble."""
        return np.stack([m.score_crops(crops) for m in self.members])

    def combine(self, member_scores: np.ndarray) -> np.ndarray:
        """The ensemble's score: the fraction of members calling the face fake at their own threshold
        ("vote": above 0.5 is a majority, Kumar & Bhavsar's maximum voting), or the mean probability."""
        ensemble = self.manifest.ensemble or {}
        if ensemble["combination"] == "vote":
            thresholds = np.asarray([float(m["threshold"]) for m in ensemble["members"]])[:, None]
            return np.mean(member_scores >= thresholds, axis=0)
        return np.mean(member_scores, axis=0)

    def _check_io(self) -> None:
        emb_in = self._embedder.get_inputs()[0]
        shape = emb_in.shape
        size = self.manifest.preprocess.input_size
        if len(shape) != 4 or any(isinstance(d, int) and d != size for d in shape[2:]):
            raise ModelError(f"embedder input shape {shape} does not match manifest input_size {size}")
        cls_in = self._classifier.get_inputs()[0].shape
        dim = self.manifest.embedding_dim
        if len(cls_in) != 2 or (isinstance(cls_in[1], int) and cls_in[1] != dim):
            raise ModelError(f"classifier input shape {cls_in} does not match embedding_dim {dim}")

    @property
    def input_size(self) -> int:
        return self.manifest.preprocess.input_size

    @property
    def crop_margin(self) -> float:
        return self.manifest.preprocess.crop_margin

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.manifest.name,
            "version": self.manifest.version,
            "sha256": self.hash,
            "path": str(self.bundle_dir),
            "input_size": self.input_size,
            "crop_margin": self.crop_margin,
            "calibration": (self.manifest.calibration or {}).get("method"),
            **({"ensemble": {"combination": (self.manifest.ensemble or {}).get("combination"),
                             "members": [m.describe() for m in self.members]}} if self.members else {}),
        }

    def preprocess(self, crops: np.ndarray) -> np.ndarray:
        return to_network_input(crops, self.manifest.preprocess.mean, self.manifest.preprocess.std)

    def raw_scores(self, crops: np.ndarray) -> np.ndarray:
        """Uncalibrated classifier probabilities for a (N,S,S,3) uint8 array of crops."""
        crops = np.asarray(crops)
        size = self.input_size
        if crops.ndim != 4 or crops.shape[1:] != (size, size, 3):
            raise ValueError(f"crops must be (N,{size},{size},3) uint8, got {crops.shape}")
        if self.members:
            return self.combine(self.member_scores(crops)) if len(crops) else np.zeros(0)
        runs = [crops[start:start + self.batch_size] for start in range(0, len(crops), self.batch_size)]
        out = map_runs(self._score_run, runs, self.workers)
        return np.concatenate(out) if out else np.zeros(0)

    def _score_run(self, crops: np.ndarray) -> np.ndarray:
        emb_name, cls_name = self._inputs
        embeddings = self._embedder.run(None, {emb_name: self.preprocess(crops)})[0]
        probs = self._classifier.run(None, {cls_name: embeddings.astype(np.float32)})[0]
        return np.asarray(probs, dtype=np.float64).reshape(len(crops), -1)[:, -1]

    def score_crops(self, crops: np.ndarray) -> np.ndarray:
        """Calibrated probability that each face is fake."""
        return apply_calibration(self.raw_scores(crops), self.manifest.calibration)

    def resolve_threshold(self, threshold: str | float | None) -> tuple[float, str]:
        """A threshold value and the name it is known by ("manifest", an operating point, or "custom")."""
        from dfscan.settings import resolve_threshold  # noqa: PLC0415

        return resolve_threshold(threshold, self.manifest)
