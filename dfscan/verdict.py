"""Per-frame fake probabilities -> per-track score -> video score and label."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from dfscan.model.manifest import AGGREGATIONS

FAKE, REAL, NO_FACE, ERROR = "FAKE", "REAL", "NO_FACE", "ERROR"
LABELS = (FAKE, REAL, NO_FACE, ERROR)


def aggregate(scores: Sequence[float], rule: str = "mean", top_k: int = 5) -> float:
    """One score from many: mean, median, max, or the mean of the top-k."""
    values = np.asarray(scores, dtype=np.float64)
    if values.size == 0:
        raise ValueError("cannot aggregate an empty list of scores")
    if rule == "mean":
        return float(values.mean())
    if rule == "median":
        return float(np.median(values))
    if rule == "max":
        return float(values.max())
    if rule == "topk":
        k = max(1, min(top_k, values.size))
        return float(np.sort(values)[-k:].mean())
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, not {rule!r}")


def min_track_faces(n_frames_sampled: int, wanted: int = 3) -> int:
    """Faces a track needs before it may drive the verdict (fewer for very short videos)."""
    return max(1, min(wanted, n_frames_sampled))


def label_for(score: float, threshold: float) -> str:
    return FAKE if score >= threshold else REAL


def suspicious_segments(
    timestamps: Sequence[float], scores: Sequence[float], threshold: float, max_gap_s: float | None = None
) -> list[dict[str, float]]:
    """Runs of consecutive sampled frames whose score is at or above the threshold.

    `timestamps` must be sorted. A segment spans from its first to its last flagged frame; runs separated
    by a single unflagged frame stay separate, so each segment is where the evidence actually is. With
    `max_gap_s`, flagged frames further apart than that also split a segment (sparse sampling).
    """
    segments: list[dict[str, float]] = []
    run: list[int] = []

    def close_run() -> None:
        if run:
            run_scores = [float(scores[i]) for i in run]
            segments.append({
                "start_s": float(timestamps[run[0]]),
                "end_s": float(timestamps[run[-1]]),
                "mean_score": float(np.mean(run_scores)),
                "max_score": float(np.max(run_scores)),
                "n_frames": len(run),
            })
            run.clear()

    for i, score in enumerate(scores):
        flagged = score >= threshold
        gap_break = bool(run) and max_gap_s is not None and timestamps[i] - timestamps[run[-1]] > max_gap_s
        if not flagged or gap_break:
            close_run()
        if flagged:
            run.append(i)
    close_run()
    return segments
