"""Benchmark (not a test): how good the bundle's likelihood ratios are on each labelled source, for the
model card. Scores every source with the bundle, turns the scores into LRs with the bundle's own calibrator
(`dfscan.likelihood.log10_lr`) and measures them with `dfscan.likelihood.lr_metrics` (Cllr, Cllr_min,
Cllr_cal, Cllr's class terms and the share of misleading LRs); where a source has at least 2 of each class
it also gives the cross-validated Cllr of `dfscan eval` (`dfscan.eval_report.level_log10_lrs`: a calibrator
fitted on the other folds, folds by source video), the held-out figure.

Sources (video level: the level the bundle's LR calibration is fitted on):
  - DFDC val crops (one crop per video: a crop's score is its video's score);
  - wild_clips val videos, scanned as `dfscan check` does, one row per `dataset` (else `source`) value, and
    all of them pooled;
  - the shared real clips (../shared/clips/real).

A source with one class has no Cllr (it needs both); its row gives that class's term of Cllr instead:
the mean of log2(1 + LR) over genuine videos (0: every LR far below 1; 1 bit: LR = 1 throughout; more:
LRs misleading towards "manipulated"), or of log2(1 + 1/LR) over manipulated ones.

    python bench/cllr_sources.py --model weights/default
    python bench/cllr_sources.py --json runs/cllr_sources.json --scores runs/cllr_scores.jsonl
    python bench/cllr_sources.py --dfdc-limit 400 --frames 8        # a quick look
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
LEVEL = "video"


def dfdc_items(scorer: Any, face_set: Path, limit: int | None) -> list[Any]:
    """Video-level items of the DFDC val crops (every crop, or the first `limit` of each label)."""
    from dfscan.evaluate import evaluate_faceset  # noqa: PLC0415

    if limit:
        face_set = _limited_face_set(face_set, limit)
    result = evaluate_faceset(scorer, face_set, split="val")
    return [i for i in result.items if i.level == LEVEL]


def _limited_face_set(face_set: Path, limit: int) -> Path:
    """A temporary labels.csv with the first `limit` val rows of each label; images stay where they are."""
    import csv  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    out = Path(tempfile.mkdtemp(prefix="cllr_dfdc_"))
    kept: dict[str, int] = defaultdict(int)
    with open(face_set / "labels.csv", newline="") as src, open(out / "labels.csv", "w", newline="") as dst:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(dst, fieldnames=reader.fieldnames or [])
        writer.writeheader()
        for row in reader:
            if row["split"] == "val" and kept[row["label"]] < limit:
                kept[row["label"]] += 1
                writer.writerow(row)
    (out / "images").symlink_to((face_set / "images").resolve())
    return out


def video_items(model: Path, videos: Path, split: str | None, frames: int | None) -> list[Any]:
    """Video-level items of labelled videos (a labels CSV or a real/ + fake/ folder), scanned as
    `dfscan check` does; NO_FACE and ERROR videos have score None."""
    from dfscan.evaluate import evaluate_videos  # noqa: PLC0415

    result = evaluate_videos(model, videos, split=split, device="cpu", frames=frames)
    return [i for i in result.items if i.level == LEVEL]


def wild_groups(items: Sequence[Any], labels_csv: Path, column: str) -> dict[str, list[Any]]:
    """Items by the labels CSV's `column`, falling back to `source` where it is empty."""
    from dfscan.eval_report import read_group_column  # noqa: PLC0415

    by_column = read_group_column(labels_csv, column)
    by_source = read_group_column(labels_csv, "source")
    groups: dict[str, list[Any]] = defaultdict(list)
    for item in items:
        value = by_column.get(item.id, "(empty)")
        groups[value if value != "(empty)" else by_source.get(item.id, item.id)].append(item)
    return dict(sorted(groups.items()))


def source_figures(name: str, items: Sequence[Any], bundle_lr: dict[str, Any], folds: int,
                   in_calibration_set: bool) -> dict[str, Any]:
    """The LR figures of one source: the bundle's LRs, and cross-validated ones where the source allows."""
    from dfscan.eval_report import level_log10_lrs, lr_summary  # noqa: PLC0415

    scored = [i for i in items if i.score is not None]
    row: dict[str, Any] = {"source": name, "videos": len(items), "unscored": len(items) - len(scored),
                           "in_calibration_set": in_calibration_set}
    if not scored:
        return {**row, "bundle": None, "cross_validated": None, "notes": ["no scored video"]}
    summary = lr_summary({LEVEL: level_log10_lrs(scored, LEVEL, bundle_lr, folds)}, bundle_lr, folds)[LEVEL]
    return {**row, "bundle": summary.get("bundle"), "cross_validated": summary.get("cross_validated"),
            "notes": [n for n in summary["notes"] if not n.startswith("bundle: ")]}


# --- printing ---------------------------------------------------------------------------------------------

