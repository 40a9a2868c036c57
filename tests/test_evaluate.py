import csv
import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from dfscan.evaluate import (
    ScoreItem,
    binary_metrics,
    equal_error_rate,
    evaluate_faceset,
    expected_calibration_error,
    metrics_for,
    render_table,
    video_items,
    write_scores_jsonl,
)
from dfscan.faceset import FaceRecord, FaceSetWriter

from bundles import make_tiny_bundle

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DFDC_FACES = SHARED / "datasets" / "dfdc_faces"


def test_perfect_ranking():
    m = binary_metrics([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], threshold=0.5)
    assert m["auc"] == 1.0 and m["ap"] == 1.0 and m["eer"] == 0.0
    assert m["accuracy"] == m["precision"] == m["recall"] == m["f1"] == 1.0
    assert (m["n"], m["n_real"], m["n_fake"]) == (4, 2, 2)
    assert 0.2 <= m["eer_threshold"] <= 0.8


def test_eer_known_case():
    # at threshold 0.6 one of four reals is flagged (FPR 1/4) and one of four fakes missed (FNR 1/4)
    y = [0, 0, 0, 0, 1, 1, 1, 1]
    s = [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9]
    eer, threshold = equal_error_rate(np.array(y), np.array(s))
    assert eer == pytest.approx(0.25)
    assert threshold == pytest.approx(0.6)
    # a fully inverted ranking
    eer, _ = equal_error_rate(np.array([0, 1]), np.array([0.7, 0.3]))
    assert eer == pytest.approx(1.0)
    # the rates cross between ROC points (FPR stays 1/3 while FNR drops 1 -> 0): interpolated
    eer, threshold = equal_error_rate(np.array([0, 0, 0, 1]), np.array([0.1, 0.2, 0.6, 0.5]))
    assert eer == pytest.approx(1 / 3)
    assert 0.5 <= threshold <= 0.6


def test_threshold_metrics_by_hand():
    y = [0, 0, 0, 1, 1, 1]
    s = [0.1, 0.6, 0.2, 0.7, 0.4, 0.9]
    m = binary_metrics(y, s, threshold=0.5)
    # predicted fake: 0.6 (real), 0.7, 0.9 -> TP 2, FP 1, FN 1, TN 2
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["auc"] == pytest.approx(8 / 9)  # 8 of 9 (fake, real) pairs ranked right


def test_logloss_brier_constant_half():
    m = binary_metrics([0, 1, 0, 1], [0.5] * 4)
    assert m["log_loss"] == pytest.approx(math.log(2))
    assert m["brier"] == pytest.approx(0.25)
    assert m["ece"] == pytest.approx(0.0)


def test_ece_perfectly_calibrated_and_not():
    y = np.array([1, 0, 0, 0] * 5 + [1, 1, 1, 0] * 5)
    s = np.array([0.25] * 20 + [0.75] * 20)
    assert expected_calibration_error(y, s) == pytest.approx(0.0)
    assert expected_calibration_error(np.array([0, 1] * 10), np.full(20, 0.9)) == pytest.approx(0.4)
    assert expected_calibration_error(np.array([1, 1]), np.array([1.0, 1.0])) == pytest.approx(0.0)


def test_one_class_does_not_crash():
    m = binary_metrics([1, 1, 1], [0.2, 0.7, 0.9], threshold=0.5)
    assert m["auc"] is None and m["eer"] is None and m["ap"] is None
    assert any("only fake" in n for n in m["notes"])
    assert m["recall"] == pytest.approx(2 / 3)
    json.dumps(m, allow_nan=False)
    m = binary_metrics([0, 0], [0.2, 0.7])
    assert m["auc"] is None and m["accuracy"] == 0.5
    empty = binary_metrics([], [])
    assert empty["n"] == 0 and empty["auc"] is None
    json.dumps(empty, allow_nan=False)


def test_video_items_use_rule():
    frames = [ScoreItem("a1", "fake", 0.2, video="a"), ScoreItem("a2", "fake", 0.9, video="a"),
              ScoreItem("b1", "real", 0.1, video="b"), ScoreItem("b2", "real", None, video="b")]
    by_id = {v.id: v for v in video_items(frames, "max", 5)}
    assert by_id["a"].score == pytest.approx(0.9) and by_id["a"].label == "fake"
    assert by_id["b"].score == pytest.approx(0.1)
    assert {v.id: v.score for v in video_items(frames, "mean", 5)}["a"] == pytest.approx(0.55)
    # with tracks: the rule per track, then the most suspicious track (as the scanner decides)
    tracked = [ScoreItem("1", "fake", s, video="v", track=t) for s, t in ((0.1, 0), (0.3, 0), (0.8, 1), (0.6, 1))]
    assert video_items(tracked, "mean", 5)[0].score == pytest.approx(0.7)


