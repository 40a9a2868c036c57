"""Writes dfscan/assets/example.mp4, the clip `dfscan check --example` scans.

Source material: the photograph of NASA astronaut Eileen Collins that scikit-image ships as
`skimage.data.astronaut()`, from the NASA Great Images database (https://flic.kr/p/r9qvLn): a work of the
U.S. government, "no known copyright restrictions, released into the public domain". Nothing else goes
into the clip.

The clip is a slow pan and zoom (Ken Burns) from the whole portrait in to the head and shoulders; every
crop window contains the whole face. 3 s, 25 fps, 360x360, H.264 (yuv420p, MP4 index first), < 400 KB.

scikit-image is needed only to run this tool, not by dfscan:
    pip install scikit-image && python tools/make_example_clip.py
"""
from __future__ import annotations

import argparse
from pathlib import Path

import av
import cv2
import numpy as np

OUT_PATH = Path(__file__).resolve().parents[1] / "dfscan" / "assets" / "example.mp4"
SIZE = 360
FPS = 25
SECONDS = 3.0
MAX_BYTES = 400_000
# Crop windows in source pixels (x, y, side): the whole portrait -> head and shoulders.
START_WINDOW = (16.0, 0.0, 496.0)
END_WINDOW = (70.0, 0.0, 310.0)
FACE_BOX = (150, 15, 300, 190)  # x0, y0, x1, y1 of face and hair in the 512x512 source


def load_photo() -> np.ndarray:
    from skimage import data  # noqa: PLC0415 - tool-only dependency

    return data.astronaut()  # RGB uint8, 512x512


def ease(t: float) -> float:
    """Smooth start and stop."""
    return t * t * (3 - 2 * t)


def window_at(t: float) -> tuple[float, float, float]:
    k = ease(t)
    return tuple(a + (b - a) * k for a, b in zip(START_WINDOW, END_WINDOW))  # type: ignore[return-value]


def render(photo: np.ndarray, window: tuple[float, float, float]) -> np.ndarray:
    """The crop window resampled to SIZE x SIZE with sub-pixel precision (no jitter between frames)."""
    x, y, side = window
    zoom = SIZE / side
    matrix = np.array([[zoom, 0, -x * zoom], [0, zoom, -y * zoom]], dtype=np.float64)
    return cv2.warpAffine(photo, matrix, (SIZE, SIZE), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT)


def check_face_visible(window: tuple[float, float, float]) -> None:
    x, y, side = window
    x0, y0, x1, y1 = FACE_BOX
    if not (x <= x0 and y <= y0 and x + side >= x1 and y + side >= y1):
        raise AssertionError(f"crop window {window} cuts the face box {FACE_BOX}")


def write_clip(path: Path, crf: int) -> int:
    photo = load_photo()
    n_frames = round(SECONDS * FPS)
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "slow", "tune": "film"}
        container.metadata["comment"] = "NASA photo of astronaut Eileen Collins (public domain), via scikit-image"
        for index in range(n_frames):
            window = window_at(index / (n_frames - 1))
            check_face_visible(window)
            frame = av.VideoFrame.from_ndarray(render(photo, window), format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT_PATH)
    parser.add_argument("--crf", type=int, default=20)
    args = parser.parse_args()
    crf = args.crf
    size = write_clip(args.out, crf)
    while size > MAX_BYTES and crf < 40:  # keep the asset small: raise crf until it fits
        crf += 2
        size = write_clip(args.out, crf)
    print(f"wrote {args.out} ({size:,} bytes, crf {crf})")


if __name__ == "__main__":
    main()
