"""Links per-frame face detections into tracks (one track per person), so each face is scored on its own
and the most suspicious one drives the verdict. Sampled frames are sparse (about 3 a second), so matching
uses centre distance relative to face size rather than box overlap alone."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Detection:
    frame_pos: int          # position in the list of sampled frames
    box: np.ndarray         # (4,) x1,y1,x2,y2 in original pixels
    score: float


@dataclass
class Track:
    track_id: int
    detections: list[Detection] = field(default_factory=list)

    @property
    def last(self) -> Detection:
        return self.detections[-1]


def _box_size(box: np.ndarray) -> float:
    return float(np.sqrt(max(box[2] - box[0], 1.0) * max(box[3] - box[1], 1.0)))


def match_cost(a: np.ndarray, b: np.ndarray) -> float:
    """Centre distance in units of the mean face size; inf when the sizes differ by more than 2x."""
    size_a, size_b = _box_size(a), _box_size(b)
    if max(size_a, size_b) > 2.0 * min(size_a, size_b):
        return float("inf")
    centre_a = np.array([(a[0] + a[2]) / 2, (a[1] + a[3]) / 2])
    centre_b = np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
    return float(np.linalg.norm(centre_a - centre_b) / ((size_a + size_b) / 2))


def link_tracks(
    detections_per_frame: list[list[Detection]], max_cost: float = 1.0, max_gap: int = 4
) -> list[Track]:
    """Greedy frame-to-frame association. A track survives `max_gap` sampled frames without a face
    (a turned head, a missed detection) before a new face at that place starts a new track."""
    tracks: list[Track] = []
    for frame_pos, detections in enumerate(detections_per_frame):
        alive = [t for t in tracks if frame_pos - t.last.frame_pos <= max_gap + 1]
        pairs = sorted(
            (match_cost(t.last.box, d.box), ti, di)
            for ti, t in enumerate(alive)
            for di, d in enumerate(detections)
        )
        used_tracks: set[int] = set()
        used_dets: set[int] = set()
        for cost, ti, di in pairs:
            if cost > max_cost or ti in used_tracks or di in used_dets:
                continue
            alive[ti].detections.append(detections[di])
            used_tracks.add(ti)
            used_dets.add(di)
        for di, detection in enumerate(detections):
            if di not in used_dets:
                tracks.append(Track(track_id=len(tracks), detections=[detection]))
    return tracks
