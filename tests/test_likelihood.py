"""Likelihood ratios: fitting with lir (ELUB bounds), applying in numpy, Cllr, the verbal scale, the manifest
entry, LRs on scanned videos and tracks (JSON, CSV, table, HTML) and `dfscan eval`'s LR figures and report."""
from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import dfscan
from dfscan import likelihood
from dfscan.cli import app
from dfscan.errors import ModelError
from dfscan.model.manifest import load_manifest
from dfscan.outputs import SVG_MARKER
from dfscan.report.eval_page import FIGURES

HAS_LIR = importlib.util.find_spec("lir") is not None
needs_lir = pytest.mark.skipif(not HAS_LIR, reason="lir not installed (the [train] extra, Python >= 3.11)")
DFDC_FACES = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "dfdc_faces"
runner = CliRunner()


def overlapping_scores(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fake probabilities of two overlapping classes: logits N(-1.5, 1.2) for real, N(1.5, 1.2) for fake."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n // 2, int), np.ones(n // 2, int)]
    logits = np.where(labels == 1, 1.5, -1.5) + rng.normal(0, 1.2, n)
    return 1 / (1 + np.exp(-logits)), labels


# --- Cllr ---------------------------------------------------------------------------------------------------

def test_cllr_of_neutral_and_perfect_systems():
    labels = np.array([0, 0, 1, 1])
    assert likelihood.cllr(np.zeros(4), labels) == pytest.approx(1.0)      # always LR = 1: one bit
    assert likelihood.cllr(np.array([-9, -9, 9, 9.0]), labels) < 1e-8
    assert likelihood.cllr(np.array([9, 9, -9, -9.0]), labels) > 29          # confidently wrong
    assert likelihood.cllr(np.zeros(3), np.array([0, 0, 0])) is None
    # PAV: perfectly separated scores have Cllr_min 0 whatever their scale
    m = likelihood.lr_metrics(np.array([-0.1, -0.05, 0.05, 0.1]), labels)
    assert m["cllr_min"] == pytest.approx(0.0) and m["cllr"] > 0.8 and m["cllr_cal"] == pytest.approx(m["cllr"])


def test_one_class_sets_keep_their_cost_term():
    """A source of genuine videos only has no Cllr, but its term of it: log2(1 + LR) averaged, 1 bit for
    LR = 1, 0 for LR -> 0, log2(11) for LR = 10; and the share of its LRs that mislead (LR > 1)."""
    reals = likelihood.lr_metrics(np.array([0.0, -9.0, 1.0, -1.0]), np.zeros(4, int))
    assert reals["cllr"] is None and reals["cllr_min"] is None and reals["cost_fake"] is None
    assert reals["cost_real"] == pytest.approx((1.0 + 0.0 + math.log2(11) + math.log2(1.1)) / 4, abs=1e-6)
    assert reals["misleading_real"] == pytest.approx(0.25) and reals["n_real"] == 4 and reals["n_fake"] == 0
    fakes = likelihood.lr_metrics(np.array([2.0, -1.0]), np.ones(2, int))
    assert fakes["cost_fake"] == pytest.approx((math.log2(1.01) + math.log2(11)) / 2) and fakes["misleading_fake"] == 0.5
    # with both classes, Cllr is the mean of the two terms
    both = likelihood.lr_metrics(np.array([0.0, -9.0, 1.0, -1.0, 2.0, -1.0]), np.array([0, 0, 0, 0, 1, 1]))
    assert both["cllr"] == pytest.approx((reals["cost_real"] + fakes["cost_fake"]) / 2)


@needs_lir
def test_cllr_and_cllr_min_match_lir():
    from lir.data.models import LLRData
    from lir.metrics import cllr, cllr_min

    scores, labels = overlapping_scores(600, seed=3)
    log10 = np.round(np.log10(scores / (1 - scores)) * 0.8 + 0.2, 2)  # ties on purpose
    data = LLRData(features=log10, labels=labels)
    assert likelihood.cllr(log10, labels) == pytest.approx(cllr(data), abs=1e-12)
    assert likelihood.lr_metrics(log10, labels)["cllr_min"] == pytest.approx(cllr_min(data), abs=1e-9)


# --- fitting and applying -----------------------------------------------------------------------------------

@needs_lir
@pytest.mark.parametrize("method", likelihood.METHODS)
def test_fit_gives_monotone_bounded_lrs(method):
    scores, labels = overlapping_scores()
    entry = likelihood.fit_lr_calibration(scores, labels, "synthetic overlapping classes", method=method)
    json.dumps(entry, allow_nan=False)  # plain numbers only
    low, high = entry["bounds"]
    # ELUB can never exceed what the counts support: log10(n + 1) of the other class
    assert -math.log10(201) <= low < 0 < high <= math.log10(201)
    grid = np.linspace(0.001, 0.999, 500)
    values = likelihood.log10_lr(grid, entry)
    assert values.min() == pytest.approx(low) and values.max() == pytest.approx(high)
    if method == "logistic":
        assert np.all(np.diff(values) >= 0)
    assert entry["calibration_set"] == {"population": "synthetic overlapping classes", "n_real": 200, "n_fake": 200}
    assert entry["fit_metrics"]["cllr"] < 0.6


@needs_lir
def test_logistic_application_equals_lir_transform():
    from lir.algorithms.logistic_regression import LogitCalibrator

    scores, labels = overlapping_scores(seed=5)
    entry = likelihood.fit_lr_calibration(scores, labels, "synthetic")
    x = np.log(scores / (1 - scores))
    reference = np.clip(LogitCalibrator().fit(x, labels).transform(x), *entry["bounds"])
    assert np.allclose(likelihood.log10_lr(scores, entry), reference, atol=1e-9)


@needs_lir
def test_cross_validation_never_uses_an_items_own_group():
    scores, labels = overlapping_scores(200, seed=7)
    groups = [f"g{i // 2}" for i in range(200)]
    cv = likelihood.cross_validated_log10_lr(scores, labels, groups, folds=4)
    # fold by fold by hand: fitted without the fold, applied to it
    fold = np.array([likelihood.fold_of(g, 4) for g in groups])
    held = fold == 2
    entry = likelihood.fit_lr_calibration(scores[~held], labels[~held], "x")
    assert np.allclose(cv[held], likelihood.log10_lr(scores[held], entry))
    assert len(set(fold)) == 4


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError):
        likelihood.fit_lr_calibration([0.1, 0.9, 0.2], [0, 1, 0], "x")           # fewer than 2 of a class
    with pytest.raises(ValueError):
        likelihood.fit_lr_calibration([0.1, 1.9, 0.2, 0.8], [0, 1, 0, 1], "x")   # not probabilities


