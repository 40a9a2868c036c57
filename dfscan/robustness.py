"""Robustness check: re-encode each input the way the world degrades video (H.264 at several CRFs,
downscaling, a social-media-style transcode), rescan, and report how each score and verdict moves.
On a labelled folder (real/ and fake/ somewhere in each path) also AUC under each degradation."""
from __future__ import annotations

import tempfile
from fractions import Fraction
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import av
import numpy as np

from dfscan.results import VideoResult
from dfscan.scan import ScanSettings, Scanner


@dataclass(frozen=True)
class Degradation:
    name: str
    crf: int = 23
    max_height: int | None = None   # downscale so height <= this (keeps aspect, even sizes)
    fps: float | None = None        # resample the frame rate (drops/duplicates frames by timestamp)
    preset: str = "veryfast"


DEGRADATIONS: dict[str, Degradation] = {
    d.name: d for d in (
        Degradation("crf23", crf=23),
        Degradation("crf32", crf=32),
        Degradation("crf40", crf=40),
        Degradation("720p", crf=23, max_height=720),
        Degradation("480p", crf=23, max_height=480),
        # What platforms typically do to an upload: 720p cap, 30 fps, fairly strong compression.
        Degradation("social", crf=30, max_height=720, fps=30.0, preset="fast"),
    )
}
DEFAULT_DEGRADATIONS = ("crf23", "crf32", "crf40", "720p", "480p", "social")


def _out_size(width: int, height: int, max_height: int | None) -> tuple[int, int]:
    if max_height and height > max_height:
        width, height = round(width * max_height / height), max_height
    return width - width % 2, height - height % 2


def degrade(src: str | Path, dst: str | Path, spec: Degradation) -> Path:
    """Re-encode `src` as H.264 MP4 at `dst` according to `spec` (video only). Written under a temporary name
    and renamed when complete: an interrupted run never leaves part of a clip under a kept clip's name."""
    dst = Path(dst)
    part = dst.with_name(f".{dst.stem}.part{dst.suffix}")
    try:
        _encode(src, part, spec)
        part.replace(dst)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return dst


def _encode(src: str | Path, dst: Path, spec: Degradation) -> None:
    with av.open(str(src)) as inp:
        stream_in = inp.streams.video[0]
        rate = spec.fps or float(stream_in.average_rate or 25)
        with av.open(str(dst), "w") as out:
            out_rate = Fraction(rate).limit_denominator(1001)
            stream = out.add_stream("libx264", rate=out_rate)
            width, height = _out_size(stream_in.codec_context.width, stream_in.codec_context.height, spec.max_height)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": str(spec.crf), "preset": spec.preset}
            next_t, step, written = 0.0, 1.0 / rate, 0
            for n, frame in enumerate(inp.decode(stream_in)):
                t = float(frame.time) if frame.time is not None else n / rate
                if spec.fps is not None and t + 1e-6 < next_t:
                    continue  # drop frames to reach the target rate
                next_t += step
                image = frame.reformat(width=width, height=height, format="yuv420p")
                image.pts, image.time_base = written, 1 / out_rate
                written += 1
                for packet in stream.encode(image):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)


@dataclass
class RobustnessRow:
    path: str
    degradation: str          # "original" or a Degradation name
    label: str
    score: float | None
    delta: float | None       # score - original score
    flipped: bool             # verdict differs from the original's
    truth: str | None         # "real" / "fake" from the folder, when known
    reason: str | None = None


@dataclass
class RobustnessReport:
    rows: list[RobustnessRow] = field(default_factory=list)
    auc: dict[str, float | None] = field(default_factory=dict)   # per degradation, labelled inputs only

    def to_dict(self) -> dict[str, Any]:
        return {"rows": [asdict(r) for r in self.rows], "auc": self.auc, "summary": self.summary()}

    def summary(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in dict.fromkeys(r.degradation for r in self.rows):
            rows = [r for r in self.rows if r.degradation == name]
            deltas = [abs(r.delta) for r in rows if r.delta is not None]
            out[name] = {"videos": len(rows), "flips": sum(r.flipped for r in rows),
                         "mean_abs_delta": float(np.mean(deltas)) if deltas else None,
                         "max_abs_delta": float(np.max(deltas)) if deltas else None,
                         "auc": self.auc.get(name)}
        return out


def truth_from_path(path: str | Path) -> str | None:
    """'real' or 'fake' when a folder of that name is among the path's parents."""
    for parent in Path(path).parents:
        if parent.name.lower() in ("real", "fake"):
            return parent.name.lower()
    return None


def _auc(truths: list[str], scores: list[float]) -> float | None:
    """Mann-Whitney AUC (ties count half); None unless both classes are present."""
    pos = np.array([s for t, s in zip(truths, scores) if t == "fake"])
    neg = np.array([s for t, s in zip(truths, scores) if t == "real"])
    if not len(pos) or not len(neg):
        return None
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def check_robustness(paths: Iterable[str | Path], scanner: Scanner, settings: ScanSettings | None = None,
                     degradations: Iterable[str] = DEFAULT_DEGRADATIONS, keep_dir: str | Path | None = None,
                     on_row: Callable[[RobustnessRow], None] | None = None) -> RobustnessReport:
    specs = [DEGRADATIONS[name] for name in degradations]
    report = RobustnessReport()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(keep_dir) if keep_dir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for n, path in enumerate(paths):
            truth = truth_from_path(path)
            original = scanner.scan(path, settings)
            rows = [_row(path, "original", original, original, truth)]
            for spec in specs:
                if original.label == "ERROR":
                    break
                dst = work / f"{n:05d}_{Path(path).stem}_{spec.name}.mp4"
                try:
                    degrade(path, dst, spec)
                    result = scanner.scan(dst, settings)
                except (av.error.FFmpegError, OSError) as exc:
                    result = VideoResult(path=str(dst), label="ERROR", reason=f"re-encode failed: {exc}")
                rows.append(_row(path, spec.name, result, original, truth))
                if not keep_dir:
                    dst.unlink(missing_ok=True)
            for row in rows:
                report.rows.append(row)
                if on_row:
                    on_row(row)
    for name in dict.fromkeys(r.degradation for r in report.rows):
        scored = [(r.truth, r.score) for r in report.rows
                  if r.degradation == name and r.truth and r.score is not None]
        report.auc[name] = _auc([t for t, _ in scored], [s for _, s in scored]) if scored else None
    return report


def _row(path: str | Path, name: str, result: VideoResult, original: VideoResult, truth: str | None) -> RobustnessRow:
    delta = None if result.score is None or original.score is None else round(result.score - original.score, 6)
    return RobustnessRow(path=str(path), degradation=name, label=result.label, score=result.score, delta=delta,
                         flipped=result.label != original.label, truth=truth, reason=result.reason)
