"""The library API: `scan_video(path) -> VideoResult` and `iter_scan(paths) -> Iterator[VideoResult]`.

Pipeline: video (sample frames) -> faces (detect, link into tracks, crop) -> model (score crops)
-> verdict (aggregate per track, most suspicious track decides). Errors in one input become an ERROR
result with a one-line reason; only setup problems (bad bundle, no onnxruntime) raise.
"""
from __future__ import annotations

import functools
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from dfscan import verdict
from dfscan.errors import DfscanError
from dfscan.faces.crop import crop_face
from dfscan.faces.tracks import Detection, Track, link_tracks
from dfscan.model.manifest import sha256_file
from dfscan.results import FaceObservation, TrackResult, VideoResult


@dataclass(frozen=True)
class DetectorSettings:
    # Detection runs on frames shrunk to at most this longer side; with min_face_size in original pixels,
    # PNet's pyramid starts at 12/min_face of that size. Faces under 40 px carry little manipulation
    # evidence at the models' 128-224 px input, and skipping them makes detection ~4x cheaper at 720p.
    max_side: int | None = 640        # detection resolution bound (longer side, pixels)
    min_face_size: int = 40           # original-frame pixels
    min_confidence: float = 0.90      # MTCNN final-stage probability
    max_faces_per_frame: int = 16     # largest first
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    # Pyramid step. 0.709 (facenet-pytorch's) costs ~25% more for the same faces at >= 40 px: measured
    # 4.25 vs 4.19 faces/frame on a 1080p street scene, 1.20 s vs 0.93 s for 32 frames of 720p.
    factor: float = 0.6
    # Temporal reuse: the whole PNet pyramid on every full_every-th sampled frame and the last; on the frames
    # between, PNet runs only on the pyramid regions around the faces the neighbouring full frames found
    # (MTCNN.detect_video), then RNet+ONet as usual. 1: every frame on its own, as MTCNN.detect_batch.
    # Measured: same 134 faces on the 1080p crowd clip, detection 30-45% cheaper.
    full_every: int = 2

    def build(self, device: str = "auto", threads: int | None = None) -> Any:
        """The MTCNN these settings describe (the scanner and training-set extraction both use this)."""
        from dfscan.faces.mtcnn import MTCNN  # noqa: PLC0415 - keeps `import dfscan.scan` light

        return MTCNN(device=device, min_face_size=self.min_face_size, thresholds=self.thresholds,
                     factor=self.factor, max_side=self.max_side, threads=threads)


@dataclass(frozen=True)
class ScanSettings:
    frames: int | None = None         # None: the bundle's default; ignored when fps or all_frames is set
    fps: float | None = None
    all_frames: bool = False
    threshold: str | float | None = None   # None: the bundle's; else an operating point name or a value
    aggregation: str | None = None    # None: the bundle's
    top_k: int | None = None
    min_track_faces: int = 3
    max_side: int = 1920              # decoded frames are downscaled to this longer side
    hash_input: bool = True
    keep_thumbnails: bool = False     # JPEG face crops in VideoResult.thumbnails, for HTML reports
    detector: DetectorSettings = field(default_factory=DetectorSettings)