def _mini_face_set(dst: Path, per_label: int = 20) -> Path:
    """Copy `per_label` real and fake val crops of the shared DFDC faces into a small face set."""
    chosen: dict[str, list[dict[str, str]]] = {"real": [], "fake": []}
    with open(DFDC_FACES / "labels.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["split"] == "val" and len(chosen[row["label"]]) < per_label:
                chosen[row["label"]].append(row)
            if all(len(v) >= per_label for v in chosen.values()):
                break
    with FaceSetWriter(dst) as writer:
        rows = chosen["real"] + chosen["fake"]
        for row in rows:
            shutil.copyfile(DFDC_FACES / "images" / row["file"], dst / "images" / row["file"])
        writer.add_rows(FaceRecord(row["file"], row["label"], row["split"], row["source"], row["video"],
                                   int(row["width"]), int(row["height"])) for row in rows)
    return dst


@pytest.fixture(scope="module")
def tiny_scorer(tmp_path_factory):
    from dfscan.model.scorer import Scorer

    bundle = make_tiny_bundle(tmp_path_factory.mktemp("bundle"), input_size=32, aggregation="max",
                              operating_points={"balanced": 0.5, "strict": 0.9})
    return Scorer(bundle, device="cpu", threads=1)


@pytest.mark.skipif(not (DFDC_FACES / "labels.csv").is_file(), reason=f"shared DFDC faces not found at {DFDC_FACES}")
def test_evaluate_faceset_on_dfdc_crops(tmp_path, tiny_scorer):
    face_set = _mini_face_set(tmp_path / "faces")
    result = evaluate_faceset(tiny_scorer, face_set, split="val", threshold="strict")
    assert result.threshold == 0.9 and result.threshold_name == "strict"
    assert result.aggregation == "max"
    assert (result.frame["n"], result.frame["n_real"], result.frame["n_fake"]) == (40, 20, 20)
    assert result.video["n"] == 40  # one crop per DFDC video
    assert 0.0 <= result.frame["auc"] <= 1.0
    data = json.loads(result.to_json())
    assert data["frame"]["n"] == 40 and "items" not in data

    # the scores file is enough to recompute the metrics
    path = write_scores_jsonl(tmp_path / "scores.jsonl", result.items)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    frame_rows = [r for r in rows if r["level"] == "frame"]
    assert len(frame_rows) == 40 and {"id", "label", "score"} <= set(frame_rows[0])
    again = binary_metrics([int(r["label"] == "fake") for r in frame_rows], [r["score"] for r in frame_rows], 0.9)
    assert again["auc"] == pytest.approx(result.frame["auc"])

    with pytest.raises(ValueError):
        evaluate_faceset(tiny_scorer, face_set, split="test")


@pytest.mark.skipif(not (DFDC_FACES / "labels.csv").is_file(), reason=f"shared DFDC faces not found at {DFDC_FACES}")
def test_eval_command_on_face_set(tmp_path, tiny_scorer):
    import typer
    from typer.testing import CliRunner

    from dfscan.commands.data import eval_command

    face_set = _mini_face_set(tmp_path / "faces", per_label=5)
    app = typer.Typer()
    app.command()(eval_command)
    args = [str(face_set), "--model", str(tiny_scorer.bundle_dir), "--device", "cpu", "--json",
            "--scores", str(tmp_path / "s.jsonl"), "--threshold", "0.3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["frame"]["n"] == 10 and data["threshold"] == 0.3
    assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 20  # 10 crops + 10 videos
    table = CliRunner().invoke(app, [str(face_set), "--model", str(tiny_scorer.bundle_dir), "--device", "cpu"])
    assert table.exit_code == 0 and "auc" in table.output
    bad = CliRunner().invoke(app, [str(face_set), "--model", str(tiny_scorer.bundle_dir), "--threshold", "loose"])
    assert bad.exit_code == 2 and "loose" in bad.output


@pytest.mark.skipif(not (DFDC_FACES / "labels.csv").is_file(), reason=f"shared DFDC faces not found at {DFDC_FACES}")
def test_eval_never_writes_over_what_it_reads(tmp_path, tiny_scorer, face_video):
    """--overwrite replaces a file dfscan did not write, never an input: not the face set's labels.csv or an
    image in it, not a video a labels CSV names (each byte for byte as before); an earlier scores file inside
    the face set is replaced."""
    import typer
    from typer.testing import CliRunner

    from dfscan.commands.data import eval_command

    face_set = _mini_face_set(tmp_path / "faces", per_label=2)
    video = tmp_path / "clip.mp4"
    shutil.copyfile(face_video, video)
    videos_csv = tmp_path / "videos.csv"
    videos_csv.write_text(f"path,label\n{video},real\n")
    app = typer.Typer()
    app.command()(eval_command)
    image = next((face_set / "images").iterdir())
    for data, target in ((face_set, face_set / "labels.csv"), (face_set, image), (videos_csv, video)):
        before = target.read_bytes()
        result = CliRunner().invoke(app, [str(data), "--model", str(tiny_scorer.bundle_dir), "--device", "cpu",
                                          "--frames", "2", "--scores", str(target), "--overwrite"])
        assert result.exit_code == 2 and "input" in result.output, result.output
        assert target.read_bytes() == before
    earlier = face_set / "scores.jsonl"
    for _ in range(2):
        result = CliRunner().invoke(app, [str(face_set), "--model", str(tiny_scorer.bundle_dir), "--device", "cpu",
                                          "--scores", str(earlier), "--overwrite"])
        assert result.exit_code == 0, result.output
    assert len(earlier.read_text().splitlines()) == 8  # 4 crops + 4 videos


def test_evaluate_faceset_resizes_and_groups(tmp_path, tiny_scorer):
    # two videos, three 48x48 crops each (not the bundle's 32): scored after INTER_AREA resizing
    rng = np.random.default_rng(1)
    with FaceSetWriter(tmp_path) as writer:
        for video, label in (("v1.mp4", "real"), ("v2.mp4", "fake")):
            for frame in range(3):
                image = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
                writer.add(image, FaceRecord(f"{video}_{frame}.jpg", label, "val", video, video, 48, 48, frame))
    result = evaluate_faceset(tiny_scorer, tmp_path, split=None)
    assert result.frame["n"] == 6 and result.video["n"] == 2
    frames = [i for i in result.items if i.level == "frame" and i.video == "v2.mp4"]
    video = next(i for i in result.items if i.level == "video" and i.id == "v2.mp4")
    assert video.score == pytest.approx(max(i.score for i in frames))  # the bundle's rule is "max"


def test_render_table_and_metrics_for():
    from rich.console import Console

    from dfscan.evaluate import EvalResult

    items = [ScoreItem("a", "real", 0.1), ScoreItem("b", "fake", 0.8), ScoreItem("c", "fake", None, status="ERROR")]
    m = metrics_for(items, 0.5)
    assert m["n"] == 2
    result = EvalResult("x", "val", {}, 0.5, "manifest", "mean", 5, frame=m, video=m, unscored={"ERROR": 1})
    console = Console(record=True, width=120)
    console.print(render_table(result))
    text = console.export_text()
    assert "auc" in text and "unscored ERROR" in text and "x [val]" in text


@pytest.mark.slow
@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("dfscan.video", "dfscan.faces.mtcnn")),
                    reason="dfscan.video / dfscan.faces.mtcnn not in this checkout yet")
