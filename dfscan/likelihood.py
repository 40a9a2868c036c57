"""Likelihood ratios: how much more probable a score is if the face was manipulated (Hp) than if it is
genuine (Hd), on the forensic scale (ENFSI guideline for evaluative reporting, 2015).

Fitting (at export, or `dfscan calibrate-lr`) uses the Netherlands Forensic Institute's `lir` package:
a logistic or KDE calibrator from score to log10 LR, bounded by the empirical lower and upper bounds (ELUB,
Vergeer et al. 2016) so that no LR claims more than the calibration data can support. The fitted
calibrator is stored in the bundle manifest as plain numbers and applied here in numpy: scanning needs
neither lir nor scikit-learn.

Manifest entry (`likelihood_ratio`):
    {"method": "logistic", "feature": "logit", "params": {"slope": a, "intercept": b},   # log10 LR = a*x + b
     or "method": "kde", "feature": "logit", "table": {"x": [...], "log10_lr": [...]},   # interpolated
     "bounds": [lo, hi],          # ELUB, log10
     "level": "frame" | "video",  # which scores it was fitted on
     "calibration_set": {"population": str, "n_real": int, "n_fake": int},
     "hypotheses": {...}, "fitted_with": str}
where x = logit(score) and score is the bundle's calibrated fake probability.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dfscan.calibration import logit
from dfscan.errors import ModelError

EPS = 1e-6
METHODS = ("logistic", "kde")
KDE_GRID_POINTS = 201
HYPOTHESES = {"Hp": "the face was manipulated (face swap, reenactment)",
              "Hd": "the face is genuine (not manipulated)"}
# ENFSI (2015) verbal equivalents: upper edge of log10 |LR| for each bin, and its words.
VERBAL_SCALE = ((1.0, "weak support"), (2.0, "moderate support"), (3.0, "moderately strong support"),
                (4.0, "strong support"), (6.0, "very strong support"), (math.inf, "extremely strong support"))
VERBAL_SCALE_TEXT = ("ENFSI 2015 verbal scale on the LR: 1-10 weak, 10-100 moderate, 100-1,000 moderately strong, "
                     "1,000-10,000 strong, 10,000-1,000,000 very strong, above 1,000,000 extremely strong support; "
                     "the same bins below 1 (1/LR) for support of 'genuine'; exactly 1 is neutral")
NO_CALIBRATION = ("the model bundle has no likelihood-ratio calibration (refit one with "
                  "`dfscan calibrate-lr BUNDLE --scores SCORES.jsonl`)")


# --- applying a calibration (numpy only) ------------------------------------------------------------

def unbounded_log10_lr(scores: Sequence[float] | np.ndarray, calibration: dict[str, Any]) -> np.ndarray:
    """The calibrator's log10 LR before the ELUB bounds."""
    x = logit(scores, EPS)
    method = calibration.get("method")
    if method == "logistic":
        params = calibration["params"]
        return float(params["slope"]) * x + float(params["intercept"])
    if method == "kde":
        table = calibration["table"]
        return np.interp(x, table["x"], table["log10_lr"])
    raise ValueError(f"unknown likelihood-ratio method {method!r} (expected one of {METHODS})")


def log10_lr(scores: Sequence[float] | np.ndarray, calibration: dict[str, Any]) -> np.ndarray:
    """log10 LR of each score, clipped to the calibration's ELUB bounds."""
    low, high = calibration["bounds"]
    return np.clip(unbounded_log10_lr(scores, calibration), float(low), float(high))


def verbal(log10: float) -> str:
    """The ENFSI verbal equivalent of a log10 LR, naming the proposition it supports."""
    magnitude = abs(round(float(log10), 6))
    if magnitude == 0.0:
        return "neutral: supports neither proposition"
    words = next(text for edge, text in VERBAL_SCALE if magnitude < edge)
    side = "manipulated rather than genuine" if log10 > 0 else "genuine rather than manipulated"
    return f"{words} for {side}"


def format_lr(lr: float | None) -> str:
    """An LR as people read it: '12', '1.8', '1/43' (below 1, its reciprocal), '-' when absent."""
    if lr is None:
        return "-"
    value = lr if lr >= 1 else 1.0 / lr
    text = f"{value:.2g}" if value < 10 else f"{value:,.0f}"
    return text if lr >= 1 else f"1/{text}"


