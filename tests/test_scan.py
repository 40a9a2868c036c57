"""End to end through the library API: real clips, generated videos, bad inputs, bundles."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from videos import copy_without_permission, write_audio_only, write_truncated

import dfscan
from dfscan.errors import ModelError
from dfscan.model.manifest import sha256_file
from dfscan.scan import ScanSettings, Scanner


def test_real_clip_one_person_one_track(real_clips, bundles):
    result = dfscan.scan_video(real_clips / "talking_d0.mp4", model=bundles["neutral"], frames=16)
    assert result.label in ("FAKE", "REAL")
    assert len(result.frames) == 16
    scored = [t for t in result.tracks if t.score is not None]
    assert len(scored) == 1 and scored[0].n_faces >= 14  # one person talking to the camera
    assert result.score == pytest.approx(scored[0].score)
    width, height = result.video["width"], result.video["height"]
    for obs in scored[0].observations:
        x1, y1, x2, y2 = obs.box
        assert 0 <= x1 < x2 <= width + 2 and 0 <= y1 < y2 <= height + 2
        assert 0.0 <= obs.score <= 1.0 and obs.detection_score >= 0.9
    times = [f["timestamp"] for f in result.frames]
    assert times == sorted(times) and times[-1] <= result.video["duration_s"]
    assert result.provider == "CPUExecutionProvider"
    assert result.video["sha256"] == sha256_file(real_clips / "talking_d0.mp4")
    assert result.model["sha256"] == sha256_file(bundles["neutral"] / "manifest.json")


def test_crowd_every_track_reported_most_suspicious_decides(real_clips, bundles):
    result = dfscan.scan_video(real_clips / "street_crowd.mp4", model=bundles["neutral"], frames=12)
    scored = [t for t in result.tracks if t.score is not None]
    assert len(scored) >= 2, "a street scene with several faces should give several face tracks"
    assert result.score == pytest.approx(max(t.score for t in scored))
    assert result.top_track.score == pytest.approx(result.score)
    for track in result.tracks:  # each track is one place in the picture: boxes don't jump across it
        xs = [(o.box[0] + o.box[2]) / 2 for o in track.observations]
        assert max(xs) - min(xs) < result.video["width"] / 3


def test_same_input_same_scores(face_video, bundles):
    first = dfscan.scan_video(face_video, model=bundles["neutral"])
    second = Scanner(bundles["neutral"]).scan(face_video)
    assert first.to_dict()["tracks"] == second.to_dict()["tracks"]
    assert first.score == second.score


def test_decoding_and_scoring_ahead_change_no_result(face_video, bundles, monkeypatch):
    """The next chunk is decoded on a second thread while this one is worked on (dfscan.video.decode_ahead), and
    a chunk is scored on a thread of its own while the next is detected: the same frames, faces and scores as
    doing each in turn. All 40 frames: several chunks."""
    from concurrent.futures import Future

    from dfscan import scan, video

    scanner = Scanner(bundles["neutral"], device="cpu")
    ahead = scanner.scan(face_video, ScanSettings(all_frames=True)).to_dict()

    class DecodeInTurn:
        def __init__(self, path, depth, after=None, **options):
            self.path, self.options, self.info = path, options, None

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def __iter__(self):
            with video.stream_frames(self.path, **self.options) as stream:
                yield from stream
                self.info = stream.info

    class ScoreInTurn:
        def submit(self, fn, *args):
            done = Future()
            done.set_result(fn(*args))
            return done

    monkeypatch.setattr(scan, "decode_ahead", DecodeInTurn)
    monkeypatch.setattr(scan, "_scoring_thread", ScoreInTurn)
    in_turn = scanner.scan(face_video, ScanSettings(all_frames=True)).to_dict()
    assert len(ahead["frames"]) == 40 and ahead["tracks"]
    for key in ("frames", "tracks", "score", "label", "video"):
        assert ahead[key] == in_turn[key]


def test_decoding_started_before_the_models_load_gives_the_same_result(real_clips, bundles):
    """`decode_for_scan` starts decoding before a Scanner is loaded (the command line's `check` does, so the
    video decodes while the models load): the same result as the scan decoding for itself; frames decoded
    for other settings or another file are refused; an unreadable file is still the scan's ERROR row."""
    from dfscan.scan import decode_for_scan

    clip, settings = real_clips / "talking_d0.mp4", ScanSettings(frames=12)
    with decode_for_scan(clip, settings, bundles["neutral"], device="cpu") as decoding:
        scanner = Scanner(bundles["neutral"], device="cpu")
        early = scanner.scan(clip, settings, decoding).to_dict()
    alone = scanner.scan(clip, settings).to_dict()
    assert len(early["frames"]) == 12 and early["tracks"]
    for key in ("frames", "tracks", "score", "label", "video"):
        assert early[key] == alone[key]
    with decode_for_scan(clip, ScanSettings(frames=8), bundles["neutral"]) as other:
        with pytest.raises(ValueError, match="not for this scan"):
            scanner.scan(clip, settings, other)
    with decode_for_scan(clip, settings, bundles["neutral"]) as other:
        with pytest.raises(ValueError, match="not for this scan"):
            scanner.scan(real_clips / "talking_d3.mp4", settings, other)
    missing = real_clips / "no_such_clip.mp4"
    with decode_for_scan(missing, settings, bundles["neutral"]) as decoding:
        failed = scanner.scan(missing, settings, decoding)
    assert (failed.label, failed.error_code, failed.reason) == ("ERROR", "input", "no such file")


