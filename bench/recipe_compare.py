"""Benchmark (not a test): what each recipe reaches on one face set with one small budget, over seeds.

Every recipe gets the same data (a class-balanced --limit of train faces, --val-limit val faces), the
same input size, one epoch over cached frozen stages, and the paper's optimiser where dfscan has it.
Prints a markdown table of val AUC and EER (mean and spread over seeds) and writes JSON.

    nice -n 10 python bench/recipe_compare.py --faces ../shared/datasets/dfdc_faces --out /tmp/compare
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from dfscan.train.loop import load_checkpoint
from dfscan.train.recipes import RecipeConfig, run_recipe

# recipe -> settings as its paper has them, where dfscan can (see docs/fidelity.md)
RECIPES = {
    "triplet": dict(mode="frozen", classifier="rf", margin=0.2, lr=1e-3),             # Kumar & Bhavsar
    "bce": dict(freeze_stages=6, optimizer="adam", lr=1e-4, schedule="plateau"),       # Bondi et al.
    "twostep": dict(freeze_stages=6, optimizer="adam", lr=1e-4, schedule="plateau"),   # Bondi et al.
    "multimetric": dict(freeze_stages=6, optimizer="sgd", lr=0.01, weight_decay=5e-4,  # Zhang et al.
                        schedule="step", step_every_steps=3000),
}


def eer(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_curve
    fpr, tpr, _ = roc_curve(labels, scores)
    i = int(np.nanargmin(np.abs(fpr - (1 - tpr))))
    return float((fpr[i] + 1 - tpr[i]) / 2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--limit", type=int, default=1000)
    ap.add_argument("--val-limit", type=int, default=600)
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()
    out = Path(args.out)
    rows = []
    for recipe in args.recipes:
        for seed in args.seeds:
            cfg = RecipeConfig(recipe=recipe, dataset=args.faces, input_size=args.input_size, epochs=args.epochs,
                               limit=args.limit, val_limit=args.val_limit, seed=seed, progress=False,
                               num_workers=0, aug_copies=2, cache_dir=str(out / "cache"), **RECIPES[recipe])
            t0 = time.time()
            best = run_recipe(cfg, out / f"{recipe}_s{seed}", console=lambda s: None)
            ckpt = load_checkpoint(best)
            from sklearn.metrics import roc_auc_score
            y, s = np.asarray(ckpt["val_labels"]), np.asarray(ckpt["val_scores"])
            rows.append({"recipe": recipe, "seed": seed, "auc": float(roc_auc_score(y, s)), "eer": eer(y, s),
                         "seconds": time.time() - t0, "train_images": ckpt["metrics"]["train_images"],
                         "val_images": int(len(y))})
            print(json.dumps(rows[-1]), flush=True)
    (out / "results.json").write_text(json.dumps({"args": vars(args), "runs": rows}, indent=2))
    print("| recipe | val AUC mean | spread (min-max) | EER mean | seeds |")
    print("| --- | --- | --- | --- | --- |")
    for recipe in args.recipes:
        runs = [r for r in rows if r["recipe"] == recipe]
        aucs, eers = [r["auc"] for r in runs], [r["eer"] for r in runs]
        print(f"| {recipe} | {statistics.mean(aucs):.3f} | {min(aucs):.3f}-{max(aucs):.3f} | "
              f"{statistics.mean(eers):.3f} | {len(runs)} |")


if __name__ == "__main__":
    main()