def summary_line(record: dict[str, Any] | None) -> str:
    """One line for tables and reports: 'LR 12 (log10 1.08): moderate support for ...; ELUB bounds 1/43-155'."""
    if not record:
        return "likelihood ratio: not computed"
    if record.get("lr") is None:
        return f"likelihood ratio: none ({record.get('reason')})"
    low, high = record["bounds"]
    bound = " (at the bound)" if record.get("at_bound") else ""
    return (f"likelihood ratio {format_lr(record['lr'])} (log10 {record['log10']:+.2f}){bound}: {record['verbal']}; "
            f"ELUB bounds {format_lr(low)} to {format_lr(high)}")


def explanation(record: dict[str, Any] | None) -> list[str]:
    """Plain-language paragraphs for reports: what this LR means, the population it was calibrated on,
    and what it does not say."""
    if not record or record.get("lr") is None:
        reason = (record or {}).get("reason") or "not computed"
        return [f"No likelihood ratio: {reason}."]
    lr, low, high = record["lr"], *record["bounds"]
    if lr >= 1:
        meaning = (f"The score observed is about {format_lr(lr)} times more probable if the face was manipulated "
                   "than if it is genuine")
    else:
        meaning = (f"The score observed is about {format_lr(1.0 / lr)} times more probable if the face is genuine "
                   "than if it was manipulated")
    capped = " This LR is at the bound: the calibration data cannot support a stronger one." if record.get("at_bound") else ""
    return [
        f"{meaning}: {record['verbal']} (likelihood ratio {format_lr(lr)}, log10 {record['log10']:+.2f}; "
        f"{VERBAL_SCALE_TEXT}).",
        f"Calibrated on: {record['calibration_set']}. No LR is reported beyond the empirical lower and upper "
        f"bounds (ELUB) of that data, {format_lr(low)} to {format_lr(high)}.{capped}",
        "What it does not say: it is not the probability that the video is fake. That needs prior odds from "
        "the rest of the case, which this tool cannot know (posterior odds = prior odds x LR). It is only as "
        "good as the match between this video and the calibration population: for other kinds of footage "
        "(studio or phone video, other compression, other manipulation tools) it can be wrong in either "
        "direction.",
    ]


def describe_population(calibration: dict[str, Any]) -> str:
    cal_set = calibration.get("calibration_set") or {}
    level = calibration.get("level", "frame")
    counts = [cal_set.get("n_real"), cal_set.get("n_fake")]
    real, fake = (f"{n:,}" if isinstance(n, int) else "?" for n in counts)
    return f"{cal_set.get('population', 'unknown population')}; fitted on {level} scores, {real} real / {fake} fake"


def likelihood_ratio(score: float | None, calibration: dict[str, Any] | None,
                     reason: str | None = None) -> dict[str, Any]:
    """The record every scored video and track carries: lr, log10, verbal, bounds, calibration_set.
    With no score or no calibration, the same keys are None and `reason` says why."""
    if calibration is None:
        return absent(NO_CALIBRATION)
    if score is None:
        return absent(reason or "no score to weigh", calibration)
    value = float(log10_lr([score], calibration)[0])
    low, high = (float(b) for b in calibration["bounds"])
    return {"lr": float(f"{10.0 ** value:.4g}"), "log10": round(value, 4), "verbal": verbal(value),
            "bounds": [float(f"{10.0 ** low:.4g}"), float(f"{10.0 ** high:.4g}")],  # as lr: at the bound, equal
            "at_bound": bool(value <= low or value >= high),
            "calibration_set": describe_population(calibration), "reason": None}


def attach_likelihood_ratios(result: Any, calibration: dict[str, Any] | None) -> None:
    """Give a VideoResult and each of its tracks their `likelihood_ratio` (absent, with the reason, for
    ERROR and NO_FACE results and for tracks too short to be judged)."""
    if result.label == "ERROR":
        result.likelihood_ratio = absent("the file could not be scanned: no evidence to weigh", calibration)
    elif result.score is None:
        result.likelihood_ratio = absent("no face track was judged (NO_FACE): no evidence to weigh", calibration)
    else:
        result.likelihood_ratio = likelihood_ratio(result.score, calibration)
    for track in result.tracks:
        track.likelihood_ratio = likelihood_ratio(track.score, calibration,
                                                  reason="track too short to be judged")


def absent(reason: str, calibration: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"lr": None, "log10": None, "verbal": None, "bounds": None, "at_bound": None,
            "calibration_set": None if calibration is None else describe_population(calibration),
            "reason": reason}


