"""Writes small test videos with PyAV (no ffmpeg binary needed). Used by test_video.py and other tests.

Every generated frame carries its frame number as a bar of black/white blocks along the top edge
(most significant bit first), so a test can tell which frame a decoder returned with `read_frame_number`,
even after lossy coding, downscaling, rotation or conversion to gray.
"""
from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path
from typing import Callable

import av
import numpy as np

CODE_BITS = 10  # frame numbers 0..1023
BAR_FRACTION = 0.2  # share of the image height taken by the frame-number bar

FrameFn = Callable[[int], np.ndarray]


def has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
    except Exception:  # noqa: BLE001 - av raises different types for unknown codecs across versions
        return False
    return True


def pattern_frame(index: int, width: int, height: int) -> np.ndarray:
    """An upright RGB frame: a moving gradient and square, with `index` coded in the top bar."""
    ys, xs = np.mgrid[0:height, 0:width]
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = (xs * 255 // max(width - 1, 1) + index * 3) % 256
    image[..., 1] = (ys * 255 // max(height - 1, 1)) % 256
    image[..., 2] = ((xs + ys) // 4 + index * 5) % 256
    side = max(height // 5, 2)
    x0 = (index * 4) % max(width - side, 1)
    y0 = height // 2 + (index * 2) % max(height // 2 - side, 1)
    image[y0:y0 + side, x0:x0 + side] = (250, 40, 40)
    _draw_code_bar(image, index)
    return image


def _draw_code_bar(image: np.ndarray, index: int) -> None:
    height, width = image.shape[:2]
    bar_height = max(int(height * BAR_FRACTION), 4)
    image[:bar_height] = 0
    for bit in range(CODE_BITS):
        if index >> (CODE_BITS - 1 - bit) & 1:
            x0, x1 = bit * width // CODE_BITS, (bit + 1) * width // CODE_BITS
            image[:bar_height, x0:x1] = 255


def read_frame_number(image: np.ndarray) -> int:
    """Reads the number drawn by `pattern_frame` from an upright RGB (or gray) image of any size."""
    height, width = image.shape[:2]
    gray = image.mean(axis=2) if image.ndim == 3 else image.astype(np.float64)
    bar_height = max(int(height * BAR_FRACTION), 4)
    y0, y1 = bar_height // 4, max(bar_height * 3 // 4, bar_height // 4 + 1)
    number = 0
    for bit in range(CODE_BITS):
        x0, x1 = bit * width // CODE_BITS, (bit + 1) * width // CODE_BITS
        pad = max((x1 - x0) // 4, 0)
        block = gray[y0:y1, x0 + pad:max(x1 - pad, x0 + pad + 1)]
        number = number << 1 | int(block.mean() > 127)
    return number


def vfr_times(n_frames: int, fps: float) -> list[float]:
    """Presentation times (s) for a variable-frame-rate clip: frame gaps alternate 0.5x and 1.5x of 1/fps,
    with a 3x gap every 7th frame, so index * (1/fps) is wrong for most frames."""
    times, t = [], 0.0
    for i in range(n_frames):
        times.append(round(t, 3))
        gap = 3.0 if i % 7 == 6 else (0.5 if i % 2 == 0 else 1.5)
        t += gap / fps
    return times


def write_video(
    path: str | Path,
    n_frames: int = 30,
    size: tuple[int, int] = (160, 120),
    fps: float = 25,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    rotation: int = 0,
    vfr: bool = False,
    frame_fn: FrameFn | None = None,
    gop: int | None = None,
    faststart: bool = True,
    options: dict[str, str] | None = None,
) -> Path:
    """Writes a video; the container comes from the suffix (.mp4 .mkv .webm .mov .avi).

    size: the display (upright) size (W, H). rotation: degrees a player turns the coded frames clockwise
    to show them upright (the display matrix); the coded frames are stored turned the other way, so the
    decoded-and-rotated image is the upright pattern. vfr: frame times from `vfr_times` (millisecond pts).
    gop: keyframe interval in frames (None: encoder default). Returns the path.
    """
    path = Path(path)
    width, height = size
    coded_width, coded_height = (height, width) if rotation % 180 else (width, height)
    draw = frame_fn or (lambda i: pattern_frame(i, width, height))
    container_options = {"movflags": "+faststart"} if faststart and path.suffix.lower() in (".mp4", ".mov") else {}
    with av.open(str(path), "w", options=container_options) as container:
        stream = _add_video_stream(container, codec, fps, coded_width, coded_height, pix_fmt, gop, options, vfr)
        if rotation % 360:
            stream.set_display_rotation(-rotation)  # PyAV takes counter-clockwise degrees
        time_base = Fraction(1, 1000) if vfr else stream.codec_context.time_base
        times = vfr_times(n_frames, fps) if vfr else None
        for index in range(n_frames):
            upright = np.ascontiguousarray(draw(index))
            coded = np.ascontiguousarray(np.rot90(upright, k=rotation // 90 % 4))
            frame = av.VideoFrame.from_ndarray(coded, format="rgb24")
            frame.pts = round(times[index] * 1000) if times else index
            frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _add_video_stream(container, codec: str, fps: float, width: int, height: int, pix_fmt: str,
                      gop: int | None, options: dict[str, str] | None, vfr: bool):
    rate = Fraction(fps).limit_denominator(1001)
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    # A millisecond time base lets VFR frames keep their exact times; CFR frames are numbered 0, 1, 2, ...
    stream.codec_context.time_base = Fraction(1, 1000) if vfr else 1 / rate
    if gop:
        stream.codec_context.gop_size = gop
    codec_options = dict(options or {})
    if codec == "libx264":
        codec_options.setdefault("preset", "veryfast")
        if gop:
            codec_options.setdefault("x264-params", f"keyint={gop}:min-keyint={gop}:scenecut=0")
    if codec.startswith("libvpx"):
        codec_options.setdefault("deadline", "realtime")
        codec_options.setdefault("cpu-used", "8")
    stream.options = codec_options
    return stream


def write_truncated(path: str | Path, keep_fraction: float = 0.5, faststart: bool = True, **kwargs) -> Path:
    """Writes a video with `write_video`, then cuts the file to `keep_fraction` of its bytes.

    With faststart (MP4 index first) the first part still decodes; without it the index is lost."""
    path = Path(path)
    full = path.with_name(path.stem + ".full" + path.suffix)
    write_video(full, faststart=faststart, **kwargs)
    data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
    full.unlink()
    return path


def write_damaged(path: str | Path, source: str | Path) -> Path:
    """A copy of `source` with 30 runs of 200 random bytes in its last three quarters (seeded): FFmpeg conceals
    the frames whose data they hit."""
    data, rng = bytearray(Path(source).read_bytes()), np.random.default_rng(0)
    for position in rng.integers(len(data) // 4, len(data) - 1000, 30):
        data[position:position + 200] = rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
    Path(path).write_bytes(bytes(data))
    return Path(path)


def write_remuxed(source: str | Path, path: str | Path) -> Path:
    """`source`'s video packets, as they are, in the container `path`'s suffix names (.ts, .mkv)."""
    with av.open(str(source)) as reader, av.open(str(path), "w") as writer:
        stream = reader.streams.video[0]
        out = writer.add_stream_from_template(stream)
        for packet in reader.demux(stream):
            if packet.dts is not None:
                packet.stream = out
                writer.mux(packet)
    return Path(path)


def write_audio_only(path: str | Path, seconds: float = 1.0, sample_rate: int = 16000) -> Path:
    """An audio-only file (AAC in .mp4/.m4a, or PCM in .wav): a 440 Hz tone."""
    path = Path(path)
    codec = "pcm_s16le" if path.suffix.lower() == ".wav" else "aac"
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=sample_rate)
        stream.layout = "mono"
        frame_size = 1024
        n_samples = int(seconds * sample_rate)
        t = np.arange(n_samples) / sample_rate
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, n_samples, frame_size):
            chunk = tone[start:start + frame_size]
            if codec == "pcm_s16le":
                frame = av.AudioFrame.from_ndarray((chunk * 32767).astype(np.int16)[None], format="s16", layout="mono")
            else:
                frame = av.AudioFrame.from_ndarray(chunk[None], format="fltp", layout="mono")
            frame.sample_rate, frame.pts = sample_rate, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def copy_without_permission(source: str | Path, target: str | Path) -> Path:
    target = Path(target)
    shutil.copy(source, target)
    target.chmod(0)
    return target


def write_rotated_copy(source: str | Path, path: str | Path, rotation: int, n_frames: int = 40,
                       crop_x: tuple[int, int] | None = None) -> Path:
    """Re-encodes the first frames of `source` stored sideways, as a phone does: each frame turned
    counter-clockwise by `rotation` degrees, with a display matrix telling players to turn it `rotation`
    degrees clockwise to show it upright. `crop_x` keeps a column range first (a non-square frame)."""
    path = Path(path)
    with av.open(str(source)) as container:
        frames = []
        for frame in container.decode(video=0):
            image = frame.to_ndarray(format="rgb24")
            frames.append(image[:, crop_x[0]:crop_x[1]] if crop_x else image)
            if len(frames) == n_frames:
                break
    turns = rotation // 90
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        coded = np.ascontiguousarray(np.rot90(frames[0], k=turns))
        stream.width, stream.height, stream.pix_fmt = coded.shape[1], coded.shape[0], "yuv420p"
        stream.set_display_rotation(-rotation)  # FFmpeg's angle is counter-clockwise
        for image in frames:
            video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(np.rot90(image, k=turns)), format="rgb24")
            for packet in stream.encode(video_frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path
