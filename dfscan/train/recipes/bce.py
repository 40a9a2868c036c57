"""Bondi et al. 2020 baseline: backbone + linear head trained with binary cross-entropy, with their
augmentation set (HF, BC, HSV, JPEG) by default. Their optimiser: `--optimizer adam --lr 1e-4
--schedule plateau` (lr x 0.1 when the val loss stops improving, stop below 1e-8, best val loss kept)."""
from __future__ import annotations

from typing import Any

from dfscan.train.recipes.registry import NetShape, RecipeSpec

BONDI_AUGMENT = ("flip", "bc", "hsv", "jpeg")

SPEC = RecipeSpec(
    name="bce",
    summary="Bondi et al. baseline: backbone + linear head trained with binary cross-entropy.",
    paper="Bondi et al. 2020",
    net=NetShape(head_out=1),
    defaults={"augment": BONDI_AUGMENT},
)


def objective(cfg: Any, net: Any) -> Any:
    from dfscan.train.recipes.core import Objective, bce_loss, bce_score
    return Objective(loss=bce_loss, score=bce_score)
