"""The one place scan settings are checked and resolved.

Every command-line option and every model-bundle (manifest) value that changes a scan is checked here,
once, before any output is opened or any video is read. What comes out is a resolved `ScanSettings`
(threshold a number with its name, the bundle's defaults filled in) that the scanner, the video reader
and the CLI only read. A bad option raises `UsageError` (exit 2); a bad bundle value raises `ModelError`
(exit 4); both name the value and the allowed range in one line.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Mapping

from dfscan.errors import ModelError, UsageError

if TYPE_CHECKING:
    from dfscan.model.manifest import Manifest

AGGREGATIONS = ("mean", "median", "max", "topk")
MIN_DETECTION_FACE = 12   # MTCNN's smallest window (pixels): smaller faces cannot be found at all
MAX_FRAMES = 10_000       # most frames one video may be judged on (`--frames all` past this: too_large)
CHUNK_FRAMES = 32         # frames decoded ahead of detection, at most


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
    # Temporal reuse: the whole cascade on every full_every-th sampled frame and the last; the frames between
    # skip PNet: RNet+ONet run on seeds from the neighbouring full frames' faces (MTCNN.detect_video).
    # 1: every frame on its own, as MTCNN.detect_batch. Measured (docs/scale.md, session 7): 2 finds 133 of
    # the 134 faces every-frame detection finds on the 1080p crowd clip, for 0.6x its detection CPU; 3 finds
    # 125 for 0.47x.
    full_every: int = 2

    def build(self, device: str = "auto", threads: int | None = None) -> Any:
        """The MTCNN these settings describe (the scanner and training-set extraction both use this)."""
        from dfscan.faces.mtcnn import MTCNN  # noqa: PLC0415 - keeps `import dfscan.settings` light

        # Below MTCNN's 12 px window nothing more is found; the pyramid would only grow (min_face 1: 12x).
        return MTCNN(device=device, min_face_size=max(self.min_face_size, MIN_DETECTION_FACE),
                     thresholds=self.thresholds, factor=self.factor, max_side=self.max_side, threads=threads)


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
    threshold_name: str | None = None  # set by resolution: "manifest", an operating point, or "custom"
    resolved: bool = False            # True once `resolve_scan_settings` filled in the bundle's values


# --- value checks -------------------------------------------------------------------------------------


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _need(ok: bool, error: type[Exception], message: str) -> None:
    if not ok:
        raise error(message)


def _int_at_least(name: str, value: Any, minimum: int, error: type[Exception] = UsageError) -> None:
    _need(is_int(value) and value >= minimum, error, f"{name} must be a whole number >= {minimum}, not {value!r}")


def _in_unit_interval(name: str, value: Any, error: type[Exception] = UsageError) -> None:
    _need(is_number(value) and 0.0 <= value <= 1.0, error, f"{name} must be a number in [0, 1], not {value!r}")


def parse_probability(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{name} must be a number in [0, 1], not {text!r}") from None
    _in_unit_interval(name, value)
    return value


# --- options (command line and library arguments) -----------------------------------------------------


def settings_from_options(frames: str | None = None, fps: float | None = None, threshold: str | None = None,
                          aggregation: str | None = None, min_track_faces: int = 3, detect_side: int = 640,
                          min_face: int = 40, top_k: int | None = None, thumbnails: bool = False) -> ScanSettings:
    """ScanSettings from command-line strings and numbers; raises UsageError naming the option."""
    all_frames = frames is not None and frames.strip().lower() == "all"
    n_frames = None
    if frames is not None and not all_frames:
        try:
            n_frames = int(frames)
        except ValueError:
            raise UsageError(f"--frames must be a whole number >= 1 or 'all', not {frames!r}") from None
    settings = ScanSettings(
        frames=n_frames, fps=fps, all_frames=all_frames, threshold=_threshold_option(threshold),
        aggregation=aggregation, top_k=top_k, min_track_faces=min_track_faces, keep_thumbnails=thumbnails,
        detector=DetectorSettings(max_side=detect_side, min_face_size=min_face))
    check_scan_settings(settings, option_names=True)
    return settings


def _threshold_option(text: str | None) -> str | float | None:
    """A number stays a number (checked later), a name stays a name (resolved against the bundle)."""
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return text.strip()


OPTION_NAMES = {"frames": "--frames", "fps": "--fps", "threshold": "--threshold", "aggregation": "--aggregation",
                "top_k": "--top-k", "min_track_faces": "--min-track-faces", "max_side": "max_side",
                "detect_side": "--detect-side", "min_face": "--min-face"}


def check_scan_settings(settings: ScanSettings, option_names: bool = False) -> None:
    """Types and ranges of every field a caller sets; raises UsageError."""
    def name(key: str) -> str:
        return OPTION_NAMES[key] if option_names else key

    if settings.frames is not None:
        _int_at_least(name("frames"), settings.frames, 1)
    if settings.fps is not None:
        _need(is_number(settings.fps) and settings.fps > 0, UsageError,
              f"{name('fps')} must be a positive number, not {settings.fps!r}")
    if is_number(settings.threshold) or isinstance(settings.threshold, float):
        _in_unit_interval(name("threshold"), settings.threshold)
    elif settings.threshold is not None and not isinstance(settings.threshold, str):
        raise UsageError(f"{name('threshold')} must be a number in [0, 1] or an operating point name, "
                         f"not {settings.threshold!r}")
    if settings.aggregation is not None:
        _need(settings.aggregation in AGGREGATIONS, UsageError,
              f"{name('aggregation')} must be one of {', '.join(AGGREGATIONS)}, not {settings.aggregation!r}")
    if settings.top_k is not None:
        _int_at_least(name("top_k"), settings.top_k, 1)
    _int_at_least(name("min_track_faces"), settings.min_track_faces, 1)
    _int_at_least(name("max_side"), settings.max_side, 16)
    detector = settings.detector
    if detector.max_side is not None:
        _int_at_least(name("detect_side"), detector.max_side, 32)
    _int_at_least(name("min_face"), detector.min_face_size, 1)
    _int_at_least("max_faces_per_frame", detector.max_faces_per_frame, 1)
    _int_at_least("full_every", detector.full_every, 1)
    _in_unit_interval("min_confidence", detector.min_confidence)
    _need(is_number(detector.factor) and 0.0 < detector.factor < 1.0, UsageError,
          f"factor must be in (0, 1), not {detector.factor!r}")


def resolve_threshold(threshold: str | float | None, manifest: Manifest) -> tuple[float, str]:
    """A threshold value and the name it is known by ("manifest", an operating point, or "custom")."""
    if threshold is None:
        return float(manifest.scan.threshold), manifest.scan.operating_point or "manifest"
    if isinstance(threshold, str):
        points = manifest.operating_points
        if threshold in points:
            return float(points[threshold]), threshold
        try:
            value = float(threshold)
        except ValueError:
            names = ", ".join(sorted(points)) or "none in this bundle"
            raise UsageError(f"unknown threshold {threshold!r}: give a number in [0, 1] or one of: {names}") from None
    else:
        value = threshold
    _in_unit_interval("--threshold", value)
    return float(value), "custom"


def resolve_scan_settings(settings: ScanSettings | None, manifest: Manifest) -> ScanSettings:
    """Checked settings with the bundle's defaults filled in (frames, aggregation, top_k, threshold)."""
    settings = settings or ScanSettings()
    if settings.resolved:
        return settings
    check_scan_settings(settings)
    threshold, threshold_name = resolve_threshold(settings.threshold, manifest)
    return replace(settings, frames=settings.frames or manifest.scan.frames,
                   aggregation=settings.aggregation or manifest.scan.aggregation,
                   top_k=settings.top_k or manifest.scan.top_k, threshold=threshold,
                   threshold_name=threshold_name, resolved=True)


