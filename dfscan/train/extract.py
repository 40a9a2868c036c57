"""Face extraction: dataset `VideoItem`s (read by `dfscan.datasets`) -> a face set.

`extract_faces` decodes each video, detects faces, cuts them with the one face pipeline and writes them with
`FaceSetWriter`. The dataset readers are the torch-free `dfscan.datasets`.
"""
from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from dfscan.datasets import VideoItem
from dfscan.errors import without_path
from dfscan.faceset import FaceRecord, FaceSetWriter

log = logging.getLogger(__name__)

# dfdc_faces (the shared training set) is cut tight around the face; extract the same way by default.
DEFAULT_SIZE = 224
DEFAULT_MARGIN = 0.0


@dataclass
class ExtractStats:
    videos: int = 0
    skipped_done: int = 0
    failed: int = 0
    no_face: int = 0
    faces: int = 0
    failures: list[str] = field(default_factory=list)  # "path: reason", one a failed video

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _safe_name(video_id: str) -> str:
    stem = re.sub(r"\.[A-Za-z0-9]+$", "", video_id)
    return re.sub(r"[^A-Za-z0-9_.-]+", "__", stem).strip("_") or "video"


class FaceExtractor:
    """The face pipeline plus crop settings; `extract(item, writer)` writes one video's faces.

    Faces are found, filtered, tracked and cut by `dfscan.faces.pipeline.FacePipeline`, the code the scanner
    uses, with the scanner's detector settings: a model trained on these crops sees the same crops when
    scanning (same size and margin given)."""

    def __init__(self, size: int = DEFAULT_SIZE, margin: float = DEFAULT_MARGIN, frames: int = 32,
                 device: str = "auto", max_faces_per_frame: int = 1, all_tracks: bool = False,
                 detector=None):
        from dfscan.faces.pipeline import FacePipeline  # noqa: PLC0415
        from dfscan.settings import DetectorSettings  # noqa: PLC0415

        self.size, self.margin, self.frames = size, margin, frames
        self.max_faces_per_frame = max(1, max_faces_per_frame)
        self.all_tracks = all_tracks or self.max_faces_per_frame > 1
        self.settings = DetectorSettings(max_faces_per_frame=self.max_faces_per_frame)
        self.pipeline = FacePipeline(self.settings, size, margin, device, detector=detector)
        self.detector = self.pipeline.detector

    def crops(self, path: Path) -> list[tuple[np.ndarray, int, int | None, np.ndarray]]:
        """(crop, frame index, track id or None, box in original pixels) for each kept face."""
        from dfscan.video import sample_frames  # noqa: PLC0415

        _info, frames = sample_frames(path, n=self.frames)
        owned = [(face, track.track_id if self.all_tracks else None)
                 for track in self.pipeline.faces(frames) for face in track.faces]
        out = []
        for face, track in sorted(owned, key=lambda o: (o[0].detection.frame_pos, -1 if o[1] is None else o[1])):
            det = face.detection
            out.append((face.crop, int(frames[det.frame_pos].index), track, det.box))
        return out

    def extract(self, item: VideoItem, writer: FaceSetWriter) -> int:
        """Write one video's crops, then all its rows at once (a killed run never leaves half a video)."""
        video_id = item.video or item.path.name
        folder = _safe_name(video_id)
        records: list[FaceRecord] = []
        for crop, frame_index, track, box in self.crops(item.path):
            name = f"{folder}/f{frame_index:06d}" + ("" if track is None else f"_t{track}") + ".jpg"
            record = FaceRecord(file=name, label=item.label, split=str(item.split), source=item.source,
                                video=video_id, width=int(round(box[2] - box[0])),
                                height=int(round(box[3] - box[1])), frame=frame_index, track=track)
            writer.write_image(crop, record)
            records.append(record)
        writer.add_rows(records)
        return len(records)


ProgressHook = Callable[[VideoItem, str], None]


