"""Weight averaging of fine-tuned checkpoints: a "model soup" (Wortsman et al., ICML 2022; WiSE-FT, CVPR 2022).

Checkpoints fine-tuned from one starting point lie in one basin of the loss, so their weighted average is a
model in its own right, often better out of distribution than any member and free at scan time (one network,
not an ensemble). dfscan uses it to join a run strong on DFDC with one strong on other footage.

The soup keeps the first member's data and settings (its training face sets, crop, val split); its val scores
are scored again through the averaged network, so the export fits calibration, operating points and likelihood
ratios on the soup itself, never on a member's scores.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from dfscan.train import loop

SAME_ACROSS_MEMBERS = ("backbone", "input_size", "mean", "std", "crop_margin", "recipe")


def average_state_dicts(states: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]
                        ) -> dict[str, torch.Tensor]:
    """Weighted mean of every floating-point tensor; integer buffers (BatchNorm's step counts) from the first."""
    keys = list(states[0])
    for i, state in enumerate(states[1:], 1):
        if list(state) != keys:
            raise ValueError(f"member {i + 1} has other layers than member 1: not the same architecture")
    out = {}
    for key in keys:
        tensors = [s[key] for s in states]
        if any(t.shape != tensors[0].shape for t in tensors):
            raise ValueError(f"layer {key} differs in shape between members: not the same architecture")
        if tensors[0].is_floating_point():
            out[key] = sum(w * t.double() for w, t in zip(weights, tensors)).to(tensors[0].dtype)
        else:
            out[key] = tensors[0].clone()
    return out


def _check_members(ckpts: Sequence[dict[str, Any]], paths: Sequence[str]) -> None:
    first = ckpts[0]
    for path, ckpt in zip(paths[1:], ckpts[1:]):
        for key in SAME_ACROSS_MEMBERS:
            if ckpt.get(key) != first.get(key):
                raise ValueError(f"{path}: {key} {ckpt.get(key)!r} differs from {paths[0]}'s {first.get(key)!r}; "
                                 "a soup averages models of one architecture and preprocessing")
    for path, ckpt in zip(paths, ckpts):
        head = ckpt.get("head")
        if head is None:
            raise ValueError(f"{path} has no classifier head: export the best.pt a finished run writes")
        if head.get("kind") != "linear":
            raise ValueError(f"{path}: a soup needs a network's own linear head, not a {head.get('kind')} head "
                             "fitted on embeddings")


def normalised_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    values = [1.0] * n if weights is None else [float(w) for w in weights]
    if len(values) != n:
        raise ValueError(f"{len(values)} weights for {n} checkpoints")
    total = sum(values)
    if any(not np.isfinite(w) or w < 0 for w in values) or not 0 < total < np.inf:
        raise ValueError("soup weights must be non-negative numbers, not all zero, with a finite sum")
    return [w / total for w in values]


def soup_checkpoint(paths: Sequence[str | Path], weights: Sequence[float] | None = None) -> dict[str, Any]:
    """The averaged checkpoint, val not yet scored again (`make_soup` does that)."""
    if len(paths) < 2:
        raise ValueError("a soup needs at least two checkpoints")
    names = [str(p) for p in paths]
    ckpts = [loop.load_checkpoint(p) for p in paths]
    _check_members(ckpts, names)
    w = normalised_weights(weights, len(ckpts))
    soup = {k: v for k, v in ckpts[0].items() if k not in ("optimizer", "scheduler", "extra")}
    soup["model"] = average_state_dicts([c["model"] for c in ckpts], w)
    soup["head"] = {"kind": "linear",
                    "weight": sum(wi * np.asarray(c["head"]["weight"], np.float64) for wi, c in zip(w, ckpts)),
                    "bias": sum(wi * np.asarray(c["head"]["bias"], np.float64) for wi, c in zip(w, ckpts))}
    soup["soup"] = {"members": names, "weights": w,
                    "member_val_auc": [c.get("metrics", {}).get("val_auc") for c in ckpts]}
    return soup


def make_soup(paths: Sequence[str | Path], out: str | Path, weights: Sequence[float] | None = None
              ) -> dict[str, Any]:
    """Average `paths` (weights default to equal) and write to `out` a checkpoint `dfscan export` takes, its
    val split (the first member's) scored again through the averaged network; returns that checkpoint."""
    from dfscan.train.export import export_checkpoint, rescore_val, training_faces
    from dfscan.train.recipes.core import auc_by_domain

    soup = soup_checkpoint(paths, weights)
    labels = np.asarray(soup["val_labels"], np.int64)
    faces = training_faces(soup)
    with tempfile.TemporaryDirectory() as tmp:  # a bundle to score through as a scan does; its thresholds are unused
        bundle = export_checkpoint(soup, Path(tmp) / "bundle", name="provisional", source="the soup")
        scores = rescore_val(bundle, soup, faces, labels)
    soup["val_scores"] = scores
    metrics = {k: v for k, v in soup.get("metrics", {}).items() if k in ("train_images", "val_images")}
    metrics["val_auc"] = loop.roc_auc(labels, scores)
    domains = soup.get("val_domains")
    if domains is not None and len(set(domains)) > 1:
        metrics["val_auc_by_domain"] = auc_by_domain(labels, scores, list(domains))
    soup["metrics"] = metrics
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    loop.save_checkpoint(soup, out)
    return soup
