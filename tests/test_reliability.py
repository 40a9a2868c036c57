"""Issue 10 probes, replayed: nothing lost, no traceback. Bad options and bundles stop before anything is
written; outputs never overwrite inputs or unrelated files; any file name is written losslessly; a crash
is exit 5, a dead worker one ERROR row; resume and the report index survive any spelling of the root."""
from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dfscan.cli import app
from dfscan.results import csv_cell, csv_uncell, escape_text, unescape_text
from dfscan.settings import ScanSettings

runner = CliRunner()
BAD_NAME = os.fsdecode(b"clip_\xff\xfe.mp4")  # not valid UTF-8


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture()
def batch(tmp_path, face_video, blank_video) -> Path:
    """A folder of 4 inputs: a face video, a blank one, one with a non-UTF-8 name, and a broken file."""
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(face_video, videos / "a.mp4")
    shutil.copy(blank_video, videos / "b.mp4")
    shutil.copy(face_video, videos / BAD_NAME)
    (videos / "=HYPERLINK(x).mp4").write_text("not a video")
    return videos


def _csv_paths(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [csv_uncell(row["path"]) for row in csv.DictReader(fh)]


# --- 1. settings: one line, exit 2 or 4, nothing written ------------------------------------------------

@pytest.mark.parametrize("option", [["--threshold", "bogus"], ["--threshold", "2"], ["--threshold", "-1"],
                                    ["--threshold", "nan"], ["--threshold", "inf"], ["--aggregation", "bogus"],
                                    ["--min-face", "0"], ["--frames", "0"], ["--fps", "nan"],
                                    ["--min-track-faces", "0"], ["--detect-side", "0"]])
def test_bad_option_exits_2_before_writing(batch, bundles, tmp_path, option):
    keep = tmp_path / "keep.csv"
    keep.write_text("path,label,score\nearlier.mp4,REAL,0.1\n")
    before = keep.read_bytes()
    result = invoke("scan", batch, "--csv", keep, "--jsonl", tmp_path / "new.jsonl", "--workers", "2",
                    "--model", bundles["neutral"], *option)
    assert result.exit_code == 2, result.output
    assert result.output.count("error:") == 1 and "Traceback" not in result.output
    assert keep.read_bytes() == before and not (tmp_path / "new.jsonl").exists()


def _bundle_with(tmp_path: Path, bundles, edit) -> Path:
    bundle = tmp_path / "edited"
    shutil.copytree(bundles["neutral"], bundle)
    data = json.loads((bundle / "manifest.json").read_text())
    edit(data)
    (bundle / "manifest.json").write_text(json.dumps(data))
    return bundle


MANIFEST_PROBES = {
    "temperature -1": lambda m: m.update(calibration={"method": "temperature", "temperature": -1}),
    "temperature 0": lambda m: m.update(calibration={"method": "temperature", "temperature": 0}),
    "balanced 5": lambda m: m["operating_points"].update(balanced=5),
    "top_k 0": lambda m: m["scan"].update(top_k=0),
    "threshold abc": lambda m: m["scan"].update(threshold="abc"),
    "frames 0": lambda m: m["scan"].update(frames=0),
    "aggregation bogus": lambda m: m["scan"].update(aggregation="bogus"),
    "isotonic unsorted": lambda m: m.update(calibration={"method": "isotonic", "x": [1, 0], "y": [0, 1]}),
    "files not an object": lambda m: m.update(files=[1, 2]),
}


@pytest.mark.parametrize("probe", sorted(MANIFEST_PROBES))
def test_bad_bundle_exits_4_before_writing(batch, bundles, tmp_path, probe):
    bundle = _bundle_with(tmp_path, bundles, MANIFEST_PROBES[probe])
    out = tmp_path / "out.csv"
    result = invoke("scan", batch, "--csv", out, "--model", bundle)
    assert result.exit_code == 4, result.output
    assert result.output.count("error:") == 1 and "Traceback" not in result.output
    assert not out.exists()
    assert invoke("check", batch / "a.mp4", "--model", bundle).exit_code == 4


def test_check_bad_option_and_bundle(face_video, bundles, tmp_path):
    report = tmp_path / "r.html"
    assert invoke("check", face_video, "--model", bundles["neutral"], "--threshold", "bogus",
                  "--report", report).exit_code == 2
    assert not report.exists()


# --- 2. outputs never destroy anything ------------------------------------------------------------------

def test_output_that_is_an_input_is_refused(batch, bundles, tmp_path):
    video = batch / "a.mp4"
    before = video.read_bytes()
    for args in (["scan", batch, "--csv", video], ["scan", batch, "--jsonl", video, "--overwrite"],
                 ["check", video, "--report", video], ["check", video, "--json-file", video, "--overwrite"]):
        result = invoke(*args, "--model", bundles["neutral"])
        assert result.exit_code == 2 and "one of the inputs" in result.output, args
    assert video.read_bytes() == before


def test_one_path_for_two_outputs_is_refused(batch, bundles, tmp_path):
    same = tmp_path / "x.out"
    result = invoke("scan", batch, "--csv", same, "--jsonl", same, "--model", bundles["neutral"])
    assert result.exit_code == 2 and "both name" in result.output and not same.exists()


def test_unrelated_existing_file_needs_overwrite(batch, bundles, tmp_path):
    notes = tmp_path / "notes.csv"
    notes.write_text("my,own\nnotes,here\n")
    refused = invoke("scan", batch, "--csv", notes, "--model", bundles["neutral"])
    assert refused.exit_code == 2 and "--overwrite" in refused.output
    assert notes.read_text() == "my,own\nnotes,here\n"
    report = tmp_path / "page.html"
    report.write_text("<html>someone else's page</html>")
    assert invoke("check", batch / "a.mp4", "--report", report, "--model", bundles["neutral"]).exit_code == 2
    assert invoke("scan", batch, "--csv", notes, "--model", bundles["neutral"], "--overwrite").exit_code == 3
    assert _csv_paths(notes)  # replaced by a dfscan CSV
    # earlier results are never dropped unasked: --resume adds to them, --overwrite replaces them
    again = invoke("scan", batch, "--csv", notes, "--model", bundles["neutral"])
    assert again.exit_code == 2 and "--resume" in again.output and len(_csv_paths(notes)) == 4
    resumed = invoke("scan", batch, "--csv", notes, "--model", bundles["neutral"], "--resume")
    assert resumed.exit_code == 3 and "4 of 4 videos already done (1 ERROR, 1 NO_FACE, 2 REAL)" in resumed.output
    assert invoke("scan", batch, "--csv", notes, "--model", bundles["neutral"], "--overwrite").exit_code == 3
    header_only = tmp_path / "header.csv"
    header_only.write_text(notes.read_text().splitlines()[0] + "\n")  # an earlier output without a row
    assert invoke("scan", batch, "--csv", header_only, "--model", bundles["neutral"]).exit_code == 3


def test_a_second_scan_never_wipes_an_earlier_report_and_overwrite_replaces_links_not_their_files(
        batch, bundles, tmp_path):
    """Found by a probe: `scan B --report DIR` after `scan A --report DIR` dropped A's rows from the index and wrote
    over its pages, unasked; `--overwrite` on a --csv or --jsonl that is a link wrote through it, over a video."""
    report = tmp_path / "report"
    first = invoke("scan", batch, "--include", "a.mp4", "--report", report, "--model", bundles["neutral"])
    assert first.exit_code == 0, first.output
    index, pages = (report / "index.jsonl").read_text(), sorted((report / "videos").iterdir())
    again = invoke("scan", batch, "--include", "b.mp4", "--report", report, "--model", bundles["neutral"])
    assert again.exit_code == 2 and "holds the report of an earlier scan" in again.output
    assert (report / "index.jsonl").read_text() == index and sorted((report / "videos").iterdir()) == pages
    replaced = invoke("scan", batch, "--include", "b.mp4", "--report", report, "--overwrite",
                      "--model", bundles["neutral"])
    assert replaced.exit_code == 0, replaced.output
    assert "b.mp4" in (report / "index.jsonl").read_text() and "a.mp4" not in (report / "index.jsonl").read_text()
    assert [p.name for p in (report / "videos").iterdir()] == ["00000_b.html"]  # no page of the old report left
    link = tmp_path / "report_link"  # --overwrite of a link to a report replaces the link, not the report it names
    link.symlink_to(report)
    assert invoke("scan", batch, "--include", "a.mp4", "--report", link, "--overwrite", "--model",
                  bundles["neutral"]).exit_code == 0
    assert not link.is_symlink() and [p.name for p in (report / "videos").iterdir()] == ["00000_b.html"]
    video = batch / "a.mp4"
    before = video.read_bytes()
    for option, name in (("--csv", "link.csv"), ("--jsonl", "link.jsonl")):
        link = tmp_path / name
        link.symlink_to(video)
        result = invoke("scan", batch, "--include", "b.mp4", option, link, "--overwrite", "--model",
                        bundles["neutral"])
        assert result.exit_code == 0, result.output
        assert not link.is_symlink() and link.stat().st_size > 0 and video.read_bytes() == before


def test_a_name_too_long_or_a_link_loop_is_one_line_not_an_internal_error(batch, bundles, tmp_path):
    """Found by a probe: a path with a 300-character name (an input, an output, a bundle) and a link loop as the
    report folder were internal errors (exit 5). Each is one line naming the path."""
    long = tmp_path / ("a" * 300)
    for args, code in ((["scan", batch, "--csv", f"{long}.csv"], 4), (["scan", long], 2),
                       (["check", batch / "a.mp4", "--model", long], 4), (["info", "--model", long], 4),
                       (["check", f"{long}.mp4"], 3)):
        result = invoke(*args, *([] if args[0] == "info" else ["--frames", "4"]))
        assert result.exit_code == code and "File name too long" in result.output, (args[0], result.output)
        assert "internal error" not in result.output and "OSError" not in result.output
    (tmp_path / "l1").symlink_to(tmp_path / "l2")
    (tmp_path / "l2").symlink_to(tmp_path / "l1")
    for args in (["scan", batch, "--report", tmp_path / "l1"], ["check", batch / "a.mp4", "--report",
                                                                 tmp_path / "l1" / "x.html"]):
        result = invoke(*args, "--model", bundles["neutral"])
        assert result.exit_code == 2 and f"{tmp_path / 'l1'} is not a directory" in result.output, result.output


def test_a_resumed_batch_ends_with_the_exit_code_of_the_whole_batch(face_video, bundles, tmp_path):
    """Found by a probe: resuming a CSV that held a FAKE row, with nothing left to scan, exited 0; and a resumed
    run at another threshold mixed two thresholds in one CSV without a word."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(face_video, videos / name)
    rows = tmp_path / "rows.csv"
    first = invoke("scan", videos, "--include", "a.mp4", "--csv", rows, "--model", bundles["all_fake"],
                   "--threshold", "0.01")
    assert first.exit_code == 1
    for left in (1, 0):  # b.mp4 is REAL; then nothing is left to scan: a FAKE row stays a FAKE batch
        resumed = invoke("scan", videos, "--csv", rows, "--resume", "--model", bundles["all_real"])
        assert resumed.exit_code == 1 and "already done (1 FAKE" in resumed.output, resumed.output
        # and the rows of one batch judged at two thresholds are pointed out while there is something to scan
        assert ("earlier rows were judged at threshold 0.01" in " ".join(resumed.output.split())) == bool(left)
    assert sorted(_csv_paths(rows)) == [str(videos / "a.mp4"), str(videos / "b.mp4")]


def test_unwritable_destination_is_named_before_scanning(batch, bundles, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    result = invoke("scan", batch, "--csv", blocker / "out.csv", "--model", bundles["neutral"])
    assert result.exit_code == 2 and f"cannot write {blocker / 'out.csv'}" in result.output
    assert "REAL" not in result.output  # nothing was scanned


def test_whole_file_outputs_are_replaced_atomically(face_video, bundles, tmp_path):
    report, data = tmp_path / "r.html", tmp_path / "r.json"
    assert invoke("check", face_video, "--model", bundles["neutral"], "--report", report,
                  "--json-file", data).exit_code in (0, 1)
    assert json.loads(data.read_text())["path"] == str(face_video)
    assert 'name="generator" content="dfscan"' in report.read_text()
    assert invoke("check", face_video, "--model", bundles["neutral"], "--report", report).exit_code in (0, 1)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


# --- 3. any file name, losslessly; no spreadsheet formulas ----------------------------------------------

def test_non_utf8_names_get_one_row_each_everywhere(batch, bundles, tmp_path):
    out_csv, out_jsonl, report = tmp_path / "r.csv", tmp_path / "r.jsonl", tmp_path / "report"
    result = invoke("scan", batch, "--csv", out_csv, "--jsonl", out_jsonl, "--report", report,
                    "--model", bundles["neutral"])
    assert result.exit_code == 3, result.output  # the broken file is an ERROR row
    expected = sorted(str(p) for p in batch.iterdir())
    assert sorted(_csv_paths(out_csv)) == expected
    jsonl = [json.loads(line) for line in out_jsonl.read_text(encoding="utf-8").splitlines()]
    assert sorted(unescape_text(r["path"]) for r in jsonl) == expected
    index = (report / "index.html").read_text(encoding="utf-8")
    assert escape_text(str(batch / BAD_NAME)) in index and index.count("<tr>") == 5
    for row in csv.DictReader(open(out_csv, newline="", encoding="utf-8")):
        assert not row["path"].startswith(("=", "+", "-", "@")) and not row["reason"].startswith(("=", "@"))
    check = invoke("check", batch / BAD_NAME, "--model", bundles["neutral"], "--report", tmp_path / "one.html")
    assert check.exit_code in (0, 1) and "\\xff\\xfe" in (tmp_path / "one.html").read_text(encoding="utf-8")


def test_formula_cells_are_neutralised():
    row = {"path": "=cmd|' /C calc'!A0", "reason": "@SUM(1)", "other": "+1", "dash": "-2"}
    cells = {k: csv_cell(v) for k, v in row.items()}
    assert all(c.startswith("'") for c in cells.values())
    assert {k: csv_uncell(v) for k, v in cells.items()} == row


# --- 4. a crash is never FAKE; a dead worker is one row ---------------------------------------------------

def test_unexpected_error_exits_5_with_one_line(face_video, bundles, monkeypatch):
    import dfscan.outputs

    def boom(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(dfscan.outputs, "check_outputs", boom)
    result = invoke("check", face_video, "--model", bundles["neutral"])
    assert result.exit_code == 5
    assert result.output.count("error:") == 1 and "simulated bug" in result.output
    where = result.output.split("traceback in ")[1].split(" ")[0]
    assert "RuntimeError: simulated bug" in Path(where).read_text()
    os.unlink(where)
    debug = invoke("--debug", "check", face_video, "--model", bundles["neutral"])
    assert debug.exit_code == 5 and "Traceback" in debug.output


def test_killed_worker_is_one_error_row_and_the_batch_goes_on(tmp_path, blank_video, bundles):
    from videos import write_video

    from dfscan.scan import WORKER_NAME, iter_scan

    slow = str(write_video(tmp_path / "slow.mp4", n_frames=48, size=(1280, 720), fps=12))
    quick = [str(shutil.copy(blank_video, tmp_path / f"q{i}.mp4")) for i in range(5)]
    paths = [slow, *quick]  # the first worker gets the slow video and is still on it when a quick one ends
    results = []
    for result in iter_scan(paths, model=bundles["neutral"], workers=2, settings=ScanSettings(frames=24)):
        if not results:
            first = min((p for p in multiprocessing.active_children() if p.name.startswith(WORKER_NAME)),
                        key=lambda p: int(p.name.rsplit("-", 1)[1]))
            os.kill(first.pid, signal.SIGKILL)
        results.append(result)
    assert sorted(r.path for r in results) == sorted(paths)  # every input exactly one row
    crashed = [r for r in results if r.error_code == "worker_crash"]
    assert [r.path for r in crashed] == [slow] and "SIGKILL" in crashed[0].reason and crashed[0].model
    assert all(r.label != "ERROR" for r in results if r not in crashed)


# --- 7. truncated input is flagged ----------------------------------------------------------------------

def test_truncated_file_says_so_in_json_csv_and_report(tmp_path, bundles):
    from videos import write_truncated

    from dfscan.report.html import render_video_report
    from dfscan.scan import scan_video

    path = write_truncated(tmp_path / "cut.mp4", keep_fraction=0.5, n_frames=100)
    result = scan_video(path, model=bundles["neutral"])
    video = result.to_dict()["video"]
    assert video["truncated"] is True and video["declared_duration_s"] > video["duration_s"] > 0
    assert result.csv_row()["truncated"] == "yes" and "truncated" in result.reason
    assert "truncated</th><td>yes" in render_video_report(result)


# --- 8. resume keyed on the resolved path; the index lists every video ----------------------------------

def test_resume_with_another_spelling_and_the_report_index(batch, bundles, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out, report = Path("r.csv"), Path("report")
    first = invoke("scan", "videos", "--csv", out, "--report", report, "--model", bundles["neutral"],
                   "--include", "a.mp4")
    assert first.exit_code == 0, first.output
    again = invoke("scan", tmp_path / "videos", "--csv", tmp_path / out, "--report", report, "--resume",
                   "--model", bundles["neutral"])
    assert again.exit_code == 3 and "1 of 4 videos already done" in again.output
    keys = [os.path.realpath(p) for p in _csv_paths(out)]
    assert sorted(keys) == sorted(os.path.realpath(p) for p in batch.iterdir())  # no duplicates, none missing
    assert (report / "index.html").read_text(encoding="utf-8").count("<tr>") == 5
    third = invoke("scan", "videos", "--csv", out, "--report", report, "--resume", "--model", bundles["neutral"])
    assert third.exit_code == 3 and len(_csv_paths(out)) == 4  # the batch's broken file is still its ERROR row


# --- 9. labels files confined to their folder -----------------------------------------------------------

def test_labels_files_may_not_name_files_outside_their_folder(tmp_path):
    from dfscan.faceset import FaceSet
    from dfscan.datasets import read_csv

    (tmp_path / "set").mkdir()
    for name in ("../../etc/x.mp4", "/etc/x.mp4", "sub/../../x.mp4"):
        labels = tmp_path / "set" / "list.csv"
        labels.write_text(f"path,label\n{name},fake\n")
        with pytest.raises(ValueError, match="outside"):
            read_csv(labels)
        faces = tmp_path / "set" / "labels.csv"
        faces.write_text(f"file,label,split,source,video,width,height\n{name},fake,val,s,v,1,1\n")
        with pytest.raises(ValueError, match="outside"):
            FaceSet.load(tmp_path / "set")
    labels.write_text("path,label\nsub/ok.mp4,real\n")
    assert read_csv(labels)[0].path == tmp_path / "set" / "sub" / "ok.mp4"


def test_eval_with_labels_outside_is_one_line_exit_2(tmp_path, bundles):
    labels = tmp_path / "list.csv"
    labels.write_text("path,label\n../outside.mp4,fake\n")
    result = invoke("eval", labels, "--model", bundles["neutral"])
    assert result.exit_code == 2 and "outside" in result.output and "Traceback" not in result.output


# --- 11. one face pipeline: the crops the model is shown are the crops extract writes --------------------

def test_scanner_and_extract_cut_the_same_pixels(real_clips):
    import numpy as np

    from dfscan.scan import Scanner
    from dfscan.train.extract import FaceExtractor

    clip = real_clips / "talking_d0.mp4"
    scanner = Scanner(device="cpu")
    fed: list[np.ndarray] = []
    score = scanner.scorer.score_crops
    scanner.scorer.score_crops = lambda crops: (fed.append(crops.copy()), score(crops))[1]
    # 20 frames: the scanner detects them in chunks as they decode (9 + 8 + 3 frames, each seeded from the one
    # before), extract in one call: the same faces and pixels either way.
    result = scanner.scan(clip, ScanSettings(frames=20))
    assert result.label in ("REAL", "FAKE") and len(fed) == 3
    model_input = np.concatenate(fed)
    extractor = FaceExtractor(size=scanner.scorer.input_size, margin=scanner.scorer.crop_margin, frames=20,
                              max_faces_per_frame=scanner.detector_settings.max_faces_per_frame)
    written = extractor.crops(clip)
    scanned_frames = [o.frame_index for t in result.tracks for o in t.observations]
    assert [frame for _, frame, _, _ in written] == sorted(scanned_frames)
    assert len(written) == len(model_input) >= 15
    for (crop, *_), shown in zip(written, model_input):
        assert crop.dtype == shown.dtype and np.array_equal(crop, shown)


# --- 10. metrics in numpy, equal to scikit-learn's; eval needs no scikit-learn ---------------------------

def test_numpy_metrics_match_sklearn():
    import numpy as np
    skm = pytest.importorskip("sklearn.metrics")

    from dfscan import metrics

    rng = np.random.default_rng(0)
    for n in (2, 7, 50, 400):
        y = rng.integers(0, 2, n)
        y[:2] = [0, 1]
        p = np.round(rng.random(n), 2)  # ties on purpose
        fpr, tpr, thr = metrics.roc_curve(y, p)
        sk_fpr, sk_tpr, sk_thr = skm.roc_curve(y, p)
        assert np.allclose(fpr, sk_fpr) and np.allclose(tpr, sk_tpr) and np.allclose(thr[1:], sk_thr[1:])
        assert metrics.roc_auc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
        assert metrics.average_precision(y, p) == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)
        assert metrics.log_loss(y, p) == pytest.approx(skm.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7)), abs=1e-9)
        assert metrics.brier(y, p) == pytest.approx(skm.brier_score_loss(y, p), abs=1e-12)
        got = metrics.threshold_metrics(y, p, 0.5)
        assert got["f1"] == pytest.approx(skm.f1_score(y, p >= 0.5, zero_division=0))


def test_eval_metrics_run_without_sklearn():
    import subprocess
    import sys

    code = ("import sys; sys.modules['sklearn'] = None\n"
            "from dfscan.evaluate import binary_metrics\n"
            "m = binary_metrics([0, 1, 0, 1], [0.1, 0.9, 0.4, 0.35])\n"
            "assert m['auc'] == 0.75 and m['eer'] is not None, m\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


# --- 6. upright video: the display matrix is applied before detection -----------------------------------

@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotated_real_clip_is_scanned_upright(real_clips, tmp_path, bundles, rotation):
    import numpy as np
    from videos import write_rotated_copy

    from dfscan.scan import scan_video
    from dfscan.video import sample_frames

    clip = real_clips / "talking_d0.mp4"
    upright = write_rotated_copy(clip, tmp_path / "upright.mp4", 0, crop_x=(64, 448))
    turned = write_rotated_copy(clip, tmp_path / f"r{rotation}.mp4", rotation, crop_x=(64, 448))
    info, frames = sample_frames(turned, n=4)
    _, reference = sample_frames(upright, n=4)
    assert info.rotation == rotation and (info.width, info.height) == (384, 512)
    for got, want in zip(frames, reference):
        assert got.image.shape == want.image.shape
        assert np.abs(got.image.astype(int) - want.image.astype(int)).mean() < 5  # codec noise only
    result = scan_video(turned, model=bundles["neutral"], frames=8)
    assert result.video["rotation"] == rotation
    assert sum(1 for f in result.frames if f["n_faces"]) == 8  # a face in every sampled frame


def test_parser_errors_stay_usage_errors(face_video):
    for args in (["check", face_video, "-q"], ["scan", "--bogus"], ["train", "nosuchrecipe"]):
        result = invoke(*args)
        assert result.exit_code == 2 and "internal error" not in result.output, args


# --- 5. bounded memory: frames stream through in chunks; past the budget the row is too_large ------------

def test_every_frame_streams_and_the_budget_is_an_error_row(face_video, bundles):
    from dfscan.errors import ResourceLimitError
    from dfscan.video import RESTART, stream_frames

    with stream_frames(face_video, n=None) as stream:
        seen = [f.index for f in stream if f is not RESTART]
    assert seen == list(range(40))
    with pytest.raises(ResourceLimitError, match="over the limit"):
        with stream_frames(face_video, n=None, max_frames=10, strict=True) as stream:
            list(stream)
    import dfscan.scan

    original = dfscan.scan.MAX_FRAMES
    dfscan.scan.MAX_FRAMES = 10
    try:
        result = dfscan.scan.scan_video(face_video, model=bundles["neutral"], all_frames=True)
    finally:
        dfscan.scan.MAX_FRAMES = original
    assert result.label == "ERROR" and result.error_code == "too_large"


# --- session 9's probe: outputs of every command, odd destinations, damaged lists and bundles ------------------


def test_outputs_that_are_not_regular_files_or_are_inputs_are_refused(batch, bundles, tmp_path):
    """A pipe (or a device: /dev/null as root became a regular file) is never replaced or read to its end; a
    list of paths is an input even with --overwrite; eval's --scores/--report and robustness's --keep follow the
    same rules as scan's outputs. Each is exit 2 before anything is scanned, the file left as it was."""
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for args in (["check", batch / "a.mp4", "--json-file", fifo], ["scan", batch, "--csv", fifo]):
        refused = invoke(*args, "--model", bundles["neutral"])
        assert refused.exit_code == 2 and "not a regular file" in refused.output
    assert fifo.is_fifo()
    listing = tmp_path / "list.txt"
    listing.write_text(f"{batch / 'a.mp4'}\n")
    refused = invoke("scan", listing, "--csv", listing, "--overwrite", "--model", bundles["neutral"])
    assert refused.exit_code == 2 and "one of the inputs" in refused.output
    assert listing.read_text() == f"{batch / 'a.mp4'}\n"
    labelled = tmp_path / "labelled"
    labelled.mkdir()
    shutil.copy(batch / "a.mp4", labelled / "a.mp4")
    labels = labelled / "labels.csv"
    labels.write_text("path,label\na.mp4,real\n")
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    for args in (["--scores", notes], ["--scores", labels], ["--scores", labelled / "a.mp4"]):
        assert invoke("eval", labels, *args, "--model", bundles["neutral"], "--frames", "4").exit_code == 2
    fresh = invoke("eval", labels, "--scores", tmp_path / "scores.jsonl", "--model", bundles["neutral"],
                   "--frames", "4")
    assert fresh.exit_code == 0, fresh.output  # the same command with a new path runs
    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "index.html").write_text("someone else's page")
    assert invoke("eval", labels, "--report", pages, "--model", bundles["neutral"], "--frames", "4").exit_code == 2
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "00000_a_crf23.mp4").write_text("precious")
    refused = invoke("robustness", batch / "a.mp4", "-d", "crf23", "--keep", keep, "--model", bundles["neutral"])
    assert refused.exit_code == 2 and "not empty" in refused.output
    assert (notes.read_text(), (pages / "index.html").read_text(), (keep / "00000_a_crf23.mp4").read_text()) == (
        "mine", "someone else's page", "precious")
    assert labels.read_text() == "path,label\na.mp4,real\n" and (labelled / "a.mp4").stat().st_size > 1000


