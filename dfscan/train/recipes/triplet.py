"""Kumar & Bhavsar 2020: semi-hard online triplet loss on L2-normalised embeddings, then a Random
Forest / SGD (or logistic-regression) classifier on them. `--mode frozen`: the backbone frozen, its
pooled features cached once, only a projection trained (their FaceNet setting); `--mode finetune`: the
stages after `--freeze-stages` train too."""
from __future__ import annotations

from typing import Any

import numpy as np

from dfscan.train.recipes.registry import AT_LEAST_1, POSITIVE, NetShape, Option, RecipeSpec

SPEC = RecipeSpec(
    name="triplet",
    summary="Kumar & Bhavsar: semi-hard triplet loss on L2-normalised embeddings, then RF/SGD/logreg.",
    paper="Kumar & Bhavsar 2020",
    net=NetShape(proj=True, normalize=True),
    head="sklearn",
    options=(
        Option("mode", "--mode", str, "finetune",
               "frozen (cache backbone features, train a projection) | finetune.", ("frozen", "finetune")),
        Option("classifier", "--classifier", str, "logreg", "rf | sgd | logreg, fit on the learned embeddings.",
               ("rf", "sgd", "logreg")),
        Option("margin", "--margin", float, 0.2, "Triplet margin (L2-normalised embeddings).", valid=POSITIVE),
        Option("proj_dim", "--embed-dim", int, 128, "Embedding size (projection after the backbone).", valid=AT_LEAST_1),
        Option("mining", "--mining", str, "semihard",
               "semihard (online semi-hard, as the paper) | random (balanced random triplets).",
               ("semihard", "random")),
    ),
)


def frozen_stages(cfg: Any, net: Any) -> int:
    return net.backbone.num_stages if cfg.mode == "frozen" else cfg.freeze_stages


def objective(cfg: Any, net: Any) -> Any:
    from dfscan.train.recipes.core import Objective, TripletObjective
    triplet = TripletObjective(cfg.margin, net.embed_dim, cfg.mining)
    return Objective(loss=triplet, score=triplet.score)


def fit_head(cfg: Any, net: Any, train_split: Any, val_split: Any, run_dir: Any) -> tuple[dict[str, Any], np.ndarray]:
    import pickle

    from dfscan.train.heads import _fake_column, fit_classifier
    from dfscan.train.recipes.core import embeddings
    est = fit_classifier(cfg.classifier, embeddings(net, train_split), train_split.labels, seed=cfg.seed)
    scores = est.predict_proba(embeddings(net, val_split).astype(np.float32))[:, _fake_column(est)]
    return {"kind": "sklearn", "classifier": cfg.classifier, "estimator": pickle.dumps(est)}, scores