def test_one_worker_decodes_the_next_video_while_this_one_finishes(real_clips, bundles, tmp_path):
    """iter_scan with one worker starts each video's decoding once the one before has decoded its last frame:
    every input still gets its own result, in input order, equal to scanning it alone (a bad file and a missing
    one between good ones are their ERROR rows); a batch left early leaves no decoding thread behind."""
    import threading

    from dfscan.scan import iter_scan

    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    paths = [real_clips / "talking_d0.mp4", bad, real_clips / "talking_d12.mp4", tmp_path / "missing.mp4",
             real_clips / "talking_d3.mp4"]
    settings = ScanSettings(frames=8)
    in_turn = list(iter_scan(paths, model=bundles["neutral"], device="cpu", settings=settings))
    scanner = Scanner(bundles["neutral"], device="cpu")
    alone = [scanner.scan(path, settings) for path in paths]
    assert [r.path for r in in_turn] == [str(p) for p in paths]
    assert [r.label for r in in_turn][1::2] == ["ERROR", "ERROR"] and "ERROR" not in [r.label for r in in_turn][::2]
    for a, b in zip(in_turn, alone):
        a, b = a.to_dict(), b.to_dict()
        for key in ("frames", "tracks", "score", "label", "error_code", "reason", "video"):
            assert a[key] == b[key]
    batch = iter_scan(paths, model=bundles["neutral"], device="cpu", settings=settings)
    assert next(batch).label != "ERROR"
    batch.close()
    assert not [t for t in threading.enumerate() if t.name == "dfscan-decode" and t.is_alive()]


def test_faces_scored_on_several_cores_keep_their_scores_and_order():
    """On CPU the Scorer spreads faces over its threads, one onnxruntime thread each: every face gets the
    score it gets alone, in input order (shipped model, 40 real DFDC crops)."""
    import numpy as np
    from conftest import DFDC_FACES

    from dfscan.faceset import load_crop
    from dfscan.model.scorer import Scorer, default_bundle_path

    if not (DFDC_FACES / "labels.csv").is_file() or not (default_bundle_path() / "manifest.json").is_file():
        pytest.skip("needs the shared DFDC crops and the shipped model")
    parallel, alone = Scorer(device="cpu", threads=2), Scorer(device="cpu", threads=1)
    assert parallel.workers == 2 and alone.workers == 1
    files = sorted((DFDC_FACES / "images").rglob("*.*"))[:40]
    crops = np.stack([load_crop(f, parallel.input_size) for f in files])
    scores = parallel.score_crops(crops)
    assert np.array_equal(scores, alone.score_crops(crops))
    assert np.array_equal(scores[[7, 23]], [alone.score_crops(crops[[i]])[0] for i in (7, 23)])
    assert np.ptp(scores) > 0.01  # different faces, different scores: an order mix-up would show


