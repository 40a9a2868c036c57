"""Benchmark (not a test): videos/s of `scan` with the local engine (1..N worker processes) and the Ray
engine (1..N actors on a local Ray) over the same clips.

The clips are copies of the shared real clips (talking heads and a 1080p crowd, cycled) written into a
temporary directory, never into the repository. Each timing covers what a user waits for after the
engine is up: the pool or actors start, load the bundle, scan every clip. Ray's own start-up (`ray.init`)
is timed apart, once; it is paid once per scan, or never on a running cluster.

    python bench/scale.py                          # 24 clips, 1..cpu_count workers and actors
    python bench/scale.py --clips 30 --max-parallel 2 --frames 32 --json scale.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from dfscan.scan import ScanSettings, iter_scan

SHARED_CLIPS = Path(__file__).resolve().parents[1].parent / "shared" / "clips" / "real"


def make_clips(source_dir: Path, out_dir: Path, count: int) -> list[Path]:
    """`count` clips in `out_dir`: the source clips cycled, each copy under its own name."""
    sources = sorted(source_dir.glob("*.mp4"))
    if not sources:
        raise SystemExit(f"no clips in {source_dir}")
    clips = []
    for i, source in zip(range(count), itertools.cycle(sources)):
        clip = out_dir / f"{i:03d}_{source.name}"
        shutil.copyfile(source, clip)
        clips.append(clip)
    return clips


def timed(results) -> tuple[float, Counter]:
    started = time.perf_counter()
    labels = Counter(r.label for r in results)
    return time.perf_counter() - started, labels


def run_local(clips: list[Path], workers: int, settings: ScanSettings, model: str | None) -> dict:
    seconds, labels = timed(iter_scan(clips, model=model, settings=settings, workers=workers))
    return {"engine": "local", "parallel": workers, "seconds": round(seconds, 2),
            "videos_per_s": round(len(clips) / seconds, 3), "labels": dict(labels)}


def run_ray(clips: list[Path], actors: int, settings: ScanSettings, model: str | None) -> dict:
    from dfscan.ray_engine import iter_scan_ray  # noqa: PLC0415

    seconds, labels = timed(iter_scan_ray(clips, model=model, settings=settings, actors=actors))
    return {"engine": "ray", "parallel": actors, "seconds": round(seconds, 2),
            "videos_per_s": round(len(clips) / seconds, 3), "labels": dict(labels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--source", type=Path, default=SHARED_CLIPS)
    parser.add_argument("--max-parallel", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--frames", type=int, default=None, help="Default: the bundle's (32).")
    parser.add_argument("--model", default=None)
    parser.add_argument("--engines", default="local,ray")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    settings = ScanSettings(frames=args.frames)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    rows: list[dict] = []
    meta: dict = {"cpu_count": os.cpu_count(), "load_1min": os.getloadavg()[0], "clips": args.clips}
    with tempfile.TemporaryDirectory(prefix="dfscan-scale-") as tmp:
        clips = make_clips(args.source, Path(tmp), args.clips)
        if "ray" in engines:
            import ray  # noqa: PLC0415

            started = time.perf_counter()
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
            meta["ray_init_s"] = round(time.perf_counter() - started, 2)
        try:
            for parallel in range(1, args.max_parallel + 1):
                if "local" in engines:
                    rows.append(run_local(clips, parallel, settings, args.model))
                    print(json.dumps(rows[-1]), flush=True)
                if "ray" in engines:
                    rows.append(run_ray(clips, parallel, settings, args.model))
                    print(json.dumps(rows[-1]), flush=True)
        finally:
            if "ray" in engines:
                ray.shutdown()
    meta["load_1min_after"] = os.getloadavg()[0]
    by_key = {(r["engine"], r["parallel"]): r for r in rows}
    print(f"\n{args.clips} clips, {os.cpu_count()} CPUs, load {meta['load_1min']:.1f} -> {meta['load_1min_after']:.1f}"
          + (f", ray.init {meta['ray_init_s']} s" if "ray_init_s" in meta else ""))
    print("parallel  local videos/s  ray videos/s  ray/local")
    for parallel in range(1, args.max_parallel + 1):
        local, ray_row = by_key.get(("local", parallel)), by_key.get(("ray", parallel))
        ratio = f"{ray_row['videos_per_s'] / local['videos_per_s']:.2f}" if local and ray_row else "-"
        print(f"{parallel:8d}  {local['videos_per_s'] if local else '-':>14}  "
              f"{ray_row['videos_per_s'] if ray_row else '-':>12}  {ratio:>9}")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
