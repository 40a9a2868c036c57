"""dlib face-recognition ResNet: architecture, converted weights (face-api parity), ONNX export."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dfscan.train.dlib_resnet import (  # noqa: E402
    DLIB_EMBED_DIM, DLIB_INPUT_SIZE, DLIB_MEAN, DLIB_STD, build_dlib_resnet, default_weights_path,
)

WEIGHTS = default_weights_path()
needs_weights = pytest.mark.skipif(
    not WEIGHTS.is_file(), reason=f"no converted weights at {WEIGHTS} (run tools/convert_face_api.py)")

# face-api 1.7.15's own FaceRecognitionNet (tfjs 4.22 CPU backend) on `_pattern()`: first 16 values
FACE_API_PATTERN_HEAD = np.array([
    -0.0464234, 0.1116999, 0.0234623, -0.0103122, -0.0507209, -0.0765646, -0.0260430, 0.0049278,
    0.1264888, -0.0495612, 0.2049873, -0.0221203, -0.2227393, -0.0318124, 0.0023940, 0.0672987])


def _pattern() -> np.ndarray:
    """A deterministic 150x150 RGB image (HWC float32 in [0, 255]) that needs no image file."""
    h, w, c = np.meshgrid(np.arange(150), np.arange(150), np.arange(3), indexing="ij")
    return (127.5 + 127.5 * np.sin(0.05 * h * (c + 1) + 0.07 * w)).astype(np.float32)


def _to_input(images_hwc: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images_hwc, dtype=np.float32)).permute(0, 3, 1, 2) / 255
    return (x - torch.tensor(DLIB_MEAN).view(1, 3, 1, 1)) / torch.tensor(DLIB_STD).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def pretrained():
    return build_dlib_resnet(pretrained=True).eval()


def test_architecture_shapes_and_stages():
    net = build_dlib_resnet(pretrained=False).eval()
    assert sum(p.numel() for p in net.parameters()) == 5_607_488
    x = torch.randn(2, 3, DLIB_INPUT_SIZE, DLIB_INPUT_SIZE)
    with torch.no_grad():
        y = net(x)
        staged = x
        for stage in net.stages:
            staged = stage(staged)
    assert y.shape == (2, DLIB_EMBED_DIM)
    assert len(net.stages) == 6
    torch.testing.assert_close(staged, y)


def test_missing_weights_message(tmp_path):
    with pytest.raises(FileNotFoundError, match="convert_face_api.py"):
        build_dlib_resnet(pretrained=True, weights_path=tmp_path / "absent.pt")


@needs_weights
def test_matches_face_api(pretrained):
    with torch.no_grad():
        y = pretrained(_to_input(_pattern()[None]))[0].numpy()
    np.testing.assert_allclose(y[:16], FACE_API_PATTERN_HEAD, atol=1e-4)


@needs_weights
def test_flip_stable_on_a_face(pretrained):
    data = pytest.importorskip("skimage.data", reason="scikit-image provides the public-domain face")
    from PIL import Image

    face = data.astronaut()[45:205, 145:305]  # NASA portrait of Eileen Collins: the face, dlib-chip-like
    face = np.asarray(Image.fromarray(face).resize((DLIB_INPUT_SIZE, DLIB_INPUT_SIZE), Image.BILINEAR))
    with torch.no_grad():
        a, b, other = pretrained(_to_input(np.stack([face, face[:, ::-1], _pattern()]))).numpy()
    cos = float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert cos > 0.9
    # dlib's same-person threshold is a Euclidean distance of 0.6
    assert np.linalg.norm(a - b) < 0.6 < np.linalg.norm(a - other)


@needs_weights
def test_onnx_export_matches_torch(pretrained, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = tmp_path / "dlib.onnx"
    torch.onnx.export(pretrained, (torch.zeros(2, 3, DLIB_INPUT_SIZE, DLIB_INPUT_SIZE),), str(path),
                      input_names=["images"], output_names=["embeddings"], dynamo=True,
                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, external_data=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = _to_input(np.stack([_pattern(), _pattern()[::-1], _pattern()[:, ::-1]]))
    with torch.no_grad():
        expected = pretrained(x).numpy()
    (got,) = session.run(None, {"images": x.numpy()})
    assert got.shape == (3, DLIB_EMBED_DIM)
    assert np.abs(got - expected).max() < 1e-4