# --- the verbal scale and the record -------------------------------------------------------------------------

@pytest.mark.parametrize("lr, words", [
    (1.0, "neutral"), (5, "weak support for manipulated"), (50, "moderate support for manipulated"),
    (500, "moderately strong support for manipulated"), (5e3, "strong support for manipulated"),
    (5e5, "very strong support for manipulated"), (1e7, "extremely strong support for manipulated"),
    (1 / 5, "weak support for genuine"), (1 / 50, "moderate support for genuine"),
    (1 / 2e4, "very strong support for genuine"),
])
def test_enfsi_verbal_scale(lr, words):
    assert likelihood.verbal(math.log10(lr)).startswith(words)


def test_record_without_calibration_or_score_says_why():
    entry = {"method": "logistic", "feature": "logit", "params": {"slope": 0.5, "intercept": 0.0},
             "bounds": [-1.0, 2.0], "level": "video",
             "calibration_set": {"population": "test clips", "n_real": 9, "n_fake": 99}}
    record = likelihood.likelihood_ratio(0.999, entry)
    assert record["lr"] == pytest.approx(100.0) and record["at_bound"] is True       # capped at ELUB
    assert record["bounds"] == [0.1, 100.0] and "test clips" in record["calibration_set"]
    low = likelihood.likelihood_ratio(0.2, entry)
    assert low["log10"] == pytest.approx(0.5 * math.log(0.25), abs=1e-4) and "genuine" in low["verbal"]
    assert likelihood.likelihood_ratio(0.9, None)["lr"] is None
    assert "calibrate-lr" in likelihood.likelihood_ratio(0.9, None)["reason"]
    assert likelihood.likelihood_ratio(None, entry, reason="too short")["reason"] == "too short"
    assert likelihood.format_lr(155.2) == "155" and likelihood.format_lr(1 / 43) == "1/43"


