"""Benchmark (not a test): where MTCNN detection's CPU time goes on a video's sampled frames, stage by stage
(the PNet pyramid's resampling and network, RNet and ONet crops and networks, NMS), and how many faces
with which boxes each detector setting finds against a reference setting.

    python bench/detect_profile.py ../shared/clips/real/street_crowd.mp4 --frames 32 --threads 1
    python bench/detect_profile.py crowd.mp4 --variant full_every=3 --variant factor=0.5
    python bench/detect_profile.py ../shared/datasets/wild_clips/videos/*/*.mp4 ../shared/clips/real/*.mp4 \
        --repeat 1 --variant "thresholds=[0.7,0.7,0.7]" --variant "thresholds=[0.9,0.7,0.7]"

Each variant is DetectorSettings fields (name=value, comma-separated; a list value in brackets); the first
row is the defaults, the reference for the face counts: faces matched by IoU >= --iou to a reference face,
how many of them have the very same box, and how far the others moved (largest corner difference in
original-frame pixels, and as a share of the face's side). With several videos every figure is summed over
them. CPU seconds of this process (process_time): on a shared machine, wall seconds mean little.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import time
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from dfscan.faces import mtcnn as mtcnn_module
from dfscan.faces.pipeline import FacePipeline
from dfscan.settings import DetectorSettings
from dfscan.video import sample_frames

SHARED_CROWD = Path(__file__).resolve().parents[1].parent / "shared" / "clips" / "real" / "street_crowd.mp4"


class StageClock:
    """CPU seconds spent inside each wrapped function (leaves only: the wrapped functions do not nest)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.items: dict[str, int] = defaultdict(int)
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, name: str, stage: str | Callable[..., str | None],
             count: Callable[..., int] | None = None) -> None:
        """Time calls of owner.name under the label `stage` gives (None: a call within another wrapped one)."""
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            label = stage(*args) if callable(stage) else stage
            if label is None:
                return original(*args, **kwargs)
            t0 = time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[label] += time.process_time() - t0
                self.calls[label] += 1
                if count is not None:
                    self.items[label] += count(*args)

        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, original))

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()


def instrument(clock: StageClock, detector: Any) -> None:
    m = mtcnn_module
    clock.wrap(m, "pyramid_level", "pnet resample (pyramid levels)")
    clock.wrap(detector, "_run_pnet", "pnet network",
               count=lambda pnet, batch: int(np.prod(batch.shape[-2:])) * len(batch))
    clock.wrap(detector, "_pnet_windows", "pnet windows")
    clock.wrap(m, "nms", "nms")
    clock.wrap(m, "area_crops", lambda integral, regions, size: f"crops {size} px", count=lambda i, regions, s: len(regions))
    networks = [n for n in (detector.networks, detector._large_frame_networks) if n is not None]
    names = {id(session): f"{stage} network" for n in networks for stage, session in zip(n._fields, n)}
    names.update({id(n.pnet): None for n in networks})  # timed by _run_pnet
    clock.wrap(m, "_run_in_chunks", lambda session, batch, *_: names.get(id(session), "network"),
               count=lambda session, batch, *_: len(batch))
    clock.wrap(m, "integral_image", "integral images")


def detect(frames: list[Any], settings: DetectorSettings, threads: int | None, repeat: int
           ) -> tuple[list[list[Any]], dict[str, Any]]:
    pipeline = FacePipeline(settings, threads=threads, device="cpu")
    pipeline.detect(frames)  # warm-up
    totals, stages = [], []
    for _ in range(repeat):
        clock = StageClock()
        instrument(clock, pipeline.detector)
        t0 = time.process_time()
        found = pipeline.detect(frames)
        totals.append(time.process_time() - t0)
        clock.restore()
        stages.append(clock)
    median = statistics.median(totals)
    per_stage = {name: round(statistics.median(c.seconds.get(name, 0.0) for c in stages), 3)
                 for name in sorted({n for c in stages for n in c.seconds})}
    per_stage["other (python, box arithmetic)"] = round(median - sum(per_stage.values()), 3)
    return found, {"cpu_s": round(median, 3), "stages": per_stage, "items": dict(stages[-1].items)}


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x1, y1 = np.maximum(a[:, None, 0], b[None, :, 0]), np.maximum(a[:, None, 1], b[None, :, 1])
    x2, y2 = np.minimum(a[:, None, 2], b[None, :, 2]), np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def compare(reference: list[list[Any]], found: list[list[Any]], iou: float) -> dict[str, Any]:
    """Faces of `found` matched one to one (greedy by IoU) to `reference`, frame by frame."""
    matched, shifts, relative = 0, [], []
    for ref, new in zip(reference, found):
        if not ref or not new:
            continue
        a, b = np.array([d.box for d in ref]), np.array([d.box for d in new])
        overlap = _iou(a, b)
        while overlap.size and overlap.max() >= iou:
            i, j = np.unravel_index(np.argmax(overlap), overlap.shape)
            matched += 1
            shifts.append(float(np.abs(a[i] - b[j]).max()))
            relative.append(shifts[-1] / float(max(a[i][2] - a[i][0], a[i][3] - a[i][1])))
            overlap[i, :], overlap[:, j] = -1, -1
    n_ref, n_new = sum(map(len, reference)), sum(map(len, found))
    return {"faces": n_new, "matched": matched, "missed": n_ref - matched, "extra": n_new - matched,
            "shifts": shifts, "relative_shifts": relative}


