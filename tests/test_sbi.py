"""Self-blended pseudo-fakes, multi-source face sets, crop geometry and per-domain operating points, on
real shared DFDC crops (skipped with a reason where ../shared or dlib's landmark model is absent)."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import DFDC_FACES

pytest.importorskip("torch")


def _need_landmarks():
    from dfscan.train.sbi import predictor_path

    pytest.importorskip("dlib", reason="dlib-bin not installed (pip install dlib-bin face-recognition-models)")
    try:
        predictor_path()
    except RuntimeError as exc:
        pytest.skip(str(exc))


def _dfdc_rows(n_real: int, n_fake: int, split: str = "train") -> list[dict[str, str]]:
    if not (DFDC_FACES / "labels.csv").is_file():
        pytest.skip(f"shared DFDC crops not available at {DFDC_FACES}")
    with open(DFDC_FACES / "labels.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == split]
    reals = [r for r in rows if r["label"] == "real"][:n_real]
    fakes = [r for r in rows if r["label"] == "fake"][:n_fake]
    return reals + fakes


def make_face_set(root: Path, rows: list[dict[str, str]], name: str = "dfdc_faces") -> Path:
    """A small copy of shared DFDC crops, in a folder named like the shared set so its measured geometry applies."""
    folder = root / name
    (folder / "images").mkdir(parents=True)
    for row in rows:
        shutil.copyfile(DFDC_FACES / "images" / row["file"], folder / "images" / row["file"])
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        writer.writerows(rows)
    return folder


@pytest.fixture(scope="module")
def real_face() -> np.ndarray:
    from dfscan.faceset import read_rgb

    row = _dfdc_rows(1, 0)[0]
    return read_rgb(DFDC_FACES / "images" / row["file"])


def test_landmarks_fall_on_the_face(real_face):
    _need_landmarks()
    from dfscan.train.sbi import Landmarker, box_in_crop

    side = real_face.shape[0]
    points = Landmarker()(real_face, box_in_crop(side, -0.1))
    assert points.shape == (68, 2)
    # the face fills a tight DFDC crop: landmarks spread over most of it, centred near the middle
    assert np.all(points > -0.1 * side) and np.all(points < 1.1 * side)
    assert abs(points[:, 0].mean() - side / 2) < 0.15 * side
    assert points[:, 0].max() - points[:, 0].min() > 0.5 * side
    # eyes (36-47) above the mouth (48-67)
    assert points[36:48, 1].mean() < points[48:68, 1].mean()


def test_self_blend_changes_the_face_and_is_reproducible(real_face):
    _need_landmarks()
    from dfscan.train.sbi import Landmarker, box_in_crop, self_blend

    landmarks = Landmarker()(real_face, box_in_crop(real_face.shape[0], -0.1))
    fake, mask = self_blend(real_face, landmarks, np.random.default_rng(3))
    again, _ = self_blend(real_face, landmarks, np.random.default_rng(3))
    other, _ = self_blend(real_face, landmarks, np.random.default_rng(4))
    assert fake.dtype == np.uint8 and fake.shape == real_face.shape
    assert np.array_equal(fake, again) and not np.array_equal(fake, other)
    assert 0.0 <= mask.min() and mask.max() <= 1.0 and mask.max() > 0.2
    side = real_face.shape[0]
    centre = mask[int(landmarks[30, 1]), int(landmarks[30, 0])]  # nose tip: inside the hull
    assert centre >= 0.8 * mask.max()
    assert mask[0, 0] == 0 and mask[0, side - 1] == 0  # corners: background is not blended
    assert np.abs(fake.astype(int) - real_face.astype(int)).mean() > 0.5


def test_pool_pairs_real_and_blended_views_with_the_scanner_geometry(tmp_path):
    _need_landmarks()
    from dfscan.faceset import FaceSet
    from dfscan.train.sbi import ViewSettings, build_pool

    src = make_face_set(tmp_path, _dfdc_rows(3, 2))
    out = tmp_path / "pool"
    stats = build_pool(src, out, ViewSettings(size=96, margin=0.15), copies=2, splits=("train",), domain="dfdc")
    assert (stats.reals, stats.blends, stats.fakes) == (6, 6, 4)
    pool = FaceSet.load(out)
    assert len(pool) == 16 and {r.domain for r in pool.records} == {"dfdc"}
    assert sum(r.label == "fake" for r in pool.records) == 10
    geometry = json.loads((out / "faceset.json").read_text())
    # DFDC crops are tighter than the 0.15 asked for: the views are the whole crop, and the pool says so
    assert geometry["crop"]["margin"] == -0.1 and geometry["from"]["geometry"]["crop"]["margin"] == -0.1
    image = pool.read_image(pool.records[0])
    assert image.shape == (96, 96, 3)
    # a real view and its blend share the cut and the degradation: the background, outside the blend,
    # is the same picture (up to the colour/sharpness jitter SBI may put on the outside instead)
    by_file = {r.file: r for r in pool.records}
    for real_view in (f for f in by_file if f.endswith("_v0.png") and by_file[f].label == "real"):
        blend = pool.read_image(by_file[real_view.replace("_v0", "_sbi0")]).mean(2)
        real = pool.read_image(by_file[real_view]).mean(2)
        assert not np.array_equal(blend, real)
        top_real, top_blend = real[:12].ravel(), blend[:12].ravel()
        assert np.corrcoef(top_real, top_blend)[0, 1] > 0.8
    # resuming writes nothing twice
    build_pool(src, out, ViewSettings(size=96, margin=0.15), copies=2, splits=("train",), domain="dfdc")
    assert len(FaceSet.load(out)) == 16


def test_pseudo_fake_dataset_adds_fresh_blended_twins(tmp_path):
    _need_landmarks()
    from dfscan.faceset import FaceSet
    from dfscan.train.data import FaceDataset, PseudoFakeDataset, parse_pseudo_fakes

    assert parse_pseudo_fakes("sbi") == 1.0 and parse_pseudo_fakes("sbi:0.5") == 0.5
    with pytest.raises(ValueError):
        parse_pseudo_fakes("blend:2")
    faces = FaceSet.load(make_face_set(tmp_path, _dfdc_rows(4, 2)))
    base = FaceDataset(faces, faces.records, 64, [0.5] * 3, [0.5] * 3)
    fresh = PseudoFakeDataset(base, 0.5, seed=0, fresh=True)
    assert len(fresh) == 6 + 2 and fresh.labels == base.labels + [1, 1]
    assert [r.label for r in fresh.records[-2:]] == ["real", "real"]  # the faces the twins are made from
    x1, y1 = fresh[6]
    x2, _ = fresh[6]
    assert y1 == 1 and x1.shape == (3, 64, 64) and not np.allclose(x1.numpy(), x2.numpy())
    fixed = PseudoFakeDataset(base, 0.5, seed=0, fresh=False)
    assert np.allclose(fixed[6][0].numpy(), fixed[6][0].numpy())


def test_balanced_sampler_spreads_each_class_over_domains():
    from dfscan.train.data import BalancedBatchSampler

    labels = [0] * 90 + [1] * 90 + [0] * 10 + [1] * 10
    groups = ["big"] * 180 + ["small"] * 20
    sampler = BalancedBatchSampler(labels, 16, seed=0, groups=groups)
    counts = np.zeros((2, 2))
    for batch in sampler.epoch_batches(0):
        for i in batch:
            counts[labels[i], groups[i] == "small"] += 1
    assert counts[0, 0] == counts[0, 1] and counts[1, 0] == counts[1, 1]  # the small domain is not drowned


def test_training_geometry_prefers_the_scanner_cut_sets(tmp_path):
    from dfscan.faceset import training_geometry, write_geometry

    dfdc = make_face_set(tmp_path, _dfdc_rows(1, 1))
    pool_a, pool_b = tmp_path / "a", tmp_path / "b"
    for folder, margin in ((pool_a, 0.15), (pool_b, 0.3)):
        folder.mkdir()
        write_geometry(folder, {"crop": {"size": 128, "margin": margin}})
    assert training_geometry([dfdc])[0] == -0.1  # measured geometry, when it is all there is
    assert training_geometry([dfdc, pool_a])[0] == 0.15  # the scanner-cut set sets the margin
    assert training_geometry([dfdc, pool_a], margin=0.2)[0] == 0.2
    with pytest.raises(ValueError, match="different margins"):
        training_geometry([pool_a, pool_b])


def test_operating_points_hold_every_domain_to_the_low_fpr_bound():
    from dfscan.train.export import operating_points

    rng = np.random.default_rng(0)
    # domain "easy": reals near 0.1; domain "hard": reals spread up to 0.8 (the footage a DFDC model accuses)
    scores = np.concatenate([rng.uniform(0, 0.2, 900), rng.uniform(0, 0.8, 100), rng.uniform(0.5, 1, 1000)])
    labels = np.array([0] * 1000 + [1] * 1000)
    domains = np.array(["easy"] * 900 + ["hard"] * 100 + ["easy"] * 500 + ["hard"] * 500)
    pooled = operating_points(scores, labels)
    per_domain = operating_points(scores, labels, domains)
    hard_reals = scores[(labels == 0) & (domains == "hard")]
    assert (hard_reals >= per_domain["low-fpr"]).mean() <= 0.01
    assert (hard_reals >= pooled["low-fpr"]).mean() > 0.01  # pooling lets the small domain's FPR through
    assert per_domain["high-recall"] <= per_domain["balanced"] <= per_domain["guarded"] <= per_domain["low-fpr"]
    assert (hard_reals >= per_domain["guarded"]).mean() <= 0.05


@pytest.mark.slow
def test_train_with_pseudo_fakes_over_two_face_sets_records_geometry(tmp_path):
    _need_landmarks()
    from typer.testing import CliRunner

    from dfscan.cli import app
    from dfscan.faceset import write_geometry
    from dfscan.train.loop import load_checkpoint

    rows = _dfdc_rows(12, 12) + _dfdc_rows(6, 6, split="val")
    dfdc = make_face_set(tmp_path, rows)
    other = make_face_set(tmp_path, rows, name="studio")
    write_geometry(other, {"crop": {"size": 224, "margin": -0.1}, "made_by": "test"})
    run = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "train", "bce", "--dataset", f"faces:{dfdc},faces:{other}", "--epochs", "1", "--batch-size", "8",
        "--input-size", "64", "--pseudo-fakes", "sbi:0.5", "--out", str(run)])
    assert result.exit_code == 0, result.output
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt["crop_margin"] == -0.1 and set(ckpt["geometry"]) == {str(dfdc), str(other)}
    assert set(ckpt["val_domains"]) == {"dfdc_faces", "studio"}
    assert len(ckpt["val_domains"]) == 2 * (12 + 3)  # each val set: 12 faces + 3 blended twins
    assert set(ckpt["metrics"]["val_auc_by_domain"]) == {"dfdc_faces", "studio"}


def test_sbi_command_writes_a_pool_and_refuses_bad_options(tmp_path):
    _need_landmarks()
    from typer.testing import CliRunner

    from dfscan.cli import app
    from dfscan.faceset import FaceSet

    src = make_face_set(tmp_path, _dfdc_rows(2, 1))
    out = tmp_path / "pool"
    result = CliRunner().invoke(app, ["sbi", str(src), "--out", str(out), "--copies", "1", "--size", "64",
                                      "--splits", "train", "--lowres", "1.0"])
    assert result.exit_code == 0, result.output
    assert "2 real views, 2 self-blended, 1 fake views" in " ".join(result.output.split())
    assert len(FaceSet.load(out)) == 5
    bad = CliRunner().invoke(app, ["sbi", str(src), "--out", str(tmp_path / "x"), "--lowres", "2"])
    assert bad.exit_code == 2 and not (tmp_path / "x").exists()


def test_sbi_never_writes_into_the_face_set_it_reads(tmp_path):
    """--out the face set itself or a folder inside it (its images/) is refused before anything is written."""
    from typer.testing import CliRunner

    from dfscan.cli import app

    src = make_face_set(tmp_path, _dfdc_rows(2, 1))
    before = sorted(str(p.relative_to(src)) for p in src.rglob("*"))
    for out in (src, src / "images", src / "images" / "pool"):
        result = CliRunner().invoke(app, ["sbi", str(src), "--out", str(out), "--copies", "1", "--size", "64"])
        assert result.exit_code == 2 and "inside the face set" in result.output, result.output
    assert sorted(str(p.relative_to(src)) for p in src.rglob("*")) == before


def test_sbi_resumes_a_pool_only_with_its_own_settings(tmp_path):
    """Found by a probe: `sbi` rerun into its pool with another --copies or --seed skipped every face already
    done and said nothing, a pool of two recipes. It is refused; the same settings resume."""
    _need_landmarks()
    from typer.testing import CliRunner

    from dfscan.cli import app

    src = make_face_set(tmp_path, _dfdc_rows(2, 1))
    out = tmp_path / "pool"
    def sbi(*changed: str):
        return CliRunner().invoke(app, ["sbi", str(src), "--out", str(out), "--size", "64", "--splits", "train",
                                        *(changed or ("--copies", "1"))])

    assert sbi().exit_code == 0
    before = (out / "labels.csv").read_text()
    for changed in (("--copies", "1", "--seed", "1"), ("--copies", "2"), ("--copies", "1", "--lowres", "0.5")):
        result = sbi(*changed)
        assert result.exit_code == 2 and "made with other settings" in result.output, (changed, result.output)
    assert sbi().exit_code == 0
    assert (out / "labels.csv").read_text() == before


def test_sbi_names_each_face_it_could_not_read_and_exits_3(tmp_path):
    """Found by a probe: a face set whose images are all unreadable gave an empty pool and exit 0. Each such face
    is a line naming its file and why, and the command ends with exit 3 (some inputs unused), as extract does."""
    _need_landmarks()
    from typer.testing import CliRunner

    from dfscan.cli import app

    rows = _dfdc_rows(2, 1)
    src = make_face_set(tmp_path, rows)
    (src / "images" / rows[0]["file"]).write_bytes(b"not a jpeg")
    (src / "images" / rows[2]["file"]).unlink()
    result = CliRunner().invoke(app, ["sbi", str(src), "--out", str(tmp_path / "pool"), "--copies", "1",
                                      "--size", "64", "--splits", "train"])
    output = " ".join(result.output.split())
    assert result.exit_code == 3, result.output
    assert "1 real views, 1 self-blended, 0 fake views, 2 unreadable faces skipped" in output
    for row in (rows[0], rows[2]):
        assert f"failed: cannot read image {src / 'images' / row['file']}: " in output
    for row in rows:
        (src / "images" / row["file"]).write_bytes(b"")
    nothing = CliRunner().invoke(app, ["sbi", str(src), "--out", str(tmp_path / "none"), "--copies", "1",
                                       "--size", "64", "--splits", "train"])
    assert nothing.exit_code == 3 and "0 real views" in " ".join(nothing.output.split()), nothing.output