# --- bundles, scans and outputs ------------------------------------------------------------------------------

def _scores_file(path: Path, scores: np.ndarray, labels: np.ndarray, level: str = "video") -> Path:
    with open(path, "w") as fh:
        for i, (s, y) in enumerate(zip(scores, labels)):
            fh.write(json.dumps({"id": f"v{i}", "label": "fake" if y else "real", "score": float(s),
                                 "level": level, "video": f"v{i}", "status": "ok"}) + "\n")
    return path


@pytest.fixture(scope="module")
def lr_bundle(bundles, tmp_path_factory) -> Path:
    """The all-fake tiny bundle with an LR calibration fitted by `dfscan calibrate-lr`."""
    if not HAS_LIR:
        pytest.skip("lir not installed")
    root = tmp_path_factory.mktemp("lr")
    bundle = root / "bundle"
    shutil.copytree(bundles["all_fake"], bundle)
    scores, labels = overlapping_scores()
    result = runner.invoke(app, ["calibrate-lr", str(bundle), "--scores", str(_scores_file(root / "s.jsonl", scores, labels)),
                                 "--population", "synthetic test scores"])
    assert result.exit_code == 0, result.output
    return bundle


def test_calibrate_lr_that_cannot_write_leaves_the_manifest_whole(lr_bundle, tmp_path, monkeypatch):
    """The manifest is replaced whole or not at all: a disk that fills up as it is written is one line naming
    the file (exit 4), and the bundle still loads with its earlier calibration."""
    import errno
    import os

    import dfscan.outputs

    bundle = shutil.copytree(lr_bundle, tmp_path / "bundle")
    before = (bundle / "manifest.json").read_bytes()
    scores, labels = overlapping_scores()

    def disk_full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(dfscan.outputs.os, "replace", disk_full)
    result = runner.invoke(app, ["calibrate-lr", str(bundle), "--scores", str(_scores_file(tmp_path / "s.jsonl", scores, labels)),
                                 "--population", "another population"])
    assert result.exit_code == 4 and "manifest.json" in result.output and len(result.output.strip().splitlines()) == 1
    assert (bundle / "manifest.json").read_bytes() == before
    assert sorted(f.name for f in bundle.iterdir()) == sorted(f.name for f in lr_bundle.iterdir())  # no temp file
    assert load_manifest(bundle).likelihood_ratio["calibration_set"]["population"] == "synthetic test scores"


def test_manifest_entry_is_checked_and_old_bundles_still_load(lr_bundle, bundles, tmp_path):
    assert load_manifest(bundles["neutral"]).likelihood_ratio is None
    entry = load_manifest(lr_bundle).likelihood_ratio
    assert entry["level"] == "video" and entry["calibration_set"]["n_real"] == 200
    broken = tmp_path / "broken"
    shutil.copytree(lr_bundle, broken)
    data = json.loads((broken / "manifest.json").read_text())
    data["likelihood_ratio"]["bounds"] = [1.0, 2.0]   # a lower bound above LR 1 is nonsense
    (broken / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ModelError, match="bounds"):
        load_manifest(broken)


def test_check_json_has_an_lr_for_the_video_and_each_track(lr_bundle, face_video, blank_video, tmp_path):
    result = runner.invoke(app, ["check", str(face_video), "--model", str(lr_bundle), "--json"])
    data = json.loads(result.stdout)
    record = data["likelihood_ratio"]
    assert data["label"] == "FAKE" and record["lr"] > 1 and record["log10"] == pytest.approx(math.log10(record["lr"]), abs=1e-3)
    assert record["verbal"].endswith("manipulated rather than genuine") and "synthetic test scores" in record["calibration_set"]
    lo, hi = record["bounds"]
    assert lo < 1 < hi and record["lr"] <= hi * 1.0001
    assert all(t["likelihood_ratio"]["lr"] is not None for t in data["tracks"] if t["score"] is not None)
    # NO_FACE and ERROR: none, with the reason
    blank = json.loads(runner.invoke(app, ["check", str(blank_video), "--model", str(lr_bundle), "--json"]).stdout)
    assert blank["label"] == "NO_FACE" and blank["likelihood_ratio"]["lr"] is None
    assert "NO_FACE" in blank["likelihood_ratio"]["reason"]
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    error = json.loads(runner.invoke(app, ["check", str(bad), "--model", str(lr_bundle), "--json"]).stdout)
    assert error["label"] == "ERROR" and "could not be scanned" in error["likelihood_ratio"]["reason"]
    # the table has a line for it
    from rich.console import Console

    from dfscan.report.table import video_panel

    console = Console(record=True, width=200)
    console.print(video_panel(dfscan.scan_video(face_video, model=lr_bundle)))
    text = console.export_text()
    assert "likelihood ratio" in text and "support for manipulated rather than genuine" in text
    assert "LR calibrated on: synthetic test scores" in text


