"""The whole loop through the command line, as a researcher runs it: extract an FF++-layout dataset,
train on it, export a bundle, evaluate it, and scan a video with it. Tiny sizes, CPU, one epoch."""
from __future__ import annotations

import json
import shutil

import pytest
from conftest import DFDC_FACES, face_frame
from typer.testing import CliRunner
from videos import write_video

from dfscan.cli import app

pytest.importorskip("torch")
runner = CliRunner()
TINY = ["--input-size", "64", "--epochs", "1", "--batch-size", "8", "--device", "cpu"]


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code in (0, 1), f"{args[:2]} exited {result.exit_code}: {result.output[-2000:]}"
    return result


def _ffpp_tree(root, face_video):
    """FaceForensics++'s layout at c40: 4 real sources, 4 'manipulated' videos, official split files."""
    ids = ["000", "001", "002", "003"]
    for vid in ids:
        dst = root / "original_sequences/youtube/c40/videos" / f"{vid}.mp4"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(face_video, dst)
    for target, source in (("000", "001"), ("001", "000"), ("002", "003"), ("003", "002")):
        dst = root / "manipulated_sequences/Deepfakes/c40/videos" / f"{target}_{source}.mp4"
        dst.parent.mkdir(parents=True, exist_ok=True)
        write_video(dst, n_frames=12, size=(320, 240), fps=6, frame_fn=lambda i: face_frame(i)[:, ::-1].copy())
    (root / "splits").mkdir()
    (root / "splits/train.json").write_text(json.dumps([["000", "001"]]))
    (root / "splits/val.json").write_text(json.dumps([["002", "003"]]))
    (root / "splits/test.json").write_text("[]")
    return root


@pytest.mark.slow
def test_extract_ffpp_then_train_triplet_on_it(tmp_path, face_video):
    root = _ffpp_tree(tmp_path / "FaceForensics++", face_video)
    invoke("extract", "ff++", root, "--compression", "c40", "--frames", "6", "--size", "96", "--device", "cpu")
    faces = root / "dfscan_faces" / "ff++_c40"
    rows = (faces / "labels.csv").read_text().splitlines()
    assert len(rows) - 1 == 8 * 6  # 8 videos x 6 frames, one face each
    run = tmp_path / "run"
    invoke("train", "triplet", "--dataset", "ff++", "--data-root", root, "--compression", "c40",
           "--classifier", "sgd", "--out", run, *TINY)
    assert (run / "best.pt").is_file()


@pytest.mark.slow
def test_train_export_eval_and_scan(tmp_path, face_video):
    if not (DFDC_FACES / "labels.csv").is_file():
        pytest.skip(f"DFDC face crops not found at {DFDC_FACES}")
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    invoke("train", "multimetric", "--dataset", f"faces:{DFDC_FACES}", "--limit", "48", "--val-limit", "32",
           "--out", run, *TINY)
    invoke("export", run / "best.pt", "--out", bundle, "--name", "e2e")
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["preprocess"]["input_size"] == 64 and set(manifest["operating_points"]) >= {"balanced", "low-fpr"}
    scores = tmp_path / "scores.jsonl"
    evaluated = invoke("eval", DFDC_FACES, "--model", bundle, "--split", "val", "--json", "--scores", scores)
    metrics = json.loads(evaluated.stdout)
    assert metrics["frame"]["n"] == 3094 and 0.0 <= metrics["frame"]["auc"] <= 1.0
    assert len(scores.read_text().splitlines()) >= 3094
    checked = invoke("check", face_video, "--model", bundle, "--json", "--threshold", "low-fpr")
    result = json.loads(checked.stdout)
    assert result["model"]["name"] == "e2e" and result["threshold_name"] == "low-fpr"
    assert result["label"] in ("FAKE", "REAL") and result["settings"]["crop"]["size"] == 64
