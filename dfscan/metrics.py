"""The one metrics module, numpy only (no scikit-learn, so `dfscan eval` runs on the [cpu] install):
ROC curve, AUC, average precision, EER, ECE, log-loss, Brier, and threshold metrics. Export (the
manifest's val metrics and operating points) and eval use these same functions, so a bundle's val EER
equals `dfscan eval`'s on the same data. Label 1 = fake = positive; scores are fake probabilities.
The curve follows scikit-learn's conventions (tests compare the two where it is installed)."""
from __future__ import annotations

import numpy as np

ECE_BINS = 15
LOG_EPS = 1e-7


def _binary_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False and true positives at each distinct score, taken as threshold from the highest down."""
    y = np.asarray(y_true, dtype=np.float64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last_of_each = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tps = np.cumsum(y)[last_of_each]
    fps = 1 + last_of_each - tps
    return fps, tps, s[last_of_each]


def roc_curve(y_true, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), first threshold +inf, collinear points dropped (as scikit-learn)."""
    fps, tps, thresholds = _binary_curve(y_true, scores)
    if fps.size > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    fps, tps = np.r_[0, fps], np.r_[0, tps]
    thresholds = np.r_[np.inf, thresholds]
    return fps / fps[-1], tps / tps[-1], thresholds


def roc_auc(y_true, scores) -> float:
    fpr, tpr, _ = roc_curve(y_true, scores)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def average_precision(y_true, scores) -> float:
    """Sum over thresholds of (recall step) x precision, as scikit-learn's average_precision_score."""
    fps, tps, _ = _binary_curve(y_true, scores)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def equal_error_rate(y_true, scores) -> tuple[float, float]:
    """(EER, threshold at the EER): where the false-positive and false-negative rates cross on the ROC,
    linearly interpolated between the two ROC points around the crossing."""
    fpr, tpr, thresholds = roc_curve(y_true, scores)
    diff = fpr - (1.0 - tpr)  # rises from -1 (threshold above all scores) to +1
    i = int(np.argmax(diff >= 0))
    if i == 0 or diff[i] == 0:
        return float(fpr[i]), float(min(thresholds[i], 1.0))
    w = -diff[i - 1] / (diff[i] - diff[i - 1])
    eer = fpr[i - 1] + w * (fpr[i] - fpr[i - 1])
    t_hi = min(float(thresholds[i - 1]), 1.0)  # the first threshold is +inf
    return float(eer), float(t_hi + w * (float(thresholds[i]) - t_hi))


def expected_calibration_error(y_true, scores, bins: int = ECE_BINS) -> float:
    """Binned |observed fake rate - mean predicted fake probability|, weighted by bin size (the
    reliability-diagram form on the fake probability: does "0.8" mean fake 80% of the time?)."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(scores, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1], right=False), 0, bins - 1)  # 1.0 falls in the last bin
    ece = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            ece += mask.mean() * abs(float(y[mask].mean()) - float(p[mask].mean()))
    return float(ece)


def log_loss(y_true, scores) -> float:
    y = np.asarray(y_true, dtype=np.float64)
    p = np.clip(np.asarray(scores, dtype=np.float64), LOG_EPS, 1 - LOG_EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def brier(y_true, scores) -> float:
    return float(np.mean((np.asarray(scores, np.float64) - np.asarray(y_true, np.float64)) ** 2))


def threshold_metrics(y_true, scores, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall, F1 with fake = score >= threshold (0 where undefined)."""
    y = np.asarray(y_true, dtype=np.int64)
    pred = (np.asarray(scores, dtype=np.float64) >= threshold).astype(np.int64)
    tp = int(((pred == 1) & (y == 1)).sum())
    fp = int(((pred == 1) & (y == 0)).sum())
    fn = int(((pred == 0) & (y == 1)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": float((pred == y).mean()) if y.size else 0.0, "precision": float(precision),
            "recall": float(recall), "f1": float(f1)}
