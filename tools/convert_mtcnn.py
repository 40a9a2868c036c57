"""Convert facenet-pytorch's MTCNN weights to ONNX, and write the reference fixture the numpy port is tested on.

Needs torch and onnxruntime (the training extras), never at runtime: dfscan runs the ONNX files without torch.

    python tools/convert_mtcnn.py                        # pip-downloads facenet-pytorch 2.6.0, exports, checks parity
    python tools/convert_mtcnn.py --wheel facenet_pytorch-2.6.0-py3-none-any.whl
    python tools/convert_mtcnn.py --wheel /tmp/fnp/x     # an already unpacked wheel (a folder holding facenet_pytorch/)
    python tools/convert_mtcnn.py --reference            # also (re)write tests/fixtures/mtcnn/ (needs scikit-image)

Weights: facenet_pytorch/data/{pnet,rnet,onet}.pt are plain state dicts, MIT-licensed (facenet-pytorch,
Tim Esler), themselves converted from the MTCNN Caffe models of Zhang et al. The networks are redefined here
with the same parameter names, so nothing of facenet-pytorch's model code is needed for the export.

Reference (--reference): boxes come from facenet-pytorch's *own* detection code (`MTCNN.detect`, which calls
`facenet_pytorch.models.utils.detect_face.detect_face`), imported from the wheel. Two shims make that import
possible here, and both are recorded in reference.json:
  * facenet-pytorch's package `__init__` imports InceptionResnetV1, which imports `requests`. We register empty
    package modules for `facenet_pytorch`, `facenet_pytorch.models` and `facenet_pytorch.models.utils`
    (pointing at the wheel's folders) so that only `models/mtcnn.py` and `models/utils/detect_face.py` load.
  * detect_face.py imports torchvision at module level (`torchvision.ops.boxes.batched_nms`, and
    `torchvision.transforms.functional`, used only by `extract_face`). torchvision cannot be installed next to
    the CPU torch build this project pins (its `torchvision::nms` op fails to register). When `import torchvision`
    fails, a stand-in module is injected whose `batched_nms` is a pure-torch implementation with torchvision's
    semantics: greedy IoU suppression in descending score order (stable sort), boxes of different `idxs` never
    suppress each other, a box is dropped when IoU > threshold, kept indices returned by descending score,
    IoU computed on continuous coordinates (no +1). `transforms.functional` is an empty module.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import subprocess
import sys
import tempfile
import types
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[1]
ASSET_DIR = REPO_ROOT / "dfscan" / "assets" / "mtcnn"
FIXTURE_DIR = REPO_ROOT / "tests" / "fixtures" / "mtcnn"
SHARED_CLIPS = REPO_ROOT.parent / "shared" / "clips" / "real"
FACENET_VERSION = "2.6.0"
OPSET = 17
NET_NAMES = ("pnet", "rnet", "onet")
# Fixed frames of the shared real clips whose reference boxes are stored (never the frames themselves).
CLIP_FRAMES = {"street_crowd.mp4": [0, 60], "talking_d0.mp4": [0, 40], "talking_d12.mp4": [10, 120],
               "talking_d3.mp4": [0, 200]}


# --------------------------------------------------------------------------------------------- networks
class PNet(nn.Module):
    """Proposal net: fully convolutional, 12x12 receptive field, stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    """Refine net on 24x24 crops."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # The dense weights came from Caffe, which flattens in (W, H, C) order.
        x = x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)
        x = self.prelu4(self.dense4(x))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """Output net on 48x48 crops: box regression, 5 landmarks, face probability."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)
        x = self.prelu5(self.dense5(x))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)


NETS: dict[str, Callable[[], nn.Module]] = {"pnet": PNet, "rnet": RNet, "onet": ONet}
OUTPUT_NAMES = {"pnet": ["regression", "probs"], "rnet": ["regression", "probs"],
                "onet": ["regression", "landmarks", "probs"]}
