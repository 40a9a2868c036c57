"""`dfscan extract` and `dfscan eval`: parse options and print. The work is in `dfscan.datasets` (readers),
`dfscan.train.extract` and `dfscan.evaluate`, imported only when a command runs (no torch anywhere, sklearn only for metrics)."""
from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path
from typing import List, Optional

import typer

from dfscan.console import err, out, print_text
from dfscan.errors import EXIT_INPUT_FAILED, EXIT_SETUP, EXIT_USAGE, DfscanError



def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    from dfscan.console import fail  # noqa: PLC0415 - the one error printer

    return fail(message, code)


def default_out_dir(dataset: str, root: Path, compression: str) -> Path:
    """Where the training commands look for a dataset's faces: <root>/dfscan_faces/<dataset>[_<compression>]."""
    base = root.parent if root.is_file() else root
    name = "ff++_" + compression if dataset == "ff++" else dataset
    return base / "dfscan_faces" / name


def check_compression(compression: str) -> None:
    """A --compression that names no FaceForensics++ quality is a mistake whatever the dataset: refused, not
    ignored (other datasets have no qualities, and `train --dataset ff++` looks for the faces by it)."""
    from dfscan.datasets.ffpp import FFPP_COMPRESSIONS  # noqa: PLC0415

    if compression not in FFPP_COMPRESSIONS:
        raise _fail(f"--compression must be one of {', '.join(FFPP_COMPRESSIONS)}, not {compression!r}")


def _split_methods(methods: List[str]) -> list[str]:
    return [m.strip() for value in methods for m in value.split(",") if m.strip()]


def _limit(items: list, limit: int | None) -> list:
    """A stable, label-mixed subset: the first `limit` items in order of a hash of their video id."""
    if not limit or limit >= len(items):
        return items
    ranked = sorted(items, key=lambda i: hashlib.sha256(str(i.video or i.path).encode()).hexdigest())
    return ranked[:limit]


def _print_items(items: list) -> None:
    counts = Counter((i.split, i.label) for i in items)
    parts = [f"{s}: {counts[(s, 'real')]} real / {counts[(s, 'fake')]} fake" for s in ("train", "val", "test")]
    out.print(f"{len(items)} videos ({'; '.join(parts)})", highlight=False)


