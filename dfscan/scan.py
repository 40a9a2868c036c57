"""The library API: `scan_video(path) -> VideoResult` and `iter_scan(paths) -> Iterator[VideoResult]`.

Pipeline: video (sample frames) -> faces (detect, link into tracks, crop) -> model (score crops)
-> verdict (aggregate per track, most suspicious track decides). Errors in one input become an ERROR
result with a one-line reason; only setup problems (bad bundle, no onnxruntime) raise.
"""
from __future__ import annotations

import functools
import signal
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator, NamedTuple

import numpy as np

from dfscan import verdict
from dfscan.errors import DfscanError, without_path
from dfscan.likelihood import attach_likelihood_ratios
from dfscan.memory import release_free_memory
from dfscan.model.manifest import load_manifest, sha256_file
from dfscan.results import FaceObservation, TrackResult, VideoResult
from dfscan.runtime import scan_threads, usable_cores
from dfscan.settings import CHUNK_FRAMES, MAX_FRAMES, DetectorSettings, ScanSettings, resolve_scan_settings
from dfscan.video import RESTART, decode_ahead

if TYPE_CHECKING:  # the face pipeline (OpenCV) is imported with the first Scanner, while a video may be decoding
    from multiprocessing import connection

    from dfscan.faces.pipeline import FaceStream
    from dfscan.faces.tracks import Detection, Track

__all__ = ["DetectorSettings", "ScanSettings", "Scanner", "decode_for_scan", "get_scanner", "iter_scan", "scan_video"]


class FrameMeta(NamedTuple):
    index: int
    timestamp: float
    concealed: bool  # partly the decoder's concealment of damaged data (SampledFrame.concealed)


@dataclass
class _Faces:
    """What a scan keeps of its frames once they are scored: no pixels, so memory does not grow with
    the number of frames (at most CHUNK_FRAMES decoded frames ahead and one chunk are alive at a time)."""
    frames: list[FrameMeta] = field(default_factory=list)
    detections: list[list[Detection]] = field(default_factory=list)
    scores: dict[int, float] = field(default_factory=dict)       # id(detection) -> fake probability
    thumbnails: dict[int, bytes] = field(default_factory=dict)   # id(detection) -> JPEG
    # seconds the scan waited for frames, detected, and cropped and waited for scores (scoring overlaps detection)
    timings: dict[str, float] = field(default_factory=lambda: {"decode_s": 0.0, "detect_s": 0.0, "score_s": 0.0})
    trimmed_at: int = 0   # frames scored when freed memory was last handed back
    # what ran the face detector's networks, in the order first used (a stream whose frame size changes: two)
    detector_runtimes: list[str] = field(default_factory=list)
    # The last chunk's faces and their scores to come: a chunk is scored on a thread of its own while the next
    # is detected, which fills the gaps that detection's serial steps (NMS, box arithmetic) leave in the cores.
    pending: tuple[list[Detection], Future[np.ndarray]] | None = None

    def collect_scores(self) -> None:
        """Wait for the pending chunk's scores (its scoring's error is raised here)."""
        if self.pending is not None:
            owners, scoring = self.pending
            self.pending = None
            for det, prob in zip(owners, scoring.result()):
                self.scores[id(det)] = float(prob)

    def release_memory(self) -> None:
        """Hand freed memory back to the OS (else freed frames and tensors stay resident and memory grows
        with the video): every CHUNK_FRAMES frames and at the end, not after every chunk, as memory handed
        back is paid for again in page faults by the next chunk."""
        release_free_memory()
        self.trimmed_at = len(self.frames)