def summarise_shifts(row: dict[str, Any]) -> dict[str, Any]:
    """The matched boxes' shifts as counts and percentiles (the raw lists are dropped)."""
    shifts, relative = row.pop("shifts"), row.pop("relative_shifts")
    return {**row, "identical_boxes": sum(s == 0.0 for s in shifts),
            "max_corner_shift_px": round(max(shifts), 2) if shifts else None,
            "median_corner_shift_px": round(statistics.median(shifts), 2) if shifts else None,
            "p99_shift_of_side": round(float(np.percentile(relative, 99)), 3) if relative else None}


def load_boxes(path: Path) -> list[list[Any]]:
    """Boxes saved by --save-boxes, as objects with a `box` like the pipeline's detections."""
    return [[SimpleNamespace(box=np.asarray(box)) for box in frame] for frame in json.loads(path.read_text())]


def parse_variant(text: str) -> DetectorSettings:
    fields = {f.name: f for f in dataclasses.fields(DetectorSettings)}
    values: dict[str, Any] = {}
    for name, value in re.findall(r"(\w+)=(\[[^\]]*\]|[^,]+)", text):
        if name not in fields:
            raise SystemExit(f"unknown detector setting {name!r} (known: {', '.join(fields)})")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value  # a bare word: a string setting
        values[name] = tuple(parsed) if name == "thresholds" else type(getattr(DetectorSettings(), name))(parsed)
    return dataclasses.replace(DetectorSettings(), **values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="*", type=Path, default=[SHARED_CROWD])
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variant", action="append", default=[], help="DetectorSettings fields, e.g. full_every=3")
    parser.add_argument("--iou", type=float, default=0.5)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--save-boxes", type=Path, default=None, help="write the defaults' boxes per frame here")
    parser.add_argument("--compare-boxes", type=Path, default=None,
                        help="match every row against boxes saved by --save-boxes (e.g. before a code change)")
    args = parser.parse_args(argv)
    if len(args.videos) > 1 and (args.save_boxes or args.compare_boxes):
        parser.error("--save-boxes and --compare-boxes take one video")
    variants = ["", *args.variant]
    settings = [parse_variant(v) for v in variants]
    totals: list[dict[str, Any]] = [{"variant": v or "defaults", "cpu_s": 0.0, "stages": defaultdict(float),
                                     "items": defaultdict(int), "faces": 0, "matched": 0, "missed": 0, "extra": 0,
                                     "shifts": [], "relative_shifts": []} for v in variants]
    decode_s = 0.0
    against = f"saved {args.compare_boxes.name}" if args.compare_boxes else "defaults"
    for video in args.videos:
        t0 = time.process_time()
        _, frames = sample_frames(video, n=args.frames)
        decode_s += time.process_time() - t0
        height, width = frames[0].image.shape[:2]
        runtime = DetectorSettings().build("cpu", args.threads).runtime_for(height, width)
        print(f"{video.name}: {len(frames)} frames {width}x{height}, networks on {runtime}", flush=True)
        reference = load_boxes(args.compare_boxes) if args.compare_boxes else None
        for total, variant in zip(totals, settings):
            found, timing = detect(frames, variant, args.threads, args.repeat)
            if total["variant"] == "defaults" and args.save_boxes:
                args.save_boxes.write_text(json.dumps([[list(map(float, d.box)) for d in dets] for dets in found]) + "\n")
            reference = reference or found
            total["cpu_s"] += timing["cpu_s"]
            for stage, seconds in timing["stages"].items():
                total["stages"][stage] += seconds
            for stage, n in timing["items"].items():
                total["items"][stage] += n
            for key, value in compare(reference, found, args.iou).items():
                total[key] += value
    rows = [summarise_shifts({**t, "against": against, "stages": dict(t["stages"]), "items": dict(t["items"])})
            for t in totals]
    print(f"\n{len(args.videos)} video(s), decode {decode_s:.2f} CPU s")
    for row in rows:
        print(f"\n{row['variant']}: detect {row['cpu_s']:.3f} CPU s, {row['faces']} faces (vs {against}: "
              f"{row['matched']} matched, {row['identical_boxes']} of them the same box, {row['missed']} missed, "
              f"{row['extra']} extra; corner shift max {row['max_corner_shift_px']} / median "
              f"{row['median_corner_shift_px']} px, p99 {row['p99_shift_of_side']} of the face side)")
        for stage, seconds in sorted(row["stages"].items(), key=lambda kv: -kv[1]):
            items = row["items"].get(stage)
            print(f"  {stage:34s} {seconds:7.3f} s {100 * seconds / row['cpu_s']:5.1f}%"
                  + (f"  ({items:,} {'pixels' if 'pnet' in stage else 'crops'})" if items else ""))
    if args.json:
        args.json.write_text(json.dumps({"videos": [str(v) for v in args.videos], "frames": args.frames,
                                         "decode_cpu_s": decode_s, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
