"""dfscan.calibration: the one place that fits and applies a bundle's score calibration."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from dfscan import calibration as cal
from dfscan.metrics import brier, log_loss
from dfscan.model.manifest import load_manifest
from dfscan.model.scorer import default_bundle_path
from dfscan.settings import check_calibration


def overconfident_scores(n: int = 4000, temperature: float = 3.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z); the scores claim sigmoid(temperature * z): over-confident by that factor."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, n)
    labels = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    return 1 / (1 + np.exp(-temperature * z)), labels


def test_temperature_fit_recovers_the_overconfidence_factor():
    scores, labels = overconfident_scores(temperature=3.0)
    t = cal.fit_temperature(scores, labels)
    assert t == pytest.approx(3.0, rel=0.15)
    calibrated = cal.apply_temperature(scores, t)
    assert log_loss(labels, calibrated) < log_loss(labels, scores) - 0.05


def test_temperature_keeps_the_ranking_and_the_midpoint():
    scores = np.array([1e-9, 0.1, 0.5, 0.9, 1.0])
    out = cal.apply_calibration(scores, {"method": "temperature", "temperature": 2.5})
    assert np.all(np.diff(out) > 0) and np.all(np.isfinite(out))
    assert out[2] == pytest.approx(0.5)


def test_isotonic_fit_is_monotone_valid_and_improves_brier():
    scores, labels = overconfident_scores(n=3000, temperature=4.0, seed=1)
    record = cal.fit_calibration("isotonic", scores, labels)
    check_calibration(record)  # a manifest would accept it (sorted x, y in [0, 1], >= 2 knots)
    assert len(record["x"]) < len(np.unique(scores))  # flat runs leave no inner knots
    calibrated = cal.apply_calibration(scores, record)
    assert np.all(np.diff(cal.apply_calibration(np.sort(scores), record)) >= 0)
    assert brier(labels, calibrated) < brier(labels, scores)


def test_isotonic_matches_scikit_learn():
    isotonic = pytest.importorskip("sklearn.isotonic")
    scores, labels = overconfident_scores(n=1500, seed=2)
    scores = np.round(scores, 3)  # ties, pooled the same way by both
    xs, ys = cal.fit_isotonic(scores, labels)
    reference = isotonic.IsotonicRegression(out_of_bounds="clip").fit(scores, labels)
    grid = np.linspace(0, 1, 2001)
    np.testing.assert_allclose(cal.apply_isotonic(grid, xs, ys), reference.predict(grid), atol=1e-12)


def test_fit_rejects_unknown_method_and_single_score():
    with pytest.raises(ValueError, match="unknown calibration method"):
        cal.fit_calibration("platt", [0.1, 0.9], [0, 1])
    with pytest.raises(ValueError, match="two distinct scores"):
        cal.fit_isotonic([0.3, 0.3, 0.3], [0, 1, 1])
    with pytest.raises(ValueError, match="unknown calibration method"):
        cal.apply_calibration([0.5], {"method": "platt"})


def test_shipped_bundle_calibration_is_applied_as_before():
    """The scorer's former formula, written out: the shipped bundle's scores must not move."""
    calibration = load_manifest(default_bundle_path()).calibration
    raw = np.concatenate([np.linspace(0, 1, 1001), [1e-12, 1 - 1e-12]])
    eps = 1e-7
    clipped = np.clip(raw, eps, 1 - eps)
    expected = 1.0 / (1.0 + np.exp(-np.log(clipped / (1 - clipped)) / float(calibration["temperature"])))
    assert np.array_equal(cal.apply_calibration(raw, calibration), expected)


def test_calibration_imports_no_torch():
    code = "import sys, dfscan.calibration; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
