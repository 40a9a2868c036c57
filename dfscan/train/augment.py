"""Training-time augmentations by name (Bondi et al. 2020, Sec. V), built with albumentations.

Bondi et al. give parameters only for down-scaling (factor 0.7-0.9) and JPEG (quality 50-99);
the others use albumentations' defaults. Each is applied with probability 0.5; down-scaling
uses area interpolation down and bilinear up (albumentations defaults to nearest).
"""

from __future__ import annotations

from typing import Callable, Sequence

import albumentations as A
import cv2
import numpy as np

AUGMENTATIONS: dict[str, Callable[[], A.BasicTransform]] = {
    "flip": lambda: A.HorizontalFlip(p=0.5),
    "bc": lambda: A.RandomBrightnessContrast(p=0.5),
    "hsv": lambda: A.HueSaturationValue(p=0.5),
    "isonoise": lambda: A.ISONoise(p=0.5),
    "gaussnoise": lambda: A.GaussNoise(p=0.5),
    "downscale": lambda: A.Downscale(
        scale_range=(0.7, 0.9),
        interpolation_pair={"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR},
        p=0.5,
    ),
    "jpeg": lambda: A.ImageCompression(compression_type="jpeg", quality_range=(50, 99), p=0.5),
}

# The set that helped cross-dataset AUC in Bondi et al. (HF, BC, HSV, JPEG).
DEFAULT_AUGMENTATIONS: tuple[str, ...] = ("flip", "bc", "hsv", "jpeg")


class Augment:
    """An albumentations pipeline as a plain ``image -> image`` function (picklable for workers)."""

    def __init__(self, names: Sequence[str]):
        self.names = tuple(names)
        self.transform = A.Compose([AUGMENTATIONS[n]() for n in self.names])

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return self.transform(image=image)["image"]

    def __repr__(self) -> str:
        return f"Augment({list(self.names)})"


def build_augment(names: Sequence[str]) -> Callable[[np.ndarray], np.ndarray] | None:
    """Pipeline for RGB uint8 HxWx3 images applying ``names`` in order; None when empty."""
    if isinstance(names, str):
        names = [names]
    unknown = [n for n in names if n not in AUGMENTATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation(s) {unknown}; valid: {', '.join(AUGMENTATIONS)}")
    if not names:
        return None
    return Augment(names)
