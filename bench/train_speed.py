"""Benchmark (not a test): training images/s per recipe and backbone on this machine.

Times forward + backward + optimiser steps on random inputs, two ways: from cached frozen-stage maps
(`--freeze-stages K`, what fine-tuning on a CPU uses) and from images (K = 0). Median of --steps steps
after two warm-up steps. Data loading is not included (it is paid once, when the cache is built).

    python bench/train_speed.py                               # lite0 @128, K = 4, every recipe
    python bench/train_speed.py --backbone dlib_resnet --input-size 150 --freeze-stages 2 --json out.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from dfscan.train import loop
from dfscan.train.recipes import RECIPES, RecipeConfig, TripletObjective, build_net


def loss_for(recipe: str, net):
    if recipe == "bce":
        return lambda out, y: torch.nn.functional.binary_cross_entropy_with_logits(out[1][:, 0], y)
    if recipe in ("triplet", "twostep"):
        objective = TripletObjective(0.2, net.embed_dim)
        return lambda out, y: objective(out, y)[0]
    from dfscan.train.losses import MultiMetricLoss
    mm = MultiMetricLoss(net.embed_dim)
    return lambda out, y: mm(out[0], out[1], y.long())[0]


def time_recipe(recipe: str, backbone: str, size: int, freeze: int, batch: int, steps: int) -> float:
    cfg = RecipeConfig(recipe=recipe, dataset="", backbone=backbone, input_size=size, pretrained=False)
    net = build_net(cfg)
    net.backbone.freeze_stages(freeze)
    net.start_stage = freeze
    x = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        x = net.backbone.features_until(x, freeze)  # what the cache would hold
        if freeze >= net.backbone.num_stages:
            x = net.backbone.pool(x)
    y = torch.arange(batch) % 2
    loss_fn = loss_for(recipe, net)
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    net.train()
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        loss = loss_fn(net(x), y.float())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--input-size", type=int, default=128)
    ap.add_argument("--freeze-stages", type=int, nargs="+", default=[4, 0])
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    loop.set_threads()
    rows = []
    for freeze in args.freeze_stages:
        for recipe in args.recipes:
            ips = time_recipe(recipe, args.backbone, args.input_size, freeze, args.batch_size, args.steps)
            rows.append({"recipe": recipe, "backbone": args.backbone, "input_size": args.input_size,
                         "freeze_stages": freeze, "images_per_s": round(ips, 1), "threads": torch.get_num_threads()})
            print(f"{recipe:12s} {args.backbone} @{args.input_size} K={freeze}: {ips:7.1f} images/s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
