"""Benchmark (not a test): videos/s of `scan` with the local engine (1..N worker processes) and the Ray
engine (1..N actors on a local Ray) over the same clips.

The clips are copies of the shared real clips (talking heads and a 1080p crowd, cycled) written into a
temporary directory, never into the repository. Each timing covers what a user waits for after the
engine is up: the pool or actors start, load the bundle, scan every clip. Ray's own start-up (`ray.init`)
is timed apart, once; it is paid once per scan, or never on a running cluster.

Beside wall-clock videos/s, each run records the CPU seconds its whole process tree used (this process,
pool workers, Ray's raylet, GCS and actors, from /proc): on a shared machine wall time follows the other
users' load, while CPU seconds per video still show what an engine costs.

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


def tree_cpu_by_pid(root: int | None = None) -> dict[int, float]:
    """CPU seconds (user + system, with reaped children's) of a process and each of its descendants (Linux)."""
    root = root or os.getpid()
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    cpu, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in stats:
            cpu[pid] = sum(int(v) for v in stats[pid][11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime
        todo.extend(children.get(pid, []))
    return cpu


def cpu_since(before: dict[int, float]) -> float:
    """CPU the tree used since `before`, per process: one that ended in between (an earlier run's Ray actor) takes
    nothing away, where a difference of tree totals went negative."""
    return sum(max(0.0, used - before.get(pid, 0.0)) for pid, used in tree_cpu_by_pid().items())


def timed(results) -> tuple[float, float, Counter]:
    started, cpu = time.perf_counter(), tree_cpu_by_pid()
    labels = Counter(r.label for r in results)
    return time.perf_counter() - started, cpu_since(cpu), labels


def row(engine: str, parallel: int, clips: list[Path], seconds: float, cpu: float, labels: Counter) -> dict:
    return {"engine": engine, "parallel": parallel, "seconds": round(seconds, 2),
            "videos_per_s": round(len(clips) / seconds, 3), "cpu_s_per_video": round(cpu / len(clips), 3),
            "load_1min": round(os.getloadavg()[0], 1), "labels": dict(labels)}


def run_local(clips: list[Path], workers: int, settings: ScanSettings, model: str | None) -> dict:
    return row("local", workers, clips, *timed(iter_scan(clips, model=model, settings=settings, workers=workers)))


def run_ray(clips: list[Path], actors: int, settings: ScanSettings, model: str | None) -> dict:
    from dfscan.ray_engine import iter_scan_ray  # noqa: PLC0415

    return row("ray", actors, clips, *timed(iter_scan_ray(clips, model=model, settings=settings, actors=actors)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--source", type=Path, default=SHARED_CLIPS)
    parser.add_argument("--max-parallel", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--frames", type=int, default=None, help="Default: the bundle's (32).")
    parser.add_argument("--model", default=None)
    parser.add_argument("--engines", default="local,ray")
    parser.add_argument("--repeat", type=int, default=1, help="Alternate local and Ray runs this many times.")
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
            for attempt in range(3):  # a heavily loaded machine can miss Ray's fixed 30 s node start-up wait
                try:
                    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
                    break
                except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception for this
                    print(f"ray.init attempt {attempt + 1} failed: {exc}", flush=True)
                    ray.shutdown()
            meta["ray_init_s"] = round(time.perf_counter() - started, 2)
        try:
            for parallel in [p for p in range(1, args.max_parallel + 1) for _ in range(args.repeat)]:
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
    by_key: dict[tuple[str, int], dict] = {}
    for r in rows:  # with --repeat: the least disturbed run of each
        key = (r["engine"], r["parallel"])
        if key not in by_key or r["videos_per_s"] > by_key[key]["videos_per_s"]:
            by_key[key] = r
    print(f"\n{args.clips} clips, {os.cpu_count()} CPUs, load {meta['load_1min']:.1f} -> {meta['load_1min_after']:.1f}"
          + (f", ray.init {meta['ray_init_s']} s" if "ray_init_s" in meta else ""))
    print("parallel  local videos/s  ray videos/s  ray/local  local CPU s/video  ray CPU s/video")
    for parallel in range(1, args.max_parallel + 1):
        local, ray_row = by_key.get(("local", parallel)), by_key.get(("ray", parallel))
        ratio = f"{ray_row['videos_per_s'] / local['videos_per_s']:.2f}" if local and ray_row else "-"
        get = lambda r, k: r[k] if r else "-"  # noqa: E731
        print(f"{parallel:8d}  {get(local, 'videos_per_s'):>14}  {get(ray_row, 'videos_per_s'):>12}  {ratio:>9}  "
              f"{get(local, 'cpu_s_per_video'):>16}  {get(ray_row, 'cpu_s_per_video'):>15}")
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
