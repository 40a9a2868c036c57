"""Metrics and evaluation runners: a model bundle against a face set (frame and video level) or against
labelled videos (each through the full scan pipeline).

Scores are calibrated fake probabilities; label 1 = fake. Undefined metrics (AUC of a one-class set, say)
are None with a note, never NaN, so results always serialise to strict JSON. Metrics come from
dfscan.metrics (numpy only), so eval runs on the [cpu] install.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from dfscan import metrics
from dfscan.metrics import ECE_BINS, equal_error_rate, expected_calibration_error  # noqa: F401 - re-exported
from dfscan.verdict import aggregate

METRIC_ROWS = ("n", "n_real", "n_fake", "auc", "ap", "eer", "eer_threshold", "accuracy", "precision",
               "recall", "f1", "log_loss", "brier", "ece")


# --- metrics (one implementation each, numpy only: dfscan.metrics) ------------------------------------

def _clean(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def binary_metrics(y_true: Sequence[int], scores: Sequence[float], threshold: float = 0.5) -> dict[str, Any]:
    """AUC, AP, EER (+ its threshold), accuracy, precision, recall, F1 (fake = positive, score >= threshold),
    log-loss, Brier, ECE, and counts. Metrics that need both classes are None for a one-class set."""
    y = np.asarray(y_true, dtype=np.int64)
    p = np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and scores {p.shape} differ in shape")
    out: dict[str, Any] = {"n": int(y.size), "n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum()),
                           "threshold": float(threshold), "notes": []}
    if y.size == 0:
        out.update({k: None for k in METRIC_ROWS[3:]})
        out["notes"].append("no samples")
        return out
    out.update(metrics.threshold_metrics(y, p, threshold))
    out["log_loss"] = _clean(metrics.log_loss(y, p))
    out["brier"] = metrics.brier(y, p)
    out["ece"] = expected_calibration_error(y, p)
    if out["n_real"] and out["n_fake"]:
        out["auc"] = metrics.roc_auc(y, p)
        out["ap"] = metrics.average_precision(y, p)
        out["eer"], out["eer_threshold"] = equal_error_rate(y, p)
    else:
        out.update(auc=None, ap=None, eer=None, eer_threshold=None)
        only = "fake" if out["n_fake"] else "real"
        out["notes"].append(f"only {only} samples: AUC, AP and EER are undefined")
        if not out["n_fake"]:
            out["notes"].append("no fake samples: precision, recall and F1 are 0 by convention")
    return out


# --- results -----------------------------------------------------------------------------------------

@dataclass
class ScoreItem:
    """One scored thing (a face crop or a video), enough to recompute every metric."""
    id: str
    label: str                   # real | fake
    score: float | None          # None when the item could not be scored
    level: str = "frame"         # frame | video
    video: str | None = None
    status: str = "ok"           # ok | NO_FACE | ERROR
    reason: str | None = None
    track: int | None = None     # face track within `video`, when the face set records it
    source: str | None = None    # the real video the face comes from (cross-validation groups)


@dataclass
class EvalResult:
    data: str
    split: str | None
    model: dict[str, Any]
    threshold: float | None
    threshold_name: str | None
    aggregation: str
    top_k: int
    frame: dict[str, Any] | None = None
    video: dict[str, Any] | None = None
    unscored: dict[str, int] = field(default_factory=dict)   # status -> count (NO_FACE, ERROR)
    likelihood_ratio: dict[str, Any] | None = None           # dfscan.eval_report.lr_summary
    groups: dict[str, Any] | None = None                     # dfscan.eval_report.group_metrics, by --group-by
    items: list[ScoreItem] = field(default_factory=list)
    members: list[dict[str, Any]] = field(default_factory=list)  # an ensemble's members, each measured alone

    def to_dict(self, with_items: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not with_items:
            data.pop("items")
        return data

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


def write_scores_jsonl(path: str | Path, items: Iterable[ScoreItem], model: str | None = None) -> Path:
    """One JSON object per line with each item's id, label and score (and level, video, status), and the model
    that scored it (`Manifest.scores_identity`)."""
    from dfscan.outputs import atomic_write_text  # noqa: PLC0415

    def row(item: ScoreItem) -> dict[str, Any]:
        return {**asdict(item), "model": model} if model else asdict(item)

    # whole or not at all: a full disk leaves an earlier scores file as it was, not an empty one
    return atomic_write_text(path, "".join(json.dumps(row(item), allow_nan=False) + "\n" for item in items))


def _label_int(label: str) -> int:
    return int(label == "fake")


def metrics_for(items: Sequence[ScoreItem], threshold: float) -> dict[str, Any]:
    scored = [i for i in items if i.score is not None]
    return binary_metrics([_label_int(i.label) for i in scored], [float(i.score) for i in scored], threshold)


def video_score(rows: Sequence[ScoreItem], rule: str, top_k: int) -> float:
    """The bundle's rule over a video's faces; with track ids, per track and then the most suspicious
    track, as the scanner's verdict does (`dfscan.verdict.aggregate` is the one aggregation function)."""
    tracks: dict[int | None, list[float]] = defaultdict(list)
    for row in rows:
        tracks[row.track].append(float(row.score))
    return max(aggregate(scores, rule, top_k) for scores in tracks.values())


