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


@pytest.mark.parametrize("name,size", [("efficientnet_lite0", 96), ("facenet", 160), ("resnet34", 64)])
def test_stage_split_matches_full_forward(name, size):
    with pytest.warns(UserWarning) if name == "facenet" else _nullcontext():
        net = create_backbone(name, pretrained=name != "resnet34").eval()
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
            create_backbone("efficientnet_b4", pretrained=False)
    else:
        pytest.skip("timm is installed here")


def test_resnet34_is_torchvisions_architecture_and_weights_come_from_a_local_file(tmp_path, monkeypatch):
    net = create_backbone("resnet34", pretrained=False)
    # torchvision's resnet34 has 21,797,672 parameters, 513,000 of them in the ImageNet classifier (fc)
    assert sum(p.numel() for p in net.parameters()) == 21_797_672 - 513_000
    state = net.state_dict()
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer4.2.bn2.bias",
            "layer2.0.downsample.0.weight"} <= set(state) and not any(k.startswith("_") for k in state)
    monkeypatch.delenv("DFSCAN_RESNET34_WEIGHTS", raising=False)
    with pytest.raises(RuntimeError, match="local file only"):
        create_backbone("resnet34", pretrained=True)
    path = tmp_path / "resnet34.pth"
    torch.save({**state, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, path)
    loaded = create_backbone("resnet34", pretrained=True, weights_path=str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), net.eval()(x), atol=1e-6)


def test_facenet_frozen_cache_rows_are_not_projected_again():
    # The cache of a fully frozen FaceNet holds pooled 512-D rows; training starts from them.
    with pytest.warns(UserWarning):
        net = create_backbone("facenet", pretrained=True).eval()
    net.freeze_stages(net.num_stages)
    x = torch.randn(2, 3, 160, 160)
    with torch.no_grad():
        rows = net.pool(net.features_until(x, net.num_stages))
        assert rows.shape == (2, 512)
        assert torch.equal(net.forward_from(rows, net.num_stages), rows)
    assert not any(p.requires_grad for p in net.parameters())  # the 1792 -> 512 projection is frozen too


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
