"""dlib's face-recognition ResNet (dlib_face_recognition_resnet_model_v1) in torch.

The network follows `faceRecognitionNet` of @vladmandic/face-api, whose TensorFlow.js weights
`tools/convert_face_api.py` converts: a 7x7/2 stem, max pool, residual blocks at 32/64/128/256
channels with downsampling residuals (avg-pooled, zero-padded shortcut), global average pool and a
bias-free 256 -> 128 projection. Each tfjs "conv + scale" pair (conv, bias, per-channel affine) is
folded by the converter into one biased `nn.Conv2d`, so there is no normalisation layer to manage.

Input: RGB, 150x150, (pixel/255 - DLIB_MEAN) / DLIB_STD. face-api computes (pixel - mean_rgb) / 255,
hence a std of 1. The weights were trained on dlib's 5-point-aligned chips (150 px, padding 0.25).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

DLIB_INPUT_SIZE = 150
DLIB_EMBED_DIM = 128
DLIB_MEAN: tuple[float, float, float] = (122.782 / 255, 117.001 / 255, 104.298 / 255)
DLIB_STD: tuple[float, float, float] = (1.0, 1.0, 1.0)

WEIGHTS_ENV = "DFSCAN_DLIB_WEIGHTS"
WEIGHTS_FILENAME = "dlib_resnet_face_api.pt"

# (block name, in channels, out channels, downsampling) in face-api's order
_BLOCKS: tuple[tuple[str, int, int, bool], ...] = (
    ("conv32_1", 32, 32, False), ("conv32_2", 32, 32, False), ("conv32_3", 32, 32, False),
    ("conv64_down", 32, 64, True), ("conv64_1", 64, 64, False), ("conv64_2", 64, 64, False),
    ("conv64_3", 64, 64, False),
    ("conv128_down", 64, 128, True), ("conv128_1", 128, 128, False), ("conv128_2", 128, 128, False),
    ("conv256_down", 128, 256, True), ("conv256_1", 256, 256, False), ("conv256_2", 256, 256, False),
    ("conv256_down_out", 256, 256, True),
)
# module names per stage (what `stages` groups, for freezing / feature caching)
_STAGES: tuple[tuple[str, ...], ...] = (
    ("conv32_down", "maxpool"),
    ("conv32_1", "conv32_2", "conv32_3"),
    ("conv64_down", "conv64_1", "conv64_2", "conv64_3"),
    ("conv128_down", "conv128_1", "conv128_2"),
    ("conv256_down", "conv256_1", "conv256_2", "conv256_down_out"),
    ("pool", "fc"),
)


class ConvScale(nn.Conv2d):
    """Conv with bias (tfjs conv + scale folded), optionally followed by ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, relu: bool):
        # tfjs 'same' at stride 1 is a symmetric pad of k//2; the stride-2 layers use 'valid'
        super().__init__(cin, cout, kernel, stride, padding=kernel // 2 if stride == 1 else 0, bias=True)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return F.relu(y) if self.relu else y


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = ConvScale(channels, channels, 3, 1, relu=True)
        self.conv2 = ConvScale(channels, channels, 3, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(self.conv1(x)) + x)


class ResidualDown(nn.Module):
    """Stride-2 residual; shortcut = 2x2 average pool, zero-padded to the new channel count."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = ConvScale(cin, cout, 3, 2, relu=True)
        self.conv2 = ConvScale(cout, cout, 3, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(self.conv1(x))
        pooled = F.avg_pool2d(x, 2, 2)
        # on even sides the 'valid' 3x3/2 conv is one short of the pool: face-api appends a zero
        # row and column to the conv branch (after its bias), not to the shortcut
        dh, dw = pooled.shape[2] - out.shape[2], pooled.shape[3] - out.shape[3]
        if dh or dw:
            out = F.pad(out, (0, dw, 0, dh))
        extra = out.shape[1] - pooled.shape[1]
        if extra:
            pooled = F.pad(pooled, (0, 0, 0, 0, 0, extra))
        return F.relu(pooled + out)


class GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class DlibResNet(nn.Module):
    """forward(images NCHW, normalised) -> (N, 128) face descriptor, not L2-normalised."""

    def __init__(self) -> None:
        super().__init__()
        self.conv32_down = ConvScale(3, 32, 7, 2, relu=True)
        self.maxpool = nn.MaxPool2d(3, 2)
        for name, cin, cout, down in _BLOCKS:
            self.add_module(name, ResidualDown(cin, cout) if down else Residual(cout))
        self.pool = GlobalAvgPool()
        self.fc = nn.Linear(256, DLIB_EMBED_DIM, bias=False)

    @property
    def stages(self) -> list[nn.Module]:
        """Six stages (stem, 32, 64, 128, 256, pool+fc) as views over this module's children.

        Built on each access; parameters are shared, so freezing a stage freezes this network.
        """
        return [nn.Sequential(*(getattr(self, name) for name in group)) for group in _STAGES]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for group in _STAGES:
            for name in group:
                x = getattr(self, name)(x)
        return x


def default_weights_path() -> Path:
    """$DFSCAN_DLIB_WEIGHTS, else ~/.cache/dfscan/dlib_resnet_face_api.pt (honours $XDG_CACHE_HOME)."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "dfscan" / WEIGHTS_FILENAME


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model


def build_dlib_resnet(pretrained: bool = True, weights_path: str | Path | None = None) -> nn.Module:
    model = DlibResNet()
    if not pretrained:
        return model
    path = Path(weights_path) if weights_path is not None else default_weights_path()
    if not path.is_file():
        raise FileNotFoundError(f"dlib ResNet weights not found at {path}; "
                                f"create them with: python tools/convert_face_api.py --out {path}")
    return load_weights(model, path)