class Scanner:
    """A loaded model bundle plus face detector; reuse one to scan many videos."""

    def __init__(self, model: str | Path | None = None, device: str = "auto", threads: int | None = None,
                 detector: DetectorSettings | None = None):
        from dfscan.model.scorer import Scorer  # noqa: PLC0415 - keeps `import dfscan` light

        self.device = device
        self.scorer = Scorer(model, device=device, threads=threads)
        self.detector_settings = detector or DetectorSettings()
        self.detector = self.detector_settings.build(device, threads)

    def scan(self, path: str | Path, settings: ScanSettings | None = None) -> VideoResult:
        settings = settings or ScanSettings()
        started = time.perf_counter()
        try:
            result = self._scan(Path(path), settings)
        except DfscanError as exc:
            result = self._failed(path, exc.code, exc.message, settings)
        except MemoryError:
            result = self._failed(path, "too_large", "out of memory while decoding", settings)
        except Exception as exc:  # noqa: BLE001 - one bad file must never end a batch
            result = self._failed(path, "internal", f"{type(exc).__name__}: {exc}".splitlines()[0], settings)
        result.timings["total_s"] = round(time.perf_counter() - started, 4)
        return result

    def _base_result(self, path: str | Path, settings: ScanSettings) -> VideoResult:
        manifest = self.scorer.manifest
        threshold, threshold_name = self.scorer.resolve_threshold(settings.threshold)
        return VideoResult(
            path=str(path), label=verdict.ERROR, threshold=threshold, threshold_name=threshold_name,
            aggregation=settings.aggregation or manifest.scan.aggregation,
            model=self.scorer.describe(), provider=self.scorer.provider,
            settings=self._settings_record(settings),
        )

    def _settings_record(self, settings: ScanSettings) -> dict[str, Any]:
        manifest = self.scorer.manifest
        return {
            "frames": "all" if settings.all_frames else (None if settings.fps else self._frame_count(settings)),
            "fps": settings.fps,
            "aggregation": settings.aggregation or manifest.scan.aggregation,
            "top_k": settings.top_k or manifest.scan.top_k,
            "min_track_faces": settings.min_track_faces,
            "max_side": settings.max_side,
            "crop": {"size": manifest.preprocess.input_size, "margin": manifest.preprocess.crop_margin},
            "detector": {"name": "mtcnn", **self.detector.settings,
                         "min_confidence": self.detector_settings.min_confidence,
                         "max_faces_per_frame": self.detector_settings.max_faces_per_frame,
                         "full_every": self.detector_settings.full_every},
            "seed": None,  # no randomness anywhere in a scan: same input, same scores
        }

    def _frame_count(self, settings: ScanSettings) -> int:
        return settings.frames or self.scorer.manifest.scan.frames

    def _failed(self, path: str | Path, code: str, reason: str, settings: ScanSettings) -> VideoResult:
        result = self._base_result(path, settings)
        result.label, result.error_code, result.reason, result.score = verdict.ERROR, code, reason, None
        return result

    def _scan(self, path: Path, settings: ScanSettings) -> VideoResult:
        from dfscan.video import sample_frames  # noqa: PLC0415

        result = self._base_result(path, settings)
        t0 = time.perf_counter()
        n = None if settings.all_frames or settings.fps else self._frame_count(settings)
        info, frames = sample_frames(path, n=n, fps=settings.fps, max_side=settings.max_side)
        result.video = info.to_dict()
        t1 = time.perf_counter()
        if settings.hash_input:
            result.video["sha256"] = sha256_file(path)
        t2 = time.perf_counter()
        detections = self._detect(frames)
        t3 = time.perf_counter()
        tracks = link_tracks(detections)
        scores = self._score_tracks(frames, tracks, result.thumbnails if settings.keep_thumbnails else None)
        t4 = time.perf_counter()
        result.timings.update(decode_s=round(t1 - t0, 4), hash_s=round(t2 - t1, 4),
                              detect_s=round(t3 - t2, 4), score_s=round(t4 - t3, 4))
        self._judge(result, frames, tracks, scores, settings)
        return result

    def _detect(self, frames: list[Any]) -> list[list[Detection]]:
        """Faces per sampled frame, boxes in original-frame pixels, largest first."""
        ds = self.detector_settings
        per_frame: list[list[Detection]] = []
        found_per_frame = self.detector.detect_video([f.image for f in frames], ds.full_every)
        for pos, (frame, found) in enumerate(zip(frames, found_per_frame)):
            boxes = np.asarray(found.boxes, dtype=np.float64) * frame.scale
            sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) if len(boxes) else np.zeros(0)
            keep = [i for i in np.argsort(-sides)
                    if found.scores[i] >= ds.min_confidence and sides[i] >= ds.min_face_size]
            per_frame.append([Detection(pos, boxes[i], float(found.scores[i]))
                              for i in keep[:ds.max_faces_per_frame]])
        return per_frame

    def _score_tracks(self, frames: list[Any], tracks: list[Track],
                      thumbnails: dict[str, bytes] | None = None) -> dict[int, np.ndarray]:
        size, margin = self.scorer.input_size, self.scorer.crop_margin
        crops, owners = [], []
        for track in tracks:
            for det in track.detections:
                frame = frames[det.frame_pos]
                crops.append(crop_face(frame.image, det.box / frame.scale, size, margin))
                owners.append(track.track_id)
                if thumbnails is not None:
                    thumbnails[f"{track.track_id}:{frame.index}"] = encode_thumbnail(crops[-1])
        if not crops:
            return {}
        probs = self.scorer.score_crops(np.stack(crops))
        owners_arr = np.asarray(owners)
        return {t.track_id: probs[owners_arr == t.track_id] for t in tracks}

    def _judge(self, result: VideoResult, frames: list[Any], tracks: list[Track],
               scores: dict[int, np.ndarray], settings: ScanSettings) -> None:
        rule = result.aggregation or "mean"
        top_k = settings.top_k or self.scorer.manifest.scan.top_k
        needed = verdict.min_track_faces(len(frames), settings.min_track_faces)
        frame_scores: dict[int, float] = {}
        for track in tracks:
            track_scores = scores[track.track_id]
            eligible = len(track.detections) >= needed
            observations = [
                FaceObservation(frame_index=frames[d.frame_pos].index, timestamp=round(frames[d.frame_pos].timestamp, 4),
                                box=[round(float(v), 1) for v in d.box], detection_score=round(d.score, 4),
                                score=round(float(s), 6))
                for d, s in zip(track.detections, track_scores)
            ]
            track_score = verdict.aggregate(track_scores, rule, top_k) if eligible else None
            label = "SHORT" if track_score is None else verdict.label_for(track_score, result.threshold)
            result.tracks.append(TrackResult(track.track_id, None if track_score is None else round(track_score, 6),
                                             label, observations))
            if eligible:
                for d, s in zip(track.detections, track_scores):
                    frame_scores[d.frame_pos] = max(frame_scores.get(d.frame_pos, 0.0), float(s))
        n_faces = [0] * len(frames)
        for track in tracks:
            for d in track.detections:
                n_faces[d.frame_pos] += 1
        result.frames = [
            {"index": f.index, "timestamp": round(f.timestamp, 4), "n_faces": n_faces[pos],
             "score": None if pos not in frame_scores else round(frame_scores[pos], 6)}
            for pos, f in enumerate(frames)
        ]
        scored = [t for t in result.tracks if t.score is not None]
        if not scored:
            result.label, result.error_code = verdict.NO_FACE, "no_face"
            frames_with_faces = sum(1 for n in n_faces if n)
            result.reason = (f"no face found in {len(frames)} sampled frames" if not frames_with_faces else
                             f"faces in only {frames_with_faces} of {len(frames)} sampled frames; "
                             f"a face track needs {needed} to be judged")
            return
        result.score = max(t.score for t in scored)
        result.label = verdict.label_for(result.score, result.threshold)
        flagged = [(f["timestamp"], f["score"]) for f in result.frames if f["score"] is not None]
        result.segments = verdict.suspicious_segments([t for t, _ in flagged], [s for _, s in flagged],
                                                      result.threshold)