def test_generated_face_video_threshold_and_labels(face_video, bundles):
    fake = dfscan.scan_video(face_video, model=bundles["all_fake"])
    real = dfscan.scan_video(face_video, model=bundles["all_real"])
    assert (fake.label, real.label) == ("FAKE", "REAL")
    assert fake.score > 0.99 and real.score < 0.01
    assert len(fake.tracks) == 1 and fake.tracks[0].n_faces == len(fake.frames) == 8  # the bundle's default
    assert [s["start_s"] for s in fake.segments] == [fake.frames[0]["timestamp"]] and not real.segments
    named = dfscan.scan_video(face_video, model=bundles["neutral"], threshold="low-fpr")
    assert (named.threshold, named.threshold_name) == (0.9, "low-fpr")
    custom = dfscan.scan_video(face_video, model=bundles["neutral"], threshold=0.0)
    assert custom.label == "FAKE" and custom.threshold_name == "custom"
    with pytest.raises(ValueError, match="unknown threshold"):
        dfscan.scan_video(face_video, model=bundles["neutral"], threshold="paranoid")


def test_dense_sampling_and_aggregation_override(face_video, bundles):
    dense = dfscan.scan_video(face_video, model=bundles["neutral"], fps=5.0)
    assert 18 <= len(dense.frames) <= 21  # 4 s at 5 frames/s
    every = dfscan.scan_video(face_video, model=bundles["neutral"], all_frames=True)
    assert len(every.frames) == 40
    top = dfscan.scan_video(face_video, model=bundles["neutral"], aggregation="max")
    assert top.score == pytest.approx(max(o.score for o in top.tracks[0].observations))


def test_no_face_is_inconclusive_with_reason(blank_video, bundles):
    result = dfscan.scan_video(blank_video, model=bundles["all_fake"])
    assert result.label == "NO_FACE" and result.score is None
    assert "no face" in result.reason


@pytest.mark.parametrize("case", ["text", "empty", "truncated", "audio", "missing", "directory", "unreadable"])
def test_bad_inputs_become_error_results(tmp_path, bundles, case):
    path = tmp_path / f"{case}.mp4"
    if case == "text":
        path.write_text("this is not a video\n" * 50)
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        write_truncated(path, keep_fraction=0.3, faststart=False, n_frames=30)
    elif case == "audio":
        write_audio_only(path)
    elif case == "directory":
        path.mkdir()
    elif case == "unreadable":
        if os.geteuid() == 0:
            pytest.skip("root reads files without permission")
        copy_without_permission(__file__, path)
    result = dfscan.scan_video(path, model=bundles["neutral"])
    assert result.label == "ERROR" and result.score is None
    assert result.error_code and result.reason and "\n" not in result.reason
    assert path.name not in result.reason  # the row names its file once, in its path column
    assert json.loads(result.to_json())["label"] == "ERROR"


def test_batch_goes_on_past_bad_files(tmp_path, face_video, bundles):
    bad = tmp_path / "bad.mp4"
    bad.write_text("nope")
    results = list(dfscan.iter_scan([bad, face_video, tmp_path / "gone.mp4"], model=bundles["all_fake"]))
    assert [r.label for r in results] == ["ERROR", "FAKE", "ERROR"]


def test_parallel_workers_give_the_same_results(tmp_path, face_video, blank_video, bundles):
    paths = [face_video, blank_video, face_video]
    serial = {(r.path, r.score) for r in dfscan.iter_scan(paths, model=bundles["neutral"])}
    parallel = {(r.path, r.score) for r in dfscan.iter_scan(paths, model=bundles["neutral"], workers=2)}
    assert serial == parallel


def test_tampered_or_broken_bundle_is_refused(tmp_path, bundles):
    copy = tmp_path / "bundle"
    shutil.copytree(bundles["neutral"], copy)
    with open(copy / "classifier.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(ModelError, match="does not match its manifest hash"):
        Scanner(copy)
    manifest = json.loads((bundles["neutral"] / "manifest.json").read_text())
    manifest["preprocess"]["input_size"] = 64  # a manifest that lies about the embedder's input
    shutil.rmtree(copy)
    shutil.copytree(bundles["neutral"], copy)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="input shape"):
        Scanner(copy)
    with pytest.raises(ModelError, match="no manifest.json"):
        Scanner(tmp_path)


