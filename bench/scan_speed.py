"""Benchmark (not a test): where a scan's time goes, per video.

For each video: decode-only time for the sampled frames (the floor), then a full scan split into
decode / detect / embed+classify, and end to end. Median of --repeat runs after one warm-up.
Target (issue #2): 32 frames of a 10 s 720p clip on 2 CPU cores, end to end <= 3 s and <= 3x decode-only.

    python bench/scan_speed.py                      # makes a 10 s 720p clip from a shared real clip
    python bench/scan_speed.py a.mp4 b.mp4 --frames 32 --json out.json
    python bench/scan_speed.py street_crowd.mp4 --cpu-time --threads 1   # on a shared machine: CPU seconds
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import av
import cv2
import numpy as np

from dfscan.scan import ScanSettings, Scanner
from dfscan.video import sample_frames

SHARED_CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "clips" / "real" / "talking_d3.mp4"


def make_720p_clip(source: Path, out: Path, seconds: float = 10.0, fps: int = 25) -> Path:
    """A 10 s 1280x720 H.264 clip: the source's frames centred on a 720p canvas (real face, real codec)."""
    with av.open(str(source)) as src, av.open(str(out), "w") as dst:
        stream = dst.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.options = {"g": str(2 * fps), "preset": "veryfast", "crf": "23"}
        written = 0
        for frame in src.decode(video=0):
            image = frame.to_ndarray(format="rgb24")
            scale = 720 / image.shape[0]
            image = cv2.resize(image, (int(image.shape[1] * scale), 720))
            canvas = np.zeros((720, 1280, 3), np.uint8)
            x = (1280 - image.shape[1]) // 2
            canvas[:, x:x + image.shape[1]] = image[:, : 1280]
            for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                dst.mux(packet)
            written += 1
            if written >= seconds * fps:
                break
        for packet in stream.encode():
            dst.mux(packet)
    return out


def bench_video(scanner: Scanner, path: Path, frames: int, repeat: int, cpu_time: bool = False) -> dict:
    settings = ScanSettings(frames=frames)
    sample_frames(path, n=frames)  # warm-up (file cache, codec init)
    scanner.scan(path, settings)
    decode_only, parts = [], []
    clock = time.process_time if cpu_time else time.perf_counter
    for _ in range(repeat):
        t0 = clock()
        sample_frames(path, n=frames)
        decode_only.append(clock() - t0)
        t1 = clock()
        result = scanner.scan(path, settings)
        parts.append({**result.timings, **({"total_s": clock() - t1} if cpu_time else {})})
    med = {k: statistics.median(p[k] for p in parts) for k in ("decode_s", "detect_s", "score_s", "total_s")}
    floor = statistics.median(decode_only)
    return {"video": str(path), "frames": frames, "decode_only_s": round(floor, 3),
            **{k: round(v, 3) for k, v in med.items()}, "label": result.label,
            "faces": sum(t.n_faces for t in result.tracks), "x_decode_only": round(med["total_s"] / floor, 2),
            "provider": result.provider, "cpu_count": os.cpu_count(),
            "clock": "process CPU seconds (decode_s/detect_s/score_s stay wall)" if cpu_time else "wall"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="*", type=Path)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--cpu-time", action="store_true",
                        help="decode_only_s, total_s and their ratio in CPU seconds of this process (shared machines)")
    parser.add_argument("--threads", type=int, default=None, help="threads for the scan's onnxruntime runs (default: all cores)")
    args = parser.parse_args()
    videos = list(args.videos)
    tmp = tempfile.TemporaryDirectory()
    if not videos:
        if not SHARED_CLIP.is_file():
            raise SystemExit(f"no videos given and {SHARED_CLIP} is absent")
        videos = [make_720p_clip(SHARED_CLIP, Path(tmp.name) / "clip_720p_10s.mp4")]
    scanner = Scanner(args.model, device=args.device, threads=args.threads)
    rows = [bench_video(scanner, v, args.frames, args.repeat, args.cpu_time) for v in videos]
    header = ("decode_only_s", "decode_s", "detect_s", "score_s", "total_s", "x_decode_only", "faces")
    print("video".ljust(28), *(h.rjust(13) for h in header))
    for row in rows:
        print(Path(row["video"]).name[:28].ljust(28), *(str(row[h]).rjust(13) for h in header))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
