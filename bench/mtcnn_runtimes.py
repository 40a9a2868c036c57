"""Benchmark (not a test): the MTCNN networks under onnxruntime, OpenVINO (f32, what dfscan runs for large
frames on CPU) and OpenCV's DNN engine, at one thread each, on the input shapes a 1080p crowd's detection
runs: CPU ms a run and the largest output difference to onnxruntime. With videos: the whole detector on
their sampled frames under each runtime, and how far OpenVINO's faces are from onnxruntime's.

    python bench/mtcnn_runtimes.py
    python bench/mtcnn_runtimes.py --repeat 5 --runs 20
    python bench/mtcnn_runtimes.py ../shared/datasets/wild_clips/videos/*/*.mp4 ../shared/clips/real/*.mp4
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from dfscan import runtime
from dfscan.assets import MTCNN_DIR
from dfscan.settings import DetectorSettings
from dfscan.video import sample_frames

SHAPES = {"pnet": [(1, 3, 324, 576), (1, 3, 128, 227)], "rnet": [(16, 3, 24, 24)], "onet": [(16, 3, 48, 48)]}


def cpu_ms(run: Callable[[], object], runs: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(runs):
            run()
        best = min(best, (time.process_time() - start) / runs * 1000)
    return best


def networks(args: argparse.Namespace) -> None:
    cv2.setNumThreads(1)
    core = runtime._openvino_core()
    print(f"{'network':8} {'input':16} {'onnxruntime ms':>15} {'OpenVINO ms':>12} {'diff':>8} "
          f"{'cv2.dnn ms':>11} {'diff':>8}")
    for name, shapes in SHAPES.items():
        path = MTCNN_DIR / f"{name}.onnx"
        session = runtime.create_session(path, "cpu", 1)
        openvino = runtime.OpenVinoSession(core, path, 1) if core is not None else None
        net = cv2.dnn.readNetFromONNX(str(path))
        for shape in shapes:
            x = np.random.default_rng(0).random(shape, dtype=np.float32)
            runs: dict[str, Callable[[], list[np.ndarray]]] = {"ort": lambda x=x: session.run(None, {"input": x})}
            if openvino is not None:
                runs["openvino"] = lambda x=x: openvino.run(None, {"input": x})

            def run_cv2(x: np.ndarray = x) -> list[np.ndarray]:
                net.setInput(x)
                return net.forward(net.getUnconnectedOutLayersNames())

            runs["cv2"] = run_cv2
            reference = sorted(runs["ort"](), key=lambda a: a.shape)
            row = f"{name:8} {'x'.join(map(str, shape)):16}"
            for key, run in runs.items():
                diff = max(float(np.abs(a - b).max()) for a, b in zip(reference, sorted(run(), key=lambda a: a.shape)))
                row += f" {cpu_ms(run, args.runs, args.repeat):{15 if key == 'ort' else 11}.2f}"
                row += "" if key == "ort" else f" {diff:8.1e}"
            print(row + ("" if openvino is not None else "   (OpenVINO not installed)"))


def detect_with(choice: str, frames: list[Any]) -> tuple[list[Any], float, str]:
    os.environ[runtime.CPU_RUNTIME_VARIABLE] = choice
    detector = DetectorSettings().build("cpu", 1)
    images = [f.image for f in frames]
    detector.detect_video(images, DetectorSettings().full_every)  # opens the networks, first runs of each shape
    start = time.process_time()
    found = detector.detect_video(images, DetectorSettings().full_every)
    return found, time.process_time() - start, detector.runtime_for(*images[0].shape[:2])


def videos(args: argparse.Namespace) -> None:
    faces = frames_differ = 0
    box_diff = score_diff = 0.0
    seconds = {"onnxruntime": 0.0, "openvino": 0.0}
    for video in args.videos:
        _, frames = sample_frames(video, n=args.frames)
        by_ort, ort_s, _ = detect_with("onnxruntime", frames)
        by_openvino, openvino_s, used = detect_with("openvino", frames)
        seconds["onnxruntime"] += ort_s
        seconds["openvino"] += openvino_s
        for a, b in zip(by_ort, by_openvino):
            if len(a) != len(b):
                frames_differ += 1
                continue
            faces += len(a)
            if len(a):
                box_diff = max(box_diff, float(np.abs(a.boxes - b.boxes).max()))
                score_diff = max(score_diff, float(np.abs(a.scores - b.scores).max()))
        print(f"{video.name}: {len(frames)} frames, detection {ort_s:.3f} -> {openvino_s:.3f} CPU s ({used})",
              flush=True)
    print(f"\n{len(args.videos)} videos: detection {seconds['onnxruntime']:.2f} CPU s on onnxruntime, "
          f"{seconds['openvino']:.2f} with OpenVINO for large frames; {faces:,} faces in frames with the same count, "
          f"{frames_differ} frames with another count; largest box corner difference {box_diff:.4f} px, "
          f"detector score difference {score_diff:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("videos", nargs="*", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--frames", type=int, default=32)
    args = parser.parse_args()
    if args.videos:
        videos(args)
    else:
        networks(args)


if __name__ == "__main__":
    main()