def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def markdown_table(rows: Sequence[dict[str, Any]], bundle_lr: dict[str, Any]) -> str:
    from dfscan.likelihood import describe_population  # noqa: PLC0415

    header = ("| source | real / fake videos | LR calibration data | Cllr | Cllr_min | Cllr_cal | Cllr real term "
              "| Cllr fake term | misleading LRs (real / fake) | cross-validated Cllr / Cllr_min / Cllr_cal |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    one_class = False
    for row in rows:
        b = row["bundle"] or {}
        cv = row["cross_validated"]
        if b and b.get("cllr") is None:
            one_class = True
        cllr = _num(b.get("cllr")) if b.get("cllr") is not None else "n/a (one class)*" if b else "-"
        unscored = f" (+{row['unscored']} unscored)" if row["unscored"] else ""
        counts = f"{b.get('n_real', 0)} / {b.get('n_fake', 0)}{unscored}"
        cv_text = (f"{_num(cv['cllr'])} / {_num(cv['cllr_min'])} / {_num(cv['cllr_cal'])}" if cv else "-")
        in_calibration = "yes" if row["in_calibration_set"] else "no"
        lines.append(f"| {row['source']} | {counts} | {in_calibration} | {cllr} | {_num(b.get('cllr_min'))} "
                     f"| {_num(b.get('cllr_cal'))} "
                     f"| {_num(b.get('cost_real'))} | {_num(b.get('cost_fake'))} "
                     f"| {_pct(b.get('misleading_real'))} / {_pct(b.get('misleading_fake'))} | {cv_text} |")
    notes = [f"LRs from the bundle's calibrator ({bundle_lr.get('method')}, ELUB log10 bounds "
             f"{bundle_lr['bounds'][0]:+.2f}..{bundle_lr['bounds'][1]:+.2f}), calibrated on: "
             f"{describe_population(bundle_lr)}. Cllr in bits (0 perfect, 1 = always LR 1); Cllr_min after the best "
             "monotone re-mapping on the source itself; Cllr_cal = Cllr - Cllr_min. LR calibration data yes: the "
             "calibrator was fitted on these very scores, so its Cllr there is not held out; the cross-validated "
             "figure is (a calibrator fitted on the other folds, folds by source video; only where a source has "
             "2+ videos of each class).",
             "Cllr real term: mean log2(1 + LR) over the genuine videos; fake term: mean log2(1 + 1/LR) over the "
             "manipulated ones (Cllr is their mean). Misleading: share of genuine videos with LR > 1, of "
             "manipulated ones with LR < 1."]
    if one_class:
        notes.append("*Cllr needs both genuine and manipulated videos; a one-class source gives only its class's "
                     "term of Cllr (1 bit = no better than LR 1, above 1 = misleading on average).")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="bundle (default: the shipped one)")
    parser.add_argument("--dfdc", type=Path, default=SHARED / "datasets" / "dfdc_faces")
    parser.add_argument("--wild", type=Path, default=SHARED / "datasets" / "wild_clips" / "labels.csv")
    parser.add_argument("--clips", type=Path, default=SHARED / "clips",
                        help="a folder with real/ (and fake/) videos (default: the shared clips)")
    parser.add_argument("--wild-group", default="dataset", help="wild_clips column to group by (empty: source)")
    parser.add_argument("--calibrated-on", default="dfdc,wild",
                        help="sources the bundle's LR calibrator was fitted on, marked in the table (dfdc, wild, clips)")
    parser.add_argument("--dfdc-limit", type=int, default=None, help="first N val crops of each label only")
    parser.add_argument("--frames", type=int, default=None, help="frames per video (default: the bundle's)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--json", type=Path, default=None, help="write the figures as JSON here")
    parser.add_argument("--scores", type=Path, default=None, help="write every scored item (JSONL) here")
    args = parser.parse_args(argv)

    from dfscan.evaluate import write_scores_jsonl  # noqa: PLC0415
    from dfscan.model.scorer import Scorer, default_bundle_path  # noqa: PLC0415

    model = args.model or default_bundle_path()
    scorer = Scorer(model, device="cpu")
    bundle_lr = scorer.manifest.likelihood_ratio
    if bundle_lr is None:
        print(f"{model} has no likelihood-ratio calibration: nothing to measure", file=sys.stderr)
        return 2
    calibrated_on = {s.strip() for s in args.calibrated_on.split(",") if s.strip()}
    started = time.perf_counter()
    sources: list[tuple[str, str, list[Any]]] = []   # (kind, name, items)
    if (args.dfdc / "labels.csv").is_file():
        sources.append(("dfdc", "DFDC val crops", dfdc_items(scorer, args.dfdc, args.dfdc_limit)))
    if args.wild.is_file():
        wild = video_items(model, args.wild, "val", args.frames)
        sources += [("wild", f"wild_clips val: {name}", members)
                    for name, members in wild_groups(wild, args.wild, args.wild_group).items()]
        sources.append(("wild", "wild_clips val videos, all", wild))
    if args.clips.is_dir():
        sources.append(("clips", f"shared clips ({args.clips.name}/)", video_items(model, args.clips, None, args.frames)))
    rows = [source_figures(name, items, bundle_lr, args.folds, kind in calibrated_on) for kind, name, items in sources]
    elapsed = time.perf_counter() - started

    print(markdown_table(rows, bundle_lr))
    print(f"\n({model}, {scorer.manifest.name} {scorer.manifest.version}; {elapsed:.0f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": str(model), "name": scorer.manifest.name,
                                         "version": scorer.manifest.version, "level": LEVEL, "folds": args.folds,
                                         "frames": args.frames, "dfdc_limit": args.dfdc_limit,
                                         "calibration_set": bundle_lr.get("calibration_set"),
                                         "bounds_log10": bundle_lr.get("bounds"), "sources": rows}, indent=2) + "\n")
    if args.scores:
        unique = {id(item): item for _, _, items in sources for item in items}   # the pooled row repeats items
        write_scores_jsonl(args.scores, list(unique.values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
