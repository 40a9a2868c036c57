"""What a scan returns: a `VideoResult` that prints, serialises to JSON, and flattens to a CSV row."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from dfscan import __version__


def _fmt(value: Any) -> str:
    if value is None or value == "":
        return ""
    return f"{float(value):.3f}"


@dataclass
class FaceObservation:
    frame_index: int
    timestamp: float
    box: list[float]          # x1, y1, x2, y2 in original frame pixels
    detection_score: float
    score: float              # calibrated probability that this face is fake


@dataclass
class TrackResult:
    track_id: int
    score: float | None       # aggregated over the track's faces; None when too short to judge
    label: str                # FAKE | REAL | SHORT (too few faces to drive the verdict)
    observations: list[FaceObservation]

    @property
    def n_faces(self) -> int:
        return len(self.observations)


@dataclass
class VideoResult:
    path: str
    label: str                              # FAKE | REAL | NO_FACE | ERROR
    score: float | None = None              # video fake probability (most suspicious track); None if inconclusive
    threshold: float | None = None
    threshold_name: str | None = None       # an operating point name, "manifest" or "custom"
    aggregation: str | None = None
    reason: str | None = None               # why the result is inconclusive or failed
    error_code: str | None = None
    tracks: list[TrackResult] = field(default_factory=list)
    frames: list[dict[str, Any]] = field(default_factory=list)     # sampled: index, timestamp, n_faces, score
    segments: list[dict[str, float]] = field(default_factory=list)  # suspicious time ranges
    video: dict[str, Any] | None = None     # container facts (VideoInfo) and the file's sha256
    model: dict[str, Any] | None = None     # bundle name, version, sha256
    provider: str | None = None             # onnxruntime execution provider
    settings: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    dfscan_version: str = __version__
    # JPEG face crops keyed "track_id:frame_index", kept only when asked for (HTML reports); never serialised.
    thumbnails: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.label != "ERROR"

    @property
    def top_track(self) -> TrackResult | None:
        scored = [t for t in self.tracks if t.score is not None]
        return max(scored, key=lambda t: t.score) if scored else None

    def to_dict(self) -> dict[str, Any]:
        thumbnails, self.thumbnails = self.thumbnails, {}
        try:
            data = asdict(self)
        finally:
            self.thumbnails = thumbnails
        data.pop("thumbnails")
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def csv_row(self) -> dict[str, Any]:
        video = self.video or {}
        model = self.model or {}
        top = self.top_track
        return {
            "path": self.path,
            "label": self.label,
            "score": "" if self.score is None else f"{self.score:.6f}",
            "threshold": "" if self.threshold is None else f"{self.threshold:.6f}",
            "threshold_name": self.threshold_name or "",
            "n_tracks": len(self.tracks),
            "n_faces": sum(t.n_faces for t in self.tracks),
            "top_track": "" if top is None else top.track_id,
            "frames_sampled": len(self.frames),
            "suspicious_segments": ";".join(f"{s['start_s']:.2f}-{s['end_s']:.2f}" for s in self.segments),
            "duration_s": _fmt(video.get("duration_s")),
            "width": video.get("width", ""),
            "height": video.get("height", ""),
            "fps": _fmt(video.get("fps")),
            "container": video.get("container", ""),
            "codec": video.get("codec", ""),
            "size_bytes": video.get("size_bytes", ""),
            "sha256": video.get("sha256", ""),
            "model": f"{model.get('name', '')}@{model.get('version', '')}" if model else "",
            "model_sha256": model.get("sha256", ""),
            "provider": self.provider or "",
            "frames_setting": self.settings.get("frames", ""),
            "aggregation": self.aggregation or "",
            "seed": self.settings.get("seed", ""),
            "error_code": self.error_code or "",
            "reason": self.reason or "",
            "seconds": _fmt(self.timings.get("total_s")),
            "dfscan_version": self.dfscan_version,
        }


CSV_COLUMNS = tuple(VideoResult(path="", label="").csv_row().keys())