# (input shape used for export, dynamic axes of the input)
EXPORT_INPUTS = {"pnet": ((1, 3, 64, 80), {0: "batch", 2: "height", 3: "width"}),
                 "rnet": ((1, 3, 24, 24), {0: "batch"}),
                 "onet": ((1, 3, 48, 48), {0: "batch"})}


def display(path: Path) -> str:
    """`path` relative to the repository when it is inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else str(resolved)


# ----------------------------------------------------------------------------------------------- wheel
def obtain_wheel(wheel: Path | None, workdir: Path) -> Path:
    """A folder holding `facenet_pytorch/`: the given unpacked folder, the given wheel unpacked, or a pip download."""
    if wheel is not None and wheel.is_dir():
        if not (wheel / "facenet_pytorch" / "data" / "pnet.pt").is_file():
            raise SystemExit(f"{wheel} does not hold facenet_pytorch/data/pnet.pt")
        return wheel
    if wheel is None:
        download_dir = workdir / "download"
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        f"facenet-pytorch=={FACENET_VERSION}", "-d", str(download_dir)], check=True)
        wheel = next(download_dir.glob("facenet_pytorch-*.whl"))
    unpacked = workdir / "unpacked"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(unpacked)
    return unpacked


def load_state_dict(wheel_dir: Path, name: str) -> dict[str, torch.Tensor]:
    data = (wheel_dir / "facenet_pytorch" / "data" / f"{name}.pt").read_bytes()
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def load_net(wheel_dir: Path, name: str) -> nn.Module:
    net = NETS[name]()
    net.load_state_dict(load_state_dict(wheel_dir, name), strict=True)
    return net.eval()


# ---------------------------------------------------------------------------------------------- export
def export_net(net: nn.Module, name: str, out_dir: Path) -> Path:
    shape, dynamic = EXPORT_INPUTS[name]
    path = out_dir / f"{name}.onnx"
    outputs = OUTPUT_NAMES[name]
    dynamic_axes = {"input": dynamic, **{o: {0: "batch"} for o in outputs}}
    if name == "pnet":
        dynamic_axes.update({o: {0: "batch", 2: "out_height", 3: "out_width"} for o in outputs})
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated but handles these small static graphs with symbolic H/W simply.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (torch.zeros(shape),), str(path), input_names=["input"], output_names=outputs,
                          dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False)
    return path


def parity_inputs(name: str) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    if name == "pnet":
        shapes = [(1, 3, 12, 12), (2, 3, 97, 130), (3, 3, 240, 181)]
    else:
        side = EXPORT_INPUTS[name][0][2]
        shapes = [(1, 3, side, side), (37, 3, side, side)]
    return [rng.uniform(-1.0, 1.0, size=s).astype(np.float32) for s in shapes]


def check_parity(net: nn.Module, name: str, path: Path) -> float:
    """Max abs difference between torch and onnxruntime outputs over a few random inputs (dynamic shapes too)."""
    import onnxruntime as ort  # noqa: PLC0415

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for batch in parity_inputs(name):
        with torch.no_grad():
            expected = [t.numpy() for t in net(torch.from_numpy(batch))]
        got = session.run(None, {"input": batch})
        for e, g in zip(expected, got):
            if e.shape != g.shape:
                raise SystemExit(f"{name}: ORT output shape {g.shape} != torch {e.shape}")
            worst = max(worst, float(np.abs(e - g).max()))
    return worst


def export_all(wheel_dir: Path, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in NET_NAMES:
        net = load_net(wheel_dir, name)
        path = export_net(net, name, out_dir)
        diff = check_parity(net, name, path)
        print(f"{name}: wrote {display(path)} ({path.stat().st_size} bytes), "
              f"ORT vs torch max abs diff {diff:.3g}")
        if diff > 1e-4:
            raise SystemExit(f"{name}: parity check failed (max abs diff {diff})")


# ------------------------------------------------------------------------------------- reference shims
def torch_batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                      iou_threshold: float) -> torch.Tensor:
    """torchvision.ops.boxes.batched_nms in pure torch (same semantics, see the module docstring)."""
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    # Same trick as torchvision: shift each group's boxes so that groups never overlap.
    offsets = idxs.to(boxes) * (boxes.max() + 1)
    shifted = boxes + offsets[:, None]
    x1, y1, x2, y2 = shifted.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    order = torch.sort(scores, descending=True, stable=True).indices
    suppressed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for rank, i in enumerate(order.tolist()):
        if suppressed[rank]:
            continue
        keep.append(i)
        rest = order[rank + 1:]
        inter_w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest])).clamp(min=0)
        inter_h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest])).clamp(min=0)
        inter = inter_w * inter_h
        iou = inter / (areas[i] + areas[rest] - inter)
        suppressed[rank + 1:] |= iou > iou_threshold
    return torch.as_tensor(keep, dtype=torch.int64, device=boxes.device)


def install_torchvision_standin() -> str:
    """Make `import torchvision` work for detect_face.py; returns what was used, for the fixture metadata."""
    try:
        import torchvision  # noqa: F401, PLC0415

        return f"torchvision {torchvision.__version__}"
    except Exception:  # noqa: BLE001 - ImportError, or the op-registration RuntimeError of a mismatched build
        for key in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[key]
    modules = {name: types.ModuleType(name) for name in
               ("torchvision", "torchvision.ops", "torchvision.ops.boxes", "torchvision.transforms",
                "torchvision.transforms.functional")}
    modules["torchvision.ops.boxes"].batched_nms = torch_batched_nms
    modules["torchvision.ops"].boxes = modules["torchvision.ops.boxes"]
    modules["torchvision.ops"].batched_nms = torch_batched_nms
    modules["torchvision"].ops = modules["torchvision.ops"]
    modules["torchvision"].transforms = modules["torchvision.transforms"]
    modules["torchvision.transforms"].functional = modules["torchvision.transforms.functional"]
    sys.modules.update(modules)
    return "stand-in: tools/convert_mtcnn.py torch_batched_nms (pure torch, torchvision semantics)"


def import_facenet_mtcnn(wheel_dir: Path) -> Any:
    """facenet_pytorch.models.mtcnn from the wheel, without running the package __init__ (see module docstring)."""
    root = wheel_dir / "facenet_pytorch"
    for name, folder in (("facenet_pytorch", root), ("facenet_pytorch.models", root / "models"),
                         ("facenet_pytorch.models.utils", root / "models" / "utils")):
        package = types.ModuleType(name)
        package.__path__ = [str(folder)]
        sys.modules[name] = package
    import importlib  # noqa: PLC0415

    return importlib.import_module("facenet_pytorch.models.mtcnn")


# ----------------------------------------------------------------------------------------- fixtures
def astronaut() -> np.ndarray:
    """NASA portrait of Eileen Collins (public domain), as bundled in scikit-image's wheel (no download)."""
    from skimage import data  # noqa: PLC0415

    return data.astronaut()


