"""dfscan.video: probing and frame sampling on generated videos (tests/videos.py) and the shared real clips."""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import av
import numpy as np
import pytest

import dfscan.video as video
from dfscan.errors import DecodeError, InputError, NoFramesError, NoVideoStreamError, ResourceLimitError
from dfscan.video import probe, sample_frames, uniform_targets
from videos import (copy_without_permission, has_encoder, pattern_frame, read_frame_number, vfr_times, write_audio_only,
                    write_damaged, write_remuxed, write_truncated, write_video)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
REAL_CLIPS = sorted((SHARED / "clips" / "real").glob("*.mp4"))
EXAMPLE_CLIP = Path(__file__).resolve().parents[1] / "dfscan" / "assets" / "example.mp4"


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="module")
def cfr_clip(clips) -> Path:
    return write_video(clips / "cfr.mp4", n_frames=100, fps=25)


def frame_numbers(frames) -> list[int]:
    return [read_frame_number(f.image) for f in frames]


def nearest_unique(times: list[float], targets: list[float]) -> list[int]:
    """Reference answer: for each target the nearest frame, ties to the earlier one."""
    picks = [min(range(len(times)), key=lambda i: (abs(times[i] - t), i)) for t in targets]
    assert len(set(picks)) == len(picks), "test setup: targets should map to distinct frames"
    return picks


# --- uniform sampling ---------------------------------------------------------------------------------------


def test_uniform_sampling_picks_frames_nearest_interval_centres(cfr_clip):
    info, frames = sample_frames(cfr_clip, n=10)
    expected = nearest_unique([i / 25 for i in range(100)], uniform_targets(4.0, 10))
    assert [f.index for f in frames] == expected == [5, 15, 25, 35, 45, 55, 65, 75, 85, 95]
    assert frame_numbers(frames) == expected
    assert [f.timestamp for f in frames] == pytest.approx([i / 25 for i in expected])
    assert (info.width, info.height, info.fps, info.frame_count) == (160, 120, 25.0, 100)
    assert info.duration_s == pytest.approx(4.0)


def test_frames_are_rgb_uint8_and_distinct(cfr_clip):
    _, frames = sample_frames(cfr_clip, n=32)
    assert len(frames) == 32 and len({f.index for f in frames}) == 32
    for frame in frames:
        assert frame.image.dtype == np.uint8 and frame.image.shape == (120, 160, 3) and frame.scale == 1.0
        assert frame.image.flags["C_CONTIGUOUS"]
    assert frame_numbers(frames) == [f.index for f in frames]


def test_fewer_frames_than_n_returns_every_frame(clips):
    path = write_video(clips / "short.mp4", n_frames=12)
    _, frames = sample_frames(path, n=32)
    assert [f.index for f in frames] == frame_numbers(frames) == list(range(12))


def test_every_frame_and_max_frames(cfr_clip):
    _, every = sample_frames(cfr_clip, n=None)
    assert frame_numbers(every) == list(range(100))
    _, capped = sample_frames(cfr_clip, n=None, max_frames=7)
    assert [f.index for f in capped] == list(range(7))
    _, capped_n = sample_frames(cfr_clip, n=50, max_frames=5)
    assert len(capped_n) == 5


def test_fps_sampling(cfr_clip):
    _, frames = sample_frames(cfr_clip, n=None, fps=5)
    assert [f.index for f in frames] == frame_numbers(frames) == list(range(0, 100, 5))
    _, all_frames = sample_frames(cfr_clip, fps=50)  # faster than the video: every frame
    assert len(all_frames) == 100


# --- stream properties --------------------------------------------------------------------------------------


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_is_applied(clips, rotation):
    path = write_video(clips / f"rot{rotation}.mp4", n_frames=20, size=(160, 96), rotation=rotation)
    info = probe(path)
    assert (info.rotation, info.width, info.height) == (rotation, 160, 96)
    sampled_info, frames = sample_frames(path, n=4)
    assert sampled_info.to_dict() == info.to_dict()
    for frame in frames:
        assert frame.image.shape == (96, 160, 3)
        assert read_frame_number(frame.image) == frame.index  # the code bar is only readable upright
        upright = pattern_frame(frame.index, 160, 96).astype(np.int16)
        assert np.abs(frame.image.astype(np.int16) - upright).mean() < 12


def test_rotation_with_downscale_reports_display_scale(clips):
    path = write_video(clips / "rot_big.mp4", n_frames=10, size=(320, 192), rotation=90)
    _, frames = sample_frames(path, n=2, max_side=80)
    assert frames[0].image.shape == (48, 80, 3)
    assert frames[0].scale == pytest.approx(4.0)
    assert read_frame_number(frames[0].image) == frames[0].index