# --- model bundle values ------------------------------------------------------------------------------


def input_size_ok(value: Any) -> bool:
    """A crop side a bundle may have (training checks it too, so a run never makes a bundle no scan accepts)."""
    return is_int(value) and 16 <= value <= 1024


def crop_margin_ok(value: Any) -> bool:
    """A crop margin a bundle may have; negative: tighter than the detector box (DFDC-style crops)."""
    return is_number(value) and -0.5 < value <= 2.0


def check_manifest(manifest: Manifest) -> None:
    """Every value of a bundle's manifest that changes a score or a verdict; raises ModelError."""
    pre = manifest.preprocess
    _need(input_size_ok(pre.input_size), ModelError,
          f"manifest preprocess.input_size must be a whole number in [16, 1024], not {pre.input_size!r}")
    _need(crop_margin_ok(pre.crop_margin), ModelError,
          f"manifest preprocess.crop_margin must be a number in (-0.5, 2], not {pre.crop_margin!r}")
    _need(isinstance(pre.mean, list) and len(pre.mean) == 3 and all(is_number(v) for v in pre.mean)
          and isinstance(pre.std, list) and len(pre.std) == 3 and all(is_number(s) and s > 0 for s in pre.std),
          ModelError, "manifest preprocess mean/std must be three numbers each, std > 0")
    _int_at_least("manifest embedding_dim", manifest.embedding_dim, 1, ModelError)
    scan = manifest.scan
    _int_at_least("manifest scan.frames", scan.frames, 1, ModelError)
    _need(scan.aggregation in AGGREGATIONS, ModelError,
          f"manifest scan.aggregation must be one of {', '.join(AGGREGATIONS)}, not {scan.aggregation!r}")
    _int_at_least("manifest scan.top_k", scan.top_k, 1, ModelError)
    _in_unit_interval("manifest scan.threshold", scan.threshold, ModelError)
    _need(scan.operating_point is None or isinstance(scan.operating_point, str), ModelError,
          f"manifest scan.operating_point must be a name or null, not {scan.operating_point!r}")
    _need(isinstance(manifest.operating_points, Mapping), ModelError,
          "manifest operating_points must be an object of name: threshold")
    for point, value in manifest.operating_points.items():
        _in_unit_interval(f"manifest operating_points.{point}", value, ModelError)
    # the point a bundle names as its default is one of its points, at that point's threshold
    _need(scan.operating_point is None or manifest.operating_points.get(scan.operating_point) == scan.threshold,
          ModelError, f"manifest scan.operating_point {scan.operating_point!r} is not an operating point at the "
          f"threshold {scan.threshold!r}")
    check_calibration(manifest.calibration)


def check_calibration(calibration: Any) -> None:
    if calibration is None:
        return
    _need(isinstance(calibration, Mapping), ModelError, "manifest calibration must be an object or null")
    from dfscan.calibration import METHODS  # noqa: PLC0415 - numpy, only once a bundle is read

    method = calibration.get("method")
    _need(method in METHODS, ModelError,
          f"manifest calibration.method must be one of {', '.join(METHODS)}, not {method!r}")
    if method == "temperature":
        value = calibration.get("temperature")
        _need(is_number(value) and value > 0, ModelError,
              f"manifest calibration.temperature must be a number > 0, not {value!r}")
        return
    xs, ys = calibration.get("x"), calibration.get("y")
    _need(isinstance(xs, list) and isinstance(ys, list) and len(xs) == len(ys) >= 2
          and all(is_number(v) for v in xs) and all(is_number(v) and 0.0 <= v <= 1.0 for v in ys)
          and all(a <= b for a, b in zip(xs, xs[1:])), ModelError,
          "manifest isotonic calibration needs x (sorted numbers) and y (numbers in [0, 1]) of equal length >= 2")
