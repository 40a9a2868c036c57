"""Export pieces that need no data: temperature calibration, operating points, ONNX parity, manifest."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from bundles import checkpoint_with_torch_val_scores  # noqa: E402
from conftest import dfdc_subset  # noqa: E402
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


# ---------------------------------------------------------------- int8 embedder

@pytest.mark.skipif(not importlib.util.find_spec("onnx"), reason="int8 export needs the onnx package")
def test_int8_bundle_is_calibrated_and_thresholded_on_its_own_scores(tmp_path):
    import onnx

    from dfscan.calibration import fit_calibration
    from dfscan.faceset import FaceSet, load_crop
    from dfscan.metrics import roc_auc
    from dfscan.model.scorer import Scorer
    faces = dfdc_subset(tmp_path / "faces", 16, splits=("train", "val"))
    ckpt = checkpoint_with_torch_val_scores(faces, tmp_path / "best.pt")
    bundle = ex.export_bundle(tmp_path / "best.pt", tmp_path / "int8", name="t", quantize="int8")

    ops = {n.op_type for n in onnx.load(str(bundle / "embedder.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    manifest = load_manifest(bundle)
    record = manifest.training["quantization"]
    assert record["precision"] == "int8" and record["calibration_faces"] == 32  # every train face: 4 groups x 8+
    assert record["float_val_auc"] == pytest.approx(roc_auc(ckpt["val_labels"], ckpt["val_scores"]))

    # Scored independently, as a scan scores crops: these are the scores everything was fitted on.
    fs = FaceSet.load(faces)
    val = fs.split("val")
    crops = np.stack([load_crop(fs.image_path(r), 64) for r in val])
    int8_scores = Scorer(bundle, device="cpu").raw_scores(crops)
    labels = np.asarray([r.is_fake for r in val])
    assert manifest.metrics["val_auc_raw"] == pytest.approx(roc_auc(labels, int8_scores))
    assert manifest.calibration == pytest.approx(fit_calibration("temperature", int8_scores, labels))
    assert not np.allclose(int8_scores, ckpt["val_scores"], atol=1e-6)  # really another model's scores ...
    assert np.abs(int8_scores - ckpt["val_scores"]).mean() < 0.05      # ... close to the float model's


def test_int8_export_refuses_a_face_set_changed_since_training(tmp_path):
    pytest.importorskip("onnx")
    faces = dfdc_subset(tmp_path / "faces", 6, splits=("train", "val"))
    ckpt = checkpoint_with_torch_val_scores(faces, tmp_path / "best.pt")
    ckpt["val_labels"] = 1 - ckpt["val_labels"]
    torch.save(ckpt, tmp_path / "best.pt")
    with pytest.raises(ValueError, match="no longer matches"):
        ex.export_bundle(tmp_path / "best.pt", tmp_path / "int8", quantize="int8")
    with pytest.raises(ValueError, match="quantize must be one of"):
        ex.export_bundle(tmp_path / "best.pt", tmp_path / "x", quantize="int4")


def test_export_never_leaves_half_a_bundle(tmp_path):
    """An existing bundle is replaced only with --overwrite, as a whole: an export that fails on the way (here a
    checkpoint whose crop margin no manifest accepts) leaves the earlier bundle as it was; a run directory
    holding the checkpoint is never an --out."""
    from typer.testing import CliRunner

    from dfscan.cli import app

    cfg = RecipeConfig(recipe="bce", dataset=str(tmp_path / "absent"), input_size=48, pretrained=False)
    net = build_net(cfg).eval()
    p, y = _scores(200)
    good = {"format": "dfscan-ckpt/1", **_meta(cfg, net), "model": net.state_dict(),
            "head": {"kind": "linear", "weight": net.head.weight.detach().numpy(), "bias": net.head.bias.detach().numpy()},
            "val_scores": p, "val_labels": y, "metrics": {"epoch": 1}, "loop": {"epoch": 1}}
    run = tmp_path / "run"
    run.mkdir()
    torch.save(good, run / "best.pt")
    other_head = {**good["head"], "bias": good["head"]["bias"] + 1.0}  # other files than the bundle's, too
    torch.save({**good, "head": other_head, "crop_margin": 5.0}, run / "bad.pt")
    bundle = tmp_path / "bundle"
    runner = CliRunner()
    assert runner.invoke(app, ["export", str(run / "best.pt"), "--out", str(bundle)]).exit_code == 0
    before = {f.name: f.read_bytes() for f in bundle.iterdir()}
    refused = runner.invoke(app, ["export", str(run / "best.pt"), "--out", str(bundle)])
    assert refused.exit_code == 2 and "--overwrite" in refused.output
    failed = runner.invoke(app, ["export", str(run / "bad.pt"), "--out", str(bundle), "--overwrite"])
    assert failed.exit_code == 4 and "crop_margin" in failed.output
    assert {f.name: f.read_bytes() for f in bundle.iterdir()} == before
    load_manifest(bundle)  # hashes still match
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind
    into_run = runner.invoke(app, ["export", str(run / "best.pt"), "--out", str(run), "--overwrite"])
    assert into_run.exit_code == 2 and (run / "best.pt").is_file()
    again = runner.invoke(app, ["export", str(run / "best.pt"), "--out", str(bundle), "--overwrite", "--name", "b"])
    assert again.exit_code == 0 and load_manifest(bundle).name == "b"


def test_weights_that_do_not_fit_are_one_line_naming_the_mismatch(tmp_path):
    """Found by a probe: torch's state-dict error (every key, over several lines) reached the terminal as it was."""
    from typer.testing import CliRunner

    from dfscan.cli import app

    cfg = RecipeConfig(recipe="bce", dataset=str(tmp_path / "absent"), input_size=48, pretrained=False)
    net = build_net(cfg).eval()
    p, y = _scores(200)
    state = dict(net.state_dict())
    state.pop("head.weight")
    state["stray.weight"] = torch.zeros(1)
    head = {"kind": "linear", "weight": net.head.weight.detach().numpy(), "bias": net.head.bias.detach().numpy()}
    ckpt = {"format": "dfscan-ckpt/1", **_meta(cfg, net), "model": state, "head": head,
            "val_scores": p, "val_labels": y, "metrics": {"epoch": 1}, "loop": {"epoch": 1}}
    torch.save(ckpt, tmp_path / "best.pt")
    result = CliRunner().invoke(app, ["export", str(tmp_path / "best.pt"), "--out", str(tmp_path / "bundle")])
    assert result.exit_code == 4 and not (tmp_path / "bundle").exists()
    line = " ".join(result.output.split())
    assert "do not fit its recipe's network (bce, efficientnet_lite0): 1 missing (e.g. head.weight), " \
           "1 unexpected (e.g. stray.weight)" in line, result.output