def extract_faces(items: Sequence[VideoItem], out_dir: str | Path, frames: int = 32, size: int = DEFAULT_SIZE,
                  margin: float = DEFAULT_MARGIN, device: str = "auto", max_faces_per_frame: int = 1,
                  all_tracks: bool = False, progress: bool | ProgressHook = True,
                  extractor: FaceExtractor | None = None) -> ExtractStats:
    """Extract faces from every video into the face set at `out_dir`, resuming where a previous run stopped.

    A video that fails to decode is logged and skipped. A video with no face is recorded nowhere, so a
    rerun tries it again (cheap next to the rest). `progress`: True for a rich bar, or a callback
    `(item, status)` with status in done|skipped|failed|no_face.
    """
    extractor = extractor or FaceExtractor(size, margin, frames, device, max_faces_per_frame, all_tracks)
    stats = ExtractStats()
    geometry = {"crop": {"size": extractor.size, "margin": extractor.margin}, "frames": frames,
                "detector": {"name": "mtcnn", **asdict(extractor.settings)}, "made_by": "dfscan extract"}
    with FaceSetWriter(out_dir, geometry=geometry) as writer, _Progress(progress, len(items)) as tick:
        _check_labels_as_before(items, writer)
        for item in items:
            status = _extract_one(extractor, item, writer, stats)
            tick(item, status)
    return stats


def _check_labels_as_before(items: Sequence[VideoItem], writer: FaceSetWriter) -> None:
    """A resumed face set keeps one label a video: a list that now calls a done video otherwise (relabelled, or
    another list sharing the output folder) is refused before anything is written, not skipped as done."""
    from dfscan.errors import UsageError  # noqa: PLC0415

    changed = [(item, earlier) for item in items
               if (earlier := writer.done_label(item.video or item.path.name)) not in (None, item.label)]
    if changed:
        item, earlier = changed[0]
        raise UsageError(f"{writer.root} already holds {item.video or item.path.name} as {earlier}, and this list "
                         f"says {item.label} ({len(changed)} videos so): one face set, one label a video; "
                         "give another --out")


def _extract_one(extractor: FaceExtractor, item: VideoItem, writer: FaceSetWriter, stats: ExtractStats) -> str:
    from dfscan.errors import DfscanError  # noqa: PLC0415

    if writer.has_video(item.video or item.path.name):
        stats.skipped_done += 1
        return "skipped"
    try:
        n = extractor.extract(item, writer)
    except (DfscanError, OSError, ValueError, MemoryError) as exc:
        return _failed(item, str(exc), stats)
    except Exception as exc:  # noqa: BLE001 - one broken video must not end a run of thousands
        return _failed(item, f"{type(exc).__name__}: {exc}", stats)
    stats.videos += 1
    stats.faces += n
    if n == 0:
        stats.no_face += 1
        return "no_face"
    return "done"


def _failed(item: VideoItem, reason: str, stats: ExtractStats) -> str:
    reason = without_path(reason, item.path)
    log.info("skipped %s: %s", item.path, reason)  # the command line prints stats.failures
    stats.failed += 1
    stats.failures.append(f"{item.path}: {reason}")
    return "failed"


class _Progress:
    """Context manager giving a `tick(item, status)` callable: a rich bar, a user callback, or nothing."""

    def __init__(self, progress: bool | ProgressHook, total: int):
        self.progress, self.total, self._bar = progress, total, None

    def __enter__(self) -> ProgressHook:
        if callable(self.progress):
            return self.progress
        if not self.progress:
            return lambda item, status: None
        from rich.progress import (  # noqa: PLC0415
            BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn)

        self._bar = Progress(TextColumn("extract"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                             TextColumn("{task.fields[last]}"), transient=False)
        self._bar.start()
        task = self._bar.add_task("extract", total=self.total, last="")
        return lambda item, status: self._bar.update(task, advance=1, last=f"{item.path.name} {status}")

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()