def test_a_full_disk_is_one_line_naming_what_could_not_be_written(face_video, bundles):
    """`dfscan check ... > /dev/full`: the result did not arrive, and the error says so (exit 4), where it was
    exit 5 and "a bug in dfscan"."""
    import subprocess
    import sys

    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full")
    for extra in ([], ["--json"]):
        with open("/dev/full", "w") as full:
            done = subprocess.run([sys.executable, "-m", "dfscan", "check", str(face_video), "--model",
                                   str(bundles["neutral"]), *extra], stdout=full, stderr=subprocess.PIPE,
                                  text=True, timeout=300)
        assert done.returncode == 4, done.stderr
        assert done.stderr.strip().count("\n") == 0 and "No space left on device" in done.stderr


@pytest.mark.parametrize("change", [{"ensemble": [1]}, {"ensemble": "x"},
                                    {"ensemble": {"combination": "mean", "members": [1, 2]}}, "sha256"])
def test_malformed_ensemble_or_hash_in_a_manifest_is_a_bundle_error(bundles, tmp_path, change):
    bundle = tmp_path / "bundle"
    shutil.copytree(bundles["neutral"], bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    if change == "sha256":
        manifest["files"]["embedder"]["sha256"] = 123
    else:
        manifest.update(change)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = invoke("info", "--model", bundle)
    assert result.exit_code == 4 and "internal error" not in result.output


@pytest.mark.parametrize("change, expected", [
    (lambda m: m.pop("files"), "malformed manifest: it lacks files"),
    (lambda m: m.update(colour="red"), "malformed manifest: it has unknown entries colour"),
    (lambda m: m["scan"].pop("threshold"), "malformed manifest: its scan section lacks threshold"),
    (lambda m: m.update(preprocess=[224]), "malformed manifest: its preprocess section is not a JSON object"),
    (lambda m: m.update(name={"a": 1}), "malformed manifest: its name is not a text"),
    (lambda m: m.update(embedding_dim="HUGE"), "manifest.json: Exceeds the limit"),  # an int past 4,300 digits
])
def test_a_manifest_missing_an_entry_says_which_in_its_words(bundles, tmp_path, change, expected):
    """Found by a probe: "Manifest.__init__() missing 1 required positional argument: 'files'"."""
    bundle = tmp_path / "bundle"
    shutil.copytree(bundles["neutral"], bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest).replace('"HUGE"', "9" * 5000))
    result = invoke("info", "--model", bundle)
    assert result.exit_code == 4 and expected in result.output, result.output


