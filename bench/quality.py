"""Benchmark (not a test): every quality figure the model card quotes, measured on the shared data.

    python bench/quality.py                         # the default bundle
    python bench/quality.py --model weights/default --json quality.json
    python bench/quality.py --skip dfdc             # leave out a section (clips, wild, images, dfdc, sbi)

Sections (each needs ../shared beside the checkout; a missing part is reported as skipped):
- clips:  the four shared real clips, scanned as `dfscan check` does: label, score, and the share of their
          face crops above the threshold (issue 8: no clip FAKE, at most 5% of crops above).
- wild:   wild_clips val videos (16 real, 1 fake; other sources than any training set): labels, video AUC,
          reals called FAKE at each operating point, per source.
- images: wild_clips val face images (Celeb-DF v2 real and Celeb-synthesis crops, 8 + 4): frame AUC.
- ffpp:   FaceForensics++ 000 face images (real, Deepfakes, Face2Face, FaceSwap, NeuralTextures; 4 frames each):
          labelled train in wild_clips. The images themselves are not trained on, but their source videos
          partly are: the FF++ 000 original and its Face2Face fake are wild_clips train videos (the wild pools
          hold their faces), so real and Face2Face here are seen footage; Deepfakes, FaceSwap and
          NeuralTextures of 000_003 are methods never trained on (their target face is). Each method's
          four frames are scored as a short video (mean): which fakes are called FAKE at each point (issue 8:
          FF++ c23, at least 3 of 4 fakes FAKE), frame AUC.
- dfdc:   held-out DFDC val crops (3,094): frame AUC, FPR/TPR at each operating point.
- sbi:    self-blended copies of the shared real clips' scanner crops vs the crops themselves: AUC
          (does the model see a blending boundary at all?).
- domains: FPR of real footage per domain at each operating point (the model card's table).
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CLIPS = SHARED / "clips" / "real"
WILD = SHARED / "datasets" / "wild_clips"
DFDC = SHARED / "datasets" / "dfdc_faces"
SECTIONS = ("clips", "wild", "images", "ffpp", "dfdc", "sbi")


def auc(labels: list[int] | np.ndarray, scores: list[float] | np.ndarray) -> float | None:
    from dfscan.evaluate import binary_metrics

    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    if len(set(labels.tolist())) < 2:
        return None
    return binary_metrics(labels, scores)["auc"]


def rates(labels: np.ndarray, scores: np.ndarray, points: dict[str, float]) -> dict[str, dict[str, float | None]]:
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=float)
    out = {}
    for name, t in points.items():
        real, fake = scores[labels == 0], scores[labels == 1]
        out[name] = {"threshold": round(t, 4),
                     "fpr": None if not len(real) else round(float((real >= t).mean()), 4),
                     "tpr": None if not len(fake) else round(float((fake >= t).mean()), 4)}
    return out


def scan_clips(model: str | None, threshold: float) -> dict[str, Any]:
    from dfscan.scan import scan_video

    rows, crops_above, crops = {}, 0, 0
    for clip in sorted(CLIPS.glob("*.mp4")):
        result = scan_video(clip, model=model)
        scores = [o.score for t in result.tracks for o in t.observations]
        above = sum(s >= threshold for s in scores)
        crops_above, crops = crops_above + above, crops + len(scores)
        rows[clip.name] = {"label": result.label, "score": result.score, "faces": len(scores),
                           "crops_above": round(above / max(1, len(scores)), 3)}
    return {"videos": rows, "fake_count": sum(r["label"] == "FAKE" for r in rows.values()),
            "crops_above_threshold": round(crops_above / max(1, crops), 4)}


def scan_wild(model: str | None, points: dict[str, float]) -> dict[str, Any]:
    from dfscan.scan import scan_video

    rows = []
    with open(WILD / "labels.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["split"] != "val" or not row["file"].startswith("videos/"):
                continue
            result = scan_video(WILD / row["file"], model=model)
            rows.append({"file": row["file"], "label": row["label"], "source": row["source"],
                         "dataset": row["dataset"], "verdict": result.label, "score": result.score})
    scored = [r for r in rows if r["score"] is not None]
    y = [int(r["label"] == "fake") for r in scored]
    s = [r["score"] for r in scored]
    reals = [r for r in scored if r["label"] == "real"]
    return {"videos": rows, "video_auc": auc(y, s),
            "reals": len(reals), "reals_fake": {n: sum(r["score"] >= t for r in reals) for n, t in points.items()},
            "unscored": [r["file"] for r in rows if r["score"] is None], "at": rates(y, s, points)}


def score_images(scorer: Any, paths: list[Path]) -> np.ndarray:
    from dfscan.faceset import load_crop

    return scorer.score_crops(np.stack([load_crop(p, scorer.input_size) for p in paths]))


def wild_images(scorer: Any, points: dict[str, float]) -> dict[str, Any]:
    with open(WILD / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "val" and r["file"].startswith("images/")]
    scores = score_images(scorer, [WILD / r["file"] for r in rows])
    y = [int(r["label"] == "fake") for r in rows]
    return {"n": len(rows), "frame_auc": auc(y, scores), "at": rates(np.asarray(y), scores, points),
            "per_image": {r["file"]: round(float(v), 4) for r, v in zip(rows, scores)}}


def ffpp_images(scorer: Any, points: dict[str, float]) -> dict[str, Any]:
    with open(WILD / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["dataset"] == "FaceForensics++" and r["file"].startswith("images/")]
    scores = score_images(scorer, [WILD / r["file"] for r in rows])
    y = np.asarray([int(r["label"] == "fake") for r in rows])
    by_method: dict[str, list[float]] = {}
    for r, v in zip(rows, scores):
        by_method.setdefault(r["method"] or "real", []).append(float(v))
    videos = {m: round(float(np.mean(v)), 4) for m, v in by_method.items()}
    fakes = {m: v for m, v in videos.items() if m != "real"}
    return {"n": len(rows), "frame_auc": auc(y, scores), "videos": videos,
            "fakes_called_fake": {n: sum(v >= t for v in fakes.values()) for n, t in points.items()},
            "real_called_fake": {n: int(videos.get("real", 0.0) >= t) for n, t in points.items()},
            "n_fakes": len(fakes)}


def dfdc_val(scorer: Any, points: dict[str, float]) -> dict[str, Any]:
    from dfscan.evaluate import evaluate_faceset

    result = evaluate_faceset(scorer, DFDC, split="val")
    frames = [i for i in result.items if i.level == "frame"]
    y = np.asarray([int(i.label == "fake") for i in frames])
    s = np.asarray([i.score for i in frames])
    return {"n": len(frames), "frame_auc": auc(y, s), "at": rates(y, s, points)}


def sbi_proxy(scorer: Any, seed: int = 0) -> dict[str, Any]:
    """Scanner-geometry crops of the shared real clips vs self-blended copies of the same crops."""
    from dfscan.train.extract import VideoItem, extract_faces
    from dfscan.train.sbi import Landmarker, ViewSettings, box_in_crop, recut, self_blend
    from dfscan.faceset import FaceSet

    margin, size = scorer.crop_margin, scorer.input_size
    stored = margin + 0.2
    view = ViewSettings(size=size, margin=margin, margin_jitter=0.0, shift_jitter=0.0, jpeg_p=0.0, blur_p=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        items = [VideoItem(p, "real", "val", p.name, p.name) for p in sorted(CLIPS.glob("*.mp4"))]
        extract_faces(items, tmp, frames=32, size=256, margin=stored, progress=False, max_faces_per_frame=4)
        faces = FaceSet.load(tmp)
        landmarker = Landmarker()
        reals, fakes = [], []
        for i, record in enumerate(faces.records):
            image = faces.read_image(record)
            rng = np.random.default_rng([seed, i])
            blended, _ = self_blend(image, landmarker(image, box_in_crop(image.shape[0], stored)), rng)
            reals.append(recut(image, stored, view, rng))
            fakes.append(recut(blended, stored, view, rng))
    scores = scorer.score_crops(np.stack(reals + fakes))
    return {"n_pairs": len(reals), "auc": auc([0] * len(reals) + [1] * len(fakes), scores)}


def domain_table(report: dict[str, Any], points: dict[str, float]) -> dict[str, Any]:
    """FPR of real footage per domain at each operating point (video level for videos, crops for DFDC)."""
    table: dict[str, Any] = {}
    if "clips" in report:
        scores = [v["score"] for v in report["clips"]["videos"].values() if v["score"] is not None]
        table["shared clips (videos)"] = rates(np.zeros(len(scores)), scores, points)
    if "wild" in report:
        by_source: dict[str, list[float]] = {}
        for v in report["wild"]["videos"]:
            if v["label"] == "real" and v["score"] is not None:
                by_source.setdefault(v["source"], []).append(v["score"])
        all_wild = [s for group in by_source.values() for s in group]
        table["wild_clips val reals (videos)"] = rates(np.zeros(len(all_wild)), all_wild, points)
        table["wild_clips sources"] = {src: {n: sum(s >= t for s in group) for n, t in points.items()} | {"n": len(group)}
                                       for src, group in sorted(by_source.items())}
    if "dfdc" in report:
        table["DFDC val (crops)"] = {n: {"fpr": v["fpr"]} for n, v in report["dfdc"]["at"].items()}
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="bundle directory (default: weights/default)")
    parser.add_argument("--skip", action="append", default=[], choices=SECTIONS)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    from dfscan.model.scorer import Scorer

    scorer = Scorer(args.model, device="cpu")
    points = dict(scorer.manifest.operating_points) or {"threshold": scorer.manifest.scan.threshold}
    threshold = scorer.manifest.scan.threshold
    report: dict[str, Any] = {"model": scorer.describe(), "threshold": threshold, "operating_points": points,
                              "machine": "see README: figures in the model card are from a 2-core CPU"}
    runs = {"clips": (CLIPS, lambda: scan_clips(args.model, threshold)),
            "wild": (WILD, lambda: scan_wild(args.model, points)),
            "images": (WILD, lambda: wild_images(scorer, points)),
            "ffpp": (WILD, lambda: ffpp_images(scorer, points)),
            "dfdc": (DFDC, lambda: dfdc_val(scorer, points)),
            "sbi": (CLIPS, lambda: sbi_proxy(scorer))}
    for name, (needs, run) in runs.items():
        if name in args.skip:
            continue
        if not needs.exists():
            report[name] = {"skipped": f"{needs} not found"}
            continue
        t0 = time.perf_counter()
        report[name] = run()
        report[name]["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"[{name}] {json.dumps({k: v for k, v in report[name].items() if k not in ('videos', 'per_image')})}",
              flush=True)
    report["domains"] = domain_table(report, points)
    print(json.dumps(report["domains"], indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
