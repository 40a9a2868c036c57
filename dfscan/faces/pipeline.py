"""The one face pipeline: detect, filter, track, crop. The scanner (`dfscan.scan`) and training-set
extraction (`dfscan.train.extract`) both cut faces through `FacePipeline`, so the crops a model is trained
on and the crops it is shown when scanning come from the same code with the same settings.

    pipeline = FacePipeline(DetectorSettings(), crop_size=128, crop_margin=0.0)
    for track in pipeline.faces(frames):          # frames: SampledFrame list from dfscan.video
        for face in track.faces: face.crop        # RGB uint8, crop_size x crop_size

Long frame lists are processed chunk by chunk (`process(chunk, first_pos)` then `track(...)`), which gives
the same detections as one call when chunks are whole multiples of the detector's pass
(`CHUNK_FRAMES`), because the detector never looks across a pass boundary.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from dfscan.faces.crop import crop_face
from dfscan.faces.tracks import Detection, Track, link_tracks
from dfscan.settings import DetectorSettings

CHUNK_FRAMES = 32  # = mtcnn.FRAMES_PER_PASS: chunks of this size detect exactly as the whole list does


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
        settings = self.settings
        found_per_frame = self.detector.detect_video([f.image for f in frames], settings.full_every) if frames else []
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
        """Every kept face of `frames`, grouped into tracks, processed chunk by chunk."""
        per_frame: list[list[Face]] = []
        for start in range(0, len(frames), CHUNK_FRAMES):
            per_frame.extend(self.process(frames[start:start + CHUNK_FRAMES], start))
        crops = {id(face.detection): face for faces in per_frame for face in faces}
        tracks = self.track([[face.detection for face in faces] for faces in per_frame])
        return [FaceTrack(t.track_id, [crops[id(d)] for d in t.detections]) for t in tracks]