def test_old_bundle_scans_and_says_why_there_is_no_lr(bundles, face_video):
    result = dfscan.scan_video(face_video, model=bundles["neutral"])
    assert result.label in ("FAKE", "REAL") and result.likelihood_ratio["lr"] is None
    assert "no likelihood-ratio calibration" in result.likelihood_ratio["reason"]
    assert result.csv_row()["lr"] == "" and result.csv_row()["log10_lr"] == ""


def test_csv_columns_at_the_end_and_resume_of_an_old_csv(lr_bundle, face_video, tmp_path):
    from dfscan.report.writers import CsvWriter
    from dfscan.results import CSV_COLUMNS

    assert CSV_COLUMNS[-2:] == ("lr", "log10_lr")
    result = dfscan.scan_video(face_video, model=lr_bundle)
    row = result.csv_row()
    assert float(row["lr"]) == pytest.approx(result.likelihood_ratio["lr"], rel=1e-5)
    # a CSV an older dfscan began (no LR columns) keeps its header, and appended rows line up with it
    old_columns = list(CSV_COLUMNS[:-2])
    path = tmp_path / "old.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=old_columns)
        writer.writeheader()
        writer.writerow({c: row[c] for c in old_columns} | {"path": "earlier.mp4"})
    resumed = CsvWriter(path, resume=True)
    assert resumed.done_paths() == {"earlier.mp4"}
    resumed.write(result)
    resumed.close()
    rows = list(csv.DictReader(open(path, newline="")))
    assert [r["path"] for r in rows] == ["earlier.mp4", result.path] and all(None not in r for r in rows)
    fresh = tmp_path / "new.csv"
    writer = CsvWriter(fresh)
    writer.write(result)
    writer.close()
    assert list(csv.DictReader(open(fresh, newline="")))[0]["log10_lr"] == row["log10_lr"]


def test_html_report_explains_the_lr(lr_bundle, bundles, face_video, tmp_path):
    from dfscan.report.html import write_video_report

    page = write_video_report(dfscan.scan_video(face_video, model=lr_bundle), tmp_path / "r.html").read_text()
    assert "likelihood ratio" in page and "not the probability that the video is fake" in page
    assert "synthetic test scores" in page and "ELUB" in page
    old = write_video_report(dfscan.scan_video(face_video, model=bundles["neutral"]), tmp_path / "o.html").read_text()
    assert "No likelihood ratio: the model bundle has no likelihood-ratio calibration" in old


# --- dfscan eval -------------------------------------------------------------------------------------------------

