"""MTCNN face detection (Zhang et al. 2016) in numpy + onnxruntime (OpenVINO on CPU), without torch.

A port of facenet-pytorch 2.6.0's `detect_face`: same pyramid, same thresholds and NMS rules, same box
arithmetic in float32, and the same resampling. facenet-pytorch resizes with torch's
`interpolate(mode="area")`, which is adaptive average pooling: output pixel i averages input pixels
[floor(i*n_in/n_out), ceil((i+1)*n_in/n_out)). cv2's INTER_AREA weighs fractional pixels instead, so it is
*not* equivalent; we compute the window sums exactly from an integral image and divide the way torch does
(float32 sum / window height / window width), which reproduces torch's output bit for bit. At
`max_side=None` boxes match facenet-pytorch (tests/test_mtcnn.py checks within 1 px).

The networks are ONNX exports of facenet-pytorch's weights (tools/convert_mtcnn.py, MIT license).
`detect_batch` runs PNet on all frames at once per pyramid scale, and RNet/ONet on the candidates of all
frames at once; NMS always stays within one frame, so batching never changes a frame's result.
`detect_video` (the scanner's) can also reuse faces across consecutive sampled frames: the whole cascade
on every k-th frame, and on the frames between only RNet and ONet, seeded with the neighbouring faces.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import cv2
import numpy as np

from dfscan.assets import MTCNN_DIR
from dfscan.runtime import (cpu_runtime, create_session, map_runs, openvino_required, parallel_runs, session_provider,
                            session_runtime)

PNET_STRIDE = 2
PNET_CELL = 12
RNET_SIZE = 24
ONET_SIZE = 48
MIN_DETECTION_FACE = 12.0       # PNet's window: the smallest face it can see, at detection scale
PNET_SCALE_IOU = 0.5            # NMS within one pyramid scale
PNET_IOU = 0.7                  # NMS across scales
RNET_IOU = 0.7
ONET_MIN_OVERLAP = 0.7          # final NMS, intersection over the smaller box
# Runs small enough that their activations stay in cache and bound onnxruntime's arena (dfscan.runtime).
# Measured when the arena was off, where larger runs got fresh mmap'd buffers (street_crowd, 32 frames,
# 1 thread: PNet 0.88 -> 0.60 CPU s at 2^17 pixels instead of 2^21, ONet 0.61 -> 0.39 s at 16 crops instead
# of 128; the same boxes, bit for bit).
PNET_PIXELS_PER_RUN = 1 << 17   # bounds PNet's activation memory; splitting a batch does not change results
CROP_BATCH = 16                 # RNet/ONet crops a run; same outputs whatever the run size
FRAMES_PER_PASS = 32            # frames detected together: bounds memory (integrals, pyramid) for long frame lists
INT32_SUM_LIMIT = 2**31 - 1
NMS_BLOCK = 256                 # boxes whose overlaps with the rest nms computes at once
# detect_video: a face of the full frame before and one of the full frame after are taken for one moving face
# when their centres are at most this many sides apart and their sides within this ratio of each other.
SEED_PAIR_DISTANCE = 3.0
SEED_PAIR_SIZE_RATIO = 1.5
# On CPU the networks run on OpenVINO where it is installed (dfscan.runtime): 2-2.5x faster than onnxruntime,
# the same faces, but ~0.15 s more to import, compile and prepare them. Frames whose PNet pyramid is smaller than
# this stay on onnxruntime: a 512 px talking head (37k pyramid pixels a frame) gains ~0.04 s over 32 frames and
# would pay it all (`dfscan check` 0.68 -> 0.72 s wall with OpenVINO for every size); 720p and larger (130k
# pixels and more) gain more than it costs.
OPENVINO_MIN_PYRAMID_PIXELS = 100_000


class _Networks(NamedTuple):
    pnet: Any
    rnet: Any
    onet: Any

    @classmethod
    def open(cls, device: str, threads: int | None, openvino: bool) -> _Networks:
        return cls(*(create_session(MTCNN_DIR / f"{name}.onnx", device, threads, openvino=openvino)
                     for name in ("pnet", "rnet", "onet")))


@dataclass
class FaceDetections:
    boxes: np.ndarray      # (N,4) float32 x1,y1,x2,y2 in the input image's pixel coords
    scores: np.ndarray     # (N,) float32
    landmarks: np.ndarray  # (N,5,2) float32 x,y: two eyes, nose, two mouth corners (facenet-pytorch's order)

    @classmethod
    def empty(cls) -> FaceDetections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))

    def __len__(self) -> int:
        return len(self.scores)


@dataclass
class _Candidates:
    """Face candidates of several frames, as facenet-pytorch carries them: float32 boxes, score, frame index."""

    boxes: np.ndarray   # (n,4) float32
    scores: np.ndarray  # (n,) float32
    frames: np.ndarray  # (n,) int64

    def take(self, keep: np.ndarray) -> _Candidates:
        return _Candidates(self.boxes[keep], self.scores[keep], self.frames[keep])

    def frame_ids(self) -> list[int]:
        """The frames that have candidates, in order (not np.unique: its first call imports numpy.ma, 12 ms)."""
        return sorted(set(self.frames.tolist()))

    @staticmethod
    def concatenate(parts: Sequence[_Candidates]) -> _Candidates:
        return _Candidates(np.concatenate([p.boxes for p in parts]), np.concatenate([p.scores for p in parts]),
                           np.concatenate([p.frames for p in parts]))

    def __len__(self) -> int:
        return len(self.scores)


# ------------------------------------------------------------------------------------------ resampling
def integral_image(image: np.ndarray) -> np.ndarray:
    """(H+1, W+1, 3) exact pixel sums; int32 while no sum can overflow it."""
    height, width = image.shape[:2]
    depth = cv2.CV_32S if 255 * height * width <= INT32_SUM_LIMIT else cv2.CV_64F
    return cv2.integral(image, sdepth=depth)


def area_windows(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Start (inclusive) and end (exclusive) input index of each output index, as adaptive average pooling."""
    i = np.arange(n_out, dtype=np.int64)
    return (i * n_in) // n_out, ((i + 1) * n_in + n_out - 1) // n_out