def test_a_list_line_with_a_nul_byte_is_its_error_row(batch, bundles, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_bytes(f"{batch / 'a.mp4'}\n".encode() + b"junk\0name.mp4\n" + b"\xff\xfe.mp4\n")
    out = tmp_path / "rows.csv"
    result = invoke("scan", listing, "--csv", out, "--model", bundles["neutral"], "--frames", "4")
    assert result.exit_code == 3, result.output
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 and [r["label"] for r in rows].count("ERROR") == 2
    assert any("NUL byte" in r["reason"] for r in rows)


def test_a_video_listed_twice_is_scanned_once_and_absurd_counts_are_refused(batch, bundles, tmp_path):
    listing = tmp_path / "list.txt"
    video = batch / "a.mp4"
    listing.write_text(f"{video}\n{video}\n{batch}/../{batch.name}/a.mp4\n")
    out = tmp_path / "rows.csv"
    result = invoke("scan", listing, "--csv", out, "--model", bundles["all_fake"], "--frames", "4")
    assert result.exit_code == 1 and _csv_paths(out) == [str(video)]
    assert "│    1 │" in result.output  # the summary counts the one video, as the CSV does
    assert invoke("scan", listing, "--workers", "100000").exit_code == 2
    assert invoke("extract", "folder", batch, "--limit", "0", "--out", tmp_path / "faces").exit_code == 2
    split = ["--train", "0.9", "--val", "0.9"]
    assert invoke("extract", "folder", batch, *split, "--out", tmp_path / "faces").exit_code == 2
    assert not (tmp_path / "faces").exists()


def test_links_to_nowhere_and_videos_given_as_labels_say_what_they_are(tmp_path, face_video, bundles):
    (tmp_path / "one").symlink_to(tmp_path / "two")
    (tmp_path / "two").symlink_to(tmp_path / "one")
    (tmp_path / "dangling.mp4").symlink_to(tmp_path / "gone.mp4")
    looped = invoke("check", tmp_path / "one", "--model", bundles["neutral"])
    assert looped.exit_code == 3 and "symbolic link loop" in looped.output
    dangling = invoke("check", tmp_path / "dangling.mp4", "--model", bundles["neutral"])
    assert dangling.exit_code == 3 and "a link to a missing file" in dangling.output
    as_labels = invoke("eval", face_video, "--model", bundles["neutral"])
    assert as_labels.exit_code == 2 and str(face_video) in as_labels.output and "labels CSV" in as_labels.output


def test_eval_report_replaces_only_its_own_files_and_nothing_foreign_inside_an_input(tmp_path):
    """Found by a probe: `eval --report DIR` replaced a foreign roc.svg wherever DIR held no index.html, and
    could write over files inside the face set it read. A foreign page file needs --overwrite; a folder inside
    an input (or a link to one) is refused; an earlier page's own files are replaced."""
    from dfscan.errors import OutputError
    from dfscan.outputs import SVG_MARKER, Output, check_outputs

    face_set = tmp_path / "faces"
    (face_set / "images").mkdir(parents=True)
    (face_set / "labels.csv").write_text("file,label,split\n")

    def check(folder: Path, overwrite: bool = False) -> None:
        check_outputs([Output("--report", "pages", folder)], [face_set], overwrite)

    foreign = tmp_path / "figures"
    foreign.mkdir()
    (foreign / "roc.svg").write_text("<svg>someone's ROC</svg>")
    with pytest.raises(OutputError, match="roc.svg exists and is not an earlier dfscan page"):
        check(foreign)
    check(foreign, overwrite=True)
    ours = tmp_path / "ours"
    ours.mkdir()
    (ours / "roc.svg").write_text(SVG_MARKER + "\n<svg></svg>")
    check(ours)
    inside = face_set / "images"
    link = tmp_path / "into_the_face_set"  # found by a third probe: a link to a folder inside the input
    link.symlink_to(inside)
    for folder in (inside, link, inside / "new"):
        for overwrite in (False, True):
            with pytest.raises(OutputError, match="lies inside the input"):
                check(folder, overwrite)
    with pytest.raises(OutputError, match="is one of the inputs"):
        check(face_set, overwrite=True)
    check(tmp_path / "new")


def test_labels_that_are_not_utf8_and_a_broken_geometry_file_name_their_file(tmp_path):
    """Found by a probe: a Latin-1 labels CSV was "'utf-8' codec can't decode byte 0xe9 ..." and a broken
    faceset.json "Expecting property name ..." with no file named. Each is one line naming the file, exit 2."""
    latin = tmp_path / "latin.csv"
    latin.write_bytes("path,label\nvidéo.mp4,real\n".encode("latin-1"))
    for args in (["extract", "csv", latin, "--out", tmp_path / "out"], ["eval", latin]):
        result = invoke(*args)
        assert result.exit_code == 2 and f"{latin}: not a labels CSV (not UTF-8 text" in result.output, result.output
    faces = tmp_path / "faces"
    (faces / "images").mkdir(parents=True)
    (faces / "labels.csv").write_bytes("file,label,split,source,video,width,height\né.jpg,real,train,a,a,9,9\n"
                                       .encode("latin-1"))
    result = invoke("eval", faces)
    assert result.exit_code == 2 and f"{faces / 'labels.csv'}: not a labels CSV" in result.output, result.output
    (faces / "labels.csv").write_text("file,label,split,source,video,width,height\n")
    (faces / "faceset.json").write_text("{broken")
    from dfscan.faceset import FaceSet

    with pytest.raises(ValueError, match=f"{faces / 'faceset.json'}: not a face set's geometry file"):
        FaceSet.load(faces).geometry
    result = invoke("train", "bce", "--dataset", f"faces:{faces}", "--out", tmp_path / "run", "--device", "cpu")
    assert result.exit_code == 4 and f"{faces / 'faceset.json'}: not a face set's geometry" in result.output, \
        result.output


def test_a_newline_in_a_file_name_keeps_its_terminal_line_one_line(face_video, bundles, tmp_path):
    """Found by a probe: the scan's line for "a<newline>b.mp4" was two lines on the terminal (the CSV was right)."""
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(face_video, videos / "a\nb.mp4")
    rows = tmp_path / "rows.csv"
    result = invoke("scan", videos, "--csv", rows, "--model", bundles["all_real"], "--frames", "4")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if line.startswith("REAL"))
    assert line.endswith("a\\nb.mp4")
    assert _csv_paths(rows) == [str(videos / "a\nb.mp4")]


