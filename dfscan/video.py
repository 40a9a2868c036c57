"""Probe videos and sample frames with PyAV.

`probe(path)` describes a video; `sample_frames(path, n=32)` returns upright RGB frames picked uniformly over
its duration (or at a given rate, or all of them). Every failure is a `dfscan.errors` type with a one-line
message naming the file; no raw av/FFmpeg exception escapes.

Conventions:
- `rotation` is the clockwise turn (0/90/180/270) a player applies to the coded frames to show them upright,
  read from the display matrix side data (FFmpeg's `rotate` tag convention: a portrait phone clip is 90).
  Width and height in `VideoInfo` are the upright (display) size. Flips in the matrix are ignored.
- Timestamps come from each frame's pts, relative to the stream start, so variable frame rate is handled.
- Straight-through decoding numbers frames exactly; after a seek, `index` is round(timestamp * average fps),
  exact for constant-frame-rate video.
"""
from __future__ import annotations

import bisect
import errno
import math
import os
import queue
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import av
import av.logging
import numpy as np

from dfscan.errors import DecodeError, DfscanError, InputError, NoFramesError, NoVideoStreamError, ResourceLimitError

av.logging.set_level(None)  # FFmpeg's own messages go nowhere; our errors carry the reason

# Demuxers that open still images or text as a one-frame "video": not something to scan.
NOT_VIDEO_FORMATS = ("image2", "tty")
NOT_VIDEO_FORMAT_SUFFIX = "_pipe"  # png_pipe, jpeg_pipe, webp_pipe, ...

# Decode-cost model for choosing between decoding straight through and seeking (see `_should_seek`).
SEEK_OVERHEAD_FRAMES = 4.0   # one seek (demuxer seek + decoder flush) costs about this many frame decodes
SEEK_ADVANTAGE = 0.6         # seek only when its estimated cost is below this share of straight-through
MIN_FRAMES_FOR_SEEKING = 300  # shorter clips always decode straight through (exact indices, no seek risk)
REORDER_MARGIN_FRAMES = 4    # seek this far before a target: MP4 seeks by dts, and a B-frame stream's
                             # keyframe shows (pts) a few frames after its dts
SEEK_SKIP_MARGIN_FRAMES = 3  # after a seek, frames at least this far before the target need not be decoded
MAX_PIXELS = 8192 * 8192
MAX_DECODE_ERRORS = 50       # corrupt packets tolerated before a file is treated as ending there


@dataclass
class VideoInfo:
    path: str
    size_bytes: int
    container: str
    codec: str
    width: int    # display size, after rotation
    height: int
    fps: float | None
    duration_s: float | None
    frame_count: int | None  # estimated from duration * fps when the container doesn't say
    rotation: int  # clockwise degrees applied to make frames upright (0/90/180/270)
    pix_fmt: str
    bit_rate: int | None
    truncated: bool = False  # the stream ends clearly before its declared duration (a cut or damaged file)
    declared_duration_s: float | None = None  # what the container states, when truncated (duration_s: decoded)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SampledFrame:
    index: int         # frame number in decode order (0-based)
    timestamp: float   # seconds from stream start (from pts)
    image: np.ndarray  # RGB uint8 HxWx3, upright, possibly downscaled
    scale: float       # original display width / image width (1.0 when not downscaled)
    # FFmpeg marked the frame corrupt: part of its picture was filled in by the decoder's error concealment
    # (a damaged or missing slice), not read from the file, and may differ between decoders and threadings.
    concealed: bool = False


def probe(path: str | Path, max_pixels: int = MAX_PIXELS) -> VideoInfo:
    """Describes a video. Decodes its first frame to read the rotation and the true pixel format."""
    file = _checked_path(path)
    with _open(file) as container:
        stream = _video_stream(container, file)
        _check_pixels(file, stream.codec_context.width, stream.codec_context.height, max_pixels)
        first = next(_decode(container, stream, file, budget=None), None)
        if first is None:
            raise NoFramesError(f"{file.name}: the video stream has no decodable frames")
        return _describe(container, stream, file, rotation=_rotation_of(first), pix_fmt=first.format.name)


RESTART = "restart"  # marker in a frame stream: drop the frames so far, a new sampling pass follows


def sample_frames(
    path: str | Path,
    n: int | None = 32,
    fps: float | None = None,
    max_side: int | None = 1920,
    max_frames: int = 10_000,
    max_pixels: int = MAX_PIXELS,
    time_limit_s: float | None = 300,
) -> tuple[VideoInfo, list[SampledFrame]]:
    """Decodes frames of a video and returns (info, frames) in time order.

    n: that many frames, uniformly over the duration: the targets are the centres of n equal intervals and
       each gets the decoded frame nearest to it, never the same frame twice (a video with at most n frames
       gives all of them). n=None: every frame. fps: frames at that rate instead (targets k / fps).
       At most `max_frames` frames are returned in any mode.
    max_side: frames whose longer side is larger are downscaled at decode time (`SampledFrame.scale`).
    max_pixels, time_limit_s: larger inputs, or slower decodes, raise ResourceLimitError.

    A truncated file gives the frames before the damage, sampled over the part that decodes, and says so
    in `VideoInfo.truncated`. `stream_frames` gives the same frames without holding them all.
    """
    frames: list[SampledFrame] = []
    with stream_frames(path, n, fps, max_side, max_frames, max_pixels, time_limit_s) as stream:
        for frame in stream:
            if frame is RESTART:
                frames.clear()
            else:
                frames.append(frame)
    return stream.info, frames