def fixture_images() -> dict[str, np.ndarray]:
    import cv2  # noqa: PLC0415

    image = astronaut()  # 512x512 RGB, face around x 170-260, y 60-170
    small = cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA)
    collage = np.full((360, 640, 3), 96, dtype=np.uint8)
    collage[:300, :300] = cv2.resize(image, (300, 300), interpolation=cv2.INTER_AREA)
    collage[200:328, 420:548] = cv2.resize(image, (128, 128), interpolation=cv2.INTER_AREA)
    return {
        "astronaut.jpg": image,
        "astronaut_small.jpg": small,
        "astronaut_mirrored.jpg": np.ascontiguousarray(image[:, ::-1]),
        "collage_two_faces.jpg": collage,
        "no_face.png": np.ascontiguousarray(image[300:512, 300:512]),  # the rocket and sky, right of the suit
    }


def save_image(path: Path, image: np.ndarray) -> np.ndarray:
    """Write RGB `image`; returns what reading the file back gives (JPEG is lossy: the reference uses that)."""
    import cv2  # noqa: PLC0415

    params = [cv2.IMWRITE_JPEG_QUALITY, 90] if path.suffix == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 9]
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def decode_frames(path: Path, indices: list[int]) -> list[np.ndarray]:
    import av  # noqa: PLC0415

    wanted, frames = set(indices), {}
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                frames[index] = frame.to_ndarray(format="rgb24")
            if len(frames) == len(wanted):
                break
    return [frames[i] for i in indices]


