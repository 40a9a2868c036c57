"""Benchmark (not a test): the crop geometry of a face set made elsewhere, measured with dfscan's detector.

For a sample of crops, MTCNN (the scanner's settings) runs on each crop padded with a black border (so a
face filling the crop can still be found); the crop margin that `crop_face` would need to cut the same square
from the detector box is crop_side / box_side - 1. The shared DFDC crops measure about -0.1: they are ~10%
tighter than the box the scanner cuts around (faceset.KNOWN_GEOMETRY records it).

    python bench/measure_geometry.py ../shared/datasets/dfdc_faces --n 300
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("face_set", type=Path)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from dfscan.faceset import FaceSet
    from dfscan.scan import DetectorSettings

    faces = FaceSet.load(args.face_set)
    rng = np.random.default_rng(args.seed)
    records = [faces.records[i] for i in rng.choice(len(faces), min(args.n, len(faces)), replace=False)]
    settings = DetectorSettings(max_side=None, min_face_size=20)
    detector = settings.build("cpu")
    margins, centre_offsets, missed = [], [], 0
    for record in records:
        crop = faces.read_image(record)
        side = crop.shape[0]
        pad = side // 2
        padded = cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
        found = detector.detect_batch([padded])[0]
        if not len(found.boxes):
            missed += 1
            continue
        x1, y1, x2, y2 = np.asarray(found.boxes[int(np.argmax(found.scores))], float) - pad
        box_side = max(x2 - x1, y2 - y1)
        margins.append(side / box_side - 1.0)
        centre_offsets.append(((x1 + x2) / 2 - side / 2) / side)
    margins_arr = np.asarray(margins)
    report = {"face_set": str(args.face_set), "sampled": len(records), "no_face": missed,
              "margin_median": round(float(np.median(margins_arr)), 3),
              "margin_p10_p90": [round(float(v), 3) for v in np.percentile(margins_arr, [10, 90])],
              "centre_offset_median": round(float(np.median(centre_offsets)), 3)}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
