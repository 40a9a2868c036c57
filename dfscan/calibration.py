"""Score calibration, fit and apply, for the methods a bundle manifest allows (numpy only, no torch).

A manifest's `calibration` is one of
    {"method": "temperature", "temperature": T}       sigmoid(logit(p) / T), T > 0 fit by log-loss
    {"method": "isotonic", "x": [...], "y": [...]}    a non-decreasing map, applied by linear interpolation
    null                                              raw classifier probabilities

`fit_calibration` makes such a record from labelled scores (export), `apply_calibration` applies one
(scanning, export's operating points). The likelihood-ratio calibration (`dfscan.likelihood`) is a
different thing (score -> LR) but takes its logit from here.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dfscan.metrics import log_loss

METHODS = ("temperature", "isotonic")
LOGIT_EPS = 1e-7  # probabilities are clipped to [eps, 1 - eps] before the logit, so 0 and 1 stay finite
TEMPERATURE_RANGE = (0.05, 20.0)  # the search interval for T
GOLDEN_STEPS = 60  # golden-section steps on log T: the interval shrinks by 0.618^60, far below float noise

ArrayLike = Sequence[float] | np.ndarray


def logit(p: ArrayLike, eps: float = LOGIT_EPS) -> np.ndarray:
    """log(p / (1 - p)) of probabilities clipped to [eps, 1 - eps], as float64."""
    clipped = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    return np.log(clipped / (1 - clipped))


def apply_temperature(p: ArrayLike, temperature: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logit(p) / float(temperature)))


def apply_isotonic(p: ArrayLike, xs: ArrayLike, ys: ArrayLike) -> np.ndarray:
    return np.interp(np.asarray(p, dtype=np.float64), xs, ys)


def apply_calibration(p: ArrayLike, calibration: dict[str, Any] | None) -> np.ndarray:
    """The manifest's calibration applied to raw classifier probabilities (float64)."""
    p = np.asarray(p, dtype=np.float64)
    if not calibration:
        return p
    method = calibration.get("method")
    if method == "temperature":
        return apply_temperature(p, calibration["temperature"])
    if method == "isotonic":
        return apply_isotonic(p, calibration["x"], calibration["y"])
    raise ValueError(f"unknown calibration method {method!r} (known: {', '.join(METHODS)})")


def fit_temperature(p: ArrayLike, labels: ArrayLike) -> float:
    """T minimising the log-loss of sigmoid(logit(p) / T) (golden-section search on log T)."""
    z, y = logit(p), np.asarray(labels, dtype=np.float64)

    def loss(log_t: float) -> float:
        return log_loss(y, 1.0 / (1.0 + np.exp(-z / np.exp(log_t))))

    lo, hi = np.log(TEMPERATURE_RANGE[0]), np.log(TEMPERATURE_RANGE[1])
    g = (np.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    for _ in range(GOLDEN_STEPS):
        if loss(a) < loss(b):
            hi, b = b, a
            a = hi - g * (hi - lo)
        else:
            lo, a = a, b
            b = lo + g * (hi - lo)
    return float(np.exp((lo + hi) / 2))


def fit_isotonic(p: ArrayLike, labels: ArrayLike) -> tuple[list[float], list[float]]:
    """Knots (x, y) of the non-decreasing fit of labels on scores that minimises squared error
    (pool adjacent violators over the distinct scores, ties pooled first), without redundant knots."""
    scores, y = np.asarray(p, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    xs, inverse = np.unique(scores, return_inverse=True)
    if len(xs) < 2:
        raise ValueError("isotonic calibration needs at least two distinct scores")
    weights = np.bincount(inverse).astype(np.float64)
    means = np.bincount(inverse, weights=y) / weights
    blocks: list[list[float]] = []  # [mean, weight, number of distinct scores]
    for mean, weight in zip(means, weights):
        blocks.append([mean, weight, 1])
        while len(blocks) > 1 and blocks[-2][0] >= blocks[-1][0]:
            m2, w2, n2 = blocks.pop()
            m1, w1, n1 = blocks.pop()
            blocks.append([(m1 * w1 + m2 * w2) / (w1 + w2), w1 + w2, n1 + n2])
    fitted = np.repeat([b[0] for b in blocks], [int(b[2]) for b in blocks])
    keep = np.ones(len(xs), dtype=bool)  # a knot inside a flat run changes nothing in the interpolation
    keep[1:-1] = (fitted[1:-1] != fitted[:-2]) | (fitted[1:-1] != fitted[2:])
    return [float(v) for v in xs[keep]], [float(min(max(v, 0.0), 1.0)) for v in fitted[keep]]


def fit_calibration(method: str, p: ArrayLike, labels: ArrayLike) -> dict[str, Any]:
    """A manifest calibration record fit on labelled scores (label 1 = fake)."""
    if method == "temperature":
        return {"method": "temperature", "temperature": fit_temperature(p, labels)}
    if method == "isotonic":
        xs, ys = fit_isotonic(p, labels)
        return {"method": "isotonic", "x": xs, "y": ys}
    raise ValueError(f"unknown calibration method {method!r} (known: {', '.join(METHODS)})")