def area_window_sums(integral: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact pixel sums of each output pixel's window when the whole image is area-resized to (height, width).

    Returns (sums (height, width, 3), window heights (height,), window widths (width,)).
    """
    rows_start, rows_end = area_windows(integral.shape[0] - 1, height)
    cols_start, cols_end = area_windows(integral.shape[1] - 1, width)
    row_sums = integral[rows_end] - integral[rows_start]
    sums = np.take(row_sums, cols_end, axis=1) - np.take(row_sums, cols_start, axis=1)
    return sums, rows_end - rows_start, cols_end - cols_start


def area_resize(integral: np.ndarray, height: int, width: int) -> np.ndarray:
    """The whole image resized to (height, width, 3) float32, equal to torch interpolate(mode="area")."""
    return _window_means(*area_window_sums(integral, height, width))


def pyramid_level(integrals: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
    """PNet input (B, 3, height, width) for same-size images: area-resized and normalised, written in place.

    Same values as to_network_input(area_resize(...)) stacked, without the HWC intermediates.
    """
    batch = np.empty((len(integrals), 3, height, width), np.float32)
    for plane, integral in zip(batch, integrals):
        sums, heights, widths = area_window_sums(integral, height, width)
        np.divide(sums.transpose(2, 0, 1), heights.astype(np.float32)[:, None], out=plane, dtype=np.float32)
        np.divide(plane, widths.astype(np.float32), out=plane)
    return _normalise(batch)


def _window_means(sums: np.ndarray, heights: np.ndarray, widths: np.ndarray) -> np.ndarray:
    # torch divides the float32 sum by the window height, then by its width: same order, same rounding.
    heights = heights.astype(np.float32)[..., :, None, None]
    widths = widths.astype(np.float32)[..., None, :, None]
    return sums.astype(np.float32) / heights / widths


def area_crops(integral: np.ndarray, regions: np.ndarray, size: int) -> np.ndarray:
    """(n, size, size, 3) float32: each region [x0, y0, x1, y1) of one image, area-resized to size x size."""
    x0, y0, x1, y1 = (regions[:, k:k + 1].astype(np.int64) for k in range(4))
    index = np.arange(size, dtype=np.int64)[None, :]
    heights, widths = y1 - y0, x1 - x0
    rows_start, rows_end = y0 + index * heights // size, y0 + ((index + 1) * heights + size - 1) // size
    cols_start, cols_end = x0 + index * widths // size, x0 + ((index + 1) * widths + size - 1) // size
    # Gathers by flat index (np.take) are ~1.6x faster than 2-D fancy indexing, same sums.
    stride = integral.shape[1]
    flat = integral.reshape(-1, integral.shape[2])
    top, bottom = (rows_start * stride)[:, :, None], (rows_end * stride)[:, :, None]
    left, right = cols_start[:, None, :], cols_end[:, None, :]
    sums = (np.take(flat, bottom + right, axis=0) - np.take(flat, top + right, axis=0)
            - np.take(flat, bottom + left, axis=0) + np.take(flat, top + left, axis=0))
    return _window_means(sums, rows_end - rows_start, cols_end - cols_start)


def to_network_input(pixels: np.ndarray) -> np.ndarray:
    """(..., H, W, 3) float32 pixel values -> (..., 3, H, W) normalised the way facenet-pytorch does."""
    return _normalise(np.ascontiguousarray(np.moveaxis(pixels, -1, -3)))


def _normalise(pixels: np.ndarray) -> np.ndarray:
    """In place: (pixel - 127.5) / 128, as two float32 operations like facenet-pytorch."""
    np.subtract(pixels, np.float32(127.5), out=pixels)
    np.multiply(pixels, np.float32(0.0078125), out=pixels)
    return pixels


# ------------------------------------------------------------------------------------------ box helpers
def pyramid_scales(height: int, width: int, min_face: float, factor: float) -> list[float]:
    """Scales at which PNet's 12 px window covers faces from min_face up to the whole image."""
    scale = MIN_DETECTION_FACE / min_face
    shortest = min(height, width) * scale
    scales = []
    while shortest >= MIN_DETECTION_FACE:
        scales.append(scale)
        scale *= factor
        shortest *= factor
    return scales


def _scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(height, width) of the detection image for a frame shrunk by `scale`."""
    return max(1, round(height * scale)), max(1, round(width * scale))


def _level_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(height, width) of a PNet pyramid level, as facenet-pytorch sizes it."""
    return int(height * scale + 1), int(width * scale + 1)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, min_overlap: bool = False) -> np.ndarray:
    """Greedy NMS, kept indices by descending score.

    Default: torchvision's rule (IoU on continuous coordinates, drop when IoU > threshold). min_overlap=True:
    facenet-pytorch's final "Min" rule (pixel-inclusive areas, intersection over the smaller area).
    The overlaps of a block of boxes with every box still standing are computed at once (the same float32
    operations as box by box, so the same result): a crowd's frames have hundreds of candidates, and one
    NumPy call per kept box cost 4x more.
    """
    extra = np.float32(1.0) if min_overlap else np.float32(0.0)
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = (boxes[order, k] for k in range(4))
    areas = (x2 - x1 + extra) * (y2 - y1 + extra)
    removed = np.zeros(len(order), bool)
    keep = []
    for start in range(0, len(order), NMS_BLOCK):
        standing = start + np.flatnonzero(~removed[start:])
        block = standing[:np.searchsorted(standing, start + NMS_BLOCK)]
        r, c = block[:, None], standing[None, :]
        inter_w = np.maximum(np.float32(0.0), np.minimum(x2[r], x2[c]) - np.maximum(x1[r], x1[c]) + extra)
        inter_h = np.maximum(np.float32(0.0), np.minimum(y2[r], y2[c]) - np.maximum(y1[r], y1[c]) + extra)
        inter = inter_w * inter_h
        with np.errstate(divide="ignore", invalid="ignore"):
            overlap = inter / (np.minimum(areas[r], areas[c]) if min_overlap else areas[r] + areas[c] - inter)
        suppresses = ~(overlap <= threshold)  # a NaN overlap (empty boxes) suppresses, as before
        dropped = np.zeros(len(standing), bool)
        for position, row in enumerate(suppresses):
            if not dropped[position]:
                keep.append(block[position])
                dropped |= row
        removed[standing[dropped]] = True
    return order[np.asarray(keep, dtype=np.int64)]


