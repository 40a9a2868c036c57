"""Benchmark (not a test): the cross-dataset matrix of Bondi et al. (Table I): train on one face set, test
on the val split of each other one. Rows: the training set; columns: the test set; cells: frame AUC.

    python bench/cross_dataset.py dfdc=../shared/datasets/dfdc_faces wild=/data/pool_wild \\
        --recipe bce --limit 2000 --epochs 1 --out runs/cross

Every run uses the same small budget (cached frozen stages, --limit train faces, --epochs) so the matrix
compares data, not compute. A training set may be several face sets joined with '+' (a multi-source run):
`mix=../shared/datasets/dfdc_faces+/data/pool_wild`.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sets", nargs="+", help="NAME=FACE_SET[+FACE_SET...]")
    parser.add_argument("--recipe", default="bce")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--freeze-stages", type=int, default=4)
    parser.add_argument("--limit", type=int, default=2000)
    parser.add_argument("--val-limit", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/cross_dataset"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    from dfscan.evaluate import evaluate_faceset
    from dfscan.model.scorer import Scorer
    from dfscan.train.export import export_bundle
    from dfscan.train.recipes import RecipeConfig, run_recipe

    sets = dict(item.split("=", 1) for item in args.sets)
    matrix: dict[str, dict[str, float | None]] = {}
    for train_name, train_paths in sets.items():
        run_dir = args.out / train_name
        cfg = RecipeConfig(recipe=args.recipe, dataset=train_paths.replace("+", ","), backbone=args.backbone,
                           input_size=args.input_size, epochs=args.epochs, limit=args.limit,
                           val_limit=args.val_limit, freeze_stages=args.freeze_stages, seed=args.seed,
                           augment=("flip",), progress=False, patience=args.epochs)
        best = run_recipe(cfg, run_dir, resume=True, console=lambda s: None)
        bundle = export_bundle(best, run_dir / "bundle", name=f"cross-{train_name}")
        scorer = Scorer(bundle, device="cpu")
        matrix[train_name] = {}
        for test_name, test_paths in sets.items():
            aucs = [evaluate_faceset(scorer, path, split="val").frame["auc"] for path in test_paths.split("+")]
            matrix[train_name][test_name] = round(sum(aucs) / len(aucs), 4)
        print(f"{train_name}: {json.dumps(matrix[train_name])}", flush=True)
    names = list(sets)
    print("\ntrain \\ test | " + " | ".join(names))
    for row in names:
        print(f"{row} | " + " | ".join(f"{matrix[row][col]:.3f}" for col in names))
    if args.json:
        args.json.write_text(json.dumps({"config": vars(args) | {"out": str(args.out), "json": str(args.json)},
                                         "frame_auc": matrix}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
