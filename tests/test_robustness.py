import shutil

import pytest
from typer.testing import CliRunner

from dfscan.cli import app
from dfscan.robustness import DEGRADATIONS, Degradation, _auc, check_robustness, degrade, truth_from_path
from dfscan.scan import Scanner
from dfscan.video import probe


def test_degrade_reencodes_at_the_asked_size_and_quality(face_video, tmp_path):
    small = degrade(face_video, tmp_path / "small.mp4", Degradation("t", crf=40, max_height=120))
    info = probe(small)
    assert (info.width, info.height, info.codec) == (160, 120, "h264")
    assert small.stat().st_size < face_video.stat().st_size
    slow = probe(degrade(face_video, tmp_path / "fps.mp4", Degradation("t", fps=5.0)))
    assert slow.fps == pytest.approx(5.0) and slow.duration_s == pytest.approx(4.0, abs=0.3)


def test_auc_and_labels_from_folders():
    assert _auc(["fake", "fake", "real", "real"], [0.9, 0.8, 0.1, 0.2]) == 1.0
    assert _auc(["fake", "real", "fake", "real"], [0.9, 0.8, 0.1, 0.2]) == 0.5
    assert _auc(["fake", "real"], [0.5, 0.5]) == 0.5
    assert _auc(["fake"], [0.5]) is None
    assert truth_from_path("/data/fake/x/clip.mp4") == "fake" and truth_from_path("/data/clip.mp4") is None


def test_check_robustness_rows_and_summary(face_video, bundles, tmp_path):
    folder = tmp_path / "set"
    (folder / "real").mkdir(parents=True)
    (folder / "fake").mkdir()
    shutil.copy(face_video, folder / "real" / "r.mp4")
    shutil.copy(face_video, folder / "fake" / "f.mp4")
    scanner = Scanner(bundles["neutral"])
    report = check_robustness([folder / "real" / "r.mp4", folder / "fake" / "f.mp4"], scanner,
                              degradations=["crf40", "480p"])
    assert [(r.degradation, r.truth) for r in report.rows] == [
        ("original", "real"), ("crf40", "real"), ("480p", "real"),
        ("original", "fake"), ("crf40", "fake"), ("480p", "fake")]
    original = report.rows[0]
    assert original.delta == 0.0 and not original.flipped
    for row in report.rows:
        assert row.label in ("FAKE", "REAL") and row.delta == pytest.approx(row.score - original.score, abs=1e-6)
    assert report.auc["original"] == 0.5  # the same video under both labels: a tie
    summary = report.summary()
    assert summary["crf40"]["videos"] == 2 and summary["crf40"]["mean_abs_delta"] is not None


def test_robustness_command_json(face_video, bundles):
    result = CliRunner().invoke(app, ["robustness", str(face_video), "--model", str(bundles["all_fake"]),
                                      "-d", "crf32", "--json"])
    assert result.exit_code == 0, result.output
    assert '"crf32"' in result.stdout
    bad = CliRunner().invoke(app, ["robustness", str(face_video), "-d", "crf99"])
    assert bad.exit_code == 2 and set(DEGRADATIONS) >= {"crf23", "social"}


def test_robustness_of_inputs_that_cannot_be_scanned_is_exit_3(bundles, tmp_path):
    broken = tmp_path / "text.mp4"
    broken.write_text("not a video")
    result = CliRunner().invoke(app, ["robustness", str(broken), "--model", str(bundles["neutral"]), "-d", "crf32"])
    assert result.exit_code == 3 and "ERROR" in result.stdout
    assert "text.mp4 original: ERROR: " in result.output  # why, on its own line (the table has no room)
    empty = tmp_path / "empty"
    empty.mkdir()
    none = CliRunner().invoke(app, ["robustness", str(empty), "--model", str(bundles["neutral"])])
    assert none.exit_code == 3 and "no video" in none.output


def test_an_interrupted_reencode_leaves_no_part_of_a_clip(face_video, tmp_path, monkeypatch):
    """Found by a probe: interrupting `robustness --keep` left a cut re-encode under the kept clip's name. The
    clip is written under a temporary name and renamed when whole; an interruption leaves nothing."""
    from dfscan import robustness

    def encode_then_interrupt(src, dst, spec):
        dst.write_bytes(face_video.read_bytes()[:1000])  # part of a clip
        raise KeyboardInterrupt

    monkeypatch.setattr(robustness, "_encode", encode_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        robustness.degrade(face_video, tmp_path / "kept.mp4", robustness.DEGRADATIONS["crf23"])
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    assert probe(robustness.degrade(face_video, tmp_path / "kept.mp4", robustness.DEGRADATIONS["crf23"])).codec == "h264"
    assert [p.name for p in tmp_path.iterdir()] == ["kept.mp4"]


def test_a_terminated_run_removes_its_temporary_reencodes(face_video, bundles, tmp_path):
    """Found by a probe: SIGTERM (a kill, a scheduler's stop) left the temporary folder of re-encoded clips
    behind; SIGINT did not. Now both unwind: the folder is removed and the exit status is SIGTERM's (143)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    videos = tmp_path / "videos"
    videos.mkdir()
    for n in range(3):
        shutil.copyfile(face_video, videos / f"clip{n}.mp4")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "dfscan", "robustness", str(videos), "--model",
                             str(bundles["neutral"]), "--frames", "4"],
                            env={**os.environ, "TMPDIR": str(scratch)}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    def reencodes() -> list:  # what the run's temporary folder holds (other libraries use TMPDIR too)
        return list(scratch.glob("*/*.mp4"))

    deadline = time.monotonic() + 120
    while not reencodes() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert reencodes(), "the run should have re-encoded into its temporary folder"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143, proc.stderr.read()
    assert reencodes() == []