def detections_record(detector: Any, image: np.ndarray) -> dict[str, Any]:
    boxes, probs, points = detector.detect(image, landmarks=True)
    if boxes is None:
        return {"shape": list(image.shape), "boxes": [], "probs": [], "landmarks": []}
    return {"shape": list(image.shape), "boxes": np.asarray(boxes, dtype=np.float64).round(4).tolist(),
            "probs": np.asarray(probs, dtype=np.float64).round(6).tolist(),
            "landmarks": np.asarray(points, dtype=np.float64).round(4).tolist()}


def write_reference(wheel_dir: Path, fixture_dir: Path, clips_dir: Path) -> None:
    import av  # noqa: PLC0415

    nms_source = install_torchvision_standin()
    mtcnn_module = import_facenet_mtcnn(wheel_dir)
    # select_largest=False keeps detect_face's own order (by probability after final NMS).
    detector = mtcnn_module.MTCNN(select_largest=False, device=torch.device("cpu"))
    fixture_dir.mkdir(parents=True, exist_ok=True)
    images = {}
    for name, image in fixture_images().items():
        stored = save_image(fixture_dir / name, image)
        images[name] = detections_record(detector, stored)
        print(f"{name}: {len(images[name]['boxes'])} face(s)")
    clips = {}
    for clip, indices in CLIP_FRAMES.items():
        if not (clips_dir / clip).is_file():
            print(f"{clip}: not found under {clips_dir}, skipped")
            continue
        frames = decode_frames(clips_dir / clip, indices)
        clips[clip] = {str(i): detections_record(detector, f) for i, f in zip(indices, frames)}
        print(f"{clip}: frames {indices}: {[len(r['boxes']) for r in clips[clip].values()]} face(s)")
    reference = {
        "generator": "tools/convert_mtcnn.py --reference",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "detector": f"facenet-pytorch {FACENET_VERSION} MTCNN.detect (models/utils/detect_face.py), "
                    "imported from the wheel without the package __init__",
        "settings": {"min_face_size": 20, "thresholds": [0.6, 0.7, 0.7], "factor": 0.709},
        "batched_nms": nms_source,
        "torch": torch.__version__,
        "av": av.__version__,
        "image_source": "skimage.data.astronaut(): NASA photo of Eileen Collins, public domain",
        "clip_note": "boxes only; frames are decoded from ../shared/clips/real at test time "
                     "(PyAV, rgb24, 0-based decode order)",
        "images": images,
        "clips": clips,
    }
    (fixture_dir / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    print(f"wrote {display(fixture_dir / 'reference.json')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="facenet-pytorch wheel file or unpacked folder "
                        "(default: pip download facenet-pytorch==2.6.0)")
    parser.add_argument("--out", type=Path, default=ASSET_DIR)
    parser.add_argument("--reference", action="store_true", help="also write tests/fixtures/mtcnn/")
    parser.add_argument("--no-export", action="store_true", help="skip the ONNX export")
    parser.add_argument("--fixtures", type=Path, default=FIXTURE_DIR)
    parser.add_argument("--clips", type=Path, default=SHARED_CLIPS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        wheel_dir = obtain_wheel(args.wheel, Path(tmp))
        if not args.no_export:
            export_all(wheel_dir, args.out)
        if args.reference:
            write_reference(wheel_dir, args.fixtures, args.clips)


if __name__ == "__main__":
    main()
