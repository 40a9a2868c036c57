"""Benchmark (not a test): `dfscan check` against the plain torch pipeline a user would otherwise write
(issue 9's target: on a 512 px talking head, dfscan's whole process at most 1/5 of the reference's).

The reference: PyAV decodes the video and keeps the same N frames dfscan samples; facenet-pytorch's MTCNN
(its defaults, keep_all=True) finds and crops the faces of each frame (160 px); facenet-pytorch's
InceptionResnetV1 embeds the crops (batches of 32) and a linear layer scores them. InceptionResnetV1's
pretrained weights are a download, which fails offline: it runs with random weights of the same
architecture (the same compute; its scores mean nothing, and are not compared). MTCNN's weights ship with
the package, so its detections are real.

Two comparisons, each as the median of --repeat runs:
  - whole process (the target): `python -m dfscan check VIDEO --json` against `python THIS --once VIDEO`,
    each a fresh process (interpreter start, imports, model load, the video), wall and CPU seconds
    (user + system of the child);
  - in process, models loaded: `Scanner.scan` (bench/scan_speed.py's `bench_video`) against one call of
    the reference pipeline, wall and CPU seconds of this process.

facenet-pytorch pins old torch, numpy and Pillow: install it without its dependencies, apart from the
project's environment (`pip install --no-deps --target /tmp/fnp facenet-pytorch` and
`PYTHONPATH=/tmp/fnp`). It imports torchvision only for `batched_nms` (and `to_tensor`, unused here);
where torchvision is absent (as here: the CPU torch build has no matching torchvision on PyPI) this
script stands in a numpy NMS with torchvision's semantics, and says so.

    python bench/reference_pipeline.py                           # ../shared/clips/real/talking_d3.mp4
    python bench/reference_pipeline.py clip.mp4 --frames 32 --repeat 3 --threads 2 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
SHARED_CLIP = BENCH.parents[1] / "shared" / "clips" / "real" / "talking_d3.mp4"
EMBED_BATCH = 32


# --- facenet-pytorch, with a stand-in for torchvision's NMS where torchvision is absent ---------------------

def _nms(boxes: Any, scores: Any, iou_threshold: float) -> Any:
    """torchvision.ops.nms in numpy: greedy, highest score first, boxes with IoU > threshold dropped."""
    import torch  # noqa: PLC0415

    b, s = boxes.detach().cpu().numpy().astype(np.float64), scores.detach().cpu().numpy()
    areas = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    order, keep = np.argsort(-s, kind="stable"), []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.clip(np.minimum(b[i, 2], b[rest, 2]) - np.maximum(b[i, 0], b[rest, 0]), 0, None)
        h = np.clip(np.minimum(b[i, 3], b[rest, 3]) - np.maximum(b[i, 1], b[rest, 1]), 0, None)
        inter = w * h
        order = rest[inter / (areas[i] + areas[rest] - inter + 1e-12) <= iou_threshold]
    return torch.as_tensor(np.asarray(keep, np.int64), device=boxes.device)


def _batched_nms(boxes: Any, scores: Any, idxs: Any, iou_threshold: float) -> Any:
    """torchvision.ops.batched_nms: NMS per index value (boxes of different images never suppress each other)."""
    import torch  # noqa: PLC0415

    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    return _nms(boxes + offsets[:, None], scores, iou_threshold)


def _to_tensor(picture: Any) -> Any:
    import torch  # noqa: PLC0415

    tensor = torch.from_numpy(np.ascontiguousarray(np.asarray(picture).transpose(2, 0, 1)))
    return tensor.float().div(255) if tensor.dtype == torch.uint8 else tensor


def _stand_in_torchvision() -> None:
    modules = {name: types.ModuleType(name) for name in
               ("torchvision", "torchvision.ops", "torchvision.ops.boxes", "torchvision.transforms",
                "torchvision.transforms.functional")}
    modules["torchvision.ops.boxes"].batched_nms = _batched_nms
    modules["torchvision.transforms.functional"].to_tensor = _to_tensor
    modules["torchvision"].ops, modules["torchvision"].transforms = modules["torchvision.ops"], modules["torchvision.transforms"]
    modules["torchvision.ops"].boxes = modules["torchvision.ops.boxes"]
    modules["torchvision.transforms"].functional = modules["torchvision.transforms.functional"]
    sys.modules.update(modules)


def import_facenet_pytorch() -> tuple[Any, str]:
    """The facenet_pytorch module and a note on where batched_nms came from."""
    try:
        import torchvision  # noqa: F401, PLC0415
        note = "torchvision's batched_nms"
    except ImportError:
        _stand_in_torchvision()
        note = "torchvision absent: a numpy batched_nms with torchvision's semantics stood in"
    try:
        import facenet_pytorch  # noqa: PLC0415
    except ImportError as exc:
        raise SystemExit(f"the reference pipeline needs facenet-pytorch ({exc}): "
                         "pip install --no-deps --target /tmp/fnp facenet-pytorch; PYTHONPATH=/tmp/fnp") from None
    return facenet_pytorch, note


# --- the reference pipeline ------------------------------------------------------------------------------

class Reference:
    """facenet-pytorch's MTCNN + InceptionResnetV1 (random weights) + a linear score, on CPU."""

    def __init__(self, threads: int | None = None):
        import torch  # noqa: PLC0415

        if threads:
            torch.set_num_threads(threads)
        facenet_pytorch, self.nms_note = import_facenet_pytorch()
        torch.manual_seed(0)
        self.mtcnn = facenet_pytorch.MTCNN(keep_all=True, device="cpu")
        self.embedder = facenet_pytorch.InceptionResnetV1(pretrained=None).eval()
        self.head = torch.nn.Linear(512, 1).eval()

    def run(self, path: Path, indices: set[int], clock: Any = time.perf_counter) -> dict[str, Any]:
        """Decode (keeping frames `indices`), detect and crop, embed and score; seconds of each step on `clock`."""
        import av  # noqa: PLC0415
        import torch  # noqa: PLC0415

        t0 = clock()
        frames = []
        with av.open(str(path)) as container:
            for n, frame in enumerate(container.decode(video=0)):
                if n in indices:
                    frames.append(frame.to_ndarray(format="rgb24"))
                if n >= max(indices):
                    break
        t1 = clock()
        crops = []
        with torch.no_grad():
            for image in frames:
                faces = self.mtcnn(image)
                if faces is not None:
                    crops.append(faces)
        t2 = clock()
        scores: list[float] = []
        if crops:
            batch = torch.cat(crops)
            with torch.no_grad():
                for start in range(0, len(batch), EMBED_BATCH):
                    logits = self.head(self.embedder(batch[start:start + EMBED_BATCH]))
                    scores += torch.sigmoid(logits).ravel().tolist()
        t3 = clock()
        return {"frames": len(frames), "faces": len(scores), "decode_s": t1 - t0, "detect_s": t2 - t1,
                "embed_s": t3 - t2, "total_s": t3 - t0}


