"""Golden-score regression: the shipped model's scores on fixed videos must not drift.

A change to the model, the crop, the detector or the decoder that moves a score by more than TOLERANCE
fails here. When the change is deliberate, rerun with `python -m pytest tests/test_golden.py --update-golden`
and commit the new tests/fixtures/golden_scores.json with the change that caused it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import REAL_CLIPS

import dfscan
from dfscan.assets import EXAMPLE_CLIP
from dfscan.model.scorer import default_bundle_path

GOLDEN = Path(__file__).resolve().parent / "fixtures" / "golden_scores.json"
TOLERANCE = 2e-3
CASES = {
    "example": lambda: EXAMPLE_CLIP,  # shipped, public domain: always available
    "talking_d0": lambda: REAL_CLIPS / "talking_d0.mp4",
    "talking_d12": lambda: REAL_CLIPS / "talking_d12.mp4",
}


def _scores(path: Path) -> dict:
    result = dfscan.scan_video(path)
    return {
        "label": result.label,
        "score": result.score,
        "tracks": [[t.track_id, t.score, t.n_faces] for t in result.tracks],
        "model_sha256": result.model["sha256"],
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_shipped_model_scores_do_not_drift(case, request):
    if not (default_bundle_path() / "manifest.json").is_file():
        pytest.skip("no shipped model in weights/default")
    path = CASES[case]()
    if not path.is_file():
        pytest.skip(f"{path} not available (../shared beside the checkout)")
    actual = _scores(path)
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
    if request.config.getoption("--update-golden"):
        golden[case] = actual
        GOLDEN.write_text(json.dumps(golden, indent=2, sort_keys=True) + "\n")
        return
    if case not in golden:
        pytest.fail(f"no golden scores for {case}: run pytest tests/test_golden.py --update-golden")
    expected = golden[case]
    assert actual["model_sha256"] == expected["model_sha256"], \
        "the shipped model changed: rerun with --update-golden if that was deliberate"
    assert actual["label"] == expected["label"]
    assert actual["score"] == pytest.approx(expected["score"], abs=TOLERANCE)
    assert len(actual["tracks"]) == len(expected["tracks"])
    for got, want in zip(actual["tracks"], expected["tracks"]):
        assert got[2] == want[2]
        assert (got[1] is None) == (want[1] is None)
        if want[1] is not None:
            assert got[1] == pytest.approx(want[1], abs=TOLERANCE)
