"""Zhang et al. 2021: weight-center + triplet + cross-entropy (Eq. 1; beta=2, chi=1, alpha=2, margin=1)
with the Adaptive Hardness-aware Expander. The weight-center loss switches on after the first third of
the training iterations, AHE for the last third; early stopping watches the val CE term, which does not jump when they
do. Their optimiser: `--optimizer sgd --lr 0.01 --weight-decay 5e-4 --schedule step --step-every 3000`."""
from __future__ import annotations

from typing import Any

from dfscan.train.recipes.registry import AT_LEAST_1, NetShape, Option, RecipeSpec

SPEC = RecipeSpec(
    name="multimetric",
    summary="Zhang et al.: weight-center + triplet + cross-entropy (beta=2, chi=1, alpha=2, margin=1), with AHE.",
    paper="Zhang et al. 2021",
    net=NetShape(proj=True, head_out=2),
    options=(
        Option("no_ahe", "--no-ahe", bool, False, "Switch the Adaptive Hardness-aware Expander off.",
               to_config=lambda v: {"use_ahe": not v}),
        Option("proj_dim", "--embed-dim", int, 128, "Embedding size (projection after the backbone).", valid=AT_LEAST_1),
    ),
    defaults={"monitor": "ce"},
)


def stage_starts(total_steps: int) -> tuple[int, int]:
    """(first iteration of the weight-center loss, first iteration of AHE), 0-based: the paper's
    "middle and end stages" of training as thirds of its iterations."""
    return total_steps // 3, (2 * total_steps) // 3


def objective(cfg: Any, net: Any) -> Any:
    import numpy as np
    import torch

    from dfscan.train.losses import MultiMetricLoss
    from dfscan.train.recipes.core import Objective

    mm = MultiMetricLoss(net.embed_dim, num_classes=2, use_ahe=cfg.use_ahe)

    def on_step_start(step: int, total_steps: int) -> None:
        wc_start, ahe_start = stage_starts(total_steps)
        mm.use_wc = step >= wc_start
        mm.use_ahe = cfg.use_ahe and step >= ahe_start

    def score(outputs: list) -> np.ndarray:
        return torch.cat([o[1] for o in outputs]).softmax(1)[:, 1].numpy()

    return Objective(loss=lambda out, y: mm(out[0], out[1], y.long()), score=score,
                     extra_modules={"multimetric": mm}, on_step_start=on_step_start)