class Scanner:
    """A loaded model bundle plus face pipeline; reuse one to scan many videos. threads: how many runs of the
    networks go at once (default: on CPU every core but one, `runtime.scan_threads`)."""

    def __init__(self, model: str | Path | None = None, device: str = "auto", threads: int | None = None,
                 detector: DetectorSettings | None = None):
        from dfscan.faces.pipeline import FacePipeline  # noqa: PLC0415 - keeps `import dfscan` light
        from dfscan.model.scorer import Scorer  # noqa: PLC0415

        threads = scan_threads(device, threads)
        self.device = device
        self.scorer = Scorer(model, device=device, threads=threads)
        self.detector_settings = detector or DetectorSettings()
        self.pipeline = FacePipeline(self.detector_settings, self.scorer.input_size, self.scorer.crop_margin,
                                     device, threads)
        self.detector = self.pipeline.detector

    def resolve(self, settings: ScanSettings | None) -> ScanSettings:
        """Checked settings with this bundle's defaults filled in; raises UsageError (exit 2)."""
        return resolve_scan_settings(settings, self.scorer.manifest)

    def scan(self, path: str | Path, settings: ScanSettings | None = None,
             decoding: decode_ahead | None = None) -> VideoResult:
        """decoding: `decode_for_scan(path, settings)`, entered before this Scanner was loaded so that the video
        decoded while the models loaded; by default the scan decodes the video itself."""
        settings = self.resolve(settings)  # a bad setting is the caller's error, not this file's
        if decoding is not None and not _same_frames(decoding, path, settings):
            raise ValueError(f"frames decoded for {decoding.path} with {decoding.options}, not for this scan")
        started = time.perf_counter()
        try:
            result = self._scan(Path(path), settings, decoding)
        except DfscanError as exc:
            result = self.failed(path, exc.code, without_path(exc.message, path), settings)
        except MemoryError:
            result = self.failed(path, "too_large", "out of memory while decoding", settings)
        except Exception as exc:  # noqa: BLE001 - one bad file must never end a batch
            result = self.failed(path, "internal", f"{type(exc).__name__}: {exc}".splitlines()[0], settings)
        attach_likelihood_ratios(result, self.scorer.manifest.likelihood_ratio)
        result.timings["total_s"] = round(time.perf_counter() - started, 4)
        return result

    def _base_result(self, path: str | Path, settings: ScanSettings) -> VideoResult:
        return VideoResult(
            path=str(path), label=verdict.ERROR, threshold=settings.threshold, threshold_name=settings.threshold_name,
            aggregation=settings.aggregation, model=self.scorer.describe(), provider=self.scorer.provider,
            settings=self._settings_record(settings),
        )

    def _settings_record(self, settings: ScanSettings) -> dict[str, Any]:
        manifest = self.scorer.manifest
        return {
            "frames": "all" if settings.all_frames else (None if settings.fps else settings.frames),
            "fps": settings.fps,
            "aggregation": settings.aggregation,
            "top_k": settings.top_k,
            "min_track_faces": settings.min_track_faces,
            "max_side": settings.max_side,
            "crop": {"size": manifest.preprocess.input_size, "margin": manifest.preprocess.crop_margin},
            "detector": {"name": "mtcnn", **self.detector.settings,
                         "min_confidence": self.detector_settings.min_confidence,
                         "max_faces_per_frame": self.detector_settings.max_faces_per_frame,
                         "full_every": self.detector_settings.full_every},
            "seed": None,  # no randomness anywhere in a scan: same input, same scores
        }

    def failed(self, path: str | Path, code: str, reason: str, settings: ScanSettings) -> VideoResult:
        """An ERROR row with this scanner's provenance."""
        result = self._base_result(path, self.resolve(settings))
        result.label, result.error_code, result.reason, result.score = verdict.ERROR, code, reason, None
        attach_likelihood_ratios(result, self.scorer.manifest.likelihood_ratio)  # none, with the reason
        return result

    def _scan(self, path: Path, settings: ScanSettings, decoding: decode_ahead | None) -> VideoResult:
        result = self._base_result(path, settings)
        faces, detection = _Faces(), self._face_stream()
        chunk: list[Any] = []
        t0 = time.perf_counter()
        # Frames are decoded ahead on a second thread while earlier ones are detected and scored; a chunk is
        # detected as soon as its last frame is one the detector runs its full cascade on.
        on_gpu = self.scorer.provider != "CPUExecutionProvider"
        with decoding or _decoding(path, settings, threaded=on_gpu) as frames:
            for frame in frames:
                if frame is RESTART:  # the reader starts a new pass (truncated file, failed seek)
                    faces, detection, chunk = _Faces(timings=faces.timings), self._face_stream(), []
                    continue
                chunk.append(frame)
                if detection.chunk_ends(chunk):
                    faces.timings["decode_s"] += time.perf_counter() - t0
                    self._process_chunk(chunk, detection, faces, settings.keep_thumbnails)
                    chunk, t0 = [], time.perf_counter()
            faces.timings["decode_s"] += time.perf_counter() - t0
            if chunk:
                self._process_chunk(chunk, detection, faces, settings.keep_thumbnails)
            t0 = time.perf_counter()
            faces.collect_scores()
            faces.timings["score_s"] += time.perf_counter() - t0
        if len(faces.frames) > faces.trimmed_at:
            faces.release_memory()
        info = frames.info
        result.video = info.to_dict()
        result.settings["detector"]["runtime"] = " + ".join(faces.detector_runtimes) or None
        t1 = time.perf_counter()
        if settings.hash_input:
            result.video["sha256"] = sha256_file(path)
        faces.timings["hash_s"] = time.perf_counter() - t1
        result.timings.update({k: round(v, 4) for k, v in faces.timings.items()})
        tracks = self.pipeline.track(faces.detections)
        scores = {t.track_id: np.asarray([faces.scores[id(d)] for d in t.detections]) for t in tracks}
        if settings.keep_thumbnails:
            result.thumbnails = {f"{t.track_id}:{faces.frames[d.frame_pos].index}": faces.thumbnails[id(d)]
                                 for t in tracks for d in t.detections}
        self._judge(result, faces.frames, tracks, scores, settings)
        if info.truncated:
            note = (f"truncated file: judged on the {info.duration_s:.2f} s that decode of "
                    f"{info.declared_duration_s or 0:.2f} s declared")
            result.reason = f"{result.reason}; {note}" if result.reason else note
        return result

    def _face_stream(self) -> FaceStream:
        from dfscan.faces.pipeline import MIN_CHUNK_FRAMES  # noqa: PLC0415

        on_cpu = self.scorer.provider == "CPUExecutionProvider"
        return self.pipeline.stream(MIN_CHUNK_FRAMES if on_cpu else CHUNK_FRAMES)

    def _process_chunk(self, chunk: list[Any], detection: FaceStream, faces: _Faces, keep_thumbnails: bool) -> None:
        """Detect, crop and score one chunk of decoded frames; keep only boxes and scores."""
        t0 = time.perf_counter()
        per_frame = detection.detect(chunk)
        for height, width in dict.fromkeys(frame.image.shape[:2] for frame in chunk):
            runtime = self.detector.runtime_for(height, width)
            if runtime not in faces.detector_runtimes:
                faces.detector_runtimes.append(runtime)
        t1 = time.perf_counter()
        crops, owners = [], []
        for frame, detections in zip(chunk, per_frame):
            for det in detections:
                crops.append(self.pipeline.crop(frame, det))
                owners.append(det)
                if keep_thumbnails:
                    faces.thumbnails[id(det)] = encode_thumbnail(crops[-1])
        faces.collect_scores()
        if crops:
            faces.pending = (owners, _scoring_thread().submit(self.scorer.score_crops, np.stack(crops)))
        faces.frames.extend(FrameMeta(f.index, f.timestamp, f.concealed) for f in chunk)
        faces.detections.extend(per_frame)
        faces.timings["detect_s"] += t1 - t0
        faces.timings["score_s"] += time.perf_counter() - t1
        if len(faces.frames) - faces.trimmed_at >= CHUNK_FRAMES:
            faces.release_memory()

    def _judge(self, result: VideoResult, frames: list[FrameMeta], tracks: list[Track],
               scores: dict[int, np.ndarray], settings: ScanSettings) -> None:
        rule = settings.aggregation or "mean"
        top_k = settings.top_k or 1
        needed = verdict.min_track_faces(len(frames), settings.min_track_faces)
        result.settings["min_track_faces_applied"] = needed  # what was asked may be more than the frames sampled
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
             "score": None if pos not in frame_scores else round(frame_scores[pos], 6), "concealed": f.concealed}
            for pos, f in enumerate(frames)
        ]
        scored = [t for t in result.tracks if t.score is not None]
        if not scored:
            result.label, result.error_code = verdict.NO_FACE, "no_face"
            frames_with_faces = sum(1 for n in n_faces if n)
            result.reason = (f"no face found in {len(frames)} sampled frames" if not frames_with_faces else
                             f"faces in only {frames_with_faces} of {len(frames)} sampled frames; "
                             f"a face track needs {needed} to be judged")
            concealed = sum(1 for f in frames if f.concealed)
            if concealed:  # a damaged file: say so where the verdict is read, not only in the JSON's frames
                result.reason += (f" ({concealed} of them partly filled in by the decoder: the file is damaged, "
                                  "and a face may be hidden in what it invented)")
            return
        result.score = max(t.score for t in scored)
        result.label = verdict.label_for(result.score, result.threshold)
        flagged = [(f["timestamp"], f["score"]) for f in result.frames if f["score"] is not None]
        result.segments = verdict.suspicious_segments([t for t, _ in flagged], [s for _, s in flagged],
                                                      result.threshold)