def test_a_scan_never_lists_its_own_outputs_and_says_when_it_found_nothing(face_video, bundles, tmp_path):
    """Found by a probe: `scan DIR --include '*' --csv DIR/out.csv` found its own CSV, so `--resume` refused it
    as an input; an empty folder or a mistyped --include scanned nothing and said nothing."""
    folder = tmp_path / "videos"
    folder.mkdir()
    shutil.copy(face_video, folder / "a.mp4")
    rows = folder / "out.csv"
    args = ["scan", folder, "--include", "*", "--csv", rows, "--report", folder / "report", "--model",
            bundles["all_real"], "--frames", "4"]
    assert invoke(*args).exit_code == 0
    resumed = invoke(*args, "--resume")
    assert resumed.exit_code == 0 and "1 of 1 videos already done" in resumed.output, resumed.output
    assert _csv_paths(rows) == [str(folder / "a.mp4")]
    for extra in (["--include", "*.avi"], ["--exclude", "*"]):
        nothing = invoke("scan", folder, *extra, "--model", bundles["all_real"])
        assert nothing.exit_code == 0 and "no videos to scan in" in nothing.output, nothing.output
    both = invoke("check", folder / "a.mp4", "--example")
    assert both.exit_code == 2 and "not both" in both.output


def test_retry_errors_scans_again_the_videos_whose_row_is_error_and_keeps_every_other_row(
        face_video, bundles, tmp_path):
    """--resume --retry-errors: an ERROR row of this batch's videos (a crashed worker, a lost Ray node, a file
    fixed since) is dropped and its video scanned again; every other row stays byte for byte, also an ERROR row
    of a video outside this batch; each input still has exactly one row, in the report's index.jsonl too (a
    third probe found the old ERROR record kept there beside the new one)."""
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(face_video, videos / "a.mp4")
    (videos / "b.mp4").write_text("not yet a video")
    (videos / "c.mp4").write_text("not a video either")
    rows, lines, report = tmp_path / "rows.csv", tmp_path / "rows.jsonl", tmp_path / "report"
    outputs = ["--csv", rows, "--jsonl", lines, "--report", report, "--model", bundles["all_real"], "--frames", "4"]
    assert invoke("scan", videos, *outputs).exit_code == 3
    before = {p: p.read_text().splitlines() for p in (rows, lines)}
    assert invoke("scan", videos, *outputs, "--retry-errors").exit_code == 2  # without --resume
    shutil.copy(face_video, videos / "b.mp4")  # fixed since
    again = invoke("scan", videos, "--exclude", "c.mp4", *outputs, "--resume", "--retry-errors")
    # c.mp4 is not in this batch: its ERROR row stays, and does not count in this batch's exit code
    assert again.exit_code == 0 and "retrying: 1 videos whose earlier row was ERROR" in again.output, again.output
    with open(rows, newline="", encoding="utf-8") as fh:
        labels = {Path(r["path"]).name: r["label"] for r in csv.DictReader(fh)}
    assert labels == {"a.mp4": "REAL", "b.mp4": "REAL", "c.mp4": "ERROR"} and len(_csv_paths(rows)) == 3
    for path, old in before.items():
        new = path.read_text().splitlines()
        assert [line for line in old if "b.mp4" not in line] == [line for line in new if "b.mp4" not in line]
        assert len(new) == len(old) and sum("b.mp4" in line and "ERROR" in line for line in new) == 0
    records = [json.loads(line) for line in (report / "index.jsonl").read_text().splitlines()]
    assert sorted((Path(r["path"]).name, r["label"]) for r in records) == [
        ("a.mp4", "REAL"), ("b.mp4", "REAL"), ("c.mp4", "ERROR")]
    index = (report / "index.html").read_text()
    assert "3 videos" in index and index.count("b.mp4</a>") == 1