def extract_command(
    dataset: str = typer.Argument(..., help="ff++ | celebdf | dfdc | folder (real/ + fake/) | csv (path,label[,split,source])."),
    root: Path = typer.Argument(..., help="The dataset's root folder (or the CSV file)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", "-o", help="Face set directory. Default: <root>/dfscan_faces/<dataset>[_<compression>]."),
    compression: str = typer.Option("c23", "--compression", help="FaceForensics++ quality: raw | c23 | c40."),
    methods: List[str] = typer.Option([], "--methods", help="FaceForensics++ methods (repeatable or comma-separated). Default: all present."),
    frames: int = typer.Option(32, "--frames", "-n", help="Frames sampled uniformly per video."),
    size: int = typer.Option(224, "--size", help="Crop side in pixels."),
    margin: float = typer.Option(0.0, "--margin", help="Margin added to the face box's longer side, as a fraction (must match the training recipe's crop_margin)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda (face detector)."),
    max_faces: int = typer.Option(1, "--max-faces", help="Faces kept per frame, largest first; above 1, faces are linked into tracks."),
    train: float = typer.Option(0.8, "--train", help="Train fraction for datasets without an official split."),
    val: float = typer.Option(0.1, "--val", help="Validation fraction."),
    test: float = typer.Option(0.1, "--test", help="Test fraction."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Extract only this many videos (a stable mixed subset)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the videos and their splits; extract nothing."),
) -> None:
    """Extract face crops from a deepfake dataset into a face set (images/ + labels.csv); resumable."""
    from dfscan.datasets import DATASETS, check_grouping, read_dataset  # noqa: PLC0415
    from dfscan.train.extract import extract_faces  # noqa: PLC0415

    if dataset not in DATASETS:
        raise _fail(f"dataset must be one of {', '.join(DATASETS)}, not {dataset!r}")
    if not root.exists():
        raise _fail(f"{root} does not exist")
    check_compression(compression)
    if frames < 1 or not 16 <= size <= 1024 or not 0.0 <= margin <= 2.0 or max_faces < 1:
        raise _fail("need --frames >= 1, 16 <= --size <= 1024, 0 <= --margin <= 2, --max-faces >= 1")
    if limit is not None and limit < 1:
        raise _fail(f"--limit must be at least 1, not {limit}")
    if not all(0.0 <= f <= 1.0 for f in (train, val, test)) or train + val + test > 1.0 + 1e-9:
        raise _fail(f"--train, --val and --test must be fractions in [0, 1] that add up to at most 1, not "
                    f"{train}, {val}, {test}")
    try:
        items = read_dataset(dataset, root, compression, _split_methods(methods) or None, (train, val, test))
    except (ValueError, OSError) as exc:
        raise _fail(str(exc)) from None
    if not items:
        raise _fail(f"no videos found for dataset {dataset} under {root}")
    items = _limit(items, limit)
    _print_items(items)
    straddling = check_grouping(items)
    if straddling:
        err.print(f"[yellow]warning:[/] {len(straddling)} sources appear in more than one split "
                  f"(the dataset's official split), e.g. {next(iter(straddling))}", highlight=False)
    if dry_run:
        return
    target = out_dir or default_out_dir(dataset, root, compression)
    if target.exists() and not target.is_dir():
        raise _fail(f"--out {target} exists and is not a directory: a face set is a directory")
    try:
        stats = extract_faces(items, target, frames=frames, size=size, margin=margin, device=device,
                              max_faces_per_frame=max_faces)
    except DfscanError as exc:
        raise _fail(exc.message, exc.exit_code) from None
    out.print(f"{target}: {stats.faces} faces from {stats.videos} videos; {stats.skipped_done} already done, "
              f"{stats.no_face} without a face, {stats.failed} failed", highlight=False)
    end_with_failures(stats.failures)


def end_with_failures(failures: list[str]) -> None:
    """Each input a command could not use ("path: reason"), a line each; exit 3 if any, as `scan` does: the
    others were used."""
    for failure in failures:
        err.print(f"failed: {failure}", highlight=False, markup=False, soft_wrap=True)
    if failures:
        raise typer.Exit(EXIT_INPUT_FAILED)


def _is_face_set(path: Path) -> bool:
    return path.is_dir() and (path / "labels.csv").is_file()


def eval_command(
    data: Path = typer.Argument(..., help="A face set directory (labels.csv + images/), or labelled videos: a folder with real/ and fake/, or a CSV path,label."),
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Model bundle directory. Default: the bundled weights/default."),
    split: str = typer.Option("val", "--split", help="train | val | test | all."),
    threshold: Optional[str] = typer.Option(None, "--threshold", "-t", help="A value in [0,1] or an operating point of the bundle. Default: the bundle's."),
    json_out: bool = typer.Option(False, "--json", help="Print the metrics as JSON."),
    scores: Optional[Path] = typer.Option(None, "--scores", help="Write every item's id, label and score as JSONL."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda."),
    frames: Optional[int] = typer.Option(None, "--frames", "-n", help="Frames per video (videos only). Default: the bundle's."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write an HTML page with ROC, reliability diagram, Tippett plots and score histograms (and each figure as SVG) to this directory."),
    group_by: Optional[str] = typer.Option(None, "--group-by", help="A column of the labels CSV (e.g. source, dataset, domain): AUC and FPR/TPR at the bundle's operating points per value."),
    folds: int = typer.Option(5, "--lr-folds", help="Folds (grouped by source video) for the cross-validated likelihood-ratio figures."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --scores file or --report page that dfscan did not write."),
) -> None:
    """Measure a model bundle on a face set (frame and video level) or on labelled videos (full scan),
    with likelihood-ratio figures (Cllr, Cllr_min, Cllr_cal)."""
    from dfscan.datasets import read_labelled_videos  # noqa: PLC0415
    from dfscan.eval_report import add_lr_and_groups, read_group_column  # noqa: PLC0415
    from dfscan.evaluate import evaluate_faceset, evaluate_videos, render_table, write_scores_jsonl  # noqa: PLC0415
    from dfscan.model.manifest import load_manifest  # noqa: PLC0415
    from dfscan.model.scorer import default_bundle_path  # noqa: PLC0415
    from dfscan.outputs import Output, check_outputs  # noqa: PLC0415

    if not data.exists():
        raise _fail(f"{data} does not exist")
    split_arg = None if split == "all" else split
    if split_arg not in (None, "train", "val", "test"):
        raise _fail(f"--split must be train, val, test or all, not {split!r}")
    if folds < 2:
        raise _fail("--lr-folds must be at least 2")
    try:
        inputs = [data] if _is_face_set(data) else [data, *(video.path for video in read_labelled_videos(data))]
        check_outputs([Output("--scores", "scores", scores), Output("--report", "pages", report)], inputs, overwrite)
        manifest = load_manifest(model or default_bundle_path(), verify=False)
        lookup = read_group_column(data, group_by) if group_by else None
    except DfscanError as exc:
        raise _fail(exc.message, exc.exit_code) from None
    except ValueError as exc:
        raise _fail(str(exc)) from None
    try:
        if _is_face_set(data):
            from dfscan.model.scorer import Scorer  # noqa: PLC0415

            result = evaluate_faceset(Scorer(model, device=device), data, split_arg, threshold)
        else:
            result = evaluate_videos(model, data, split_arg, threshold, device=device, frames=frames)
    except DfscanError as exc:
        raise _fail(exc.message, exc.exit_code) from None
    except (ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    lrs = add_lr_and_groups(result, manifest, folds, lookup, group_by)
    groups = (result.groups or {}).get("levels")
    if scores:
        write_scores_jsonl(scores, result.items, manifest.scores_identity)
    if report:
        from dfscan.report.eval_page import write_eval_report  # noqa: PLC0415

        page = write_eval_report(report, result, lrs)
    if json_out:
        print_text(json.dumps(result.to_dict(), indent=2, allow_nan=False))
    else:
        from dfscan.eval_report import render_group_table, render_lr_table  # noqa: PLC0415

        out.print(render_table(result))
        out.print(render_lr_table(result.likelihood_ratio))
        if groups is not None:
            out.print(render_group_table(groups, group_by or ""))
        if scores:
            out.print(f"scores: {scores}", highlight=False)
        if report:
            out.print(f"report: {page}", highlight=False)
    end_with_failures([f"{item.id}: {item.reason or 'could not be scanned'}" for item in result.items
                        if item.status == "ERROR" and item.level == "video"])


def calibrate_lr_command(
    bundle: Path = typer.Argument(..., help="The model bundle directory whose manifest gets the new calibration."),
    scores: Path = typer.Option(..., "--scores", help="Scores JSONL as `dfscan eval --scores` writes it (id, label, score, level, ...)."),
    population: str = typer.Option(..., "--population", help="In words, what the scores come from (datasets, splits, kinds of footage): shown next to every LR."),
    method: str = typer.Option("logistic", "--method", help="logistic | kde (lir calibrators, with ELUB bounds)."),
    level: Optional[str] = typer.Option(None, "--level", help="frame | video. Default: video items if the file has them, else frame."),
) -> None:
    """Fit the bundle's score -> likelihood-ratio calibration on labelled scores and write it into its manifest."""
    from dfscan.likelihood import METHODS, refit_bundle  # noqa: PLC0415

    if method not in METHODS:
        raise _fail(f"--method must be one of {', '.join(METHODS)}, not {method!r}")
    if level not in (None, "frame", "video"):
        raise _fail(f"--level must be frame or video, not {level!r}")
    if not scores.is_file():
        raise _fail(f"no scores file at {scores}")
    if not population.strip():
        raise _fail("--population must say what the scores come from: it is shown next to every LR")
    try:
        entry = refit_bundle(bundle, scores, population, method, level)
    except DfscanError as exc:
        raise _fail(exc.message, exc.exit_code) from None
    except ValueError as exc:
        raise _fail(str(exc)) from None
    except RuntimeError as exc:
        raise _fail(str(exc), EXIT_SETUP) from None
    cal, fit = entry["calibration_set"], entry["fit_metrics"]
    out.print(f"{bundle}: {entry['method']} LR calibration on {cal['n_real']} real / {cal['n_fake']} fake "
              f"{entry['level']} scores; ELUB log10 bounds {entry['bounds'][0]:+.2f} to {entry['bounds'][1]:+.2f}; "
              f"Cllr {fit['cllr']:.4f} (on the fitting scores; `dfscan eval` gives cross-validated figures)",
              highlight=False)


