"""Model soups: weight averaging of checkpoints, val scored again through the averaged network."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from bundles import checkpoint_with_torch_val_scores  # noqa: E402
from conftest import dfdc_subset  # noqa: E402
from dfscan.train import soup as sp  # noqa: E402


def test_average_state_dicts_is_the_weighted_mean_and_keeps_integer_buffers():
    a = {"w": torch.tensor([1.0, 2.0]), "steps": torch.tensor(5)}
    b = {"w": torch.tensor([3.0, 6.0]), "steps": torch.tensor(9)}
    out = sp.average_state_dicts([a, b], [0.25, 0.75])
    assert torch.allclose(out["w"], torch.tensor([2.5, 5.0]))
    assert out["steps"].item() == 5 and out["w"].dtype == torch.float32
    with pytest.raises(ValueError, match="shape"):
        sp.average_state_dicts([a, {"w": torch.zeros(3), "steps": torch.tensor(1)}], [0.5, 0.5])
    with pytest.raises(ValueError, match="other layers"):
        sp.average_state_dicts([a, {"v": torch.zeros(2), "steps": torch.tensor(1)}], [0.5, 0.5])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("soup")
    faces = dfdc_subset(root / "faces", 12, splits=("train", "val"))
    first = checkpoint_with_torch_val_scores(faces, root / "a.pt", seed=0)
    second = checkpoint_with_torch_val_scores(faces, root / "b.pt", seed=1)
    return root, first, second


def test_soup_of_one_model_with_itself_scores_val_as_torch_does(two_runs, tmp_path):
    root, first, _ = two_runs
    sp.make_soup([root / "a.pt", root / "a.pt"], tmp_path / "self.pt", weights=[0.3, 0.7])
    soup = torch.load(tmp_path / "self.pt", weights_only=False)  # as written
    # val scored again through an exported bundle (a scan's crop loading) agrees with training's torch scores
    assert np.abs(soup["val_scores"] - first["val_scores"]).max() < 2e-3
    assert soup["soup"]["weights"] == pytest.approx([0.3, 0.7])
    assert "optimizer" not in soup


def test_soup_averages_weights_and_its_export_fits_on_the_soups_own_scores(two_runs, tmp_path):
    from dfscan.calibration import fit_calibration
    from dfscan.faceset import FaceSet, load_crop
    from dfscan.metrics import roc_auc
    from dfscan.model.manifest import load_manifest
    from dfscan.model.scorer import Scorer
    from dfscan.train.export import export_bundle
    root, first, second = two_runs
    path = tmp_path / "soup.pt"
    sp.make_soup([root / "a.pt", root / "b.pt"], path)
    soup = torch.load(path, weights_only=False)
    key = next(k for k, v in first["model"].items() if v.is_floating_point() and v.numel() > 100)
    assert torch.allclose(soup["model"][key], (first["model"][key] + second["model"][key]) / 2, atol=1e-6)
    assert np.allclose(soup["head"]["weight"], (first["head"]["weight"] + second["head"]["weight"]) / 2)
    assert not np.allclose(soup["val_scores"], first["val_scores"], atol=1e-3)  # a model of its own

    bundle = export_bundle(path, tmp_path / "bundle", name="soup")
    fs = FaceSet.load(root / "faces")
    val = fs.split("val")
    crops = np.stack([load_crop(fs.image_path(r), 64) for r in val])
    scores = Scorer(bundle, device="cpu").raw_scores(crops)
    labels = np.asarray([r.is_fake for r in val])
    manifest = load_manifest(bundle)
    assert manifest.training["soup"]["members"] == [str(root / "a.pt"), str(root / "b.pt")]
    assert manifest.metrics["val_auc_raw"] == pytest.approx(roc_auc(labels, scores))
    assert manifest.calibration == pytest.approx(fit_calibration("temperature", scores, labels))


def test_soup_refuses_other_architectures_and_bad_weights(two_runs, tmp_path):
    root, first, _ = two_runs
    torch.save({**first, "input_size": 96}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="input_size"):
        sp.soup_checkpoint([root / "a.pt", tmp_path / "other.pt"])
    torch.save({**first, "head": {"kind": "sklearn", "estimator": b""}}, tmp_path / "rf.pt")
    with pytest.raises(ValueError, match="linear head"):
        sp.soup_checkpoint([root / "a.pt", tmp_path / "rf.pt"])
    with pytest.raises(ValueError, match="non-negative"):
        sp.soup_checkpoint([root / "a.pt", root / "b.pt"], [1.0, -1.0])
    with pytest.raises(ValueError, match="at least two"):
        sp.soup_checkpoint([root / "a.pt"])


def test_soup_command_never_overwrites_and_reports_bad_weights(two_runs, tmp_path):
    from typer.testing import CliRunner

    from dfscan.cli import app
    from dfscan.errors import EXIT_USAGE
    root, _, _ = two_runs
    existing = tmp_path / "taken.pt"
    existing.write_bytes(b"earlier result")
    runner = CliRunner()
    result = runner.invoke(app, ["soup", str(root / "a.pt"), str(root / "b.pt"), "--out", str(existing)])
    assert result.exit_code == EXIT_USAGE and "exists" in result.output
    assert existing.read_bytes() == b"earlier result"
    result = runner.invoke(app, ["soup", str(root / "a.pt"), str(root / "b.pt"), "--out", str(tmp_path / "n.pt"),
                                 "--weights", "1,x"])
    assert result.exit_code == EXIT_USAGE and "--weights" in result.output
    result = runner.invoke(app, ["soup", str(root / "a.pt"), str(root / "b.pt"), "--out", str(tmp_path / "ok.pt")])
    assert result.exit_code == 0 and "val AUC" in " ".join(result.output.split()) and (tmp_path / "ok.pt").is_file()


def test_a_file_that_is_no_checkpoint_is_a_one_line_error_for_export_and_soup(two_runs, tmp_path):
    from typer.testing import CliRunner

    from dfscan.cli import app
    from dfscan.errors import EXIT_SETUP
    root, _, _ = two_runs
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint\n")
    runner = CliRunner()
    for args in (["export", str(junk), "--out", str(tmp_path / "b")],
                 ["soup", str(root / "a.pt"), str(junk), "--out", str(tmp_path / "s.pt")]):
        result = runner.invoke(app, args)
        assert result.exit_code == EXIT_SETUP, result.output
        assert "is not a dfscan checkpoint" in result.output and "internal error" not in result.output
    assert not (tmp_path / "s.pt").exists()


def test_export_and_soup_options_are_checked_first(two_runs, tmp_path):
    """Found by a probe: a bad --default-point or --quantize, one checkpoint for a soup, or weights that do not
    fit were exit 4 after loading; weights whose sum overflows made an all-zero model (exit 0). Each is a
    usage error (exit 2) with nothing written; a checkpoint without val scores or weights is one line, exit 4."""
    from typer.testing import CliRunner

    from dfscan.cli import app
    root, _, _ = two_runs
    a, b = str(root / "a.pt"), str(root / "b.pt")
    runner = CliRunner()
    for args in (["export", a, "--out", str(tmp_path / "x"), "--default-point", "bogus"],
                 ["export", a, "--out", str(tmp_path / "x"), "--quantize", "int4"],
                 ["soup", a, "--out", str(tmp_path / "s.pt")],
                 ["soup", a, b, "--out", str(tmp_path / "s.pt"), "--weights", "1"],
                 ["soup", a, b, "--out", str(tmp_path / "s.pt"), "--weights", "0,0"],
                 ["soup", a, b, "--out", str(tmp_path / "s.pt"), "--weights", "nan,1"],
                 ["soup", a, b, "--out", str(tmp_path / "s.pt"), "--weights", "1e308,1e308"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
    assert not (tmp_path / "x").exists() and not (tmp_path / "s.pt").exists()
    full = torch.load(root / "a.pt", weights_only=False)
    for missing in ("val_scores", "model"):
        torch.save({k: v for k, v in full.items() if k != missing}, tmp_path / f"no_{missing}.pt")
        result = runner.invoke(app, ["export", str(tmp_path / f"no_{missing}.pt"), "--out", str(tmp_path / "y")])
        assert result.exit_code == 4 and "internal error" not in result.output, result.output
    assert not (tmp_path / "y").exists()
