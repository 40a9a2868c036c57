"""Benchmark (not a test): the MTCNN networks under onnxruntime (what dfscan runs) and under OpenCV's DNN
engine (which fuses PRelu into its convolutions; onnxruntime does not), at one thread each, on the input
shapes a 1080p crowd's detection runs: CPU ms a run and the largest output difference.

    python bench/mtcnn_runtimes.py
    python bench/mtcnn_runtimes.py --repeat 5 --runs 20
"""
from __future__ import annotations

import argparse
import time
from typing import Callable

import cv2
import numpy as np

from dfscan.assets import MTCNN_DIR
from dfscan.runtime import import_ort

SHAPES = {"pnet": [(1, 3, 360, 640), (1, 3, 128, 227)], "rnet": [(64, 3, 24, 24)], "onet": [(16, 3, 48, 48)]}


def cpu_ms(run: Callable[[], object], runs: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        for _ in range(runs):
            run()
        best = min(best, (time.process_time() - start) / runs * 1000)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    ort = import_ort()
    cv2.setNumThreads(1)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    print(f"{'network':8} {'input':18} {'onnxruntime ms':>15} {'cv2.dnn ms':>11} {'max |diff|':>11}")
    for name, shapes in SHAPES.items():
        path = str(MTCNN_DIR / f"{name}.onnx")
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = session.get_inputs()[0].name
        net = cv2.dnn.readNetFromONNX(path)
        for shape in shapes:
            x = np.random.default_rng(0).random(shape, dtype=np.float32)
            by_ort = sorted(session.run(None, {feed: x}), key=lambda a: a.shape)

            def run_cv2(x=x) -> list:
                net.setInput(x)
                return net.forward(net.getUnconnectedOutLayersNames())

            by_cv2 = sorted(run_cv2(), key=lambda a: a.shape)
            diff = max(float(np.abs(a - b).max()) for a, b in zip(by_ort, by_cv2))
            ort_ms = cpu_ms(lambda x=x: session.run(None, {feed: x}), args.runs, args.repeat)
            cv2_ms = cpu_ms(run_cv2, args.runs, args.repeat)
            print(f"{name:8} {'x'.join(map(str, shape)):18} {ort_ms:15.2f} {cv2_ms:11.2f} {diff:11.1e}")


if __name__ == "__main__":
    main()