def video_items(frame_items: Sequence[ScoreItem], rule: str, top_k: int) -> list[ScoreItem]:
    """Group frame items by `video` and score each video with `video_score`. A video is fake if any of
    its rows says so (rows of one video should all agree)."""
    groups: dict[str, list[ScoreItem]] = defaultdict(list)
    for item in frame_items:
        if item.score is not None:
            groups[item.video or item.id].append(item)
    return [
        ScoreItem(id=video, label="fake" if any(i.label == "fake" for i in rows) else "real",
                  score=video_score(rows, rule, top_k), level="video", video=video, source=rows[0].source)
        for video, rows in groups.items()
    ]


# --- face sets ---------------------------------------------------------------------------------------

def evaluate_faceset(scorer: Any, face_set_dir: str | Path, split: str | None = "val",
                     threshold: str | float | None = None, batch_size: int = 256,
                     progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """Score every crop of `split` (None: all) of a face set. Crops are already faces: they are only
    resized to the bundle's input size, not re-cropped."""
    from dfscan.faceset import FaceSet, crop_batches  # noqa: PLC0415

    face_set = FaceSet.load(face_set_dir)
    records = face_set.records if split is None else face_set.split(split)
    if not records:
        raise ValueError(f"{face_set_dir} has no rows in split {split!r} (splits: {sorted(face_set.summary())})")
    value, name = scorer.resolve_threshold(threshold)
    scan = scorer.manifest.scan
    size = scorer.input_size
    items: list[ScoreItem] = []
    members = getattr(scorer, "members", [])
    member_items: list[list[ScoreItem]] = [[] for _ in members]
    for start, crops in zip(range(0, len(records), batch_size), crop_batches(face_set, records, size, batch_size)):
        batch = records[start:start + batch_size]
        if members:  # an ensemble: score each member once, combine as the ensemble does
            per_member = scorer.member_scores(crops)
            scores = scorer.combine(per_member)
            for own, member_row in zip(member_items, per_member):
                own += [ScoreItem(r.file, r.label, float(v), "frame", r.video, track=r.track)
                        for r, v in zip(batch, member_row)]
        else:
            scores = scorer.score_crops(crops)
        for record, score in zip(batch, scores):
            items.append(ScoreItem(record.file, record.label, float(score), "frame", record.video,
                                   track=record.track, source=record.source))
        if progress:
            progress(min(start + batch_size, len(records)), len(records))
    videos = video_items(items, scan.aggregation, scan.top_k)
    member_results = [{"name": m.manifest.name, "threshold": m.manifest.scan.threshold,
                       "frame": metrics_for(own, m.manifest.scan.threshold),
                       "video": metrics_for(video_items(own, scan.aggregation, scan.top_k), m.manifest.scan.threshold)}
                      for m, own in zip(members, member_items)]
    return EvalResult(data=str(face_set_dir), split=split, model=scorer.describe(), threshold=value,
                      threshold_name=name, aggregation=scan.aggregation, top_k=scan.top_k,
                      frame=metrics_for(items, value), video=metrics_for(videos, value), items=items + videos,
                      members=member_results)


# --- labelled videos ---------------------------------------------------------------------------------

def _video_result_items(video_id: str, label: str, result: Any) -> list[ScoreItem]:
    """The video's item plus one per sampled frame that had a scored face (its most suspicious face)."""
    status = "ok" if result.label in ("FAKE", "REAL") else result.label
    items = [ScoreItem(video_id, label, result.score if status == "ok" else None, "video", video_id,
                       status, result.reason)]
    if status == "ok":
        items += [ScoreItem(f"{video_id}#{f['index']}", label, float(f["score"]), "frame", video_id)
                  for f in result.frames if f.get("score") is not None]
    return items


def evaluate_videos(model: str | Path | None, folder_or_csv: str | Path, split: str | None = None,
                    threshold: str | float | None = None, device: str = "auto", frames: int | None = None,
                    progress: Callable[[int, int], None] | None = None) -> EvalResult:
    """Run each labelled video through `scan_video`. Videos that end NO_FACE or ERROR are counted in
    `unscored` and listed in `items` with score None; they are left out of the metrics, not scored 0.5.

    Frame level here means each sampled frame's most suspicious face labelled with its video's label:
    in a fake video where only one of several people was swapped, the others count as "fake" too.
    """
    from dfscan.scan import scan_video  # noqa: PLC0415
    from dfscan.datasets import read_labelled_videos  # noqa: PLC0415

    videos = read_labelled_videos(folder_or_csv)
    if split is not None:
        videos = [v for v in videos if v.split in (None, split)]
    if not videos:
        raise ValueError(f"no labelled videos found in {folder_or_csv}")
    items: list[ScoreItem] = []
    unscored: dict[str, int] = defaultdict(int)
    described: Any = None  # a result that carries the model facts (an ERROR from a crashed worker may not)
    for done, video in enumerate(videos, start=1):
        result = scan_video(video.path, model=model, device=device, threshold=threshold, frames=frames)
        new = _video_result_items(video.video or str(video.path), video.label, result)
        for item in new:
            item.source = video.source
        if new[0].status != "ok":
            unscored[new[0].status] += 1
        if described is None and result.model:
            described = result
        items += new
        if progress:
            progress(done, len(videos))
    frame_items = [i for i in items if i.level == "frame"]
    video_level = [i for i in items if i.level == "video"]
    facts = _scan_facts(described)
    value = facts["threshold"]
    return EvalResult(data=str(folder_or_csv), split=split, **facts,
                      frame=None if value is None else metrics_for(frame_items, value),
                      video=None if value is None else metrics_for(video_level, value),
                      unscored=dict(unscored), items=items)


def _scan_facts(result: Any) -> dict[str, Any]:
    """Model, threshold and aggregation as the scans resolved them (None/empty when every scan crashed)."""
    if result is None:
        return {"model": {}, "threshold": None, "threshold_name": None, "aggregation": "", "top_k": 0}
    return {"model": result.model, "threshold": result.threshold, "threshold_name": result.threshold_name,
            "aggregation": result.aggregation, "top_k": result.settings.get("top_k", 0)}


# --- rendering ---------------------------------------------------------------------------------------

def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def render_table(result: EvalResult) -> Any:
    """A rich Table: one row per metric, one column per level."""
    from rich.markup import escape  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    title = escape(f"{result.data} [{result.split or 'all'}]")
    title += f" threshold {_cell(result.threshold)} ({result.threshold_name})"
    table = Table(title=title)
    table.add_column("metric")
    levels = [("frame", result.frame), (f"video ({result.aggregation})", result.video)]
    levels = [(name, m) for name, m in levels if m is not None]
    levels += [(f"{escape(m['name'])} (frame)", m["frame"]) for m in result.members]  # ensemble members
    for name, _ in levels:
        table.add_column(name, justify="right")
    for key in METRIC_ROWS:
        table.add_row(key, *(_cell(m.get(key)) for _, m in levels))
    for status, count in sorted(result.unscored.items()):
        table.add_row(f"unscored {status}", *([str(count)] + [""] * (len(levels) - 1)))
    notes = sorted({n for _, m in levels for n in m.get("notes", [])})
    if notes:
        table.caption = escape("; ".join(notes))
    return table