def test_scans_with_torch_unimportable(face_video, bundles):
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import dfscan\n"
        f"r = dfscan.scan_video({str(face_video)!r}, model={str(bundles['all_fake'])!r})\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(r.label)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "FAKE"


def test_settings_that_change_scores_are_recorded(face_video, bundles):
    result = dfscan.scan_video(face_video, model=bundles["neutral"], settings=ScanSettings(frames=6))
    settings = result.settings
    assert settings["frames"] == 6 and settings["aggregation"] == "mean"
    assert settings["crop"] == {"size": 32, "margin": 0.0}
    assert settings["detector"]["name"] == "mtcnn" and "min_confidence" in settings["detector"]
    assert result.dfscan_version == dfscan.__version__


def test_provenance_matches_what_pyav_reports(real_clips, bundles):
    import av

    path = real_clips / "talking_d12.mp4"
    result = dfscan.scan_video(path, model=bundles["neutral"], frames=10)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        expected = {
            "codec": stream.codec_context.name,
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "fps": float(stream.average_rate),
            "duration_s": float(stream.duration * stream.time_base),
            "frame_count": stream.frames,
        }
        assert "mp4" in container.format.name
    video = result.video
    assert video["size_bytes"] == path.stat().st_size
    assert "mp4" in video["container"]
    for key in ("codec", "width", "height"):
        assert video[key] == expected[key], key
    assert video["fps"] == pytest.approx(expected["fps"], rel=1e-3)
    assert video["duration_s"] == pytest.approx(expected["duration_s"], abs=0.05)
    assert video["frame_count"] == expected["frame_count"]
    indices = [f["index"] for f in result.frames]
    assert indices == sorted(set(indices)) and indices[-1] < expected["frame_count"]
    for f in result.frames:  # each sampled index sits at its timestamp
        assert f["timestamp"] == pytest.approx(f["index"] / expected["fps"], abs=1.5 / expected["fps"])


def test_a_stream_whose_frame_size_changes_names_every_detector_runtime_it_used(tmp_path, bundles):
    """The detector's networks run on OpenVINO for frames with a large detection pyramid and on onnxruntime
    below it (dfscan.faces.mtcnn): a stream that changes size mid-way (two MPEG-TS segments joined) used both,
    and the provenance names both, in the order used, not only the last chunk's."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'dfscan[cpu]' installs it)")
    from fractions import Fraction

    import av
    from videos import pattern_frame

    from dfscan.runtime import cpu_runtime
    from dfscan.settings import DetectorSettings

    if cpu_runtime() != "openvino":
        pytest.skip("DFSCAN_CPU_RUNTIME keeps the detector on onnxruntime")
    joined = b""
    for first, (width, height) in ((0, (640, 360)), (40, (160, 96))):  # min face 12: pyramid 330k, then 21k pixels
        segment = tmp_path / f"{width}.ts"
        with av.open(str(segment), "w", format="mpegts") as container:
            stream = container.add_stream("libx264", rate=20)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for index in range(first, first + 40):
                frame = av.VideoFrame.from_ndarray(pattern_frame(index, width, height), format="rgb24")
                frame.pts, frame.time_base = index, Fraction(1, 20)
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        joined += segment.read_bytes()
    (tmp_path / "joined.ts").write_bytes(joined)
    result = dfscan.scan_video(tmp_path / "joined.ts", model=bundles["neutral"], device="cpu", frames=16,
                               detector=DetectorSettings(min_face_size=12))
    runtimes = result.settings["detector"]["runtime"].split(" + ")
    assert [r.split()[0] for r in runtimes] == ["openvino", "onnxruntime"], result.settings["detector"]


def test_a_track_length_asked_above_the_frames_sampled_says_what_applied(face_video, bundles):
    """Found by a probe: --min-track-faces 1000 with 4 frames judged a 4-face track, and the JSON said 1000."""
    import dfscan

    result = dfscan.scan_video(face_video, model=bundles["neutral"], frames=4, min_track_faces=1000)
    assert result.settings["min_track_faces"] == 1000 and result.settings["min_track_faces_applied"] == 4
    assert dfscan.scan_video(face_video, model=bundles["neutral"], frames=8).settings["min_track_faces_applied"] == 3
