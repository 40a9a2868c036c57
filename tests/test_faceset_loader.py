"""One loader for face-set crops (`dfscan.faceset.load_crop`): training and `dfscan eval` see the same pixels."""
from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from bundles import make_tiny_bundle

from dfscan.evaluate import evaluate_faceset
from dfscan.faceset import FaceRecord, FaceSet, FaceSetWriter, load_crop, read_rgb

DFDC_FACES = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "dfdc_faces"
SIZE = 160
need_dfdc = pytest.mark.skipif(not (DFDC_FACES / "labels.csv").is_file(), reason="shared DFDC faces not found")


def _crops_around(size: int, per_side: int = 3) -> list[dict[str, str]]:
    """Val rows of the shared DFDC crops: `per_side` smaller than `size` (upscaled) and as many larger."""
    small, large = [], []
    with open(DFDC_FACES / "labels.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            if row["split"] != "val":
                continue
            side = max(int(row["width"]), int(row["height"]))
            bucket = small if side < size else large if side > size else None
            if bucket is not None and len(bucket) < per_side:
                bucket.append(row)
            if len(small) == len(large) == per_side:
                break
    return small + large


def _face_set(dst: Path, rows: list[dict[str, str]]) -> Path:
    with FaceSetWriter(dst) as writer:
        for row in rows:
            shutil.copyfile(DFDC_FACES / "images" / row["file"], dst / "images" / row["file"])
        writer.add_rows(FaceRecord(row["file"], row["label"], row["split"], row["source"], row["video"],
                                   int(row["width"]), int(row["height"])) for row in rows)
    return dst


@need_dfdc
def test_load_crop_shrinks_by_area_and_grows_linearly():
    for row in _crops_around(SIZE, per_side=1):
        path = DFDC_FACES / "images" / row["file"]
        original = read_rgb(path)
        grows = max(original.shape[:2]) < SIZE
        expected = cv2.resize(original, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR if grows else cv2.INTER_AREA)
        crop = load_crop(path, SIZE)
        assert crop.shape == (SIZE, SIZE, 3) and crop.dtype == np.uint8
        assert np.array_equal(crop, expected)


def test_load_crop_of_a_wide_image_shrinks_by_area_and_keeps_one_of_its_size(tmp_path):
    """Only the width is over the size: still INTER_AREA (a shrinking side decides); the right size: as stored."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (100, 300, 3), dtype=np.uint8)
    path = tmp_path / "wide.png"
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    assert np.array_equal(load_crop(path, 200), cv2.resize(image, (200, 200), interpolation=cv2.INTER_AREA))
    cv2.imwrite(str(tmp_path / "square.png"), cv2.cvtColor(image[:, :100], cv2.COLOR_RGB2BGR))
    assert np.array_equal(load_crop(tmp_path / "square.png", 100), image[:, :100])
    with pytest.raises(ValueError, match="cannot read image"):
        load_crop(tmp_path / "absent.png", 200)


@need_dfdc
def test_training_and_eval_see_the_same_pixels(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from dfscan.model.scorer import Scorer
    from dfscan.train.data import FaceDataset

    face_set_dir = _face_set(tmp_path / "faces", _crops_around(SIZE))
    scorer = Scorer(make_tiny_bundle(tmp_path / "bundle", input_size=SIZE), device="cpu", threads=1)
    shown: list[np.ndarray] = []
    score_crops = scorer.score_crops
    monkeypatch.setattr(scorer, "score_crops", lambda crops: (shown.extend(crops), score_crops(crops))[1])
    result = evaluate_faceset(scorer, face_set_dir, split="val")
    assert result.frame["n"] == 6 and len(shown) == 6

    face_set = FaceSet.load(face_set_dir)
    dataset = FaceDataset(face_set, face_set.split("val"), SIZE, mean=[0, 0, 0], std=[1, 1, 1])
    for i, crop in enumerate(shown):
        tensor, _ = dataset[i]
        trained_on = np.rint(tensor.numpy().transpose(1, 2, 0) * 255).astype(np.uint8)
        assert np.array_equal(trained_on, crop)


def test_faceset_imports_no_torch():
    code = "import sys, dfscan.faceset; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_short_or_unterminated_row_is_named(tmp_path):
    """A row with fewer fields than the header (a cut line, an unterminated quote) was an AttributeError, an
    internal error (exit 5) in eval, sbi and train: it is a ValueError naming the file and line."""
    for bad in ('abc.jpg', '"abc.jpg,real,val'):
        root = tmp_path / f"set{len(bad)}"
        (root / "images").mkdir(parents=True)
        (root / "labels.csv").write_text(f"file,label,split,source,video,width,height\na.jpg,real,val,a,a,9,9\n{bad}\n")
        with pytest.raises(ValueError, match=r"labels.csv:3: bad row \(fewer fields than the header\)"):
            FaceSet.load(root)


def test_a_labels_csv_saved_with_a_byte_order_mark_reads_as_without(tmp_path):
    """Spreadsheets save CSV with a UTF-8 byte order mark; it made the first column unknown ("lacks columns
    ['file']"). The same rows load either way."""
    plain = tmp_path / "plain"
    (plain / "images").mkdir(parents=True)
    (plain / "labels.csv").write_text("file,label,split,source,video,width,height\na.jpg,real,val,a,a,9,9\n")
    marked = tmp_path / "marked"
    shutil.copytree(plain, marked)
    (marked / "labels.csv").write_bytes(b"\xef\xbb\xbf" + (plain / "labels.csv").read_bytes())
    assert [r.file for r in FaceSet.load(marked).records] == [r.file for r in FaceSet.load(plain).records] == ["a.jpg"]


def test_an_image_that_cannot_be_read_is_one_message(tmp_path, capfd):
    """cv2.imread of a missing file printed OpenCV's warning lines before dfscan's one-line error."""
    (tmp_path / "text.jpg").write_text("not an image")
    for path, reason in ((tmp_path / "missing.jpg", "No such file"), (tmp_path / "text.jpg", "not an image")):
        with pytest.raises(ValueError, match=reason):
            read_rgb(path)
    assert capfd.readouterr().err == ""


def test_an_image_in_two_splits_or_with_two_labels_or_an_unknown_split_is_refused(tmp_path):
    """Found by a fourth probe: train and eval took an image listed in train and in val (or as real and as fake),
    and a split named bogus, which `extract csv` refuses; a row repeated as it is still loads."""
    from dfscan.faceset import FaceSet

    header = "file,label,split,source,video,width,height\n"
    (tmp_path / "images").mkdir()
    cases = ((["a.jpg,real,train,a,a,9,9", "a.jpg,real,val,a,a,9,9"], "labels.csv:3: a.jpg is also on line 2"),
             (["a.jpg,real,train,a,a,9,9", "a.jpg,fake,train,a,a,9,9"], "train/real there, train/fake here"),
             (["a.jpg,real,bogus,a,a,9,9"], "labels.csv:2: split 'bogus' is not one of"))
    for rows, said in cases:
        (tmp_path / "labels.csv").write_text(header + "\n".join(rows) + "\n")
        with pytest.raises(ValueError, match=re.escape(said)):
            FaceSet.load(tmp_path)
    (tmp_path / "labels.csv").write_text(header + "a.jpg,real,train,a,a,9,9\n" * 2)
    assert len(FaceSet.load(tmp_path)) == 2
