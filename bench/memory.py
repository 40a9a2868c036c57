"""Benchmark (not a test): peak memory of `dfscan check CLIP --frames all` against the clip's length.

Issue 10's target: at most 1.5 GB at 1080p for any length, i.e. peak RSS flat in the number of frames.
The clips are the shared 1080p `street_crowd.mp4` (real faces, real H.264) looped to each length by
copying its packets with shifted timestamps (no re-encoding, so it takes a second), written into a
temporary directory. Each scan runs in its own process; its peak RSS is that process's ru_maxrss (from
wait4), which is what an OOM killer or a memory limit sees.

    python bench/memory.py                          # 10, 40 and 80 s clips
    python bench/memory.py --seconds 8 16 32 --json memory.json
    python bench/memory.py --keep-freed             # "before": the same scans without handing freed memory back
    python bench/memory.py --pythonpath /work/main  # the same clips scanned by another checkout's code
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

SHARED_CLIP = Path(__file__).resolve().parents[1].parent / "shared" / "clips" / "real" / "street_crowd.mp4"


def loop_clip(source: Path, out: Path, seconds: float) -> Path:
    """`source` repeated (packets copied, timestamps shifted) until it lasts `seconds`."""
    with av.open(str(source)) as src, av.open(str(out), "w") as dst:
        stream_in = src.streams.video[0]
        stream_out = dst.add_stream_from_template(stream_in)
        packets = [p for p in src.demux(stream_in) if p.size]
        span = max(p.pts + (p.duration or 0) for p in packets) - min(p.pts for p in packets)
        wanted = round(seconds / float(stream_in.time_base) / (span / len(packets)))
        for written in range(wanted):
            loop, packet = divmod(written, len(packets))
            copy = av.Packet(bytes(packets[packet]))
            copy.pts, copy.dts = packets[packet].pts + loop * span, packets[packet].dts + loop * span
            copy.duration, copy.time_base = packets[packet].duration, stream_in.time_base
            copy.is_keyframe = packets[packet].is_keyframe
            copy.stream = stream_out
            dst.mux(copy)
    return out


# `dfscan` with the scan's release of freed memory switched off (dfscan.memory), for the "before" column
KEEP_FREED = ("import dfscan.scan as scan; scan.release_free_memory = lambda: False; "
              "from dfscan.cli import app; app()")


def peak_rss_of_check(clip: Path, pythonpath: str | None, keep_freed: bool = False) -> dict:
    """Runs `dfscan check CLIP --frames all --json` in a child process: its score, peak RSS, wall time."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    dfscan = [sys.executable, "-c", KEEP_FREED] if keep_freed else [sys.executable, "-m", "dfscan"]
    command = [*dfscan, "check", str(clip), "--frames", "all", "--json"]
    started = time.perf_counter()
    with tempfile.TemporaryFile() as stdout:
        child = subprocess.Popen(command, stdout=stdout, stderr=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        stdout.seek(0)
        output = stdout.read().decode()
    wall = time.perf_counter() - started
    try:
        result = json.loads(output)
    except json.JSONDecodeError:
        result = {}
    return {"exit": os.waitstatus_to_exitcode(status), "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "wall_s": round(wall, 1),
            "frames": len(result.get("frames") or []), "score": result.get("score"), "label": result.get("label"),
            "reason": result.get("reason")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, nargs="+", default=[10.0, 40.0, 80.0])
    parser.add_argument("--source", type=Path, default=SHARED_CLIP)
    parser.add_argument("--pythonpath", help="PYTHONPATH for the scans (default: this environment's)")
    parser.add_argument("--keep-freed", action="store_true",
                        help="switch off the release of freed memory after each chunk (the 'before' measurement)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'clip':>8} {'frames':>6} {'peak RSS':>9} {'CPU s':>7} {'wall s':>7}  score  exit  reason", flush=True)
        for seconds in args.seconds:
            clip = loop_clip(args.source, Path(tmp) / f"loop_{seconds:g}s.mp4", seconds)
            row = {"seconds": seconds, **peak_rss_of_check(clip, args.pythonpath, args.keep_freed)}
            rows.append(row)
            print(f"{seconds:>7g}s {row['frames']:>6} {row['peak_rss_mb']:>6} MB {row['cpu_s']:>7} "
                  f"{row['wall_s']:>7}  {row['score']}  {row['exit']}  {row['reason'] or ''}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