def decode_for_scan(path: str | Path, settings: ScanSettings, model: str | Path | None = None,
                    device: str = "auto") -> decode_ahead:
    """The frames a scan of `path` with these settings judges, decoded on a background thread from the moment
    the block is entered. Start it before loading a Scanner and the video decodes while the models load
    (`Scanner.scan(path, settings, decoding)`); unresolved settings are resolved against the manifest of
    `model` (default: the shipped bundle), which the Scanner then checks in full. Nothing is raised for the
    video here: a file that cannot be read is the scan's ERROR result."""
    from dfscan.runtime import gpu_runtime_installed  # noqa: PLC0415

    if not settings.resolved:
        from dfscan.model.scorer import default_bundle_path  # noqa: PLC0415

        settings = resolve_scan_settings(settings, load_manifest(model or default_bundle_path(), verify=False))
    may_use_gpu = device == "cuda" or (device == "auto" and gpu_runtime_installed())
    return _decoding(path, settings, threaded=may_use_gpu)


def _decoding(path: str | Path, settings: ScanSettings, threaded: bool,
              after: decode_ahead | None = None) -> decode_ahead:
    """A scan's frames, decoded on a thread of their own at most a chunk ahead (after `after`'s, if given)."""
    return decode_ahead(path, CHUNK_FRAMES, after=after, **_decode_options(settings, threaded))