def test_variable_frame_rate_uses_pts(clips):
    path = write_video(clips / "vfr.mp4", n_frames=60, fps=25, vfr=True)
    times = vfr_times(60, 25)
    info, frames = sample_frames(path, n=8)
    duration = info.duration_s
    assert duration == pytest.approx(times[-1] + (times[-1] - times[-2]), abs=0.05)
    expected = nearest_unique(times, uniform_targets(duration, 8))
    assert [f.index for f in frames] == frame_numbers(frames) == expected
    assert [f.timestamp for f in frames] == pytest.approx([times[i] for i in expected], abs=1e-3)
    assert any(abs(f.timestamp - f.index / 25) > 0.05 for f in frames)  # index / fps would be wrong


@pytest.mark.parametrize("suffix,codec", [(".mkv", "libx264"), (".webm", "libvpx-vp9")])
def test_matroska_without_stream_duration(clips, suffix, codec):
    if not has_encoder(codec):
        pytest.skip(f"this PyAV build has no {codec} encoder")
    path = write_video(clips / f"nodur{suffix}", n_frames=50, codec=codec)
    info = probe(path)
    assert info.container == suffix[1:] or info.container == "matroska"
    assert info.duration_s == pytest.approx(2.0, abs=0.05) and info.frame_count == 50
    _, frames = sample_frames(path, n=5)
    assert [f.index for f in frames] == frame_numbers(frames) == [5, 15, 25, 35, 45]


def test_packet_scan_when_container_has_no_duration(clips, monkeypatch):
    path = write_video(clips / "scan.mkv", n_frames=40)
    monkeypatch.setattr(video, "_stream_duration", lambda container, stream: None)
    info = probe(path)
    assert info.duration_s == pytest.approx(1.6, abs=0.05) and info.frame_count == 40
    _, frames = sample_frames(path, n=4)
    assert frame_numbers(frames) == [5, 15, 25, 35]


PIXEL_FORMATS = [
    ("p444.mp4", "libx264", "yuv444p"),
    ("p10.mp4", "libx264", "yuv420p10le"),
    ("gray.mov", "png", "gray"),
    ("rgb.mov", "png", "rgb24"),
    ("bgr0.mkv", "ffv1", "bgr0"),
    ("jpeg.mov", "mjpeg", "yuvj420p"),
    ("mpeg4.avi", "mpeg4", "yuv420p"),
    ("vp9.webm", "libvpx-vp9", "yuv420p"),
]


@pytest.mark.parametrize("name,codec,pix_fmt", PIXEL_FORMATS)
def test_pixel_formats_become_rgb24(clips, name, codec, pix_fmt):
    if not has_encoder(codec):
        pytest.skip(f"this PyAV build has no {codec} encoder")
    path = write_video(clips / name, n_frames=20, codec=codec, pix_fmt=pix_fmt)
    info, frames = sample_frames(path, n=5)
    assert info.pix_fmt == pix_fmt
    assert frame_numbers(frames) == [f.index for f in frames] == [2, 6, 10, 14, 18]
    assert all(f.image.dtype == np.uint8 and f.image.shape == (120, 160, 3) for f in frames)


def test_probe_is_json_serialisable(cfr_clip):
    info = probe(cfr_clip)
    row = json.loads(json.dumps(info.to_dict()))
    assert row["codec"] == "h264" and row["container"] == "mp4" and row["size_bytes"] == cfr_clip.stat().st_size
    assert row["rotation"] == 0 and row["pix_fmt"] == "yuv420p"


# --- seek or decode straight through ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_clip(clips) -> Path:
    return write_video(clips / "long.mp4", n_frames=500, size=(96, 64), fps=25, gop=25)


def sample_forced(monkeypatch, path: Path, seek: bool, **kwargs):
    monkeypatch.setattr(video, "_should_seek", lambda *args: seek)
    return sample_frames(path, **kwargs)[1]


@pytest.mark.parametrize("n", [3, 16, 40])
def test_seek_and_straight_through_give_the_same_frames(monkeypatch, long_clip, n):
    straight = sample_forced(monkeypatch, long_clip, seek=False, n=n)
    seeked = sample_forced(monkeypatch, long_clip, seek=True, n=n)
    assert [f.index for f in seeked] == [f.index for f in straight] == frame_numbers(seeked)
    assert [f.timestamp for f in seeked] == pytest.approx([f.timestamp for f in straight])
    for a, b in zip(seeked, straight):
        np.testing.assert_array_equal(a.image, b.image)