class stream_frames:  # noqa: N801 - used like a function: `with stream_frames(path) as frames: ...`
    """The frames `sample_frames` returns, one at a time, so memory does not grow with their number.

    Iterating yields SampledFrames in time order, and RESTART when a pass is abandoned (a failed seek, or a
    truncated file resampled over the part that decodes): the consumer drops what it has and continues.
    `info` is complete (rotation, truncation) once the iteration has ended. strict: more than `max_frames`
    frames raises ResourceLimitError instead of stopping there. threaded: FFmpeg decodes on a thread per core
    (the same frames either way; off where other threads keep the cores busy, as in a CPU scan). Without those
    threads, frames that no other frame refers to and that cannot be sampled are not decoded at all."""

    def __init__(self, path: str | Path, n: int | None = 32, fps: float | None = None, max_side: int | None = 1920,
                 max_frames: int = 10_000, max_pixels: int = MAX_PIXELS, time_limit_s: float | None = 300,
                 strict: bool = False, threaded: bool = True):
        self.file = _checked_path(path)
        self.n, self.fps, self.max_side, self.max_frames = n, fps, max_side, max_frames
        self.max_pixels, self.time_limit_s, self.strict, self.threaded = max_pixels, time_limit_s, strict, threaded
        self.container: av.container.InputContainer | None = None

    def __enter__(self) -> "stream_frames":
        self.budget = _DecodeBudget(self.time_limit_s)
        self._open()
        return self

    def _open(self) -> None:
        self.container = _open(self.file)
        try:
            stream = _video_stream(self.container, self.file, self.threaded)
            self.info = _describe(self.container, stream, self.file, rotation=0,
                                  pix_fmt=stream.codec_context.pix_fmt or "")
            _check_pixels(self.file, self.info.width, self.info.height, self.max_pixels)
            self.targets = _target_times(self.info, self.n, self.fps, self.max_frames)
            if self.strict and self.targets is None:
                _check_frame_budget(self.file, self.info.frame_count, self.max_frames)
            self.sampler = _Sampler(self.container, stream, self.file, self.info, self.max_side, self.max_pixels,
                                    self.budget, self.strict, threaded=self.threaded)
        except BaseException:
            self.container.close()
            raise

    def __iter__(self) -> Iterator[SampledFrame | str]:
        try:
            yield from self._sampled()
        except _DamagedUnderThreads:
            self._reopen_single_threaded()
            yield RESTART
            yield from self._sampled()

    def _sampled(self) -> Iterator[SampledFrame | str]:
        taken = 0
        for frame in self.sampler.run(self.targets, self.max_frames, uniform=self.fps is None):
            taken = 0 if frame is RESTART else taken + 1
            handed_over = time.monotonic()
            yield frame
            self.budget.pause(time.monotonic() - handed_over)  # the consumer's time is not decoding
        if not taken:
            raise NoFramesError(f"{self.file.name}: the video stream has no decodable frames")
        _update_from_frames(self.info, self.sampler)

    def _reopen_single_threaded(self) -> None:
        """The file again, from its start, decoded as a CPU scan decodes it."""
        self.container.close()
        self.threaded = False
        self._open()

    def __exit__(self, *exc: object) -> None:
        if self.container is not None:
            self.container.close()


def _check_frame_budget(file: Path, frame_count: int | None, max_frames: int) -> None:
    if frame_count is not None and frame_count > max_frames:
        raise ResourceLimitError(f"{file.name}: about {frame_count:,} frames, over the limit of {max_frames:,} "
                                 "per video; sample fewer (--frames N or --fps R)")


# --- input checks and opening -------------------------------------------------------------------------


