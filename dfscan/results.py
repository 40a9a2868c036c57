"""What a scan returns: a `VideoResult` that prints, serialises to JSON, and flattens to a CSV row."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from dfscan import __version__


# --- text that any output can hold --------------------------------------------------------------------
# File names on Linux are bytes; Python hands undecodable ones over as lone surrogates (surrogateescape),
# which no UTF-8 file can hold. Every output (CSV, JSONL, JSON, HTML, terminal) writes text through
# `escape_text`: a backslash becomes `\\`, each byte that is not valid UTF-8 becomes `\xHH`. It is
# reversible (`unescape_text`), and text with neither is unchanged.

def escape_text(text: str) -> str:
    if "\\" not in text and text.isprintable() and not _has_surrogates(text):
        return text
    raw = text.replace("\\", "\\\\").encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace")


def shown(text: str) -> str:
    """`escape_text` for a terminal line: control characters (a newline in a file name) are written as escapes,
    so one result stays one line. Not reversible; the CSV, JSON and HTML keep the name itself."""
    text = escape_text(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def _has_surrogates(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def unescape_text(text: str) -> str:
    """The original text (surrogateescape str, as os.fsdecode gives) of an `escape_text` result."""
    out = bytearray()
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and text[i + 1:i + 2] == "\\":
            out += b"\\"
            i += 2
        elif ch == "\\" and text[i + 1:i + 2] == "x" and len(text) >= i + 4:
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        else:
            out += ch.encode("utf-8", "surrogateescape")
            i += 1
    return out.decode("utf-8", "surrogateescape")


def escaped(value: Any) -> Any:
    """`value` (a JSON-like tree) with every string passed through `escape_text`."""
    if isinstance(value, str):
        return escape_text(value)
    if isinstance(value, dict):
        return {escaped(k): escaped(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [escaped(v) for v in value]
    return value


FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "'")
NUMBER_COLUMNS = frozenset({"lr", "log10_lr"})  # CSV cells formatted from floats by dfscan, never from outside text


def csv_cell(value: Any) -> Any:
    """A CSV cell a spreadsheet shows as text: a cell starting with = + - @ (a formula) gets a leading '
    (as does one starting with ', so the rule reverses: drop one leading ')."""
    if not isinstance(value, str):
        return value
    text = escape_text(value)
    return "'" + text if text.startswith(FORMULA_START) else text


def csv_uncell(text: str) -> str:
    """The original text of a `csv_cell`."""
    if text.startswith("'") and text[1:].startswith(FORMULA_START):
        text = text[1:]
    return unescape_text(text)


def _fmt(value: Any) -> str:
    if value is None or value == "":
        return ""
    return f"{float(value):.3f}"


def lr_cell(record: dict[str, Any] | None, key: str) -> str:
    """A likelihood-ratio value as the CSV (and the report index) write it; empty when absent."""
    value = (record or {}).get(key)
    return "" if value is None else f"{float(value):.6g}"


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
    # dfscan.likelihood.likelihood_ratio: lr, log10, verbal, bounds, calibration_set (None values + reason if absent)
    likelihood_ratio: dict[str, Any] | None = None

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
    likelihood_ratio: dict[str, Any] | None = None  # as TrackResult's, for the most suspicious track's score
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
        return escaped(data)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def csv_row(self) -> dict[str, Any]:
        """The flat row, cells made safe for spreadsheets and UTF-8 (`csv_cell`); numbers dfscan formatted
        itself stay numbers (a negative log10 LR is no formula)."""
        return {key: value if key in NUMBER_COLUMNS else csv_cell(value) for key, value in self._flat_row().items()}

    def _flat_row(self) -> dict[str, Any]:
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
            "truncated": "yes" if video.get("truncated") else "",
            "declared_duration_s": _fmt(video.get("declared_duration_s")),
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
            "lr": lr_cell(self.likelihood_ratio, "lr"),
            "log10_lr": lr_cell(self.likelihood_ratio, "log10"),
        }


CSV_COLUMNS = tuple(VideoResult(path="", label="").csv_row().keys())

