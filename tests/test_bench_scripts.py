"""The bench scripts that measure against references: the reference pipeline's NMS stand-in keeps
torchvision's semantics (dfscan's own NMS is that rule), and the detection profiler's stages and face
matching on a real clip."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from dfscan.faces.mtcnn import nms

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(BENCH))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


def test_reference_nms_stand_in_is_torchvisions_rule_per_image():
    torch = pytest.importorskip("torch")
    reference = _bench("reference_pipeline")
    rng = np.random.default_rng(0)
    corners = rng.uniform(0, 200, (300, 2)).astype(np.float32)
    boxes = np.concatenate([corners, corners + rng.uniform(5, 60, (300, 2)).astype(np.float32)], axis=1)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    images = rng.integers(0, 3, 300)
    kept = reference._batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(images), 0.5).numpy()
    assert np.all(np.diff(scores[kept]) <= 0), "kept boxes by descending score, as torchvision returns them"
    for image in range(3):
        members = np.flatnonzero(images == image)
        expected = members[nms(boxes[members], scores[members], 0.5)]
        assert sorted(kept[images[kept] == image]) == sorted(expected)
    assert len(reference._batched_nms(torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.int64), 0.5)) == 0


def test_detect_profile_on_a_real_clip(real_clips, tmp_path, capsys):
    profile = _bench("detect_profile")
    out = tmp_path / "profile.json"
    assert profile.main([str(real_clips / "talking_d0.mp4"), "--frames", "6", "--repeat", "1",
                         "--variant", "full_every=1", "--variant", "min_face_size=400", "--json", str(out)]) == 0
    rows = {row["variant"]: row for row in json.loads(out.read_text())["rows"]}
    defaults, every_frame, too_big = rows["defaults"], rows["full_every=1"], rows["min_face_size=400"]
    assert defaults["faces"] == 6 and defaults["matched"] == 6 and defaults["max_corner_shift_px"] == 0.0
    assert every_frame["matched"] == 6 and every_frame["missed"] == 0   # one talking head: found either way
    assert too_big["faces"] == 0 and too_big["missed"] == 6             # the face is smaller than 400 px
    for row in rows.values():
        stages = row["stages"]
        assert all(v >= -0.05 for v in stages.values())
        assert sum(stages.values()) == pytest.approx(row["cpu_s"], abs=0.01)
    assert defaults["stages"]["pnet network"] > 0  # (a 400 px minimum face leaves PNet a pyramid too small to time)
    assert defaults["items"]["onet network"] >= 6 and "pnet network" in capsys.readouterr().out