def _checked_path(path: str | Path) -> Path:
    file = Path(path)
    try:
        os.stat(file)
    except PermissionError:
        raise InputError(f"{file}: permission denied (a folder on its path cannot be entered)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(f"{file}: a symbolic link loop") from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            link = " (a link to a missing file)" if file.is_symlink() else ""
            raise InputError(f"{file}: no such file{link}") from None
        raise InputError(f"{file}: {exc.strerror or exc}") from None  # a name too long, ...
    if file.is_dir():
        raise InputError(f"{file}: is a directory, not a video file")
    if not file.is_file():
        raise InputError(f"{file}: not a regular file")
    if not os.access(file, os.R_OK):
        raise InputError(f"{file}: permission denied")
    if file.stat().st_size == 0:
        raise InputError(f"{file}: empty file (0 bytes)")
    return file


def _open(file: Path) -> av.container.InputContainer:
    try:
        container = av.open(str(file), metadata_errors="ignore")
    except PermissionError as exc:
        raise InputError(f"{file}: permission denied") from exc
    except (av.FFmpegError, OSError, ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"{file.name}: not a video FFmpeg can read ({_reason(exc)})") from exc
    format_name = container.format.name
    if format_name in NOT_VIDEO_FORMATS or format_name.endswith(NOT_VIDEO_FORMAT_SUFFIX):
        container.close()
        raise DecodeError(f"{file.name}: a still image or text ({format_name}), not a video")
    return container


def _video_stream(container: av.container.InputContainer, file: Path, threaded: bool = True) -> av.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        raise NoVideoStreamError(f"{file.name}: no video stream (has {', '.join(kinds)})")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO" if threaded else "NONE"
    return stream


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return reason.splitlines()[0][:120]


def _check_pixels(file: Path, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ResourceLimitError(
            f"{file.name}: {width}x{height} exceeds the limit of {max_pixels:,} pixels per frame")


# --- description ----------------------------------------------------------------------------------------


def _describe(container: av.container.InputContainer, stream: av.VideoStream, file: Path,
              rotation: int, pix_fmt: str) -> VideoInfo:
    codec = stream.codec_context
    fps = _stream_fps(stream)
    duration = _stream_duration(container, stream)
    frame_count = stream.frames or None
    if duration is None:
        duration, frame_count = _scan_packets(file)
    if frame_count is None and duration and fps:
        frame_count = max(round(duration * fps), 1)
    width, height = (codec.height, codec.width) if rotation % 180 else (codec.width, codec.height)
    return VideoInfo(
        path=str(file), size_bytes=file.stat().st_size, container=_container_name(container, file),
        codec=codec.name, width=width, height=height, fps=fps, duration_s=duration, frame_count=frame_count,
        rotation=rotation, pix_fmt=pix_fmt, bit_rate=codec.bit_rate or container.bit_rate or None)


def _container_name(container: av.container.InputContainer, file: Path) -> str:
    names = container.format.name.split(",")  # e.g. "mov,mp4,m4a,3gp,3g2,mj2": name it by the file suffix
    suffix = file.suffix.lower().lstrip(".")
    return suffix if suffix in names else names[0]


def _stream_fps(stream: av.VideoStream) -> float | None:
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else None


def _stream_start(stream: av.VideoStream) -> float:
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _stream_duration(container: av.container.InputContainer, stream: av.VideoStream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:  # MKV/WebM keep no per-stream duration
        return container.duration / av.time_base
    return None


def _scan_packets(file: Path) -> tuple[float | None, int | None]:
    """Duration and frame count from the packet timestamps, without decoding (for files that state neither)."""
    first = last = None
    count = 0
    try:
        with av.open(str(file)) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.size == 0 or packet.pts is None:
                    continue
                count += 1
                end = packet.pts + (packet.duration or 0)
                first = packet.pts if first is None else min(first, packet.pts)
                last = end if last is None else max(last, end)
    except (av.FFmpegError, OSError):
        pass  # a damaged tail: what was read so far is the answer
    if first is None or stream.time_base is None:
        return None, (count or None)
    return float((last - first) * stream.time_base), count


def _rotation_of(frame: av.VideoFrame) -> int:
    """Clockwise degrees (0/90/180/270) to turn this frame upright. PyAV reports the matrix counter-clockwise."""
    return round(-frame.rotation / 90) % 4 * 90


def _update_from_frames(info: VideoInfo, sampler: "_Sampler") -> None:
    info.rotation = sampler.rotation
    if sampler.rotation % 180:
        info.width, info.height = info.height, info.width
    info.pix_fmt = sampler.pix_fmt or info.pix_fmt
    if sampler.truncated_at is not None:
        info.truncated = True
        info.declared_duration_s = info.duration_s
        info.duration_s = round(sampler.truncated_at, 6)
        info.frame_count = sampler.truncated_frame_count


# --- target times -----------------------------------------------------------------------------------------


def _target_times(info: VideoInfo, n: int | None, fps: float | None, max_frames: int) -> list[float] | None:
    """Seconds from stream start to sample at, or None for every frame."""
    duration = info.duration_s
    if fps is not None:
        if fps <= 0:
            raise ValueError("fps must be positive")
        if not duration or (info.fps and fps >= info.fps):
            return None
        return [k / fps for k in range(min(max(math.ceil(duration * fps), 1), max_frames))]
    if n is None:
        return None
    if n <= 0:
        raise ValueError("n must be positive")
    n = min(n, max_frames)
    if not duration or (info.frame_count is not None and info.frame_count <= n):
        return None
    return uniform_targets(duration, n)


def uniform_targets(duration: float, n: int) -> list[float]:
    """The centres of n equal intervals of [0, duration]."""
    return [(i + 0.5) * duration / n for i in range(n)]


# --- decoding -----------------------------------------------------------------------------------------------


def _decode(container: av.container.InputContainer, stream: av.VideoStream, file: Path,
            budget: _DecodeBudget | None, skipping: _Skipping | None = None,
            threaded: bool = False) -> Iterator[av.VideoFrame]:
    """Frames in presentation order. A packet that fails to decode is skipped; a demuxer error ends the stream
    there (a truncated file), as do more than MAX_DECODE_ERRORS such packets, and a file cut inside its last
    packet ends with the frame before it, with or without FFmpeg's frame threads. skipping: packets of frames it does
    not need go to the decoder with FFmpeg's skip_frame at NONREF (a frame another one refers to is still
    decoded; one none does is dropped unseen). threaded: the decoder runs FFmpeg's frame threads, and damage
    raises _DamagedUnderThreads."""
    if skipping is None:
        yield from _decode_packets(container, stream, file, budget, None, threaded)
        return
    try:
        yield from _decode_packets(container, stream, file, budget, skipping)
    finally:
        stream.codec_context.skip_frame = "DEFAULT"  # never left skipping for a later pass, however this one ends


def _decode_packets(container: av.container.InputContainer, stream: av.VideoStream, file: Path,
                    budget: _DecodeBudget | None, skipping: _Skipping | None,
                    threaded: bool = False) -> Iterator[av.VideoFrame]:
    errors = 0
    context = stream.codec_context
    # A packet the demuxer flags corrupt is decoded only once a packet with data follows it. A file cut inside
    # its last packet (read short, flagged corrupt) never is: single-threaded FFmpeg refuses it at once, but a
    # frame-threaded decoder (a GPU scan's) reports the error late, while the last frames drain, and PyAV then
    # drops the frames still in the decoder: the file ended two frames earlier on a GPU than on a CPU.
    held, cut_pts = None, None
    for packet in _demuxed(container, stream):
        if skipping is not None:
            if packet.is_corrupt:  # a damaged stream is numbered by what decodes: decode all of it
                raise _SkipMismatch
            # a packet decoded for reference and never shown (an edit list's) is sent as is
            context.skip_frame = "DEFAULT" if packet.is_discard or skipping.needs(packet.pts) else "NONREF"
        ready = [held] if held is not None else []
        if not packet.size:  # the demuxer's closing empty packet drains the decoder; one held was the last
            cut_pts, ready, held = (held.pts if held is not None else None), [packet], None
        elif packet.is_corrupt:
            held = packet
        else:
            ready.append(packet)
            held = None
        for sent in ready:
            if threaded and sent.is_corrupt and sent.size:
                raise _DamagedUnderThreads
            try:
                decoded = stream.decode(sent)
            except av.FFmpegError:
                if skipping is not None:
                    raise _SkipMismatch from None
                if threaded:
                    raise _DamagedUnderThreads from None
                errors += 1
                continue
            yield from _frames_before_cut(decoded, cut_pts, skipping, file, budget, threaded)
        if errors > MAX_DECODE_ERRORS:
            break
    if skipping is not None:
        context.skip_frame = "DEFAULT"  # the frames still in the decoder's reorder buffer
    if held is not None:
        cut_pts = held.pts
    try:
        yield from _frames_before_cut(stream.decode(None), cut_pts, skipping, file, budget, threaded)
    except av.error.EOFError:  # drained already, by the demuxer's closing empty packet
        pass
    except av.FFmpegError:
        if threaded:
            raise _DamagedUnderThreads from None


def _frames_before_cut(frames: Iterable[av.VideoFrame], cut_pts: int | None, skipping: _Skipping | None,
                       file: Path, budget: _DecodeBudget | None, threaded: bool = False) -> Iterator[av.VideoFrame]:
    """The frames, less those shown after a cut file's last packet (cut_pts): decoded before it and held for
    reordering, they lie past the damage, and frames are numbered as they decode, so one would take the
    missing frame's number."""
    for frame in frames:
        if budget is not None:
            budget.check(file)
        if threaded and frame.is_corrupt:
            raise _DamagedUnderThreads
        if cut_pts is None or frame.pts is None or frame.pts <= cut_pts:
            yield _checked_for_skipping(frame, skipping)


def _demuxed(container: av.container.InputContainer, stream: av.VideoStream) -> Iterator[av.Packet]:
    """The stream's packets; a demuxer error (a cut or damaged container) ends them there."""
    packets = container.demux(stream)
    while True:
        try:
            yield next(packets)
        except (StopIteration, av.FFmpegError, OSError):
            return


def _checked_for_skipping(frame: av.VideoFrame, skipping: _Skipping | _SeekSkipping | None) -> av.VideoFrame:
    # A damaged frame is concealed from the frames the decoder holds, which are others when some were left
    # undecoded: the pixels could differ from a full decode's, so such a pass is decoded again in full.
    if skipping is not None and frame.is_corrupt:
        raise _SkipMismatch
    return frame


SKIP_MIN_GAP = 3  # frames between the frames nearest consecutive targets, at least, for `_Skipping`


class _DamagedUnderThreads(Exception):
    """A frame-threaded decoder (a GPU scan's) met damage: a packet that fails or is flagged corrupt, or a frame
    FFmpeg concealed. Its concealment then differs from a single-threaded decode's (a CPU scan's: on a damaged
    MP4, 23 of 32 sampled frames had other pixels), so the file is decoded again without threads."""


class _SkipMismatch(Exception):
    """Decoded frames did not match the packets' timestamps: sampling starts again, decoding every frame."""


class _Skipping:
    """The frames a straight-through sampling pass needs decoded (by their packets' pts), and every frame's
    place in presentation order, which stands in for the count of decoded frames as its index."""

    def __init__(self, ranks: dict[int, int], needed: set[int], time_base: Any):
        self.ranks, self.needed, self.time_base = ranks, needed, time_base

    def needs(self, pts: int | None) -> bool:
        rank = self.ranks.get(pts) if pts is not None else None
        return rank is None or rank in self.needed  # a packet not among the shown ones is decoded as always

    def numbered(self, frames: Iterator[av.VideoFrame]) -> Iterator[tuple[int, av.VideoFrame]]:
        """(index, frame) as `enumerate` gives them when every frame is decoded; raises _SkipMismatch when a
        frame's timestamp is not a packet's, or the order differs."""
        last = -1
        for frame in frames:
            rank = self.ranks.get(frame.pts) if frame.pts is not None else None
            if rank is None or rank <= last or frame.time_base != self.time_base:
                raise _SkipMismatch
            last = rank
            yield rank, frame


class _SeekSkipping:
    """For a seeking pass: the packets of frames at least SEEK_SKIP_MARGIN_FRAMES before the target being
    sought go to the decoder with skip_frame at NONREF. Whichever of them no other frame refers to is dropped
    unseen; no choice can fall on it unless it was the last frame before the target, which `check` finds."""

    def __init__(self, time_base: Any):
        self.time_base = time_base
        self.limit: int | None = None   # packets with a pts below this may go undecoded
        self.sent: list[int] = []       # pts of the packets sent with NONREF since the last seek

    def restart(self) -> None:
        self.limit, self.sent = None, []

    def aim(self, skip_before_s: float) -> None:
        self.limit = math.floor(skip_before_s / self.time_base)

    def needs(self, pts: int | None) -> bool:
        if pts is None or self.limit is None or pts >= self.limit:
            return True
        self.sent.append(pts)
        return False

    def check(self, previous_pts: int | None, pts: int) -> None:
        """Raises _SkipMismatch if a frame sent with NONREF lies between the last frame before the target that
        came out (previous_pts; None: none since the seek) and the frame at or after it (pts): frames come out
        in presentation order, so had it been decoded it would have been the last before the target."""
        low = -math.inf if previous_pts is None else previous_pts
        if any(low < sent < pts for sent in self.sent):
            raise _SkipMismatch
        # Later targets' choices lie after this frame: what was sent before it no longer matters (and a
        # continuous pass over a long video, targets close together, would otherwise check it again each time).
        self.sent = [sent for sent in self.sent if sent > pts]


def _packet_timestamps(file: Path) -> list[int] | None:
    """The pts of the video packets a decoder shows, in presentation order, from a demux pass without decoding;
    None when a packet lacks one, two share one, or the file cannot be read to its end (then every frame is
    decoded)."""
    found: list[int] = []
    packets = 0
    try:
        with av.open(str(file)) as container:
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue
                packets += 1
                if packet.is_discard:  # decoded for reference, never shown
                    continue
                if packet.pts is None:
                    return None
                found.append(packet.pts)
            if packets < (stream.frames or 0):  # fewer than the index lists: a cut file
                return None
    except (av.FFmpegError, OSError):
        return None
    ordered = sorted(found)
    return ordered if ordered and len(set(ordered)) == len(ordered) else None


class read_ahead:  # noqa: N801 - used like a function: `with read_ahead(stream, depth) as frames: ...`
    """The items of `frames` (a `stream_frames`), produced on a background thread up to `depth` items ahead
    of the consumer, so that decoding the next frames overlaps the consumer's work on the current ones
    (PyAV releases the GIL while it decodes: a second core does the decoding). Items and the producer's
    exception arrive in order. Leaving the block stops and joins the thread before anything else is closed,
    so a stream's container is never closed under a running decode. The stream's decode budget still counts
    decoding only: the producer waiting for room in the queue is the consumer's time."""

    _ITEM, _END, _RAISED = "item", "end", "raised"

    def __init__(self, frames: Iterable[Any], depth: int):
        if depth < 1:
            raise ValueError(f"depth must be at least 1, not {depth}")
        self._frames = frames
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="dfscan-decode", daemon=True)

    def __enter__(self) -> "read_ahead":
        if self._thread.ident is None:  # entered once: a block may hand its items on to one that enters again
            self._thread.start()
        return self

    def __iter__(self) -> Iterator[Any]:
        while True:
            kind, item = self._queue.get()
            if kind == self._END:
                return
            if kind == self._RAISED:
                raise item
            yield item

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)  # makes room for a producer blocked on a full queue
            except queue.Empty:
                pass
        self._thread.join()

    def wait_produced(self) -> None:
        """Until the producer has handed over its last item (or was stopped)."""
        if self._thread.ident is not None:
            self._thread.join()

    def _produce(self) -> None:
        items = iter(self._frames)
        try:
            for item in items:
                if not self._put((self._ITEM, item)):
                    return
            self._put((self._END, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            self._put((self._RAISED, exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a generator's own cleanup, in the thread that ran it

    def _put(self, entry: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False


class decode_ahead(read_ahead):  # noqa: N801 - used like a function: `with decode_ahead(path, depth) as frames:`
    """`stream_frames(path, **options)` opened, read and closed on read_ahead's thread, which starts when the
    block is entered: a caller can start decoding a video before it loads what will take the frames. Every
    failure, opening the file included, is raised where the frames are read, as from `stream_frames`.
    `info`: the stream's VideoInfo, once the frames have been read to the end."""

    def __init__(self, path: str | Path, depth: int, after: read_ahead | None = None, **options: Any):
        self.path, self.options, self.after = path, options, after
        self.info: VideoInfo | None = None
        super().__init__(self._decoded(), depth)

    def _decoded(self) -> Iterator[SampledFrame | str]:
        if self.after is not None:  # the previous video's decoding ends first: they would only share the core
            self.after.wait_produced()
        with stream_frames(self.path, **self.options) as stream:
            yield from stream
            self.info = stream.info


class _DecodeBudget:
    """The decode time limit of one video. It counts only the time spent here, decoding and converting:
    while the consumer of `stream_frames` works on a frame (detection, scoring) the clock stands still,
    so a long `--frames all` scan on a slow machine is not cut off for its detector's time."""

    def __init__(self, limit_s: float | None):
        self.limit_s = limit_s
        self.deadline = None if limit_s is None else time.monotonic() + limit_s

    def pause(self, seconds: float) -> None:
        if self.deadline is not None:
            self.deadline += seconds

    def check(self, file: Path) -> None:
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise ResourceLimitError(f"{file.name}: decoding took longer than the {self.limit_s:g} s limit")


class _Sampler:
    """Runs one sampling pass and converts the chosen frames to upright RGB."""

    def __init__(self, container: av.container.InputContainer, stream: av.VideoStream, file: Path, info: VideoInfo,
                 max_side: int | None, max_pixels: int, budget: _DecodeBudget | None,
                 strict: bool = False, threaded: bool = True):
        self.container, self.stream, self.file, self.info = container, stream, file, info
        # FFmpeg's frame threads decode every frame; without them, frames no choice can fall on go undecoded
        self.strict, self.threaded = strict, threaded
        self.max_side, self.max_pixels = max_side, max_pixels
        self.budget = budget
        self.start = _stream_start(stream)
        self.rotation = 0
        self.pix_fmt = ""
        self.decoded_count = 0
        self.truncated_at: float | None = None  # decodable length (s) when the file ends before its stated end
        self.truncated_frame_count = 0
        self._first_frame_time: float | None = None  # a seeking pass's, see `_first_time`

    def run(self, targets: list[float] | None, max_frames: int, uniform: bool) -> Iterator[SampledFrame | str]:
        """Yields the chosen frames (and RESTART before a second pass).
        uniform: the targets are interval centres over the duration, to be spread over what decodes
        when the file turns out shorter (truncated); otherwise targets past the end are dropped."""
        if targets is None:
            end_time = yield from self._all_frames(max_frames)
            self._note_truncation(end_time)
            return
        long_enough = (self.info.frame_count or 0) >= MIN_FRAMES_FOR_SEEKING
        keyframe_interval_s = _keyframe_interval_s(self.stream, self.info.duration_s) if long_enough else None
        if keyframe_interval_s and _should_seek(self.info, len(targets), keyframe_interval_s):
            try:
                done = yield from self._by_seeking(targets, keyframe_interval_s, self._seek_skipping())
            except _SkipMismatch:  # a frame left undecoded was one a choice falls on: seek again, decoding all
                self.stream.codec_context.skip_frame = "DEFAULT"
                yield RESTART
                done = yield from self._by_seeking(targets, keyframe_interval_s, None)
            if done:
                return
            self._rewind()
            yield RESTART
        taken: list[int] = []
        skipping = self._skippable(targets)
        try:
            end_time = yield from self._straight_through(targets, taken, skipping)
            if skipping is not None and end_time is not None and self._ended_early(end_time):
                raise _SkipMismatch  # a cut file is numbered by the frames that decode: decode all of them
        except _SkipMismatch:  # frames came out other than the packets said: decode them all, as always
            self.stream.codec_context.skip_frame = "DEFAULT"
            self._rewind()
            yield RESTART
            taken = []
            end_time = yield from self._straight_through(targets, taken)
        if self._note_truncation(end_time) and uniform and len(taken) < len(targets):
            self._rewind()
            yield RESTART
            yield from self._straight_through(uniform_targets(self.truncated_at, len(targets)), [])

    def _note_truncation(self, end_time: float | None) -> bool:
        if end_time is None or not self._ended_early(end_time):
            return False
        self.truncated_at = end_time + 1 / (self.info.fps or 25.0)
        self.truncated_frame_count = self.decoded_count
        return True

    # - modes -

    def _all_frames(self, max_frames: int) -> Iterator[SampledFrame]:
        """Every frame (at most max_frames; in strict mode more is an error). Returns the last frame's time."""
        last_time = None
        for index, frame in enumerate(self._frames()):
            if index >= max_frames:
                if self.strict:
                    _check_frame_budget(self.file, index + 1, max_frames)
                return None
            self.decoded_count = index + 1
            last_time = self._time(frame, index)
            yield self._convert(frame, index, last_time)
        return last_time

    def _straight_through(self, targets: list[float], taken: list[int],
                          skipping: _Skipping | None = None) -> Iterator[SampledFrame]:
        """Decodes up to the last target, yielding for each target the nearer of the frames either side of
        it (their indices appended to `taken`). Returns, when the stream ran out before the last target,
        the time of its last frame (else None). skipping: frames the choice cannot fall on are not decoded
        where no other frame refers to them; a frame's index is then its place among the packets."""
        last_taken = -1
        previous: tuple[av.VideoFrame, int, float] | None = None
        pending = 0
        last_time = None
        frames = enumerate(self._frames()) if skipping is None else skipping.numbered(self._frames(skipping))
        for index, frame in frames:
            self.decoded_count = index + 1
            last_time = now = self._time(frame, index)
            while pending < len(targets) and now >= targets[pending]:
                target = targets[pending]
                if previous and previous[1] > last_taken and target - previous[2] <= now - target:
                    chosen = self._convert(*previous)
                elif index > last_taken:
                    chosen = self._convert(frame, index, now)
                else:
                    break  # this frame is taken already: the target waits for the next one
                last_taken = chosen.index
                taken.append(chosen.index)
                yield chosen
                pending += 1
            if pending == len(targets):
                return None
            previous = (frame, index, now)
        if previous and previous[1] > last_taken:
            taken.append(previous[1])
            yield self._convert(*previous)  # targets past the last frame get the last frame once
        return last_time

    def _by_seeking(self, targets: list[float], keyframe_interval_s: float,
                    skipping: _SeekSkipping | None = None) -> Iterator[SampledFrame]:
        """Per target: seek to the keyframe before it and decode forward to it, unless the target is close
        enough ahead that decoding on from the current position is cheaper. Returns False if seeking
        fails (the frames yielded so far are then to be dropped). skipping: the frames well before each
        target that no other frame refers to are not decoded; raises _SkipMismatch if one of them would
        have been chosen."""
        fps = self.info.fps or 25.0
        first_time = self._first_time()
        skip_limit_s = (keyframe_interval_s * fps / 2 + SEEK_OVERHEAD_FRAMES) / fps
        frames: Iterator[tuple[av.VideoFrame, int, float]] | None = None
        position = -math.inf  # time of the last frame taken from `frames`
        held = None  # a frame read past the previous target, still a candidate for the next one
        last_index = -1
        for target in targets:
            if frames is None or target - position > skip_limit_s:
                frames, held = self._seek(target, fps, first_time, skipping), None
                if frames is None:
                    return False
            if skipping is not None:
                skipping.aim(self.start + target - SEEK_SKIP_MARGIN_FRAMES / fps)
            picked, held, position = self._pick(frames, held, target, fps, last_index, skipping)
            if picked is None:
                return False
            last_index = picked.index
            yield picked
        return True

    def _first_time(self) -> float:
        """The first frame's time, which an index estimated from a frame's time leaves out: 0 in most files, but
        in AVI with B-frames FFmpeg shows every frame one frame after its place, and seeking numbered them one
        higher than decoding through does. Decoded once, before the first seek (the file is at its start)."""
        if self._first_frame_time is None:
            self._first_frame_time = 0.0
            try:
                first = next(iter(self._frames()), None)
            except (av.FFmpegError, OSError, DfscanError):
                first = None
            if first is not None and first.pts is not None:
                self._first_frame_time = max(self._time(first, 0), 0.0)
        return self._first_frame_time

    def _seek(self, target: float, fps: float, first_time: float = 0.0,
              skipping: _SeekSkipping | None = None) -> Iterator[tuple[av.VideoFrame, int, float]] | None:
        stream = self.stream
        try:
            seek_to = max(self.start + target - REORDER_MARGIN_FRAMES / fps, self.start)
            self.container.seek(int(seek_to / stream.time_base), stream=stream, backward=True)
        except (av.FFmpegError, OSError):
            return None
        if skipping is not None:
            skipping.restart()
        return self._timed_frames(fps, first_time, skipping)

    def _timed_frames(self, fps: float, first_time: float = 0.0,
                      skipping: _SeekSkipping | None = None) -> Iterator[tuple[av.VideoFrame, int, float]]:
        """Frames with an index estimated from their time (after a seek the decode count is unknown)."""
        for frame in self._frames(skipping):
            now = self._time(frame, -1)
            yield frame, round((now - first_time) * fps), now

    def _pick(self, frames: Iterator[tuple[av.VideoFrame, int, float]], held: tuple[av.VideoFrame, int, float] | None,
              target: float, fps: float, last_index: int, skipping: _SeekSkipping | None = None):
        """Reads frames up to the first at or after `target`; returns (nearest unused frame, the frame to
        keep for the next target, time of the last frame read). (None, ...) if the stream ends first or
        the seek landed after the target."""
        previous = held
        first = True
        for frame, index, now in frames:
            if frame.pts is None:
                return None, None, now  # no timestamps to seek by: the caller decodes straight through
            if skipping is not None and now >= target:  # before the first frame, a dropped one is no candidate
                skipping.check(None if previous is None else previous[0].pts, frame.pts)
            if first and previous is None and now > target + 0.5 / fps:
                return None, None, now
            first = False
            if now >= target:
                if previous and previous[1] > last_index and target - previous[2] <= now - target:
                    return self._convert(*previous), (frame, index, now), now
                if index > last_index:
                    return self._convert(frame, index, now), (frame, index, now), now
            previous = (frame, index, now)
        return None, None, math.inf

    # - helpers -

    def _frames(self, skipping: _Skipping | _SeekSkipping | None = None) -> Iterator[av.VideoFrame]:
        return _decode(self.container, self.stream, self.file, self.budget, skipping, self.threaded)

    def _seek_skipping(self) -> _SeekSkipping | None:
        """Skipping for a seeking pass where frames may go undecoded (a single-threaded decoder)."""
        if self.threaded or self.stream.time_base is None:
            return None
        return _SeekSkipping(self.stream.time_base)

    def _skippable(self, targets: list[float]) -> _Skipping | None:
        """Which frames the straight-through choice for these targets may fall on, where the rest can go
        undecoded: a single-threaded decoder, timestamps on every packet, targets at least SKIP_MIN_GAP frames
        apart. None: decode every frame."""
        if self.threaded or not targets or self.stream.time_base is None:
            return None
        ordered = _packet_timestamps(self.file)
        if ordered is None:
            return None
        times = [float(pts * self.stream.time_base) - self.start for pts in ordered]
        after = [bisect.bisect_left(times, target) for target in targets]  # first frame at or after each target
        if any(b - a < SKIP_MIN_GAP for a, b in zip(after, after[1:])):
            return None
        needed = {len(times) - 1}  # targets past the end get the last frame, which also dates a truncation
        for first in after:
            needed.update(i for i in (first - 1, first, first + 1) if 0 <= i < len(times))
        return _Skipping({pts: rank for rank, pts in enumerate(ordered)}, needed, self.stream.time_base)

    def _rewind(self) -> None:
        try:
            self.container.seek(0, stream=self.stream, backward=True)
        except (av.FFmpegError, OSError) as exc:
            raise DecodeError(f"{self.file.name}: cannot rewind to the start ({_reason(exc)})") from exc

    def _time(self, frame: av.VideoFrame, index: int) -> float:
        if frame.pts is None or frame.time_base is None:
            return index / (self.info.fps or 25.0)
        return float(frame.pts * frame.time_base) - self.start

    def _ended_early(self, last_time: float) -> bool:
        """Decoding stopped clearly before the stated duration (a truncated or damaged file)."""
        duration, fps = self.info.duration_s, self.info.fps or 25.0
        return duration is not None and last_time + 3 / fps < duration

    def _convert(self, frame: av.VideoFrame, index: int, timestamp: float) -> SampledFrame:
        _check_pixels(self.file, frame.width, frame.height, self.max_pixels)
        self.rotation = _rotation_of(frame)
        self.pix_fmt = self.pix_fmt or frame.format.name
        image = _rgb(frame, self.max_side, self.file)
        if self.rotation:
            image = np.ascontiguousarray(np.rot90(image, k=-self.rotation // 90))
        display_width = frame.height if self.rotation % 180 else frame.width
        return SampledFrame(index=index, timestamp=max(timestamp, 0.0), image=image,
                            scale=display_width / image.shape[1], concealed=bool(frame.is_corrupt))


def _rgb(frame: av.VideoFrame, max_side: int | None, file: Path) -> np.ndarray:
    """RGB uint8 HxWx3 of any pixel format, downscaled so the longer side is at most max_side."""
    width, height = frame.width, frame.height
    size = {}
    longer = max(width, height)
    if max_side and longer > max_side:
        ratio = max_side / longer
        size = {"width": max(round(width * ratio), 1), "height": max(round(height * ratio), 1),
                "interpolation": "AREA"}
    try:
        return frame.to_ndarray(format="rgb24", **size)
    except (av.FFmpegError, ValueError) as exc:
        raise DecodeError(f"{file.name}: cannot convert {frame.format.name} frames to RGB ({_reason(exc)})") from exc


# --- seek or decode straight through ---------------------------------------------------------------------


def _keyframe_interval_s(stream: av.VideoStream, duration: float | None) -> float | None:
    """Average seconds between keyframes, from the demuxer's index (MP4: every packet; MKV: the cues)."""
    if not duration:
        return None
    try:
        entries = stream.index_entries
        keyframes = sum(1 for entry in entries if entry.is_keyframe)
    except (av.FFmpegError, AttributeError):
        return None
    if keyframes == 0:
        return None
    return duration / keyframes


def _should_seek(info: VideoInfo, n_targets: int, keyframe_interval_s: float | None) -> bool:
    """Seek when it should decode clearly fewer frames than going straight through.

    Straight through decodes all F frames. Seeking to a target decodes on average half a keyframe interval
    (G/2 frames) plus the target, and costs about SEEK_OVERHEAD_FRAMES more; it also needs the keyframe
    index (MP4 moov, MKV cues) to know G. Rule: seek iff F >= MIN_FRAMES_FOR_SEEKING, G is known, and
        n * (G/2 + 1 + SEEK_OVERHEAD_FRAMES) < SEEK_ADVANTAGE * F.
    E.g. 32 targets at 25 fps: keyframes every 2 s (G=50) -> seek beyond ~64 s; every 10 s (G=250) -> ~4.6 min.
    Measured (2 shared CPU cores, 32 targets): a 10 s 1280x720 H.264 clip decodes straight through in
    0.3-0.4 s, while seeking to every target took 1.3-1.7 s (G=50) and 4.3-5.2 s (G=250); a 120 s 640x360
    clip with G=50 took 1.2-1.3 s straight through and 0.4 s seeking.
    """
    frame_count, fps = info.frame_count, info.fps
    if not frame_count or not fps or keyframe_interval_s is None or frame_count < MIN_FRAMES_FOR_SEEKING:
        return False
    keyframe_interval = keyframe_interval_s * fps
    seek_cost = n_targets * (keyframe_interval / 2 + 1 + SEEK_OVERHEAD_FRAMES)
    return seek_cost < SEEK_ADVANTAGE * frame_count