def encode_thumbnail(crop: np.ndarray, side: int = 96) -> bytes:
    import cv2  # noqa: PLC0415

    small = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return data.tobytes() if ok else b""


@functools.lru_cache(maxsize=4)
def get_scanner(model: str | None = None, device: str = "auto", threads: int | None = None,
                detector: DetectorSettings | None = None) -> Scanner:
    """A cached Scanner, so repeated `scan_video` calls don't reload the models."""
    return Scanner(model, device=device, threads=threads, detector=detector)


def scan_video(path: str | Path, model: str | Path | None = None, device: str = "auto",
               settings: ScanSettings | None = None, threads: int | None = None, **overrides: Any) -> VideoResult:
    """Scan one video. `overrides` are ScanSettings fields (frames=, fps=, threshold=, aggregation=, ...)."""
    settings = replace(settings or ScanSettings(), **overrides)
    scanner = get_scanner(None if model is None else str(model), device, threads, settings.detector)
    return scanner.scan(path, settings)


# --- batch -------------------------------------------------------------------------------------------

_worker_scanner: Scanner | None = None


def _init_worker(model: str | None, device: str, threads: int, detector: DetectorSettings) -> None:
    global _worker_scanner  # noqa: PLW0603 - one scanner per worker process
    _worker_scanner = Scanner(model, device=device, threads=threads, detector=detector)


def _scan_in_worker(path: str, settings: ScanSettings) -> VideoResult:
    assert _worker_scanner is not None
    return _worker_scanner.scan(path, settings)


def iter_scan(paths: Iterable[str | Path], model: str | Path | None = None, device: str = "auto",
              settings: ScanSettings | None = None, workers: int = 1) -> Iterator[VideoResult]:
    """Scan many videos, yielding each result as soon as it is finished (not in input order when
    workers > 1). Each worker process loads its own models and uses cores // workers threads."""
    settings = settings or ScanSettings()
    model_arg = None if model is None else str(model)
    if workers <= 1:
        scanner = get_scanner(model_arg, device, None, settings.detector)
        for path in paths:
            yield scanner.scan(path, settings)
        return
    threads = max(1, (os.cpu_count() or 1) // workers)
    Scanner(model_arg, device=device, threads=1, detector=settings.detector)  # fail fast on a bad bundle
    ctx = get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(model_arg, device, threads, settings.detector)) as pool:
        pending: dict[Future[VideoResult], str] = {}
        path_iter = iter(paths)
        for path in path_iter:
            pending[pool.submit(_scan_in_worker, str(path), settings)] = str(path)
            if len(pending) >= workers * 2:
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                path = pending.pop(future)
                yield _result_of(future, path, settings)
                nxt = next(path_iter, None)
                if nxt is not None:
                    pending[pool.submit(_scan_in_worker, str(nxt), settings)] = str(nxt)


def _result_of(future: Future[VideoResult], path: str, settings: ScanSettings) -> VideoResult:
    try:
        return future.result()
    except Exception as exc:  # noqa: BLE001 - a crashed worker is one file's error, not the batch's
        return VideoResult(path=path, label=verdict.ERROR, error_code="worker_crash",
                           reason=f"worker failed: {type(exc).__name__}: {exc}".splitlines()[0])