def test_overwrite_never_writes_into_a_hard_link_and_check_never_replaces_a_scans_files(
        face_video, bundles, tmp_path):
    """Found by a second probe: `--csv hl.csv --overwrite`, hl.csv a hard link to an input video, cut the video
    and wrote the CSV into it; `check --report` onto a scan report's index or pages, and `check --json-file` onto
    a scan's JSONL of one row, replaced them as if they were check's own outputs."""
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(face_video, videos / "a.mp4")
    before = (videos / "a.mp4").read_bytes()
    for option, name in (("--csv", "hl.csv"), ("--jsonl", "hl.jsonl")):
        os.link(videos / "a.mp4", tmp_path / name)
        result = invoke("scan", videos, option, tmp_path / name, "--overwrite", "--model", bundles["all_real"],
                        "--frames", "4")
        assert result.exit_code == 0 and (videos / "a.mp4").read_bytes() == before, result.output
        assert (tmp_path / name).stat().st_ino != (videos / "a.mp4").stat().st_ino
    report, rows = tmp_path / "report", tmp_path / "one.jsonl"
    assert invoke("scan", videos, "--report", report, "--jsonl", rows, "--model", bundles["all_real"],
                  "--frames", "4").exit_code == 0
    kept = {p: p.read_bytes() for p in (report / "index.html", next((report / "videos").iterdir()), rows)}
    for option, path in (("--report", report / "index.html"), ("--report", next((report / "videos").iterdir())),
                         ("--json-file", rows)):
        refused = invoke("check", videos / "a.mp4", option, path, "--model", bundles["all_real"], "--frames", "4")
        assert refused.exit_code == 2 and "not an earlier dfscan" in refused.output, (option, refused.output)
    assert {p: p.read_bytes() for p in kept} == kept
    for option, name in (("--report", "page.html"), ("--json-file", "result.json")):  # check's own: replaced
        for _ in range(2):
            again = invoke("check", videos / "a.mp4", option, tmp_path / name, "--model", bundles["all_real"],
                           "--frames", "4")
            assert again.exit_code == 0, again.output


def test_a_resume_whose_outputs_disagree_keeps_the_verdict_of_the_rows_it_keeps(face_video, bundles, tmp_path):
    """Found by a second probe: a first run with --csv, resumed with --csv and a new --jsonl, scanned every video
    again for the JSONL (right), but the CSV's FAKE rows stayed and the batch exited 3, with no word of it."""
    videos = tmp_path / "videos"
    videos.mkdir()
    shutil.copy(face_video, videos / "a.mp4")
    rows, lines = tmp_path / "rows.csv", tmp_path / "rows.jsonl"
    assert invoke("scan", videos, "--csv", rows, "--model", bundles["all_fake"]).exit_code == 1
    resumed = invoke("scan", videos, "--csv", rows, "--jsonl", lines, "--resume", "--model", bundles["all_real"])
    text = " ".join(resumed.output.split())
    assert resumed.exit_code == 1 and "1 videos have a row in one output and not in the other" in text, text
    assert [json.loads(line)["label"] for line in lines.read_text().splitlines()] == ["REAL"]
    with open(rows, newline="", encoding="utf-8") as fh:
        assert [row["label"] for row in csv.DictReader(fh)] == ["FAKE"]