def nms_per_frame(candidates: _Candidates, threshold: float, min_overlap: bool = False) -> np.ndarray:
    """NMS within each frame; kept indices, frames in order, descending score within a frame."""
    kept = []
    for frame in candidates.frame_ids():
        members = np.flatnonzero(candidates.frames == frame)
        kept.append(members[nms(candidates.boxes[members], candidates.scores[members], threshold, min_overlap)])
    return np.concatenate(kept) if kept else np.zeros(0, np.int64)


def square(boxes: np.ndarray) -> np.ndarray:
    """facenet-pytorch's rerec: a square with the longer side, same centre (float32, same operation order)."""
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(width, height)
    half = np.float32(0.5)
    x1 = boxes[:, 0] + width * half - side * half
    y1 = boxes[:, 1] + height * half - side * half
    return np.stack([x1, y1, x1 + side, y1 + side], axis=1)


def regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """facenet-pytorch's bbreg: offsets in units of the pixel-inclusive box size."""
    one = np.float32(1.0)
    width = boxes[:, 2] - boxes[:, 0] + one
    height = boxes[:, 3] - boxes[:, 1] + one
    return boxes + offsets * np.stack([width, height, width, height], axis=1)


def crop_regions(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """facenet-pytorch's pad + slice: integer regions [x0, y0, x1, y1) clipped to the image, and which are non-empty.

    Boxes are truncated towards zero and clipped to 1..size; the slice then starts one pixel before
    (the 1-based convention of the original MATLAB code).
    """
    truncated = np.trunc(boxes).astype(np.int64)
    x = np.maximum(truncated[:, 0], 1)
    y = np.maximum(truncated[:, 1], 1)
    ex = np.minimum(truncated[:, 2], width)
    ey = np.minimum(truncated[:, 3], height)
    regions = np.stack([x - 1, y - 1, ex, ey], axis=1)
    return regions, (ey > y - 1) & (ex > x - 1)


# ------------------------------------------------------------------------------------------- detector
class MTCNN:
    """Three-stage cascade: PNet proposals over an image pyramid, RNet and ONet refinement."""

    def __init__(self, device: str = "auto", min_face_size: int = 20,
                 thresholds: Sequence[float] = (0.6, 0.7, 0.7), factor: float = 0.709,
                 max_side: int | None = 960, threads: int | None = None):
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), not {factor}")
        if len(thresholds) != 3:
            raise ValueError(f"thresholds needs 3 values (PNet, RNet, ONet), not {thresholds!r}")
        if max_side is not None and max_side < MIN_DETECTION_FACE:
            raise ValueError(f"max_side must be at least {MIN_DETECTION_FACE:g} or None, not {max_side}")
        self.min_face_size = min_face_size
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = factor
        self.max_side = max_side
        self.device, self.session_threads, self.workers = device, *parallel_runs(device, threads)
        self.networks = _Networks.open(device, self.session_threads, openvino=False)
        self.provider: str = session_provider(self.networks.pnet)
        self._openvino_for_large_frames = self.provider == "CPUExecutionProvider" and cpu_runtime() == "openvino"
        self._large_frame_networks: _Networks | None = None  # OpenVINO's, opened on the first large frame
        if self._openvino_for_large_frames and openvino_required():  # a failure is a setup error, before any scan
            self._large_frame_networks = _Networks.open(device, self.session_threads, openvino=True)

    @property
    def settings(self) -> dict[str, Any]:
        """Every parameter that changes results, for provenance records."""
        return {"min_face_size": self.min_face_size, "thresholds": list(self.thresholds), "factor": self.factor,
                "max_side": self.max_side, "resize": "area (adaptive average pooling, as torch)",
                "weights": "facenet-pytorch 2.6.0 MTCNN"}

    def runtime_for(self, height: int, width: int) -> str:
        """What runs the networks on images of this size, with its version (for provenance)."""
        return session_runtime(self._networks_for(height, width).pnet)

    # ---------------------------------------------------------------------------------------- public
    def detect(self, image: np.ndarray) -> FaceDetections:
        """Faces in one RGB uint8 HxWx3 image, by descending score."""
        return self.detect_batch([image])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[FaceDetections]:
        """Faces in each image; same-size images (frames of one video) are processed together."""
        for image in images:
            _check_image(image)
        results: list[FaceDetections | None] = [None] * len(images)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for position, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(position)
        for same_size in by_shape.values():
            for start in range(0, len(same_size), FRAMES_PER_PASS):
                positions = same_size[start:start + FRAMES_PER_PASS]
                for position, found in zip(positions, self._detect_same_size([images[p] for p in positions])):
                    results[position] = found
        return results  # type: ignore[return-value]

    def detect_video(self, images: Sequence[np.ndarray], full_every: int = 1,
                     before: FaceDetections | None = None) -> list[FaceDetections]:
        """Faces in consecutive sampled frames of one video, with temporal reuse.

        The full cascade (PNet pyramid, RNet, ONet) runs on every full_every-th frame and on the last one;
        these get exactly the `detect_batch` result. On each frame in between, RNet and ONet run on seeds
        instead of PNet's proposals: the faces (every ONet survivor) of the nearest full frames before and
        after it, and each pairing of a face before with a similar one after moved in proportion to the time
        between them; each seed also goes in where RNet's regression points from it, so a face that moved
        a third of its side is still found. A face in an in-between frame but in neither neighbouring
        full frame is missed there (it is found at the next full frame if it stays).

        before: the result of the full frame just before images[0], when a video is fed chunk by chunk; each
        chunk but the last must then end on a full frame (`is_full`), and the faces are those of one call
        on all frames. Frames of different sizes go through `detect_batch`.
        """
        if full_every < 1:
            raise ValueError(f"full_every must be at least 1, not {full_every}")
        for image in images:
            _check_image(image)
        if full_every == 1 or len({image.shape for image in images}) > 1:
            return self.detect_batch(images)
        results: list[FaceDetections] = []
        start = 0
        while start < len(images):
            # Passes bound memory and end on a full frame, so they give the faces of one pass over everything.
            end = len(images)
            if end - start > FRAMES_PER_PASS:
                end = next(stop for stop in range(start + FRAMES_PER_PASS, start, -1)
                           if is_full(stop - 1 - start, full_every, before is not None))
            found = self._detect_sequence(list(images[start:end]), full_every, before)
            results.extend(found)
            before, start = found[-1], end
        return results

    # ---------------------------------------------------------------------------------------- stages
    def _networks_for(self, height: int, width: int) -> _Networks:
        if not self._openvino_for_large_frames:
            return self.networks
        scale = self._detection_scale(height, width)
        det_height, det_width = _scaled_size(height, width, scale)
        levels = pyramid_scales(det_height, det_width, self._min_face(scale), self.factor)
        pixels = sum(h * w for h, w in (_level_size(det_height, det_width, level) for level in levels))
        if pixels < OPENVINO_MIN_PYRAMID_PIXELS:
            return self.networks
        if self._large_frame_networks is None:
            self._large_frame_networks = _Networks.open(self.device, self.session_threads, openvino=True)
        return self._large_frame_networks

    def _min_face(self, scale: float) -> float:
        """PNet's smallest face in detection-image pixels."""
        return self.min_face_size if scale == 1.0 else max(MIN_DETECTION_FACE, self.min_face_size * scale)

    def _prepare(self, images: list[np.ndarray]) -> tuple[list[np.ndarray], int, int, float, np.ndarray, _Networks]:
        """Integral images at detection size, that size, PNet's smallest face there, the scale back and the
        networks for frames of this size."""
        height, width = images[0].shape[:2]
        scale = self._detection_scale(height, width)
        if scale < 1.0:
            det_height, det_width = _scaled_size(height, width, scale)
            images = [cv2.resize(image, (det_width, det_height), interpolation=cv2.INTER_AREA) for image in images]
        det_height, det_width = images[0].shape[:2]
        integrals = [integral_image(np.ascontiguousarray(image)) for image in images]
        ratio = np.array([width / det_width, height / det_height], dtype=np.float32)
        return integrals, det_height, det_width, self._min_face(scale), ratio, self._networks_for(height, width)

    def _detect_same_size(self, images: list[np.ndarray]) -> list[FaceDetections]:
        integrals, det_height, det_width, min_face, ratio, nets = self._prepare(images)
        candidates = self._propose(nets, integrals, det_height, det_width, min_face)
        candidates = self._refine(nets, integrals, candidates, det_width, det_height)
        boxes, landmarks, candidates = self._output(nets, integrals, candidates, det_width, det_height)
        return [self._frame_result(boxes, landmarks, candidates, frame, ratio) for frame in range(len(images))]

    def _detect_sequence(self, images: list[np.ndarray], full_every: int,
                         before: FaceDetections | None) -> list[FaceDetections]:
        integrals, det_height, det_width, min_face, ratio, nets = self._prepare(images)
        n = len(images)
        full = [i for i in range(n) if i == n - 1 or is_full(i, full_every, before is not None)]
        between = [i for i in range(n) if i not in set(full)]
        full_integrals = [integrals[i] for i in full]
        candidates = self._propose(nets, full_integrals, det_height, det_width, min_face)
        candidates = self._refine(nets, full_integrals, candidates, det_width, det_height)
        boxes, landmarks, candidates = self._output(nets, full_integrals, candidates, det_width, det_height)
        results: list[FaceDetections | None] = [None] * n
        for slot, frame in enumerate(full):
            results[frame] = self._frame_result(boxes, landmarks, candidates, slot, ratio)
        if not between:
            return results  # type: ignore[return-value]
        # Seeds come from the full frames' results (image pixels), so a chunked video seeds as a whole one.
        scale_back = np.concatenate([ratio, ratio])
        seeds = []
        for slot, frame in enumerate(between):
            after = min(f for f in full if f > frame)
            earlier = [f for f in full if f < frame]
            # No full frame before this one in the chunk: then the chunk follows one (frame 0 is full otherwise).
            prior, prior_frame = (results[earlier[-1]], earlier[-1]) if earlier else (before, -1)
            share = np.float32((frame - prior_frame) / (after - prior_frame))
            before_boxes, after_boxes = prior.boxes / scale_back, results[after].boxes / scale_back
            boxes_here = np.concatenate([before_boxes, after_boxes, _in_between(before_boxes, after_boxes, share)])
            seeds.append(_Candidates(square(boxes_here.astype(np.float32)), np.ones(len(boxes_here), np.float32),
                                     np.full(len(boxes_here), slot, np.int64)))
        between_integrals = [integrals[i] for i in between]
        seeded = self._refine_seeds(nets, between_integrals, _Candidates.concatenate(seeds), det_width, det_height)
        boxes, landmarks, seeded = self._output(nets, between_integrals, seeded, det_width, det_height)
        for slot, frame in enumerate(between):
            results[frame] = self._frame_result(boxes, landmarks, seeded, slot, ratio)
        return results  # type: ignore[return-value]

    def _detection_scale(self, height: int, width: int) -> float:
        if self.max_side is None or max(height, width) <= self.max_side:
            return 1.0
        return self.max_side / max(height, width)

    def _propose(self, nets: _Networks, integrals: Sequence[np.ndarray], height: int, width: int,
                 min_face: float) -> _Candidates:
        """PNet over the pyramid: candidate windows, NMS per scale, then across scales, then regressed."""
        found, found_offsets = [], []
        for scale in pyramid_scales(height, width, min_face, self.factor):
            regression, probs = self._run_pnet(nets.pnet, pyramid_level(integrals, *_level_size(height, width, scale)))
            windows, offsets = self._pnet_windows(regression, probs, scale)
            keep = nms_per_frame(windows, PNET_SCALE_IOU)
            found.append(windows.take(keep))
            found_offsets.append(offsets[keep])
        if not found:
            return _empty_candidates()
        windows, offsets = _Candidates.concatenate(found), np.concatenate(found_offsets)
        keep = nms_per_frame(windows, PNET_IOU)
        windows, offsets = windows.take(keep), offsets[keep]
        # Note: this first regression uses the plain width (no +1), unlike later stages; kept as in the original.
        widths = windows.boxes[:, 2:4] - windows.boxes[:, 0:2]
        boxes = windows.boxes + offsets * np.concatenate([widths, widths], axis=1)
        return _Candidates(square(boxes), windows.scores, windows.frames)

    def _run_pnet(self, pnet: Any, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        per_run = max(1, PNET_PIXELS_PER_RUN // (batch.shape[2] * batch.shape[3]))
        regression, probs = _run_in_chunks(pnet, batch, self.workers, per_run)
        return regression, probs

    def _pnet_windows(self, regression: np.ndarray, probs: np.ndarray,
                      scale: float) -> tuple[_Candidates, np.ndarray]:
        """Cells whose face probability reaches the PNet threshold, as boxes in detection-image pixels."""
        frames, ys, xs = np.nonzero(probs[:, 1] >= self.thresholds[0])
        cells = np.stack([xs, ys], axis=1).astype(np.float32)
        scale32 = np.float32(scale)
        top_left = np.floor((np.float32(PNET_STRIDE) * cells + np.float32(1)) / scale32)
        bottom_right = np.floor((np.float32(PNET_STRIDE) * cells + np.float32(PNET_CELL)) / scale32)
        boxes = np.concatenate([top_left, bottom_right], axis=1)
        offsets = regression.transpose(0, 2, 3, 1)[frames, ys, xs]
        return _Candidates(boxes, probs[frames, 1, ys, xs], frames.astype(np.int64)), offsets

    def _refine(self, nets: _Networks, integrals: Sequence[np.ndarray], candidates: _Candidates, width: int,
                height: int) -> _Candidates:
        """RNet on 24x24 crops: rescored, NMS, regressed, squared."""
        return self._rnet_select(*self._rnet(nets, integrals, candidates, width, height))

    def _refine_seeds(self, nets: _Networks, integrals: Sequence[np.ndarray], seeds: _Candidates, width: int,
                      height: int) -> _Candidates:
        """`_refine` of the seeds together with each seed moved (and squared) where RNet's regression points,
        whatever its score: a seed a third of a face off is pulled onto the face. The seeds' RNet outputs are
        used for both steps."""
        seeds, regression, probs = self._rnet(nets, integrals, seeds, width, height)
        moved = _Candidates(square(regress(seeds.boxes, regression)), seeds.scores, seeds.frames)
        moved, moved_regression, moved_probs = self._rnet(nets, integrals, moved, width, height)
        return self._rnet_select(_Candidates.concatenate([seeds, moved]), np.concatenate([regression, moved_regression]),
                                 np.concatenate([probs, moved_probs]))

    def _rnet(self, nets: _Networks, integrals: Sequence[np.ndarray], candidates: _Candidates, width: int,
              height: int) -> tuple[_Candidates, np.ndarray, np.ndarray]:
        """The candidates with a usable crop, and RNet's box regression and probabilities for each."""
        candidates, crops = self._crops(integrals, candidates, width, height, RNET_SIZE)
        if not len(candidates):
            return candidates, np.zeros((0, 4), np.float32), np.zeros((0, 2), np.float32)
        regression, probs = _run_in_chunks(nets.rnet, crops, self.workers)
        return candidates, regression, probs

    def _rnet_select(self, candidates: _Candidates, regression: np.ndarray, probs: np.ndarray) -> _Candidates:
        passed = probs[:, 1] > self.thresholds[1]
        candidates = _Candidates(candidates.boxes[passed], probs[passed, 1], candidates.frames[passed])
        keep = nms_per_frame(candidates, RNET_IOU)
        candidates = candidates.take(keep)
        boxes = regress(candidates.boxes, regression[passed][keep])
        return _Candidates(square(boxes), candidates.scores, candidates.frames)

    def _output(self, nets: _Networks, integrals: Sequence[np.ndarray], candidates: _Candidates, width: int,
                height: int) -> tuple[np.ndarray, np.ndarray, _Candidates]:
        """ONet on 48x48 crops: final score, landmarks, regressed boxes, final NMS."""
        candidates, crops = self._crops(integrals, candidates, width, height, ONET_SIZE)
        if not len(candidates):
            return np.zeros((0, 4), np.float32), np.zeros((0, 5, 2), np.float32), candidates
        regression, points, probs = _run_in_chunks(nets.onet, crops, self.workers)
        passed = probs[:, 1] > self.thresholds[2]
        candidates = _Candidates(candidates.boxes[passed], probs[passed, 1], candidates.frames[passed])
        landmarks = _landmarks(candidates.boxes, points[passed])
        final = _Candidates(regress(candidates.boxes, regression[passed]), candidates.scores, candidates.frames)
        keep = nms_per_frame(final, ONET_MIN_OVERLAP, min_overlap=True)
        return final.boxes[keep], landmarks[keep], final.take(keep)

    def _crops(self, integrals: Sequence[np.ndarray], candidates: _Candidates, width: int, height: int,
               size: int) -> tuple[_Candidates, np.ndarray]:
        """Network input for each candidate.

        Candidates whose region is empty (box entirely outside the image) are dropped; facenet-pytorch skips
        their crops too but keeps the boxes, which misaligns its arrays: a bug we do not reproduce.
        """
        regions, usable = crop_regions(candidates.boxes, width, height)
        candidates, regions = candidates.take(usable), regions[usable]
        crops = np.zeros((len(candidates), size, size, 3), np.float32)
        for frame in candidates.frame_ids():
            members = candidates.frames == frame
            crops[members] = area_crops(integrals[frame], regions[members], size)
        return candidates, to_network_input(crops)

    @staticmethod
    def _frame_result(boxes: np.ndarray, landmarks: np.ndarray, candidates: _Candidates, frame: int,
                      ratio: np.ndarray) -> FaceDetections:
        mine = np.flatnonzero(candidates.frames == frame)
        mine = mine[np.argsort(-candidates.scores[mine], kind="stable")]
        if not len(mine):
            return FaceDetections.empty()
        return FaceDetections(
            boxes=(boxes[mine] * np.concatenate([ratio, ratio])).astype(np.float32),
            scores=candidates.scores[mine].astype(np.float32),
            landmarks=(landmarks[mine] * ratio).astype(np.float32),
        )


def is_full(position: int, full_every: int, after_full: bool = False) -> bool:
    """Whether detect_video runs the full cascade on the frame at this position of a chunk (besides the
    chunk's last frame); after_full: the chunk follows a full frame (positions count from it, not 0)."""
    return (position + after_full) % full_every == 0


def _in_between(before: np.ndarray, after: np.ndarray, share: np.float32) -> np.ndarray:
    """Each face before moved `share` of the way to each similar face after (a face may pair with several:
    a wrong pair only adds a seed that RNet rejects)."""
    if not len(before) or not len(after):
        return np.zeros((0, 4), np.float32)
    centre_before, centre_after = (before[:, :2] + before[:, 2:]) / 2, (after[:, :2] + after[:, 2:]) / 2
    side_before = np.maximum(before[:, 2] - before[:, 0], before[:, 3] - before[:, 1])
    side_after = np.maximum(after[:, 2] - after[:, 0], after[:, 3] - after[:, 1])
    distance = np.linalg.norm(centre_after[None] - centre_before[:, None], axis=2) / side_before[:, None]
    size_ratio = side_after[None] / side_before[:, None]
    pairs = np.nonzero((distance <= SEED_PAIR_DISTANCE) & (size_ratio <= SEED_PAIR_SIZE_RATIO)
                       & (size_ratio >= 1 / SEED_PAIR_SIZE_RATIO))
    return (before[pairs[0]] + share * (after[pairs[1]] - before[pairs[0]])).astype(np.float32)


def _landmarks(boxes: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(n,5,2) landmark pixels from ONet's (n,10) output (5 x fractions, then 5 y fractions, of the box)."""
    one = np.float32(1.0)
    width = (boxes[:, 2] - boxes[:, 0] + one)[:, None]
    height = (boxes[:, 3] - boxes[:, 1] + one)[:, None]
    xs = width * points[:, :5] + boxes[:, 0:1] - one
    ys = height * points[:, 5:10] + boxes[:, 1:2] - one
    return np.stack([xs, ys], axis=2)


def _run_in_chunks(session: Any, batch: np.ndarray, workers: int = 1, per_run: int = CROP_BATCH) -> list[np.ndarray]:
    """The session's outputs for the batch, run per_run items at a time over `workers` threads, in order."""
    outputs = map_runs(lambda run: session.run(None, {"input": run}),
                       [batch[i:i + per_run] for i in range(0, len(batch), per_run)], workers)
    return [np.concatenate(parts) for parts in zip(*outputs)]


def _empty_candidates() -> _Candidates:
    return _Candidates(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        raise ValueError(f"expected an RGB uint8 HxWx3 image, got {type(image).__name__} with shape {shape}")
    if min(image.shape[:2]) < 1:
        raise ValueError(f"empty image of shape {image.shape}")