def check_calibration(calibration: Any) -> None:
    """Raise ValueError when a manifest's likelihood_ratio entry cannot be applied."""
    if not isinstance(calibration, dict):
        raise ValueError("likelihood_ratio must be an object")
    bounds = calibration.get("bounds")
    if not (isinstance(bounds, (list, tuple)) and len(bounds) == 2 and float(bounds[0]) <= 0.0 <= float(bounds[1])):
        raise ValueError(f"likelihood_ratio.bounds must be [lo <= 0, hi >= 0] in log10, not {bounds!r}")
    try:
        values = unbounded_log10_lr([0.01, 0.5, 0.99], calibration)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"likelihood_ratio lacks {exc}") from None
    if not np.all(np.isfinite(values)):
        raise ValueError("likelihood_ratio gives non-finite values")


# --- performance of LRs (numpy only) ------------------------------------------------------------------

def _split(log10: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    log10, labels = np.asarray(log10, np.float64), np.asarray(labels, np.int64)
    if log10.shape != labels.shape:
        raise ValueError(f"log10 LRs {log10.shape} and labels {labels.shape} differ in shape")
    return log10[labels == 0], log10[labels == 1]


def class_costs(log10: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray
                ) -> tuple[float | None, float | None]:
    """Cllr's two terms, in bits: the mean of log2(1 + LR) over the genuine items and of log2(1 + 1/LR)
    over the manipulated ones (None for a class with no items). Each is 0 for perfect LRs and 1 for LR = 1
    throughout; on a one-class set it is the only part of Cllr that can be measured."""
    real, fake = _split(log10, labels)
    ln10, ln2 = math.log(10.0), math.log(2.0)
    cost_real = float(np.mean(np.logaddexp(0.0, real * ln10)) / ln2) if len(real) else None     # log2(1 + LR)
    cost_fake = float(np.mean(np.logaddexp(0.0, -fake * ln10)) / ln2) if len(fake) else None    # log2(1 + 1/LR)
    return cost_real, cost_fake


def cllr(log10: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> float | None:
    """Log-likelihood-ratio cost (Brümmer & du Preez 2006), in bits; labels 1 = manipulated (Hp).
    0 is perfect, 1 is a system that always says LR = 1. None for a one-class set."""
    cost_real, cost_fake = class_costs(log10, labels)
    if cost_real is None or cost_fake is None:
        return None
    return (cost_real + cost_fake) / 2.0


def pav_log10_lr(log10: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> np.ndarray:
    """The best monotone re-mapping of the LRs on this very set (pool-adjacent-violators on the labels,
    ties pooled, converted to LRs by removing the set's class proportions): what Cllr_min is computed on."""
    values, y = np.asarray(log10, np.float64), np.asarray(labels, np.float64)
    order = np.argsort(values, kind="mergesort")
    sorted_values, sorted_y = values[order], y[order]
    # blocks start as runs of tied values
    starts = np.flatnonzero(np.r_[True, np.diff(sorted_values) != 0])
    sums = list(np.add.reduceat(sorted_y, starts))
    counts = list(np.diff(np.r_[starts, len(sorted_y)]).astype(np.float64))
    block_sums: list[float] = []
    block_counts: list[float] = []
    block_runs: list[int] = []
    for s, c in zip(sums, counts):
        block_sums.append(s)
        block_counts.append(c)
        block_runs.append(1)
        while len(block_sums) > 1 and block_sums[-2] / block_counts[-2] >= block_sums[-1] / block_counts[-1]:
            s2, c2, r2 = block_sums.pop(), block_counts.pop(), block_runs.pop()
            block_sums[-1] += s2
            block_counts[-1] += c2
            block_runs[-1] += r2
    run_means = np.repeat([s / c for s, c in zip(block_sums, block_counts)], block_runs)
    posterior = np.repeat(run_means, counts)
    n_fake, n_real = y.sum(), len(y) - y.sum()
    with np.errstate(divide="ignore"):
        mapped = np.log10(posterior) - np.log10(1 - posterior) - math.log10(n_fake / n_real)
    out = np.empty_like(mapped)
    out[order] = mapped
    return out


def lr_metrics(log10: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> dict[str, Any]:
    """Cllr (the whole cost), Cllr_min (discrimination: the cost after the best monotone re-mapping on
    this set) and Cllr_cal = Cllr - Cllr_min (the cost of miscalibration), with counts and the range of
    log10 LRs, and Cllr's two class terms (`class_costs`) with the share of misleading LRs in each class
    (LR > 1 for a genuine item, LR < 1 for a manipulated one). One-class sets give Cllr None with a note;
    their class term is still there."""
    log10, labels = np.asarray(log10, np.float64), np.asarray(labels, np.int64)
    cost_real, cost_fake = class_costs(log10, labels)
    real, fake = _split(log10, labels)
    out: dict[str, Any] = {"n_real": len(real), "n_fake": len(fake), "cost_real": cost_real, "cost_fake": cost_fake,
                           "misleading_real": float((real > 0).mean()) if len(real) else None,
                           "misleading_fake": float((fake < 0).mean()) if len(fake) else None,
                           "log10_lr_range": [float(log10.min()), float(log10.max())] if len(log10) else None}
    total = cllr(log10, labels)
    if total is None:
        return {**out, "cllr": None, "cllr_min": None, "cllr_cal": None,
                "note": "Cllr needs both real and fake samples"}
    minimum = cllr(pav_log10_lr(log10, labels), labels)
    return {**out, "cllr": total, "cllr_min": minimum, "cllr_cal": total - minimum}


# --- fitting (lir, at export) ---------------------------------------------------------------------------

def _import_lir() -> Any:
    try:
        import lir  # noqa: PLC0415
        from lir.algorithms.bayeserror import elub  # noqa: PLC0415
    except ImportError as exc:
        raise RuntimeError("fitting a likelihood-ratio calibration needs the `lir` package "
                           "(pip install -e '.[train]'; lir needs Python >= 3.11)") from exc
    return lir, elub


def _lir_version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("lir")
    except PackageNotFoundError:
        return "unknown"


def _check_fit_input(scores: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    s, y = np.asarray(scores, np.float64), np.asarray(labels, np.int64)
    if s.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"scores {s.shape} and labels {y.shape} must be two 1-D arrays of one length")
    if not np.all(np.isfinite(s)) or s.min() < 0.0 or s.max() > 1.0:
        raise ValueError("scores must be fake probabilities in [0, 1]")
    if set(np.unique(y)) - {0, 1} or (y == 0).sum() < 2 or (y == 1).sum() < 2:
        raise ValueError("labels must be 0 (real) / 1 (fake), with at least 2 of each")
    return s, y


def _fit_curve(x: np.ndarray, y: np.ndarray, method: str) -> dict[str, Any]:
    """The unbounded calibrator: logistic (2 parameters) or KDE (tabulated on a grid over x's range)."""
    if method == "logistic":
        from lir.algorithms.logistic_regression import LogitCalibrator  # noqa: PLC0415

        calibrator = LogitCalibrator().fit(x, y)
        ln10 = math.log(10.0)
        # lir's class-balanced logistic regression: ln LR = intercept + coef * x
        return {"params": {"slope": float(calibrator._logit.coef_.ravel()[0]) / ln10,
                           "intercept": float(calibrator._logit.intercept_.ravel()[0]) / ln10}}
    if method == "kde":
        from lir.algorithms.kde import KDECalibrator  # noqa: PLC0415

        calibrator = KDECalibrator(bandwidth="silverman").fit(x, y)
        grid = np.linspace(float(x.min()), float(x.max()), KDE_GRID_POINTS)
        values = np.asarray(calibrator.transform(grid), np.float64).ravel()
        values = np.clip(np.nan_to_num(values, nan=0.0, posinf=9.0, neginf=-9.0), -9.0, 9.0)
        return {"table": {"x": [round(float(v), 6) for v in grid], "log10_lr": [round(float(v), 6) for v in values]}}
    raise ValueError(f"method must be one of {METHODS}, not {method!r}")


def fit_lr_calibration(scores: Sequence[float], labels: Sequence[int], population: str,
                       method: str = "logistic", level: str = "frame") -> dict[str, Any]:
    """Fit a score -> LR calibrator on labelled scores (label 1 = fake) with lir, and its ELUB bounds.

    `scores` are the bundle's calibrated fake probabilities; `population` says in words what the scores
    come from (dataset, split, kind of footage): it is printed next to every LR. Returns the manifest's
    `likelihood_ratio` entry (plain numbers, applied by `log10_lr` without lir)."""
    _, elub = _import_lir()
    s, y = _check_fit_input(scores, labels)
    x = logit(s, EPS)
    entry: dict[str, Any] = {"method": method, "feature": "logit", **_fit_curve(x, y, method)}
    entry["bounds"] = [-math.inf, math.inf]
    fitted = unbounded_log10_lr(s, entry)
    low, high = elub(fitted.copy(), y.astype(np.float64), add_misleading=1)
    entry.update(
        bounds=[round(float(low), 4), round(float(high), 4)],
        level=level,
        calibration_set={"population": population, "n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum())},
        hypotheses=dict(HYPOTHESES),
        fitted_with=f"lir {_lir_version()}: {'LogitCalibrator' if method == 'logistic' else 'KDECalibrator'} "
                    "on logit(score), ELUB bounds",
    )
    entry["fit_metrics"] = {k: v for k, v in lr_metrics(log10_lr(s, entry), y).items()
                            if k in ("cllr", "cllr_min", "cllr_cal")}
    entry["fit_metrics"]["note"] = "on the scores the calibrator was fitted on (not held out)"
    return entry


def fold_of(group: str, folds: int) -> int:
    """A deterministic fold for a group id (no randomness: the same data gives the same folds)."""
    return int(hashlib.sha256(group.encode("utf-8")).hexdigest()[:8], 16) % folds


def cross_validated_log10_lr(scores: Sequence[float], labels: Sequence[int], groups: Sequence[str] | None = None,
                             folds: int = 5, method: str = "logistic") -> np.ndarray:
    """Each score's log10 LR from a calibrator (with its ELUB bounds) fitted on the other folds only.
    Folds are by group (e.g. source video), so no group informs its own LR."""
    s, y = _check_fit_input(scores, labels)
    keys = [str(g) for g in groups] if groups is not None else [str(i) for i in range(len(s))]
    fold = np.asarray([fold_of(k, folds) for k in keys])
    out = np.empty(len(s))
    for k in range(folds):
        held = fold == k
        if not held.any():
            continue
        calibration = fit_lr_calibration(s[~held], y[~held], "cross-validation fold", method)
        out[held] = log10_lr(s[held], calibration)
    return out


# --- (re)fitting a bundle's calibration from a scores file ---------------------------------------------

def read_scores(path: str | Path, level: str | None = None, model: str | None = None,
                ) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    """Scores, labels (1 = fake), group ids (source, else video, else id) and the level read from a JSONL
    file of scored items as `dfscan eval --scores` writes it. `level` None: video items if the file has
    any, else frame items. Unscored items (NO_FACE, ERROR) are left out. `model` (a bundle's
    `scores_identity`): rows another model scored are refused; a row that names none (a file made
    elsewhere) is taken. A line that repeats an earlier one word for word is refused (`cat a a` would
    count each item twice)."""
    rows = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if line.strip() in seen:
                raise ValueError(f"{path}:{n}: repeats line {seen[line.strip()]} (an item counted twice)")
            if line.strip():
                seen[line.strip()] = n
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{n}: not JSON ({exc.msg})") from None
                score = row.get("score") if isinstance(row, dict) else None
                if not isinstance(row, dict) or not (score is None or _is_real_number(score)):
                    raise ValueError(f"{path}:{n}: not a scored item (an object whose score is a number or null)")
                if model and isinstance(row.get("model"), str) and row["model"] != model:
                    raise ValueError(f"{path}:{n}: scored by {row['model']}, not by this bundle ({model}): an LR "
                                     "calibration is fitted on its own model's scores (dfscan eval --scores)")
                rows.append(row)
    levels = {row.get("level", "frame") for row in rows}
    level = level or ("video" if "video" in levels else "frame")
    chosen = [r for r in rows if r.get("level", "frame") == level and r.get("score") is not None]
    if not chosen:
        raise ValueError(f"{path} has no scored {level}-level items (levels present: {sorted(levels)})")
    bad = {r.get("label") for r in chosen} - {"real", "fake"}
    if bad:
        raise ValueError(f"{path}: labels must be real or fake, found {sorted(map(str, bad))}")
    scores = np.asarray([float(r["score"]) for r in chosen])
    labels = np.asarray([int(r["label"] == "fake") for r in chosen])
    groups = [str(r.get("source") or r.get("video") or r.get("id")) for r in chosen]
    return scores, labels, groups, level


def _is_real_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def refit_bundle(bundle_dir: str | Path, scores_path: str | Path, population: str, method: str = "logistic",
                 level: str | None = None) -> dict[str, Any]:
    """Fit a new LR calibration on a scores file and write it into the bundle's manifest (the other
    entries and the ONNX files are untouched; the bundle's hash changes, as its LRs do)."""
    from dfscan.model.manifest import MANIFEST_NAME, load_manifest  # noqa: PLC0415
    from dfscan.outputs import atomic_write_text  # noqa: PLC0415

    manifest = load_manifest(bundle_dir)
    scores, labels, _, level = read_scores(scores_path, level, manifest.scores_identity)
    manifest.likelihood_ratio = fit_lr_calibration(scores, labels, population, method, level)
    manifest.validate()
    path = Path(bundle_dir) / MANIFEST_NAME
    try:  # the old manifest or the new one, never half of one (a full disk, a read-only bundle)
        atomic_write_text(path, json.dumps(manifest.to_dict(), indent=2) + "\n")
    except OSError as exc:
        raise ModelError(f"cannot write {path}: {exc.strerror or exc}") from None
    return manifest.likelihood_ratio
