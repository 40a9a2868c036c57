"""Backbone registry: names, shapes, the stage split used for caching, freezing, optional timm."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from dfscan.train.backbones import create_backbone, list_backbones  # noqa: E402


def test_registry_lists_builtin_names():
    names = list_backbones()
    for name in ("efficientnet_lite0", "facenet", "dlib_resnet", "timm:efficientnet_b4"):
        assert name in names


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown backbone"):
        create_backbone("no_such_net")


def test_lite0_pretrained_loads_and_features_are_not_degenerate():
    net = create_backbone("efficientnet_lite0", pretrained=True).eval()
    assert (net.embed_dim, net.input_size) == (1280, 224)
    g = torch.Generator().manual_seed(0)
    # a smooth, image-like input: blurred noise with a bright blob
    x = torch.nn.functional.avg_pool2d(torch.randn(4, 3, 232, 232, generator=g), 9, 1)
    x[:, :, 60:160, 60:160] += 1.0
    with torch.no_grad():
        feats = net(x)
        probs = net._fc(feats).softmax(1)
    assert feats.shape == (4, 1280)
    assert torch.isfinite(feats).all() and feats.std() > 0.05
    assert (feats > 0).float().mean() > 0.05              # ReLU6 features, not all dead
    assert probs.max(1).values.min() > 1.5 / 1000         # sharper than uniform over ImageNet classes


@pytest.mark.parametrize("name,size", [("efficientnet_lite0", 96), ("facenet", 160)])
def test_stage_split_matches_full_forward(name, size):
    with pytest.warns(UserWarning) if name == "facenet" else _nullcontext():
        net = create_backbone(name, pretrained=True).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        full = net(x)
        for k in (1, 3, net.num_stages):
            assert torch.allclose(net.forward_from(net.features_until(x, k), k), full, atol=1e-5)
    assert full.shape == (2, net.embed_dim)


def test_freeze_stages_stops_gradients_and_keeps_bn_in_eval():
    net = create_backbone("efficientnet_lite0", pretrained=False)
    net.freeze_stages(4)
    net.train()
    frozen = [p for m in net.stage_modules()[:4] for p in m.parameters()]
    trainable = [p for m in net.stage_modules()[4:] for p in m.parameters()]
    assert frozen and all(not p.requires_grad for p in frozen)
    assert all(p.requires_grad for p in trainable)
    assert not net._bn0.training and net._bn1.training


def test_timm_names_fail_with_one_line_when_timm_is_missing():
    try:
        import timm  # noqa: F401
    except Exception:  # noqa: BLE001
        with pytest.raises(RuntimeError, match="needs timm"):
            create_backbone("resnet34", pretrained=False)
    else:
        pytest.skip("timm is installed here")


def test_dlib_resnet_when_weights_present():
    try:
        net = create_backbone("dlib_resnet", pretrained=True).eval()
    except FileNotFoundError as exc:
        pytest.skip(f"dlib weights absent: {exc}")
    with torch.no_grad():
        out = net(torch.randn(2, 3, 150, 150))
    assert out.shape == (2, 128)


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