def sampled_indices(path: Path, frames: int) -> set[int]:
    """The frame numbers dfscan samples from this video (the reference decodes the same ones)."""
    from dfscan.video import sample_frames  # noqa: PLC0415

    _, sampled = sample_frames(path, n=frames)
    return {f.index for f in sampled}


# --- measuring ---------------------------------------------------------------------------------------------

def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_process(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Wall and CPU seconds (user + system) of one child process, and its stdout."""
    cpu0, t0 = _child_cpu(), time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall, cpu = time.perf_counter() - t0, _child_cpu() - cpu0
    if done.returncode not in (0, 1):  # dfscan check: 1 = FAKE
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr[-2000:]}")
    return {"wall_s": wall, "cpu_s": cpu, "stdout": done.stdout}


def whole_process(video: Path, frames: int, repeat: int, threads: int | None, model: Path | None,
                  cpus: str | None = None) -> dict[str, Any]:
    env = dict(os.environ)
    pinned = ["taskset", "-c", cpus] if cpus else []
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    dfscan_cmd = [*pinned, sys.executable, "-m", "dfscan", "check", str(video), "--json", "--frames", str(frames),
                  "--device", "cpu", *(["--model", str(model)] if model else [])]
    indices = ",".join(str(i) for i in sorted(sampled_indices(video, frames)))  # chosen here, not in the timed child
    reference_cmd = [*pinned, sys.executable, str(Path(__file__).resolve()), "--once", str(video), "--indices", indices,
                     *(["--threads", str(threads)] if threads else [])]
    runs: dict[str, list[dict[str, Any]]] = {"dfscan": [], "reference": []}
    for _ in range(repeat + 1):  # the first of each warms the file cache and is dropped
        runs["dfscan"].append(timed_process(dfscan_cmd, env))
        runs["reference"].append(timed_process(reference_cmd, env))
    out: dict[str, Any] = {}
    for name, measured in runs.items():
        kept = measured[1:]
        out[name] = {k: round(statistics.median(m[k] for m in kept), 3) for k in ("wall_s", "cpu_s")}
    dfscan_json = json.loads(runs["dfscan"][-1]["stdout"])
    out["dfscan"]["faces"] = sum(len(t["observations"]) for t in dfscan_json["tracks"])
    out["reference"].update({k: v for k, v in json.loads(runs["reference"][-1]["stdout"]).items()
                             if k in ("frames", "faces", "nms")})
    out["ratio_wall"] = round(out["dfscan"]["wall_s"] / out["reference"]["wall_s"], 3)
    out["ratio_cpu"] = round(out["dfscan"]["cpu_s"] / out["reference"]["cpu_s"], 3)
    return out


def in_process(video: Path, frames: int, repeat: int, threads: int | None, model: Path | None) -> dict[str, Any]:
    sys.path.insert(0, str(BENCH))
    from scan_speed import bench_video  # noqa: PLC0415

    from dfscan.scan import Scanner  # noqa: PLC0415

    out: dict[str, Any] = {}
    for clock_name, clock in (("wall", time.perf_counter), ("cpu", time.process_time)):
        scanner = Scanner(model, device="cpu", threads=threads)
        out[f"dfscan_{clock_name}"] = bench_video(scanner, video, frames, repeat, cpu_time=clock_name == "cpu")
    reference = Reference(threads)
    indices = sampled_indices(video, frames)
    reference.run(video, indices)  # warm-up
    for clock_name, clock in (("wall", time.perf_counter), ("cpu", time.process_time)):
        parts = [reference.run(video, indices, clock) for _ in range(repeat)]
        out[f"reference_{clock_name}"] = {**{k: round(statistics.median(p[k] for p in parts), 3)
                                             for k in ("decode_s", "detect_s", "embed_s", "total_s")},
                                          "faces": parts[-1]["faces"], "frames": parts[-1]["frames"]}
    out["nms"] = reference.nms_note
    for clock_name in ("wall", "cpu"):
        out[f"ratio_{clock_name}"] = round(out[f"dfscan_{clock_name}"]["total_s"] / out[f"reference_{clock_name}"]["total_s"], 3)
    return out


def once(video: Path, indices: set[int], threads: int | None) -> None:
    """One whole reference run in this process (the child of `whole_process`): prints what it found."""
    reference = Reference(threads)
    result = reference.run(video, indices)
    print(json.dumps({**result, "nms": reference.nms_note}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", nargs="?", type=Path, default=SHARED_CLIP)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch / onnxruntime threads (default: all cores)")
    parser.add_argument("--model", type=Path, default=None, help="dfscan bundle (default: the shipped one)")
    parser.add_argument("--taskset", default=None, metavar="CPUS",
                        help="whole process: run both children on these CPUs only (taskset -c), e.g. 0: one core each")
    parser.add_argument("--skip", choices=("process", "in-process"), default=None, help="leave one comparison out")
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--indices", default="", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.once:
        once(args.video, {int(i) for i in args.indices.split(",")}, args.threads)
        return 0
    if not args.video.is_file():
        raise SystemExit(f"{args.video} does not exist")
    report: dict[str, Any] = {"video": str(args.video), "frames": args.frames, "repeat": args.repeat,
                              "threads": args.threads, "taskset": args.taskset, "cpu_count": os.cpu_count(),
                              "reference": "PyAV + facenet-pytorch MTCNN (defaults, keep_all) + InceptionResnetV1 "
                                           "(random weights: same compute) + linear, torch CPU"}
    if args.skip != "process":
        report["whole_process"] = whole_process(args.video, args.frames, args.repeat, args.threads, args.model,
                                                args.taskset)
        w = report["whole_process"]
        pinned = f", both on CPUs {args.taskset}" if args.taskset else ""
        print(f"whole process ({args.video.name}, {args.frames} frames, median of {args.repeat}{pinned}):")
        print(f"  dfscan check  wall {w['dfscan']['wall_s']:7.2f} s  cpu {w['dfscan']['cpu_s']:7.2f} s  "
              f"faces {w['dfscan']['faces']}")
        print(f"  reference     wall {w['reference']['wall_s']:7.2f} s  cpu {w['reference']['cpu_s']:7.2f} s  "
              f"faces {w['reference']['faces']} ({w['reference']['nms']})")
        print(f"  ratio dfscan / reference: wall {w['ratio_wall']:.3f}, cpu {w['ratio_cpu']:.3f} (target <= 0.2)")
    if args.skip != "in-process":
        report["in_process"] = p = in_process(args.video, args.frames, args.repeat, args.threads, args.model)
        print(f"in process, models loaded (median of {args.repeat}):")
        for clock in ("wall", "cpu"):
            d, r = p[f"dfscan_{clock}"], p[f"reference_{clock}"]
            print(f"  {clock:4s} dfscan {d['total_s']:6.3f} s (faces {d['faces']})  reference {r['total_s']:6.3f} s "
                  f"(decode {r['decode_s']:.3f} / detect {r['detect_s']:.3f} / embed {r['embed_s']:.3f}; "
                  f"faces {r['faces']})  ratio {p[f'ratio_{clock}']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
