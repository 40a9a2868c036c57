"""MTCNN (numpy + onnxruntime) against facenet-pytorch's own detections.

tests/fixtures/mtcnn/reference.json is written by `python tools/convert_mtcnn.py --reference` (facenet-pytorch
2.6.0's detect_face on the fixture images and on fixed frames of ../shared/clips/real; boxes only).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from dfscan.faces.mtcnn import NMS_BLOCK, MTCNN, FaceDetections, area_resize, integral_image, is_full, nms  # noqa: E402
from dfscan import runtime  # noqa: E402
from dfscan.assets import MTCNN_DIR  # noqa: E402
from dfscan.errors import ModelError, UsageError  # noqa: E402

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "mtcnn"
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CLIPS = SHARED / "clips" / "real"
REFERENCE = json.loads((FIXTURES / "reference.json").read_text())
TOLERANCE_PX = 1.0


def load_image(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(FIXTURES / name), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@lru_cache(maxsize=None)
def decode_frames(clip: str, indices: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    import av  # noqa: PLC0415

    wanted, frames = set(indices), {}
    with av.open(str(CLIPS / clip)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                frames[index] = frame.to_ndarray(format="rgb24")
            if len(frames) == len(wanted):
                break
    return tuple(frames[i] for i in indices)


@pytest.fixture(scope="module")
def full_res() -> MTCNN:
    return MTCNN(device="cpu", max_side=None)


def assert_matches(found: FaceDetections, record: dict) -> None:
    """Same number of faces, and every reference box (and its landmarks) within 1 px of one of ours."""
    expected = np.asarray(record["boxes"], dtype=np.float64).reshape(-1, 4)
    assert len(found) == len(expected), f"{len(found)} faces, reference has {len(expected)}"
    for box, probability, points in zip(expected, record["probs"], record["landmarks"]):
        distance = np.abs(found.boxes - box).max(axis=1)
        best = int(np.argmin(distance))
        assert distance[best] <= TOLERANCE_PX, f"reference box {box} off by {distance[best]:.3f} px"
        assert abs(found.scores[best] - probability) < 1e-3
        assert np.abs(found.landmarks[best] - np.asarray(points)).max() <= TOLERANCE_PX


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter_w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_area_resize_equals_adaptive_average_pooling() -> None:
    image = np.random.default_rng(0).integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    resized = area_resize(integral_image(image), 11, 16)
    for row, col in [(0, 0), (5, 7), (10, 15)]:
        top, bottom = row * 37 // 11, -((-(row + 1) * 37) // 11)
        left, right = col * 53 // 16, -((-(col + 1) * 53) // 16)
        window = image[top:bottom, left:right].astype(np.float64)
        np.testing.assert_allclose(resized[row, col], window.mean(axis=(0, 1)), rtol=1e-6)


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, min_overlap: bool) -> list[int]:
    """Box by box, as torchvision (IoU) and facenet-pytorch ("Min": pixel-inclusive, over the smaller box) do it."""
    extra = np.float32(1.0 if min_overlap else 0.0)
    areas = (boxes[:, 2] - boxes[:, 0] + extra) * (boxes[:, 3] - boxes[:, 1] + extra)
    keep: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        for k in keep:
            inter = (max(np.float32(0), min(boxes[i, 2], boxes[k, 2]) - max(boxes[i, 0], boxes[k, 0]) + extra)
                     * max(np.float32(0), min(boxes[i, 3], boxes[k, 3]) - max(boxes[i, 1], boxes[k, 1]) + extra))
            with np.errstate(divide="ignore", invalid="ignore"):
                overlap = inter / (min(areas[i], areas[k]) if min_overlap else areas[i] + areas[k] - inter)
            if not overlap <= threshold:  # NaN (two empty boxes) suppresses too
                break
        else:
            keep.append(int(i))
    return keep


@pytest.mark.parametrize("min_overlap", [False, True])
def test_nms_keeps_what_box_by_box_greedy_keeps(min_overlap: bool) -> None:
    rng = np.random.default_rng(3)
    for n in (0, 1, 7, NMS_BLOCK - 1, NMS_BLOCK + 1, 3 * NMS_BLOCK + 5):
        corners = rng.uniform(0, 150, (n, 2)).astype(np.float32)
        sides = rng.uniform(0, 40, (n, 2)).astype(np.float32)
        sides[: n // 5] = 0  # empty boxes
        boxes = np.round(np.concatenate([corners, corners + sides], axis=1))
        scores = np.round(rng.uniform(0, 1, n), 1).astype(np.float32)  # ties: order by index
        kept = nms(boxes, scores, 0.6, min_overlap)
        assert kept.tolist() == greedy_nms(boxes, scores, 0.6, min_overlap), n


@pytest.mark.parametrize("name", sorted(REFERENCE["images"]))
def test_fixture_images_match_facenet_pytorch(full_res: MTCNN, name: str) -> None:
    assert_matches(full_res.detect(load_image(name)), REFERENCE["images"][name])


def test_no_face_image_gives_no_boxes(full_res: MTCNN) -> None:
    found = full_res.detect(load_image("no_face.png"))
    assert len(found) == 0
    assert found.boxes.shape == (0, 4) and found.landmarks.shape == (0, 5, 2)


def test_two_faces_at_different_scales(full_res: MTCNN) -> None:
    found = full_res.detect(load_image("collage_two_faces.jpg"))
    widths = sorted(found.boxes[:, 2] - found.boxes[:, 0])
    assert len(found) == 2 and widths[1] > 2 * widths[0]


@pytest.mark.parametrize("clip", sorted(REFERENCE["clips"]))
def test_clip_frames_match_facenet_pytorch(full_res: MTCNN, clip: str) -> None:
    if not (CLIPS / clip).is_file():
        pytest.skip(f"research clips not available ({CLIPS / clip} missing)")
    records = REFERENCE["clips"][clip]
    indices = tuple(int(i) for i in records)
    for index, image, found in zip(indices, decode_frames(clip, indices),
                                   full_res.detect_batch(list(decode_frames(clip, indices)))):
        assert list(image.shape) == records[str(index)]["shape"]
        assert_matches(found, records[str(index)])


def test_detect_batch_equals_detect(full_res: MTCNN) -> None:
    # Two 512x512 images are batched together; the smaller no-face image goes through on its own.
    images = [load_image("astronaut.jpg"), load_image("no_face.png"), load_image("astronaut_mirrored.jpg")]
    batched = full_res.detect_batch(images)
    for image, from_batch in zip(images, batched):
        single = full_res.detect(image)
        assert len(single) == len(from_batch)
        np.testing.assert_allclose(from_batch.boxes, single.boxes, atol=1e-3)
        np.testing.assert_allclose(from_batch.scores, single.scores, atol=1e-5)
        np.testing.assert_allclose(from_batch.landmarks, single.landmarks, atol=1e-3)
    assert full_res.detect_batch([]) == []


@pytest.mark.parametrize("clip", ["talking_d0.mp4", "street_crowd.mp4"])
def test_detect_video_seeds_between_frames_without_losing_faces(clip: str) -> None:
    if not (CLIPS / clip).is_file():
        pytest.skip(f"{CLIPS / clip} not available (../shared beside the checkout)")
    detector = MTCNN(device="cpu", min_face_size=40, factor=0.6, max_side=640)
    frames = list(decode_frames(clip, tuple(range(0, 63, 9))))  # 7 frames, 0.36 s apart at 25 fps
    every_frame = detector.detect_batch(frames)
    assert [len(f) for f in detector.detect_video(frames, 1)] == [len(f) for f in every_frame]
    reused = detector.detect_video(frames, 2)
    for index, (full, found) in enumerate(zip(every_frame, reused)):
        if index % 2 == 0 or index == len(frames) - 1:  # full cascade: detect_batch's result exactly
            np.testing.assert_array_equal(found.boxes, full.boxes)
            np.testing.assert_array_equal(found.scores, full.scores)
            continue
        # Between full frames: every face that a neighbouring frame also shows is found, each corner of its
        # box within 0.15 of its side of the full cascade's (ONet refines from other boxes). A face seen in
        # this sampled frame alone (people walking in and out of a crowd) may be missed: it can never make
        # a track of min_track_faces, and is found at the next full frame if it stays.
        neighbours = [b for f in (every_frame[index - 1], every_frame[index + 1]) for b in f.boxes]
        for box in full.boxes[full.scores >= 0.9]:
            if any(iou(box, other) > 0.3 for other in neighbours):
                side = min(box[2] - box[0], box[3] - box[1])
                assert len(found) and np.abs(found.boxes - box).max(axis=1).min() <= 0.15 * side, f"frame {index}"
        assert len(found) <= len(full) + 1
    with pytest.raises(ValueError):
        detector.detect_video(frames, 0)


def test_detect_video_fed_chunk_by_chunk_finds_what_one_call_finds() -> None:
    """The scanner detects a video as it is decoded: chunks ending on a full frame (is_full), each given the
    last result of the one before, give the very faces of one call on all frames."""
    if not (CLIPS / "street_crowd.mp4").is_file():
        pytest.skip(f"{CLIPS / 'street_crowd.mp4'} not available (../shared beside the checkout)")
    detector = MTCNN(device="cpu", min_face_size=40, factor=0.6, max_side=640)
    frames = list(decode_frames("street_crowd.mp4", tuple(range(0, 80, 8))))  # 10 frames
    whole = detector.detect_video(frames, 3)
    fed, chunk, before = [], [], None
    for frame in frames:
        chunk.append(frame)
        if is_full(len(chunk) - 1, 3, before is not None):
            fed += detector.detect_video(chunk, 3, before=before)
            chunk, before = [], fed[-1]
    fed += detector.detect_video(chunk, 3, before=before)
    assert sum(len(f) for f in whole) >= 30
    for a, b in zip(whole, fed, strict=True):
        for field in ("boxes", "scores", "landmarks"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_runs_spread_over_cores_give_the_same_faces() -> None:
    """On CPU the cores take different PNet parts and RNet/ONet crop runs (runtime.parallel_runs): the same
    boxes, scores and landmarks, bit for bit, as one thread doing them in turn (7 frames of the crowd)."""
    if not (CLIPS / "street_crowd.mp4").is_file():
        pytest.skip(f"{CLIPS / 'street_crowd.mp4'} not available (../shared beside the checkout)")
    frames = list(decode_frames("street_crowd.mp4", tuple(range(0, 63, 9))))
    settings = {"device": "cpu", "min_face_size": 40, "factor": 0.6, "max_side": 640}
    alone, spread = MTCNN(threads=1, **settings), MTCNN(threads=2, **settings)
    assert (alone.workers, spread.workers) == (1, 2)
    in_turn, parallel = alone.detect_video(frames, 2), spread.detect_video(frames, 2)
    assert sum(len(f) for f in in_turn) >= 20
    for a, b in zip(in_turn, parallel):
        for field in ("boxes", "scores", "landmarks"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


@pytest.fixture
def cpu_runtime_variable(monkeypatch: pytest.MonkeyPatch):
    """Sets DFSCAN_CPU_RUNTIME for one test; the choice is read once per process, so it is read again after."""
    def choose(value: str) -> None:
        monkeypatch.setenv(runtime.CPU_RUNTIME_VARIABLE, value)
        runtime._openvino_core.cache_clear()
    yield choose
    monkeypatch.undo()
    runtime._openvino_core.cache_clear()


def test_openvino_and_onnxruntime_find_the_same_faces(cpu_runtime_variable) -> None:
    """On CPU the networks run on OpenVINO where it is installed: the same faces as onnxruntime on 7 frames of
    the crowd, boxes within a thousandth of a pixel (the two sum in different orders, so not bit for bit)."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'dfscan[cpu]' installs it)")
    if not (CLIPS / "street_crowd.mp4").is_file():
        pytest.skip(f"{CLIPS / 'street_crowd.mp4'} not available (../shared beside the checkout)")
    frames = list(decode_frames("street_crowd.mp4", tuple(range(0, 63, 9))))
    settings = {"device": "cpu", "min_face_size": 40, "factor": 0.6, "max_side": 640, "threads": 1}
    cpu_runtime_variable("onnxruntime")
    on_ort = MTCNN(**settings)
    cpu_runtime_variable("openvino")
    on_openvino = MTCNN(**settings)
    height, width = frames[0].shape[:2]
    assert on_ort.runtime_for(height, width).startswith("onnxruntime ")
    assert on_openvino.runtime_for(height, width).startswith("openvino ")
    assert hasattr(sys.modules["openvino"], "convert_model")  # dfscan leaves OpenVINO's own module as it is
    ort_faces, openvino_faces = on_ort.detect_video(frames, 2), on_openvino.detect_video(frames, 2)
    assert sum(len(f) for f in ort_faces) >= 20
    for a, b in zip(ort_faces, openvino_faces):
        assert len(a) == len(b)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2, rtol=0)
        np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-2, rtol=0)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5, rtol=0)