def _mini_face_set(dst: Path, per_label: int) -> Path:
    """Real DFDC val crops, with an extra labels column `domain` (first half 'a', second half 'b')."""
    (dst / "images").mkdir(parents=True)
    chosen: dict[str, list[dict]] = {"real": [], "fake": []}
    with open(DFDC_FACES / "labels.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        for row in reader:
            if row["split"] == "val" and len(chosen[row["label"]]) < per_label:
                chosen[row["label"]].append(row)
    rows = chosen["real"] + chosen["fake"]
    with open(dst / "labels.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[*rows[0].keys(), "domain"])
        writer.writeheader()
        for n, row in enumerate(rows):
            shutil.copyfile(DFDC_FACES / "images" / row["file"], dst / "images" / row["file"])
            writer.writerow({**row, "domain": "a" if n % per_label < per_label // 2 else "b"})
    return dst


@needs_lir
@pytest.mark.skipif(not (DFDC_FACES / "labels.csv").is_file(), reason=f"shared DFDC faces not found at {DFDC_FACES}")
def test_eval_reports_cllr_groups_and_a_self_contained_page(lr_bundle, tmp_path):
    face_set = _mini_face_set(tmp_path / "faces", per_label=12)
    report = tmp_path / "report"
    args = ["eval", str(face_set), "--model", str(lr_bundle), "--device", "cpu", "--json",
            "--report", str(report), "--group-by", "domain", "--lr-folds", "3", "--scores", str(tmp_path / "s.jsonl")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    lr = data["likelihood_ratio"]
    for level in ("frame", "video"):
        for kind in ("cross_validated", "bundle"):
            m = lr[level][kind]
            assert (m["n_real"], m["n_fake"]) == (12, 12)
            assert m["cllr_cal"] == pytest.approx(m["cllr"] - m["cllr_min"]) and m["cllr_min"] <= m["cllr"] + 1e-12
    # the all-fake bundle's LRs are all at the upper bound: no discrimination, a costly miscalibration
    assert lr["frame"]["bundle"]["cllr"] > 1.0
    groups = data["groups"]["levels"]["frame"]
    assert set(groups) == {"a", "b"} and groups["a"]["n"] == 12 and groups["a"]["n_real"] == 6
    assert groups["a"]["at"]["balanced"] == {"fpr": 1.0, "tpr": 1.0}   # everything is called fake
    page = (report / "index.html").read_text()
    assert not re.search(r"(https?|ftp|wss?):|//[a-z0-9]|url\(|@import|<script|<link", page, re.I)
    assert sorted(p.stem for p in report.glob("*.svg")) == sorted(FIGURES)
    for figure in FIGURES:
        svg = (report / f"{figure}.svg").read_text()
        assert svg.startswith(SVG_MARKER + "\n<svg xmlns=") and "<polyline" in svg or "<rect" in svg
    (report / "index.html").unlink()  # its own figures, without their page, are still dfscan's to replace
    assert runner.invoke(app, args[:-2]).exit_code == 0 and (report / "index.html").is_file()
    assert "Cllr" in page and "per domain" in page.lower()
    # the scores file refits the calibration (frame level on request)
    copy = shutil.copytree(lr_bundle, tmp_path / "refit")
    refit = runner.invoke(app, ["calibrate-lr", str(copy), "--scores", str(tmp_path / "s.jsonl"),
                                "--population", "12+12 DFDC val crops", "--level", "frame"])
    assert refit.exit_code == 0, refit.output
    entry = load_manifest(copy).likelihood_ratio
    assert entry["level"] == "frame" and entry["calibration_set"]["n_fake"] == 12
    # found by a fourth probe: another model's scores (or one file twice) refitted a bundle's calibration silently
    assert json.loads((tmp_path / "s.jsonl").read_text().splitlines()[0])["model"] == load_manifest(copy).scores_identity
    other = shutil.copytree(lr_bundle, tmp_path / "other")
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["version"] = "another"
    (other / "manifest.json").write_text(json.dumps(manifest))
    kept = (other / "manifest.json").read_bytes()
    refused = runner.invoke(app, ["calibrate-lr", str(other), "--scores", str(tmp_path / "s.jsonl"),
                                  "--population", "x", "--level", "frame"])
    assert refused.exit_code == 2 and "s.jsonl:1: scored by " in refused.output, refused.output
    twice = tmp_path / "twice.jsonl"
    twice.write_text((tmp_path / "s.jsonl").read_text() * 2)
    refused = runner.invoke(app, ["calibrate-lr", str(copy), "--scores", str(twice), "--population", "x"])
    lines = len((tmp_path / "s.jsonl").read_text().splitlines())
    assert refused.exit_code == 2 and f"twice.jsonl:{lines + 1}: repeats line 1" in refused.output, refused.output
    assert (other / "manifest.json").read_bytes() == kept
    missing = runner.invoke(app, ["eval", str(face_set), "--model", str(lr_bundle), "--group-by", "nope"])
    assert missing.exit_code == 2 and "nope" in missing.output


def test_scanning_with_an_lr_bundle_imports_no_lir_sklearn_or_torch(lr_bundle, face_video):
    import subprocess
    import sys

    code = ("import sys, dfscan\n"
            f"r = dfscan.scan_video({str(face_video)!r}, model={str(lr_bundle)!r})\n"
            "assert r.likelihood_ratio['lr'] is not None, r.likelihood_ratio\n"
            "heavy = sorted(m for m in ('lir', 'sklearn', 'torch', 'scipy') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr


# --- bench/cllr_sources.py -------------------------------------------------------------------------------------

def _bench_module(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@needs_lir
@pytest.mark.skipif(not (DFDC_FACES / "labels.csv").is_file(), reason=f"shared DFDC faces not found at {DFDC_FACES}")
def test_per_source_cllr_table(lr_bundle, real_clips, tmp_path, capsys):
    """DFDC val crops (both classes: Cllr, and cross-validated) and a folder of one shared real clip (one
    class: no Cllr, its real term, which agrees with the LR `dfscan check` gives that clip)."""
    clips = tmp_path / "clips"
    (clips / "real").mkdir(parents=True)
    (clips / "real" / "talking_d0.mp4").symlink_to(real_clips / "talking_d0.mp4")
    out = tmp_path / "cllr.json"
    code = _bench_module("cllr_sources").main(
        ["--model", str(lr_bundle), "--dfdc-limit", "8", "--wild", str(tmp_path / "none.csv"), "--clips", str(clips),
         "--frames", "4", "--folds", "2", "--calibrated-on", "dfdc", "--json", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    rows = {row["source"]: row for row in json.loads(out.read_text())["sources"]}
    dfdc, clip = rows["DFDC val crops"], rows["shared clips (clips/)"]
    assert (dfdc["bundle"]["n_real"], dfdc["bundle"]["n_fake"]) == (8, 8) and dfdc["in_calibration_set"]
    assert 0 <= dfdc["bundle"]["cllr_min"] <= dfdc["bundle"]["cllr"]
    assert dfdc["cross_validated"]["n_real"] == 8 and dfdc["cross_validated"]["cllr"] is not None
    assert clip["bundle"]["cllr"] is None and clip["bundle"]["cost_fake"] is None and not clip["in_calibration_set"]
    lr = dfscan.scan_video(clips / "real" / "talking_d0.mp4", model=lr_bundle, frames=4).likelihood_ratio["lr"]
    assert clip["bundle"]["cost_real"] == pytest.approx(math.log2(1 + lr), rel=1e-3)
    assert "| DFDC val crops | 8 / 8 | yes |" in table and "| shared clips (clips/) | 1 / 0 | no | n/a (one class)* |" in table


@pytest.mark.parametrize("line", ['[1, 2, 3]', '"text"', '{"id": "a", "label": "real", "score": "0.5"}',
                                  '{"id": "a", "label": "real", "score": true}', '{"id": "a", "label": "real", "score": [0.3]}'])
def test_a_scores_line_that_is_not_a_scored_item_is_named(tmp_path, line):
    """Found by a probe: a list or a string was an internal error (exit 5); a score given as a string or a
    boolean was taken as a number. Each is one line naming the file and line."""
    path = tmp_path / "s.jsonl"
    path.write_text('{"id": "b", "label": "fake", "score": 0.9}\n' + line + "\n")
    with pytest.raises(ValueError, match=r"s.jsonl:2: not a scored item"):
        likelihood.read_scores(path)


@needs_lir
@pytest.mark.skipif(not (DFDC_FACES / "labels.csv").is_file(), reason=f"shared DFDC faces not found at {DFDC_FACES}")
def test_eval_report_overwrite_replaces_links_never_the_files_they_name(lr_bundle, tmp_path):
    """Found by a third probe: `eval --report DIR --overwrite` wrote the page through DIR/index.html when it was a
    link (or a hard link) to a video, and the video became the page."""
    face_set = _mini_face_set(tmp_path / "faces", per_label=6)
    video = tmp_path / "video.mp4"
    video.write_bytes(b"a video's bytes")
    for make_link in (os.symlink, os.link):
        report = tmp_path / f"report_{make_link.__name__}"
        report.mkdir()
        make_link(video, report / "index.html")
        args = ["eval", str(face_set), "--model", str(lr_bundle), "--device", "cpu", "--report", str(report)]
        assert runner.invoke(app, args).exit_code == 2  # not an earlier page: refused without --overwrite
        assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0
        assert video.read_bytes() == b"a video's bytes" and not (report / "index.html").is_symlink()
        assert "dfscan eval" in (report / "index.html").read_text()
