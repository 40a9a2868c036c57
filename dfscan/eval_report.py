"""What `dfscan eval` adds to the metrics of `dfscan.evaluate`: likelihood-ratio performance (Cllr, Cllr_min,
Cllr_cal at frame and video level, cross-validated and for the bundle's own calibrator) and figures per
group of a labels column (AUC, FPR and TPR at the bundle's operating points)."""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dfscan import likelihood
from dfscan.evaluate import ScoreItem, binary_metrics
from dfscan.inputs import labels_text

LEVELS = ("frame", "video")
CV_FOLDS = 5


def _scored(items: Sequence[ScoreItem], level: str) -> list[ScoreItem]:
    return [i for i in items if i.level == level and i.score is not None]


def _arrays(items: Sequence[ScoreItem]) -> tuple[np.ndarray, np.ndarray]:
    return (np.asarray([float(i.score) for i in items], np.float64),
            np.asarray([int(i.label == "fake") for i in items], np.int64))


def level_log10_lrs(items: Sequence[ScoreItem], level: str, bundle_lr: dict[str, Any] | None,
                    folds: int = CV_FOLDS) -> dict[str, Any]:
    """For one level: labels, the bundle calibrator's log10 LRs (None without one), and cross-validated
    log10 LRs (a calibrator of the bundle's method fitted on the other folds, grouped by source video),
    each with a note when it cannot be computed."""
    chosen = _scored(items, level)
    scores, labels = _arrays(chosen)
    out: dict[str, Any] = {"labels": labels, "bundle": None, "cross_validated": None, "notes": []}
    if bundle_lr is not None and len(chosen):
        out["bundle"] = likelihood.log10_lr(scores, bundle_lr)
    elif bundle_lr is None:
        out["notes"].append(likelihood.NO_CALIBRATION)
    method = (bundle_lr or {}).get("method", "logistic")
    groups = [i.source or i.video or i.id for i in chosen]
    try:
        out["cross_validated"] = likelihood.cross_validated_log10_lr(scores, labels, groups, folds, method)
        out["method"] = method
    except ValueError as exc:
        out["notes"].append(f"no cross-validated LRs: {exc}")
    except RuntimeError as exc:  # lir missing
        out["notes"].append(f"no cross-validated LRs: {exc}")
    return out


def lr_summary(lrs: dict[str, dict[str, Any]], bundle_lr: dict[str, Any] | None,
               folds: int = CV_FOLDS) -> dict[str, Any]:
    """Serialisable Cllr figures per level from `level_log10_lrs` outputs."""
    summary: dict[str, Any] = {"folds": folds, "verbal_scale": likelihood.VERBAL_SCALE_TEXT,
                               "bundle_calibration_set": None if bundle_lr is None
                               else likelihood.describe_population(bundle_lr)}
    for level, data in lrs.items():
        entry: dict[str, Any] = {"notes": list(data["notes"])}
        if data["cross_validated"] is not None:
            entry["cross_validated"] = {**likelihood.lr_metrics(data["cross_validated"], data["labels"]),
                                        "method": data.get("method")}
        if data["bundle"] is not None:
            entry["bundle"] = likelihood.lr_metrics(data["bundle"], data["labels"])
            entry["notes"].append("bundle: the bundle's own calibrator; if it was fitted on these very scores "
                                  "this is not a held-out measure (the cross-validated one is)")
        summary[level] = entry
    return summary


def add_lr_and_groups(result: Any, manifest: Any, folds: int = CV_FOLDS, group_lookup: dict[str, str] | None = None,
                      group_column: str | None = None) -> dict[str, dict[str, Any]]:
    """Give an EvalResult its likelihood-ratio summary and, with a group lookup (`read_group_column`), its
    per-group figures at the bundle's operating points (and the threshold used). Returns the per-level
    log10 LRs, which the report's Tippett plots draw."""
    bundle_lr = manifest.likelihood_ratio
    lrs = {level: level_log10_lrs(result.items, level, bundle_lr, folds) for level in LEVELS}
    result.likelihood_ratio = lr_summary(lrs, bundle_lr, folds)
    if group_lookup is not None:
        thresholds = dict(manifest.operating_points)
        if result.threshold is not None:
            thresholds.setdefault(result.threshold_name or "threshold", result.threshold)
        result.groups = {"column": group_column, "thresholds": thresholds,
                         "levels": group_metrics(result.items, group_lookup, thresholds)}
    return lrs


# --- per group -------------------------------------------------------------------------------------------