def test_openvino_session_runs_like_onnxruntime(cpu_runtime_variable) -> None:
    """The OpenVINO session shares its input with the network for the call: a strided (non-contiguous) input
    gives onnxruntime's outputs, and outputs stay valid after the next run reuses the request."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'dfscan[cpu]' installs it)")
    cpu_runtime_variable("openvino")
    on_openvino = runtime.create_session(MTCNN_DIR / "rnet.onnx", "cpu", 1, openvino=True)
    on_ort = runtime.create_session(MTCNN_DIR / "rnet.onnx", "cpu", 1)
    assert isinstance(on_openvino, runtime.OpenVinoSession) and not isinstance(on_ort, runtime.OpenVinoSession)
    crops = np.random.default_rng(0).uniform(-1, 1, (6, 3, 24, 24)).astype(np.float32)
    strided = crops[::2]
    assert not strided.flags.c_contiguous
    first = on_openvino.run(None, {"input": strided})
    on_openvino.run(None, {"input": crops[1::2].copy()})
    for ours, theirs in zip(first, on_ort.run(None, {"input": np.ascontiguousarray(strided)}), strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_cpu_runtime_variable_is_checked(cpu_runtime_variable) -> None:
    cpu_runtime_variable("onnxruntime")
    assert runtime.cpu_runtime() == "onnxruntime"
    assert MTCNN(device="cpu").provider == "CPUExecutionProvider"
    cpu_runtime_variable("tensorrt")
    with pytest.raises(UsageError, match="DFSCAN_CPU_RUNTIME must be one of auto, openvino, onnxruntime"):
        MTCNN(device="cpu")


def test_openvino_that_cannot_compile_leaves_the_networks_on_onnxruntime(cpu_runtime_variable, monkeypatch) -> None:
    """auto (the default): a machine where OpenVINO is installed but fails (a CPU it does not support) still
    detects, on onnxruntime, and says so; DFSCAN_CPU_RUNTIME=openvino makes the failure a setup error."""
    pytest.importorskip("openvino", reason="OpenVINO is not installed")

    def cannot_compile(*args, **kwargs):
        raise RuntimeError("Exception from src/inference/src/cpp/core.cpp: unsupported CPU")

    monkeypatch.setattr(runtime.OpenVinoSession, "__init__", cannot_compile)
    cpu_runtime_variable("auto")
    detector = MTCNN(device="cpu")
    assert detector.runtime_for(1080, 1920).startswith("onnxruntime ")
    assert len(detector.detect(load_image("astronaut.jpg"))) == 1
    cpu_runtime_variable("openvino")
    with pytest.raises(ModelError, match="unsupported CPU"):
        MTCNN(device="cpu").runtime_for(1080, 1920)


def test_downscaled_detection_finds_the_face(full_res: MTCNN) -> None:
    image = load_image("astronaut.jpg")
    reference = full_res.detect(image)
    small = MTCNN(device="cpu", max_side=256).detect(image)
    assert len(reference) == 1 and len(small) >= 1
    assert iou(small.boxes[0], reference.boxes[0]) > 0.8
    assert np.abs(small.landmarks[0] - reference.landmarks[0]).max() < 10  # input coordinates, not 256-px ones


def test_settings_and_provider() -> None:
    detector = MTCNN(device="cpu", min_face_size=32, max_side=640)
    assert detector.provider == "CPUExecutionProvider"
    # OpenVINO (where installed) for frames whose detection pyramid pays for its start, onnxruntime below that
    assert detector.runtime_for(1080, 1920).startswith(runtime.cpu_runtime() + " ")
    assert detector.runtime_for(512, 512).startswith("onnxruntime ")
    assert detector.settings["min_face_size"] == 32 and detector.settings["max_side"] == 640
    assert {"thresholds", "factor"} <= set(detector.settings)


def test_rejects_non_rgb_uint8(full_res: MTCNN) -> None:
    with pytest.raises(ValueError):
        full_res.detect(np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError):
        full_res.detect(np.zeros((32, 32, 3), np.float32))


def test_runs_with_torch_unimportable() -> None:
    script = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        import cv2
        from dfscan.faces.mtcnn import MTCNN
        image = cv2.cvtColor(cv2.imread({str(FIXTURES / "astronaut_small.jpg")!r}), cv2.COLOR_BGR2RGB)
        found = MTCNN(device="cpu").detect(image)
        assert len(found) == 1, len(found)
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