def _decode_options(settings: ScanSettings, on_gpu: bool) -> dict[str, Any]:
    """stream_frames' arguments for a scan. On CPU the decoder keeps to one thread: the networks' runs take
    every core, and FFmpeg's frame threads beside them only add their own cost (2 cores: a talking head's
    check 1.38 -> 1.32 CPU s, the 1080p crowd's 4.43 -> 4.17). On a GPU decoding is what limits a scan."""
    n = None if settings.all_frames or settings.fps else settings.frames
    return {"n": n, "fps": settings.fps, "max_side": settings.max_side, "max_frames": MAX_FRAMES,
            "strict": settings.all_frames, "threaded": on_gpu}


def _same_frames(decoding: decode_ahead, path: str | Path, settings: ScanSettings) -> bool:
    """Whether `decoding` gives the frames a scan of `path` with these settings judges (threading aside)."""
    wanted = _decode_options(settings, decoding.options.get("threaded", True))
    return decoding.path == path and decoding.options == wanted


def encode_thumbnail(crop: np.ndarray, side: int = 96) -> bytes:
    import cv2  # noqa: PLC0415

    small = cv2.resize(crop, (side, side), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return data.tobytes() if ok else b""


@functools.lru_cache(maxsize=None)
def _scoring_thread() -> ThreadPoolExecutor:
    """The thread chunks are scored on, one chunk at a time for every scan in this process (its runs go to the
    same pool as detection's: dfscan.runtime.map_runs)."""
    return ThreadPoolExecutor(1, thread_name_prefix="dfscan-score")


@functools.lru_cache(maxsize=4)
def get_scanner(model: str | None = None, device: str = "auto", threads: int | None = None,
                detector: DetectorSettings | None = None) -> Scanner:
    """A cached Scanner, so repeated `scan_video` calls don't reload the models."""
    return Scanner(model, device=device, threads=threads, detector=detector)


def scan_video(path: str | Path, model: str | Path | None = None, device: str = "auto",
               settings: ScanSettings | None = None, threads: int | None = None, **overrides: Any) -> VideoResult:
    """Scan one video. `overrides` are ScanSettings fields (frames=, fps=, threshold=, aggregation=, ...)."""
    settings = replace(settings or ScanSettings(), **overrides)
    with decode_for_scan(path, settings, model, device) as decoding:  # the video decodes while the models load
        scanner = get_scanner(None if model is None else str(model), device, threads, settings.detector)
        return scanner.scan(path, settings, decoding)


# --- batch -------------------------------------------------------------------------------------------


def iter_scan(paths: Iterable[str | Path], model: str | Path | None = None, device: str = "auto",
              settings: ScanSettings | None = None, workers: int = 1) -> Iterator[VideoResult]:
    """Scan many videos, yielding each result as soon as it is finished (not in input order when
    workers > 1). Each worker process loads its own models and uses cores // workers threads.

    Settings are resolved once, before the first video (a bad one raises UsageError, nothing is scanned).
    A worker process that dies (killed, out of memory) makes its video an ERROR row `worker_crash`; a new
    worker takes its place and the batch goes on."""
    model_arg = None if model is None else str(model)
    if workers <= 1:
        scanner = get_scanner(model_arg, device, None, (settings or ScanSettings()).detector)
        yield from _scan_in_turn(scanner, paths, scanner.resolve(settings))
        return
    settings = settings or ScanSettings()
    parent = Scanner(model_arg, device=device, threads=1, detector=settings.detector)  # fail fast on a bad bundle
    resolved = parent.resolve(settings)
    threads = max(1, usable_cores() // workers)
    pool = _WorkerPool(workers, (model_arg, device, threads, settings.detector))
    try:
        for path, outcome in pool.run((str(p) for p in paths), resolved):
            yield outcome if isinstance(outcome, VideoResult) else parent.failed(path, "worker_crash", outcome, resolved)
    finally:
        pool.close()


def _scan_in_turn(scanner: Scanner, paths: Iterable[str | Path], settings: ScanSettings) -> Iterator[VideoResult]:
    """One video after another, each one's decoding started as soon as the one before has decoded its last
    frame, while that one's last chunk is still detected and scored: no core waits for the next video."""
    on_gpu = scanner.scorer.provider != "CPUExecutionProvider"
    opened: list[decode_ahead] = []

    def decoding(path: str | Path, after: decode_ahead | None) -> decode_ahead:
        ahead = _decoding(path, settings, on_gpu, after)
        opened.append(ahead.__enter__())
        return ahead

    remaining = iter(paths)
    path = next(remaining, None)
    current = None if path is None else decoding(path, None)
    try:
        while path is not None and current is not None:
            following = next(remaining, None)
            upcoming = None if following is None else decoding(following, current)
            yield scanner.scan(path, settings, current)
            opened.remove(current)
            path, current = following, upcoming
    finally:
        for ahead in opened:
            ahead.__exit__(None, None, None)


# --- worker processes ----------------------------------------------------------------------------------


def _worker_main(conn: connection.Connection, model: str | None, device: str, threads: int,
                 detector: DetectorSettings) -> None:
    """A worker: loads a Scanner, then scans one path at a time as the parent sends them. Ctrl-C reaches the whole
    process group: the parent alone handles it (it stops the workers); here it printed a traceback a worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        scanner = Scanner(model, device=device, threads=threads, detector=detector)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        conn.send(("setup", exc if isinstance(exc, DfscanError) else DfscanError(f"{type(exc).__name__}: {exc}")))
        return
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        path, settings = task
        conn.send(("result", scanner.scan(path, settings)))


WORKER_NAME = "dfscan-scan-worker"


class _Worker:
    started = 0

    def __init__(self, ctx: Any, init_args: tuple[Any, ...]):
        _Worker.started += 1
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(child, *init_args), daemon=True,
                                   name=f"{WORKER_NAME}-{_Worker.started}")
        self.process.start()
        child.close()
        self.path: str | None = None

    def message(self) -> tuple[str, Any] | None:
        """The worker's reply, or None if it died without one."""
        try:
            if self.conn.poll():
                return self.conn.recv()
        except (EOFError, OSError):
            pass
        return None

    def death(self) -> str:
        self.process.join(timeout=5)
        code = self.process.exitcode
        if code is not None and code < 0:
            name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
            how = f"killed by {name}" + (" (out of memory?)" if -code == signal.SIGKILL else "")
        else:
            how = f"exit code {code}"
        return f"the worker process scanning this file died ({how})"

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.process.join(timeout=2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=2)
        self.conn.close()


class _WorkerPool:
    """Worker processes fed one path at a time, so the parent always knows which file each is scanning
    and a dead worker costs exactly that file (ProcessPoolExecutor loses every pending one)."""

    def __init__(self, n: int, init_args: tuple[Any, ...]):
        from multiprocessing import get_context  # noqa: PLC0415 - a `check` has no workers

        self.ctx = get_context("spawn")
        self.init_args = init_args
        self.idle = [_Worker(self.ctx, init_args) for _ in range(n)]
        self.busy: list[_Worker] = []

    def run(self, paths: Iterator[str], settings: ScanSettings) -> Iterator[tuple[str, VideoResult | str]]:
        """(path, result) as each finishes, or (path, reason) when its worker died."""
        from multiprocessing.connection import wait  # noqa: PLC0415

        for worker in list(self.idle):
            self._assign(worker, paths, settings)
        while self.busy:
            ready = wait([w.conn for w in self.busy] + [w.process.sentinel for w in self.busy])
            for worker in [w for w in self.busy if w.conn in ready or w.process.sentinel in ready]:
                reply = worker.message()
                if reply is None and worker.process.is_alive():
                    continue  # woken by a partial message; wait for the rest
                self.busy.remove(worker)
                path = worker.path or ""
                if reply is None:
                    reason = worker.death()
                    worker.stop()
                    worker = _Worker(self.ctx, self.init_args)
                    yield path, reason
                elif reply[0] == "setup":
                    raise reply[1]
                else:
                    yield path, reply[1]
                self._assign(worker, paths, settings)

    def _assign(self, worker: _Worker, paths: Iterator[str], settings: ScanSettings) -> None:
        path = next(paths, None)
        if worker in self.idle:
            self.idle.remove(worker)
        if path is None:
            self.idle.append(worker)
            return
        if not worker.process.is_alive():  # died while idle: it cost no file
            worker.stop()
            worker = _Worker(self.ctx, self.init_args)
        worker.path = path
        try:
            worker.conn.send((path, settings))
        except OSError:
            pass  # it died just now: its sentinel reports it, and this file becomes its worker_crash row
        self.busy.append(worker)

    def close(self) -> None:
        for worker in self.idle + self.busy:
            worker.stop()
        self.idle, self.busy = [], []