def read_group_column(data: str | Path, column: str) -> dict[str, str]:
    """Item id -> the value of `column` in a face set's labels.csv (keyed by `file` and `video`) or in a
    labelled-videos CSV (keyed by its path/video/file columns)."""
    data = Path(data)
    csv_path = data / "labels.csv" if data.is_dir() else data
    if not csv_path.is_file():
        raise ValueError(f"--group-by needs a labels CSV: {csv_path} does not exist (a real/ + fake/ folder has no columns)")
    with labels_text(csv_path), open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        if column not in (reader.fieldnames or []):
            raise ValueError(f"{csv_path} has no column {column!r} (columns: {', '.join(reader.fieldnames or [])})")
        lookup: dict[str, str] = {}
        for row in reader:
            value = (row.get(column) or "").strip() or "(empty)"
            for key in ("file", "video", "path"):
                if row.get(key):
                    lookup.setdefault(row[key], value)
                    lookup.setdefault(str((csv_path.parent / row[key])), value)
    return lookup


def _group_of(item: ScoreItem, lookup: dict[str, str]) -> str:
    for key in (item.id, item.video):
        if key and key in lookup:
            return lookup[key]
    return "(not in labels)"


def _rates(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float | None]:
    flagged = scores >= threshold
    real, fake = labels == 0, labels == 1
    return {"fpr": float(flagged[real].mean()) if real.any() else None,
            "tpr": float(flagged[fake].mean()) if fake.any() else None}


def group_metrics(items: Sequence[ScoreItem], lookup: dict[str, str], thresholds: dict[str, float]
                  ) -> dict[str, dict[str, dict[str, Any]]]:
    """Per level, per group: counts, AUC (None for a one-class group) and FPR/TPR at each named threshold.
    A video's group is its frames' (the first frame found in the lookup)."""
    video_group: dict[str, str] = {}
    for item in items:
        if item.level == "frame" and item.video and item.video not in video_group:
            group = _group_of(item, lookup)
            if group != "(not in labels)":
                video_group[item.video] = group
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for level in LEVELS:
        grouped: dict[str, list[ScoreItem]] = defaultdict(list)
        for item in _scored(items, level):
            group = _group_of(item, lookup)
            if group == "(not in labels)" and level == "video":
                group = video_group.get(item.video or item.id, group)
            grouped[group].append(item)
        out[level] = {}
        for group, members in sorted(grouped.items()):
            scores, labels = _arrays(members)
            base = binary_metrics(labels, scores)
            out[level][group] = {"n": base["n"], "n_real": base["n_real"], "n_fake": base["n_fake"],
                                 "auc": base["auc"],
                                 "at": {name: _rates(scores, labels, t) for name, t in thresholds.items()}}
    return out


# --- rendering --------------------------------------------------------------------------------------------

def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def render_lr_table(summary: dict[str, Any]) -> Any:
    from rich.markup import escape  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"likelihood ratios (Cllr in bits; cross-validated: {summary['folds']} folds by source)")
    table.add_column("metric")
    columns = [(level, kind) for level in LEVELS if level in summary for kind in ("cross_validated", "bundle")
               if kind in summary[level]]
    for level, kind in columns:
        table.add_column(f"{level} {'cv' if kind == 'cross_validated' else 'bundle'}", justify="right")
    for key in ("cllr", "cllr_min", "cllr_cal", "n_real", "n_fake"):
        table.add_row(key, *(_cell(summary[level][kind].get(key)) for level, kind in columns))
    notes = sorted({n for level in LEVELS if level in summary for n in summary[level]["notes"]})
    if summary.get("bundle_calibration_set"):
        notes.insert(0, f"bundle LR calibrated on {summary['bundle_calibration_set']}")
    if notes:
        table.caption = escape("; ".join(notes))
    return table


def render_group_table(groups: dict[str, dict[str, dict[str, Any]]], column: str) -> Any:
    from rich.markup import escape  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=escape(f"per {column}"))
    names: list[str] = []
    for level in LEVELS:
        for stats in groups.get(level, {}).values():
            names = list(stats["at"])
            break
    for col in ("level", column, "n", "real", "fake", "AUC", *(f"{n} FPR/TPR" for n in names)):
        table.add_column(escape(col), justify="left" if col in ("level", column) else "right")
    for level in LEVELS:
        for group, stats in groups.get(level, {}).items():
            rates = [f"{_cell(stats['at'][n]['fpr'])} / {_cell(stats['at'][n]['tpr'])}" for n in names]
            table.add_row(level, escape(group), str(stats["n"]), str(stats["n_real"]), str(stats["n_fake"]),
                          _cell(stats["auc"]), *rates)
    return table
