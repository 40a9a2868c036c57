"""Bondi et al. 2020 two-step: triplet loss on the feature layer with balanced random triplets
((real, real, fake) and (fake, fake, real) in equal number per batch), then the linear classifier alone
with BCE. The paper starts from a BCE-trained network: pass --init <bce run>/best.pt."""
from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from dfscan.train.recipes.bce import BONDI_AUGMENT
from dfscan.train.recipes.registry import AT_LEAST_1, POSITIVE, NetShape, Option, RecipeSpec

SPEC = RecipeSpec(
    name="twostep",
    summary=("Bondi et al. two-step: triplet loss on the feature layer, then the classifier alone with BCE "
             "(the paper starts from a BCE-trained network: pass --init <bce run>/best.pt)."),
    paper="Bondi et al. 2020",
    net=NetShape(normalize=True),
    head="fitted",
    options=(
        Option("margin", "--margin", float, 0.2, "Triplet margin (L2-normalised features).", valid=POSITIVE),
        Option("head_epochs", "--head-epochs", int, 3, "Epochs of the second step (linear head, BCE).", valid=AT_LEAST_1),
        Option("mining", "--mining", str, "random",
               "random (balanced random triplets, as the paper) | semihard.", ("random", "semihard")),
    ),
    defaults={"augment": BONDI_AUGMENT, "mining": "random"},
)


def objective(cfg: Any, net: Any) -> Any:
    from dfscan.train.recipes.core import Objective, TripletObjective
    triplet = TripletObjective(cfg.margin, net.embed_dim, cfg.mining)
    return Objective(loss=triplet, score=triplet.score)


def fit_head(cfg: Any, net: Any, train_split: Any, val_split: Any, run_dir: Any) -> tuple[dict[str, Any], np.ndarray]:
    """The second step: the embedder fixed, only the linear classifier trained with BCE."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from dfscan.train import loop
    from dfscan.train.data import BalancedBatchSampler
    from dfscan.train.recipes.core import embeddings, linear_head, loop_config

    X, y = embeddings(net, train_split), train_split.labels
    val_X, val_y = embeddings(net, val_split), val_split.labels
    head = nn.Linear(X.shape[1], 1)
    tx, ty = torch.from_numpy(X).float(), torch.from_numpy(np.asarray(y)).float()
    vx, vy = torch.from_numpy(val_X).float(), torch.from_numpy(np.asarray(val_y)).float()
    sampler = BalancedBatchSampler(y, cfg.batch_size, cfg.seed)

    def train_batches(epoch: int, start: int) -> Iterator[loop.Batch]:
        for idx in sampler.epoch_batches(epoch, start):
            yield tx[idx], ty[idx]

    def val_batches() -> Iterator[loop.Batch]:
        yield vx, vy

    def loss(out: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        value = F.binary_cross_entropy_with_logits(out[:, 0], t)
        return value, {"bce": float(value.detach())}

    task = loop.TrainTask(model=head, loss=loss, train_batches=train_batches, steps_per_epoch=len(sampler),
                          val_batches=val_batches, score=lambda outs: torch.cat(outs)[:, 0].sigmoid().numpy())
    lcfg = loop_config(cfg, epochs=cfg.head_epochs, lr=1e-3, weight_decay=0.0, patience=cfg.head_epochs,
                       monitor="loss", select="auc", progress=False, ckpt_every_steps=0, max_steps_per_epoch=0)
    loop.train(task, lcfg, run_dir / "head", {"recipe": "twostep-head"}, console=lambda s: None)
    head.load_state_dict(loop.load_checkpoint(run_dir / "head" / loop.BEST)["model"])
    with torch.no_grad():
        scores = head(vx)[:, 0].sigmoid().numpy()
    return linear_head(head), scores
