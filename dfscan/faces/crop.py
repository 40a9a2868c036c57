"""The one crop function. Training-set extraction and scanning both call `crop_face`, with the size and
margin a model bundle's manifest names, so a model always sees faces cropped the way it was trained."""
from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

Box = Sequence[float]  # x1, y1, x2, y2 in pixels


def square_box(box: Box, margin: float) -> tuple[float, float, float, float]:
    """Square box centred on `box`, side = longer side * (1 + margin). May extend past the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    side = max(x2 - x1, y2 - y1) * (1.0 + margin)
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    half = side / 2.0
    return cx - half, cy - half, cx + half, cy + half


def crop_face(image: np.ndarray, box: Box, size: int, margin: float = 0.0) -> np.ndarray:
    """Cut the square face region around `box` out of an RGB uint8 image and resize it to size x size.

    Parts of the square outside the image are filled with black, so a face at the border keeps its
    position and scale instead of being stretched.
    """
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {image.shape}")
    h, w = image.shape[:2]
    sx1, sy1, sx2, sy2 = square_box(box, margin)
    ix1, iy1 = int(round(sx1)), int(round(sy1))
    side = max(1, int(round(sx2 - sx1)))
    ix2, iy2 = ix1 + side, iy1 + side
    cx1, cy1, cx2, cy2 = max(ix1, 0), max(iy1, 0), min(ix2, w), min(iy2, h)
    canvas = np.zeros((side, side, 3), dtype=np.uint8)
    if cx2 > cx1 and cy2 > cy1:
        canvas[cy1 - iy1:cy2 - iy1, cx1 - ix1:cx2 - ix1] = image[cy1:cy2, cx1:cx2]
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(canvas, (size, size), interpolation=interpolation)
