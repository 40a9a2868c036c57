"""The one face pipeline: detect, filter, track, crop. The scanner (`dfscan.scan`) and training-set
extraction (`dfscan.train.extract`) both cut faces through `FacePipeline`, so the crops a model is trained
on and the crops it is shown when scanning come from the same code with the same settings.

    pipeline = FacePipeline(DetectorSettings(), crop_size=128, crop_margin=0.0)
    for track in pipeline.faces(frames):          # frames: SampledFrame list from dfscan.video
        for face in track.faces: face.crop        # RGB uint8, crop_size x crop_size

A video's frames can be fed as they are decoded, chunk by chunk, through a `FaceStream` (the scanner's way:
detection of one chunk overlaps decoding of the next); a stream gives the detections of one `detect` call on
all the frames when each chunk but the last ends where `FaceStream.chunk_ends` says (on a frame that gets
the detector's full cascade: the frames between are seeded from their neighbours).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from dfscan.faces.crop import crop_face
from dfscan.faces.mtcnn import is_full
from dfscan.faces.tracks import Detection, Track, link_tracks
from dfscan.settings import DetectorSettings

# On CPU the scanner detects a chunk once it holds this many frames (and ends on a full frame). Measured on 2
# cores (bench/scan_speed.py, 32 frames): chunks of >= 8 overlap decoding enough to take a 512 px talking head
# from 0.63 to 0.53 s with the crowd unchanged; chunks of 1-3 frames cost ~0.2 CPU s more on the crowd (small
# runs, a thread hand-off each) and were slower on both. On CUDA, CHUNK_FRAMES (dfscan.settings): the embedder's
# runs of 64 faces and PNet's frame batches want large chunks (not measured on a GPU yet: bench/gpu_check.sh).
MIN_CHUNK_FRAMES = 8


@dataclass
class Face:
    detection: Detection   # frame_pos (in the sampled frames), box (original-frame pixels), detector score
    crop: np.ndarray       # RGB uint8, crop_size x crop_size, cut by the one crop function


@dataclass
class FaceTrack:
    track_id: int
    faces: list[Face]


class FacePipeline:
    """Face detector + filter + tracker + crop, with one set of settings."""

    def __init__(self, detector_settings: DetectorSettings | None = None, crop_size: int = 224,
                 crop_margin: float = 0.0, device: str = "auto", threads: int | None = None,
                 detector: Any = None):
        self.settings = detector_settings or DetectorSettings()
        self.crop_size, self.crop_margin = crop_size, crop_margin
        self.detector = detector if detector is not None else self.settings.build(device, threads)

    def detect(self, frames: Sequence[Any], first_pos: int = 0) -> list[list[Detection]]:
        """Faces per frame, boxes in original-frame pixels, largest first, filtered by confidence, size
        and the per-frame limit. `first_pos`: position of frames[0] among all sampled frames."""
        return self.kept(frames, self.find(frames), first_pos)

    def stream(self, min_frames: int = MIN_CHUNK_FRAMES) -> FaceStream:
        """Detection for one video's frames fed chunk by chunk, in order (chunks of at least min_frames)."""
        return FaceStream(self, min_frames)

    def find(self, frames: Sequence[Any], before: Any = None) -> list[Any]:
        """The detector's raw result per frame (`before`: its result for the frame before frames[0])."""
        if not frames:
            return []
        return self.detector.detect_video([f.image for f in frames], self.settings.full_every, before=before)

    def kept(self, frames: Sequence[Any], found_per_frame: list[Any], first_pos: int) -> list[list[Detection]]:
        """The detections the settings keep (confidence, size, the largest max_faces_per_frame), in frame pixels."""
        settings = self.settings
        per_frame: list[list[Detection]] = []
        for offset, (frame, found) in enumerate(zip(frames, found_per_frame)):
            boxes = np.asarray(found.boxes, dtype=np.float64).reshape(-1, 4) * frame.scale
            sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
            keep = [i for i in np.argsort(-sides)
                    if found.scores[i] >= settings.min_confidence and sides[i] >= settings.min_face_size]
            per_frame.append([Detection(first_pos + offset, boxes[i], float(found.scores[i]))
                              for i in keep[:settings.max_faces_per_frame]])
        return per_frame

    def crop(self, frame: Any, detection: Detection) -> np.ndarray:
        """The face cut from the (possibly downscaled) decoded frame, boxes scaled to match."""
        return crop_face(frame.image, detection.box / frame.scale, self.crop_size, self.crop_margin)

    def process(self, frames: Sequence[Any], first_pos: int = 0) -> list[list[Face]]:
        """Detect and crop: the faces of each frame (the frames may then be dropped)."""
        return [[Face(det, self.crop(frame, det)) for det in dets]
                for frame, dets in zip(frames, self.detect(frames, first_pos))]

    @staticmethod
    def track(detections_per_frame: list[list[Detection]]) -> list[Track]:
        return link_tracks(detections_per_frame)

    def faces(self, frames: Sequence[Any]) -> list[FaceTrack]:
        """Every kept face of `frames`, grouped into tracks."""
        per_frame = self.process(frames)
        crops = {id(face.detection): face for faces in per_frame for face in faces}
        tracks = self.track([[face.detection for face in faces] for faces in per_frame])
        return [FaceTrack(t.track_id, [crops[id(d)] for d in t.detections]) for t in tracks]


class FaceStream:
    """One video's detection, fed its sampled frames in order, chunk by chunk. Each chunk is detected with
    the last result of the one before (the frames between full frames are seeded from both neighbours), so
    chunks that end where `chunk_ends` says give the faces of one `FacePipeline.detect` call on all frames."""

    def __init__(self, pipeline: FacePipeline, min_frames: int = MIN_CHUNK_FRAMES):
        self.pipeline, self.min_frames = pipeline, min_frames
        self.next_pos = 0           # position of the next frame among the video's sampled frames
        self._last: Any = None      # the detector's result for the last frame of the previous chunk

    def chunk_ends(self, chunk: Sequence[Any]) -> bool:
        """Whether to detect the chunk now: it holds min_frames and its last frame gets the full cascade."""
        return len(chunk) >= self.min_frames and is_full(len(chunk) - 1, self.pipeline.settings.full_every,
                                                          self._last is not None)

    def detect(self, chunk: Sequence[Any]) -> list[list[Detection]]:
        """The kept faces of each frame of the chunk, positions counted from the video's first frame."""
        found = self.pipeline.find(chunk, self._last)
        per_frame = self.pipeline.kept(chunk, found, self.next_pos)
        if found:
            self._last = found[-1]
        self.next_pos += len(chunk)
        return per_frame