def test_seek_is_chosen_for_long_videos_with_frequent_keyframes(long_clip):
    info = probe(long_clip)
    assert video._keyframe_interval_s(_stream(long_clip), info.duration_s) == pytest.approx(1.0)
    assert video._should_seek(info, 3, 1.0)          # 3 * (12.5 + 5) frames << 500
    assert not video._should_seek(info, 32, 1.0)    # 32 * 17.5 = 560 frames > 0.6 * 500
    assert not video._should_seek(info, 3, None)     # no keyframe index: decode straight through
    short = probe(write_video(long_clip.with_name("short_gop.mp4"), n_frames=100, size=(96, 64), gop=10))
    assert not video._should_seek(short, 1, 0.4)     # short clips always decode straight through


def _stream(path: Path):
    import av
    container = av.open(str(path))
    return container.streams.video[0]


# --- bad inputs -----------------------------------------------------------------------------------------


def test_missing_directory_and_empty_inputs(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        sample_frames(tmp_path / "missing.mp4")
    with pytest.raises(InputError, match="directory"):
        probe(tmp_path)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        sample_frames(empty)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_file(tmp_path, cfr_clip):
    locked = copy_without_permission(cfr_clip, tmp_path / "locked.mp4")
    with pytest.raises(InputError, match="permission denied"):
        sample_frames(locked)


def test_unreadable_file_as_seen_by_the_check(monkeypatch, cfr_clip):
    monkeypatch.setattr(video.os, "access", lambda path, mode: False)  # runs as root too
    with pytest.raises(InputError, match="permission denied"):
        probe(cfr_clip)


def test_fifo_is_not_a_regular_file(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes here")
    fifo = tmp_path / "pipe.mp4"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        sample_frames(fifo)


def test_not_a_video(tmp_path, capfd):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    garbage = tmp_path / "garbage.mkv"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    from PIL import Image  # noqa: PLC0415 - Pillow comes with the test extras' dependencies
    image = tmp_path / "photo.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    for path in (text, garbage, image):
        with pytest.raises(DecodeError) as caught:
            sample_frames(path)
        assert type(caught.value) is DecodeError
        assert path.name in str(caught.value) and "\n" not in str(caught.value)
    assert capfd.readouterr().err == ""  # FFmpeg's own log lines stay silent


def test_audio_only(tmp_path):
    path = write_audio_only(tmp_path / "voice.m4a")
    with pytest.raises(NoVideoStreamError, match="no video stream"):
        probe(path)
    with pytest.raises(NoVideoStreamError):
        sample_frames(path)


def test_truncated_mp4_returns_the_frames_that_decode(tmp_path):
    path = write_truncated(tmp_path / "cut.mp4", keep_fraction=0.5, n_frames=100)
    info, frames = sample_frames(path, n=8)
    assert 4 <= len(frames) <= 8
    numbers = frame_numbers(frames)
    assert numbers == [f.index for f in frames] and numbers == sorted(set(numbers))
    assert numbers[-1] < 90 and numbers[-1] - numbers[0] > 10  # spread over the part that exists
    assert info.duration_s < 4.0


def test_truncated_mp4_without_index_is_a_decode_error(tmp_path):
    path = write_truncated(tmp_path / "cut_noindex.mp4", keep_fraction=0.5, faststart=False, n_frames=50)
    with pytest.raises(DecodeError, match="cut_noindex.mp4"):
        sample_frames(path)


def test_video_stream_without_decodable_frames(tmp_path):
    full = write_video(tmp_path / "full.mp4", n_frames=30)
    data = full.read_bytes()
    header_only = tmp_path / "header_only.mp4"
    header_only.write_bytes(data[: data.index(b"mdat") + 4])
    with pytest.raises(NoFramesError, match="no decodable frames"):
        sample_frames(header_only)
    with pytest.raises(NoFramesError):
        probe(header_only)


# --- resource limits ---------------------------------------------------------------------------------------


def test_large_frames_are_downscaled(clips):
    path = write_video(clips / "big.mp4", n_frames=10, size=(640, 480))
    info, frames = sample_frames(path, n=3, max_side=160)
    assert (info.width, info.height) == (640, 480)
    assert all(f.image.shape == (120, 160, 3) and f.scale == pytest.approx(4.0) for f in frames)
    assert frame_numbers(frames) == [f.index for f in frames]
    _, full = sample_frames(path, n=1, max_side=None)
    assert full[0].image.shape == (480, 640, 3) and full[0].scale == 1.0


def test_too_many_pixels_is_refused(clips):
    path = write_video(clips / "wide.mp4", n_frames=5, size=(640, 480))
    with pytest.raises(ResourceLimitError, match="640x480"):
        sample_frames(path, max_pixels=640 * 480 - 1)
    with pytest.raises(ResourceLimitError):
        probe(path, max_pixels=1000)


def test_truncated_file_sampled_by_rate_keeps_only_existing_times(tmp_path):
    path = write_truncated(tmp_path / "cut_fps.mp4", keep_fraction=0.5, n_frames=100)
    _, frames = sample_frames(path, n=None, fps=5)
    assert frame_numbers(frames) == [f.index for f in frames]
    assert [f.index for f in frames][:5] == [0, 5, 10, 15, 20]


@pytest.mark.parametrize("keep_fraction", [0.45, 0.6, 0.8])
def test_a_cut_file_gives_the_same_frames_with_or_without_ffmpeg_threads(tmp_path, monkeypatch, keep_fraction):
    """The last packet of a cut MP4 is read short: a frame-threaded decoder (a GPU scan's) reports its error
    only while the last frames drain, and PyAV then drops the frames still in the decoder, so the file ended
    two frames early there. The frames, their pixels and the VideoInfo must be those of a single-threaded
    decode (a CPU scan's), sampled or all, each numbered as drawn (a frame shown after the cut one, decoded
    before it, is past the damage). Four decoding threads, whatever the machine's cores."""
    path = write_truncated(tmp_path / "cut.mp4", keep_fraction=keep_fraction, n_frames=150)
    for options in ({"n": 32}, {"n": None}):
        threaded, single, restarts = _threaded_and_single(path, monkeypatch, **options)
        assert threaded == single and single[1]["truncated"] and restarts == []
        assert frame_numbers(single[0]) == [f.index for f in single[0]]  # none shown after the cut frame


class _Frames(list):
    """SampledFrames that compare equal when their numbers, times, pixels and concealment are."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, list) and len(self) == len(other) and all(
            (a.index, a.timestamp, a.concealed) == (b.index, b.timestamp, b.concealed)
            and np.array_equal(a.image, b.image) for a, b in zip(self, other))


def _threaded_and_single(path, monkeypatch, **options):
    """((frames, info) decoded on four FFmpeg threads, whatever the machine's cores; the same single-threaded;
    the files a threaded pass decoded again without threads)."""
    video_stream, reopen, restarts = video._video_stream, video.stream_frames._reopen_single_threaded, []

    def four_threads(container, file, threaded=True):
        stream = video_stream(container, file, threaded)
        if threaded:
            stream.codec_context.thread_count = 4
        return stream

    def counted_reopen(self):
        restarts.append(self.file.name)
        reopen(self)

    monkeypatch.setattr(video, "_video_stream", four_threads)
    monkeypatch.setattr(video.stream_frames, "_reopen_single_threaded", counted_reopen)
    sampled = {}
    for threaded in (True, False):
        frames = _Frames()
        with video.stream_frames(path, threaded=threaded, **options) as stream:
            for frame in stream:
                frames = _Frames() if frame is video.RESTART else _Frames([*frames, frame])
        sampled[threaded] = frames, stream.info.to_dict()
    return sampled[True], sampled[False], restarts


def test_a_damaged_file_gives_the_same_frames_with_or_without_ffmpeg_threads(tmp_path, monkeypatch):
    """FFmpeg's frame threads conceal damage otherwise than one thread does: on a damaged MP4, 23 of 32 sampled
    frames had other pixels on a GPU scan's decoder than on a CPU scan's, and damage near the end lost 3 frames.
    A threaded pass that meets damage decodes the file again single-threaded; an undamaged file never does."""
    clean = write_video(tmp_path / "clean.mp4", n_frames=300, size=(160, 96), fps=25, gop=25)
    near_end = bytearray(clean.read_bytes())
    rng = np.random.default_rng(1)
    for position in rng.integers(len(near_end) - 3000, len(near_end) - 300, 5):
        near_end[position:position + 100] = rng.integers(0, 256, 100, dtype=np.uint8).tobytes()
    (tmp_path / "near_end.mp4").write_bytes(bytes(near_end))
    ts = write_remuxed(clean, tmp_path / "clean.ts")
    (tmp_path / "cut.ts").write_bytes(ts.read_bytes()[:int(ts.stat().st_size * 0.83)])  # inside a packet
    cases = {"damaged.mp4": write_damaged(tmp_path / "damaged.mp4", clean), "near_end.mp4": tmp_path / "near_end.mp4",
             "cut.ts": tmp_path / "cut.ts", "clean.mp4": clean, "clean.ts": ts}
    decoded_again = set()
    for name, path in cases.items():
        for n in (32, None):
            threaded, single, restarts = _threaded_and_single(path, monkeypatch, n=n)
            assert threaded == single, (name, n)
            assert restarts in ([], [name]) and not (restarts and name.startswith("clean")), (name, n, restarts)
            decoded_again.update((name, n) for _ in restarts)
    assert {("damaged.mp4", 32), ("damaged.mp4", None), ("near_end.mp4", None), ("cut.ts", None)} <= decoded_again


def test_time_limit(cfr_clip):
    with pytest.raises(ResourceLimitError, match="longer than"):
        sample_frames(cfr_clip, time_limit_s=0)


def test_time_limit_counts_decoding_not_the_consumers_work(cfr_clip):
    """A long --frames all scan spends most of its time detecting between frames: that is not decode time."""
    import time

    with video.stream_frames(cfr_clip, n=None, time_limit_s=1.0) as stream:
        started, seen = time.monotonic(), 0
        for frame in stream:
            seen += frame is not video.RESTART
            time.sleep(0.02)  # the consumer's work: 100 frames -> 2 s, twice the decode limit
    assert seen == 100 and time.monotonic() - started > 1.5


# --- read-ahead (decoding on a second thread while the scan works) -------------------------------------------


@pytest.mark.parametrize("kind", ["whole", "truncated"])
def test_read_ahead_gives_the_streams_frames_and_info(cfr_clip, tmp_path, kind):
    """Same frames, same order, and the same VideoInfo (truncation is only known once decoding ends)."""
    path = cfr_clip if kind == "whole" else write_truncated(tmp_path / "cut.mp4", keep_fraction=0.5, n_frames=100)
    info, expected = sample_frames(path, n=None)
    with video.stream_frames(path, n=None) as stream, video.read_ahead(stream, depth=8) as frames:
        got = [f for f in frames if f is not video.RESTART]
    assert [f.index for f in got] == [f.index for f in expected]
    assert len(got) == (100 if kind == "whole" else len(expected)) and len(got) > 10
    assert all(np.array_equal(a.image, b.image) for a, b in zip(got, expected))
    assert stream.info.to_dict() == info.to_dict() and stream.info.truncated == (kind == "truncated")


def test_decode_ahead_opens_reads_and_closes_on_its_thread_with_or_without_ffmpeg_threads(cfr_clip, tmp_path):
    """decode_ahead: the frames and VideoInfo of stream_frames, whether FFmpeg decodes on a thread per core or
    on one (a CPU scan's choice); a file that cannot be opened raises where the frames are read."""
    info, expected = sample_frames(cfr_clip, n=20)
    for threaded in (True, False):
        with video.decode_ahead(cfr_clip, 4, n=20, threaded=threaded) as frames:
            got = [f for f in frames if f is not video.RESTART]
        assert [f.index for f in got] == [f.index for f in expected] and len(got) == 20
        assert all(np.array_equal(a.image, b.image) for a, b in zip(got, expected))
        assert frames.info.to_dict() == info.to_dict()
    ahead = video.decode_ahead(tmp_path / "missing.mp4", 4)
    with ahead:  # entering does not raise: the producer thread opens the file
        with pytest.raises(InputError, match="missing.mp4"):
            list(ahead)


def _sampled(path, **options):
    with video.stream_frames(path, threaded=False, **options) as stream:
        frames = list(stream)
    return [(f.index, f.timestamp, f.image) if f is not video.RESTART else f for f in frames], stream.info.to_dict()


@pytest.mark.parametrize("kind", ["x264", "vfr", "mkv", "truncated", "rotated", "shared"])
def test_frames_nobody_needs_go_undecoded_and_the_sample_is_the_same(tmp_path, monkeypatch, kind):
    """A single-threaded decode (a CPU scan's) hands FFmpeg the packets of frames no target can fall on with
    skip_frame=NONREF: frames no other refers to are dropped undecoded. The sample must be exactly that of
    decoding everything: the same indices, timestamps, pixels and VideoInfo, at 8 or 32 frames or 5 a second."""
    if kind == "shared":
        if not REAL_CLIPS:
            pytest.skip("needs ../shared/clips/real")
        path = REAL_CLIPS[-1]
    elif kind == "truncated":
        path = write_truncated(tmp_path / "cut.mp4", keep_fraction=0.6, n_frames=150)
    else:
        suffix = ".mkv" if kind == "mkv" else ".mp4"
        path = write_video(tmp_path / f"{kind}{suffix}", n_frames=150, fps=30, vfr=kind == "vfr",
                           rotation=90 if kind == "rotated" else 0, size=(96, 64))
    shown = []
    numbered, skippable = video._Skipping.numbered, video._Sampler._skippable
    monkeypatch.setattr(video._Skipping, "numbered",
                        lambda self, frames: (shown.append(f) or f for f in numbered(self, frames)))
    for options in ({"n": 8}, {"n": 32}, {"n": None, "fps": 5.0}):
        shown.clear()
        skipped_frames, skipped_info = _sampled(path, **options)
        skipped_shown = len(shown)
        monkeypatch.setattr(video._Sampler, "_skippable", lambda self, targets: None)
        full_frames, full_info = _sampled(path, **options)
        monkeypatch.setattr(video._Sampler, "_skippable", skippable)
        assert skipped_info == full_info
        assert len(skipped_frames) == len(full_frames) > 0
        for a, b in zip(skipped_frames, full_frames):
            assert a is b if a is video.RESTART else (a[0], a[1]) == (b[0], b[1]) and np.array_equal(a[2], b[2])
        if kind in ("x264", "shared") and options.get("n") == 8:
            assert 0 < skipped_shown < full_info["frame_count"]  # some frames were not decoded at all


def _decoded_counter(monkeypatch) -> list:
    """Counts the frames that come out of the decoder (a frame dropped with skip_frame never does)."""
    decoded, decode = [], video._decode
    monkeypatch.setattr(video, "_decode",
                        lambda *args, **kwargs: (decoded.append(f) or f for f in decode(*args, **kwargs)))
    return decoded


SEEK_KINDS = {  # name: (file, codec, encoder options); every one has frames no other refers to
    "x264": ("long.mp4", "libx264", None),
    "vfr": ("vfr.mp4", "libx264", None),
    "x264_open_gop": ("open_gop.mp4", "libx264", {"x264-params": "keyint=25:min-keyint=25:scenecut=0:open-gop=1"}),
    "x264_mkv": ("long.mkv", "libx264", None),
    "mpeg4_avi": ("mpeg4.avi", "mpeg4", {"bf": "2", "g": "25"}),
    "hevc": ("hevc.mp4", "libx265", {"x265-params": "keyint=25:min-keyint=25:scenecut=0:log-level=error"}),
}


@pytest.mark.parametrize("kind", SEEK_KINDS)
def test_seeking_leaves_frames_well_before_each_target_undecoded_and_the_sample_is_the_same(
        tmp_path, monkeypatch, kind):
    """A single-threaded seeking pass (a CPU scan of a long video) hands FFmpeg the packets of frames at least
    SEEK_SKIP_MARGIN_FRAMES before the target with skip_frame=NONREF: the same sample as decoding them all
    (B-frames: some are referred to by no frame), from fewer decoded frames, without starting again."""
    name, codec, options = SEEK_KINDS[kind]
    if not has_encoder(codec):
        pytest.skip(f"this PyAV build has no {codec} encoder")
    path = write_video(tmp_path / name, n_frames=500, size=(96, 64), fps=25, gop=25, vfr=kind == "vfr",
                       codec=codec, options=options)
    monkeypatch.setattr(video, "_should_seek", lambda *args: True)
    decoded = _decoded_counter(monkeypatch)
    seek_skipping = video._Sampler._seek_skipping
    for options in ({"n": 8}, {"n": 16}, {"n": None, "fps": 1.0}):
        decoded.clear()
        skipped_frames, skipped_info = _sampled(path, **options)
        skipped_decoded = len(decoded)
        monkeypatch.setattr(video._Sampler, "_seek_skipping", lambda self: None)
        decoded.clear()
        full_frames, full_info = _sampled(path, **options)
        monkeypatch.setattr(video._Sampler, "_seek_skipping", seek_skipping)
        # (MPEG-4 in AVI at 1 a second: the last target's seek fails either way, and both decode straight through)
        assert skipped_frames.count(video.RESTART) == full_frames.count(video.RESTART) <= (kind == "mpeg4_avi")
        assert skipped_info == full_info and len(skipped_frames) == len(full_frames) > 0
        for a, b in zip(skipped_frames, full_frames):
            assert a is b if a is video.RESTART else (a[0], a[1]) == (b[0], b[1]) and np.array_equal(a[2], b[2])
        if video.RESTART not in skipped_frames:
            assert 0 < skipped_decoded < len(decoded)
        skipped_frames = [f for f in skipped_frames if f is not video.RESTART]
        # After a seek an index is estimated from the time: the frame's number at a constant rate (in AVI too,
        # whose B-frame delay puts every frame's time one frame late: the first frame's time is left out).
        if kind != "vfr":
            numbers = frame_numbers([SimpleNamespace(image=f[2]) for f in skipped_frames])
            assert numbers == [f[0] for f in skipped_frames]


def test_a_seek_that_dropped_the_frame_a_target_needs_is_decoded_again_in_full(tmp_path, monkeypatch):
    """If a frame left undecoded is the one a target falls on (here forced: frames up to 10 after each target
    may be dropped), the seeking pass starts again (RESTART) decoding every frame, and gives the sample of
    decoding everything."""
    path = write_video(tmp_path / "long.mp4", n_frames=500, size=(96, 64), fps=25, gop=25)
    monkeypatch.setattr(video, "_should_seek", lambda *args: True)
    expected, _ = _sampled(path, n=16)
    monkeypatch.setattr(video, "SEEK_SKIP_MARGIN_FRAMES", -10)
    got, _ = _sampled(path, n=16)
    assert got.count(video.RESTART) == 1
    after = got[got.index(video.RESTART) + 1:]
    assert len(after) == len(expected) == 16
    for a, b in zip(after, expected):
        assert (a[0], a[1]) == (b[0], b[1]) and np.array_equal(a[2], b[2])


def test_an_edit_lists_hidden_frames_do_not_make_a_seeking_pass_start_again(tmp_path, monkeypatch):
    """An MP4 cut after its start keeps the frames before the cut's keyframe as packets decoded for reference
    and never shown (an edit list; negative pts). They are sent to the decoder as they are, not as skippable
    frames, so sampling from time 0 by seeking does not mistake them for dropped candidates and start over."""
    source = write_video(tmp_path / "source.mp4", n_frames=600, size=(96, 64), fps=25, gop=50)
    cut = tmp_path / "cut.mp4"
    with av.open(str(source)) as original, av.open(str(cut), "w") as output:
        stream = original.streams.video[0]
        copy = output.add_stream_from_template(stream)
        started, offset = False, int(7.6 / stream.time_base)  # from the keyframe at 6 s, time 0 at 7.6 s
        for packet in original.demux(stream):
            if packet.dts is None:
                continue
            started = started or (packet.is_keyframe and packet.pts * stream.time_base >= 6.0)
            if started:
                packet.pts, packet.dts, packet.stream = packet.pts - offset, packet.dts - offset, copy
                output.mux(packet)
    with av.open(str(cut)) as container:
        assert any(p.is_discard for p in container.demux(container.streams.video[0]) if p.size)
    monkeypatch.setattr(video, "_should_seek", lambda *args: True)
    skipped, skipped_info = _sampled(cut, n=None, fps=2.0)
    monkeypatch.setattr(video._Sampler, "_seek_skipping", lambda self: None)
    full, full_info = _sampled(cut, n=None, fps=2.0)
    assert video.RESTART not in skipped and video.RESTART not in full
    assert skipped_info == full_info and len(skipped) == len(full) > 0
    for a, b in zip(skipped, full):
        assert (a[0], a[1]) == (b[0], b[1]) and np.array_equal(a[2], b[2])


@pytest.mark.parametrize("seek", [False, True])
def test_a_damaged_stream_decoded_with_skipping_gives_the_frames_of_a_full_decode(tmp_path, monkeypatch, seek):
    """FFmpeg conceals a damaged frame from the frames it holds, which are others when some were left
    undecoded: a pass that meets a corrupt frame is decoded again in full, so a damaged file gives the same
    sample with skipping (a CPU scan's) as without."""
    path = write_video(tmp_path / "long.mp4", n_frames=1500, size=(160, 96), fps=25, gop=25)
    damaged = write_damaged(tmp_path / "damaged.mp4", path)
    monkeypatch.setattr(video, "_should_seek", lambda *args: seek)
    corrupt, decode = [], video._decode
    monkeypatch.setattr(video, "_decode",
                        lambda *args, **kwargs: (corrupt.append(f.is_corrupt) or f for f in decode(*args, **kwargs)))
    for options in ({"n": 8}, {"n": 32}):
        skipped, skipped_info = _sampled(damaged, **options)
        corrupt.clear()
        with monkeypatch.context() as decode_all:
            decode_all.setattr(video._Sampler, "_seek_skipping", lambda self: None)
            decode_all.setattr(video._Sampler, "_skippable", lambda self, targets: None)
            full, full_info = _sampled(damaged, **options)
        assert any(corrupt), "the damage should give the decoder a frame to conceal"
        if video.RESTART in skipped:
            skipped = skipped[len(skipped) - skipped[::-1].index(video.RESTART):]
        assert video.RESTART not in full and skipped_info == full_info and len(skipped) == len(full) > 0
        for a, b in zip(skipped, full):
            assert (a[0], a[1]) == (b[0], b[1]) and np.array_equal(a[2], b[2])


def test_read_ahead_raises_the_decoders_error_after_the_frames_before_it(tmp_path):
    path = write_truncated(tmp_path / "cut_noindex.mp4", keep_fraction=0.5, faststart=False, n_frames=50)
    with pytest.raises(DecodeError, match="cut_noindex.mp4"):
        with video.stream_frames(path) as stream, video.read_ahead(stream, depth=4) as frames:
            list(frames)

    def items():
        yield from (1, 2, 3)
        raise ValueError("decoder broke")

    seen = []
    with pytest.raises(ValueError, match="decoder broke"):
        with video.read_ahead(items(), depth=2) as ahead:
            for item in ahead:
                seen.append(item)
    assert seen == [1, 2, 3]


def test_leaving_read_ahead_early_stops_and_closes_the_producer():
    import threading

    closed = threading.Event()

    def endless():
        try:
            n = 0
            while True:
                n += 1
                yield n
        finally:
            closed.set()

    ahead = video.read_ahead(endless(), depth=3)
    with ahead:
        first = [item for _, item in zip(range(5), ahead)]
    assert first == [1, 2, 3, 4, 5]
    assert closed.is_set() and not ahead._thread.is_alive()  # joined before the block ended


def test_read_ahead_keeps_the_decode_limit_on_decoding(cfr_clip):
    """The consumer's slow work fills the queue; the producer's wait for room is not decode time."""
    import time

    with video.stream_frames(cfr_clip, n=None, time_limit_s=1.0) as stream, video.read_ahead(stream, 4) as frames:
        started, seen = time.monotonic(), 0
        for frame in frames:
            seen += frame is not video.RESTART
            time.sleep(0.02)
    assert seen == 100 and time.monotonic() - started > 1.5


# --- real clips ------------------------------------------------------------------------------------------


@pytest.mark.skipif(not REAL_CLIPS, reason=f"no real clips under {SHARED / 'clips' / 'real'}")
@pytest.mark.parametrize("path", REAL_CLIPS, ids=lambda p: p.name)
def test_real_clips(path):
    info, frames = sample_frames(path, n=8, max_side=640)
    assert info.codec and info.width > 0 and info.height > 0 and info.duration_s > 0 and info.fps > 0
    assert len(frames) == min(8, info.frame_count)
    times = [f.timestamp for f in frames]
    assert times == sorted(times) and times[-1] <= info.duration_s
    assert len({f.index for f in frames}) == len(frames)
    for frame in frames:
        assert frame.image.dtype == np.uint8 and max(frame.image.shape[:2]) <= 640
        assert frame.image.shape[1] * frame.scale == pytest.approx(info.width, rel=0.01)


@pytest.mark.skipif(not EXAMPLE_CLIP.exists(), reason="example clip not generated (tools/make_example_clip.py)")
def test_example_clip():
    info, frames = sample_frames(EXAMPLE_CLIP, n=4)
    assert info.codec == "h264" and 2.5 <= info.duration_s <= 3.5
    assert EXAMPLE_CLIP.stat().st_size < 400_000
    assert len(frames) == 4


def test_hundred_thousand_frame_video_is_sampled_by_seeking(tmp_path, monkeypatch):
    """66 minutes at 25 fps: 32 frames must come from seeks, not from decoding 100,000 frames."""
    path = tmp_path / "long.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "250", "tune": "zerolatency"}
        image = np.zeros((32, 32, 3), np.uint8)
        for i in range(100_000):
            image[:, :, 0] = i % 256
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    decoded = []
    real_decode = av.container.InputContainer.decode

    def counting_decode(self, *args, **kwargs):
        for frame in real_decode(self, *args, **kwargs):
            decoded.append(1)
            yield frame

    monkeypatch.setattr(av.container.InputContainer, "decode", counting_decode)
    info, frames = sample_frames(path, n=32)
    assert info.frame_count == 100_000 and info.duration_s == pytest.approx(4000, abs=1)
    assert len(frames) == 32 and frames[0].index < 3200 and frames[-1].index > 96_000
    assert len(decoded) < 32 * 260, f"decoded {len(decoded)} frames: it should seek, not decode through"