def test_evaluate_videos_counts_unscored(tmp_path, tiny_scorer):
    from dfscan.evaluate import evaluate_videos

    from test_extract import write_face_video

    for label in ("real", "fake"):
        (tmp_path / label).mkdir()
    write_face_video(tmp_path / "real" / "face.mp4", n_frames=8)
    write_face_video(tmp_path / "fake" / "face.mp4", n_frames=8)
    write_face_video(tmp_path / "fake" / "blank.mp4", n_frames=8, face=False)
    (tmp_path / "real" / "broken.mp4").write_bytes(b"not a video")
    result = evaluate_videos(tiny_scorer.bundle_dir, tmp_path, threshold="balanced", device="cpu", frames=6)
    assert result.unscored == {"NO_FACE": 1, "ERROR": 1}
    assert result.video["n"] == 2 and result.video["n_real"] == 1 and result.video["n_fake"] == 1
    assert result.frame["n"] >= 6
    assert result.threshold == 0.5 and result.threshold_name == "balanced"
    unscored = [i for i in result.items if i.level == "video" and i.score is None]
    assert sorted(i.status for i in unscored) == ["ERROR", "NO_FACE"]


def test_eval_of_videos_names_those_it_could_not_scan_and_exits_3(tmp_path, tiny_scorer, face_video):
    """Found by a probe: a labels CSV naming a zero-byte video measured the rest and exited 0, the failure only
    a count in the table. The video is named with its reason and the exit is 3, as for `scan`."""
    import typer
    from typer.testing import CliRunner

    from dfscan.commands.data import eval_command

    shutil.copyfile(face_video, tmp_path / "good.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    videos_csv = tmp_path / "videos.csv"
    videos_csv.write_text("path,label\ngood.mp4,real\nempty.mp4,fake\n")
    app = typer.Typer()
    app.command()(eval_command)
    result = CliRunner().invoke(app, [str(videos_csv), "--model", str(tiny_scorer.bundle_dir), "--device", "cpu",
                                      "--frames", "2", "--json"])
    assert result.exit_code == 3, result.output
    assert "failed: empty.mp4: " in result.output and "empty file" in result.output
