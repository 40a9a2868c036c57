"""Export pieces that need no data: temperature calibration, operating points, ONNX parity, manifest."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from dfscan.calibration import apply_temperature, fit_temperature  # noqa: E402
from dfscan.model.manifest import load_manifest  # noqa: E402
from dfscan.train import export as ex  # noqa: E402
from dfscan.train.recipes import RecipeConfig, _meta, build_net  # noqa: E402


def _scores(n=400, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    logit = 4.0 * (y - 0.5) + rng.normal(0, 2.0, n)  # over-confident: true logit is a quarter of it
    return 1 / (1 + np.exp(-logit)), y


def test_temperature_fit_reduces_log_loss():
    from sklearn.metrics import log_loss
    p, y = _scores()
    t = fit_temperature(p, y)
    assert 0.05 < t < 20
    assert log_loss(y, apply_temperature(p, t)) <= log_loss(y, p) + 1e-9


def test_operating_points_are_ordered():
    p, y = _scores()
    ops = ex.operating_points(p, y)
    assert ops["high-recall"] <= ops["balanced"] <= ops["low-fpr"]
    fpr = np.mean(p[y == 0] >= ops["low-fpr"])
    tpr = np.mean(p[y == 1] >= ops["high-recall"])
    assert fpr <= 0.01 + 1e-9 and tpr >= 0.95


@pytest.mark.parametrize("recipe", ["bce", "multimetric"])
def test_bundle_from_checkpoint_round_trips(tmp_path, recipe):
    cfg = RecipeConfig(recipe=recipe, dataset=str(tmp_path / "absent"), input_size=48, pretrained=False,
                       proj_dim=16)
    net = build_net(cfg).eval()
    p, y = _scores(200)
    ckpt = {"format": "dfscan-ckpt/1", **_meta(cfg, net), "model": net.state_dict(),
            "head": {"kind": "linear", "weight": net.head.weight.detach().numpy(),
                     "bias": net.head.bias.detach().numpy()},
            "val_scores": p, "val_labels": y, "metrics": {"epoch": 1}, "loop": {"epoch": 1}}
    torch.save(ckpt, tmp_path / "best.pt")
    bundle = ex.export_bundle(tmp_path / "best.pt", tmp_path / "bundle", name="t")
    manifest = load_manifest(bundle)
    assert manifest.embedding_dim == net.embed_dim
    assert manifest.scan.threshold == pytest.approx(manifest.operating_points["balanced"])
    assert manifest.metrics["onnx_parity_max_abs_diff"] <= ex.PARITY_TOL
    assert "research use only" in manifest.license
    if manifest.likelihood_ratio is not None or importlib.util.find_spec("lir"):  # LR calibration needs lir
        cal_set = manifest.likelihood_ratio["calibration_set"]
        assert cal_set["n_real"] + cal_set["n_fake"] == 200 and "absent" in cal_set["population"]
        assert manifest.likelihood_ratio["bounds"][0] <= 0 <= manifest.likelihood_ratio["bounds"][1]

    import onnxruntime as ort
    sess = ort.InferenceSession(str(bundle / "embedder.onnx"), providers=["CPUExecutionProvider"])
    out = sess.run(None, {"images": np.zeros((5, 3, 48, 48), np.float32)})[0]
    assert out.shape == (5, net.embed_dim)  # dynamic batch
