"""Metric-learning losses for the embedder.

- Kumar & Bhavsar 2020: triplet loss with online semi-hard mining (pytorch-metric-learning).
- Zhang et al. 2021: multi-metric loss (weight-center + triplet + cross-entropy, Eq. 1) and the
  Adaptive Hardness-aware Expander (AHE, Eq. 6).

Labels follow the rest of dfscan: 0 = real, 1 = fake.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances, losses, miners
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from torch import Tensor, nn

REAL, FAKE = 0, 1

Triplets = tuple[Tensor, Tensor, Tensor]


def _safe_norm(x: Tensor) -> Tensor:
    # Row norms with a finite gradient at 0 (duplicate embeddings).
    return x.pow(2).sum(dim=1, keepdim=True).clamp_min(1e-24).sqrt()


def similarity_triplet_loss(s_ap: Tensor, s_an: Tensor, margin: float = 1.0) -> Tensor:
    """Zhang et al. Eq. 2, ``[S_an - S_ap + margin]_+`` per triplet, averaged over the non-zero terms
    (pytorch-metric-learning's ``AvgNonZeroReducer``); 0 when no triplet violates the margin."""
    terms = F.relu(s_an - s_ap + margin)
    nonzero = terms > 0
    if not bool(nonzero.any()):
        return terms.sum() * 0.0
    return terms[nonzero].mean()


def _distance(name: str) -> distances.BaseDistance:
    # All on L2-normalised embeddings (FaceNet / Kumar).
    if name == "euclidean":
        return distances.LpDistance(normalize_embeddings=True, p=2, power=1)
    if name == "squared_euclidean":
        return distances.LpDistance(normalize_embeddings=True, p=2, power=2)
    if name == "cosine":
        return distances.CosineSimilarity()
    raise ValueError(f"unknown distance {name!r}; valid: cosine, euclidean, squared_euclidean")


def semihard_triplet(margin: float = 0.2, distance: str = "euclidean") -> tuple[Callable, Callable]:
    """Triplet loss with online semi-hard mining (Kumar & Bhavsar 2020, Eq. 1 and Sec. III-E).

    Returns ``(loss_fn, miner)``; use as ``loss_fn(emb, labels, miner(emb, labels))``.
    Semi-hard: ``d(a,p) < d(a,n) <= d(a,p) + margin``; the loss is averaged over the triplets with
    non-zero loss (pytorch-metric-learning's default reducer).
    ``distance``: ``euclidean`` (default), ``squared_euclidean`` (Eq. 1 exactly, as in FaceNet), or
    ``cosine``; embeddings are L2-normalised in every case.
    """
    loss_fn = losses.TripletMarginLoss(margin=margin, distance=_distance(distance))
    miner = miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard", distance=_distance(distance))
    return loss_fn, miner


def weight_center_loss(sim: Tensor, alpha: float = 2.0, lam: float = 0.5) -> Tensor:
    """Zhang et al. Eq. 3 on the similarities ``S_kc`` of one class's embeddings to its center:
    ``1/alpha * log(1 + sum_k exp(-alpha * (S_kc - lam)))``.

    Its gradient gives each sample the adaptive weight of Eq. 4: samples farther from the center
    than the others (smaller ``S_kc``) are pulled harder.
    """
    x = -alpha * (sim - lam)
    # log(1 + sum exp(x)) computed stably as logsumexp([0, x...]).
    return torch.logsumexp(torch.cat([x.new_zeros(1), x]), dim=0) / alpha


class WeightCenterLoss(nn.Module):
    """Weight-center loss (Zhang et al. Eq. 3, weights Eq. 4): pulls each embedding of the chosen
    classes (default: real only, as in the paper) towards its class's iterated center.

    Similarity is cosine (``S_kc = <f_k, c> / (|f_k| |c|)``). Centers are buffers, not parameters:
    initialised to the first batch's class mean and then updated with Wen et al.'s center-loss rule
    ``c <- c - center_lr * sum_k (c - f_k) / (1 + n)`` in training mode.
    Paper ambiguities, chosen here: cosine similarity, ``lam=0.5`` (not given in the paper; the
    Multi-Similarity loss default), Wen et al.'s update for "the center is iterated continuously".
    With several classes the per-class losses are averaged.
    """

    def __init__(
        self,
        num_classes: int,
        dim: int,
        alpha: float = 2.0,
        lam: float = 0.5,
        center_lr: float = 0.5,
        classes: Sequence[int] = (REAL,),
    ):
        super().__init__()
        self.alpha, self.lam, self.center_lr = alpha, lam, center_lr
        self.classes = tuple(classes)
        self.register_buffer("centers", torch.zeros(num_classes, dim))
        self.register_buffer("initialized", torch.zeros(num_classes, dtype=torch.bool))

    def forward(self, features: Tensor, labels: Tensor) -> Tensor:
        feats = F.normalize(features, dim=1)
        parts = []
        for c in self.classes:
            mask = labels == c
            if not bool(mask.any()):
                continue
            fc = feats[mask]
            if bool(self.initialized[c]):
                center = self.centers[c]
            else:
                center = fc.detach().mean(0)
                if self.training:
                    with torch.no_grad():
                        self.centers[c] = center
                        self.initialized[c] = True
            center = F.normalize(center, dim=0).to(fc.dtype)
            parts.append(weight_center_loss(fc @ center, self.alpha, self.lam))
            if self.training:
                self._update_center(c, fc.detach())
        if not parts:
            return features.sum() * 0.0  # keeps the graph (and device/dtype) for a batch without the class
        return torch.stack(parts).mean()

    @torch.no_grad()
    def _update_center(self, c: int, fc: Tensor) -> None:
        delta = (self.centers[c] - fc.to(self.centers.dtype)).sum(0) / (1 + fc.shape[0])
        self.centers[c] -= self.center_lr * delta


class HardnessAwareExpander(nn.Module):
    """Adaptive Hardness-aware Expander (Zhang et al. Sec. 3.2, Eq. 6; after Zheng et al.'s HDML).

    For each triplet ``(z, z+, z-)`` synthesises a harder negative on the segment ``z -> z-``::

        z~- = z + [eta d- + (1 - eta) d+] (z- - z) / d-   if d- > d+,   else z-
        eta = exp(-alpha / L_CE)

    With a small CE loss (a trained model) ``eta -> 0`` and ``z~-`` sits at the positive's
    distance; with a large CE loss ``eta -> 1`` and ``z~- = z-``. Only negatives are synthesised,
    as in the paper. ``alpha`` is the pulling factor (gamma in the paper's text, alpha in HDML), not
    Eq. 3's alpha; the paper prints ``eta = exp(-1/L_CE)``, hence the default 1.0.
    Paper ambiguities, chosen here: ``d+ = |z+ - z|``, ``d- = |z- - z|`` (the text swaps them; the
    formula only makes sense this way); the CE loss is the current batch's, detached.
    Until a CE loss has been seen ``eta = 1`` (no synthesis), matching the paper's advice not to
    expand early in training. ``enabled=False`` turns it into the identity.
    """

    def __init__(self, alpha: float = 1.0, enabled: bool = True):
        super().__init__()
        self.alpha = alpha
        self.enabled = enabled
        self.register_buffer("ce_loss", torch.tensor(float("inf")))

    def eta(self, ce_loss: float | Tensor | None = None) -> Tensor:
        ce = self.ce_loss if ce_loss is None else torch.as_tensor(ce_loss, dtype=torch.float32)
        return torch.exp(-self.alpha / ce.detach().float())

    def observe(self, ce_loss: float | Tensor) -> None:
        """Records the CE loss that sets ``eta``."""
        self.ce_loss.fill_(float(ce_loss))

    @staticmethod
    def synthesize(anchor: Tensor, positive: Tensor, negative: Tensor, eta: Tensor | float) -> Tensor:
        """Eq. 6 for rows of anchors, positives and negatives ([T, D] each)."""
        d_pos = _safe_norm(positive - anchor)
        d_neg = _safe_norm(negative - anchor)
        direction = (negative - anchor) / d_neg
        harder = anchor + (eta * d_neg + (1 - eta) * d_pos) * direction
        return torch.where(d_neg > d_pos, harder, negative)

    @staticmethod
    def synthetic_similarity(s_ap: Tensor, s_an: Tensor, eta: Tensor | float) -> Tensor:
        """Eq. 2's similarity ``<z, z~->`` (a dot product) between a unit-norm anchor and its synthetic
        negative from Eq. 6, from the triplet's similarities alone: the same as ``synthesize`` followed
        by a dot product, at O(T) instead of O(T * D) cost.

        On the unit sphere ``d = sqrt(2 - 2 S)``; Eq. 6 gives ``z~ = (1 - t) z + t z-`` with
        ``t = [eta d- + (1 - eta) d+] / d-``, so ``<z, z~> = 1 - t + t S_an = 1 - t d-^2 / 2``.
        ``z~`` stays where Eq. 6 puts it, on the chord, at distance ``t d- >= d+`` from the anchor: it
        is not projected back onto the sphere (a projection can move it closer to the anchor than the
        positive, which Eq. 6 rules out), so ``<z, z~> <= S_ap`` always.
        """
        eps = 1e-12
        d_pos = (2 - 2 * s_ap).clamp_min(eps).sqrt()
        d_neg = (2 - 2 * s_an).clamp_min(eps).sqrt()
        t = (eta * d_neg + (1 - eta) * d_pos) / d_neg
        return torch.where(d_neg > d_pos, 1 - t + t * s_an, s_an)

    def expand(
        self,
        features: Tensor,
        labels: Tensor,
        ce_loss: float | Tensor | None = None,
        indices_tuple: Triplets | None = None,
    ) -> tuple[Tensor, Tensor, Triplets]:
        """Appends one synthetic negative per triplet (all triplets of the batch unless
        ``indices_tuple`` is given, e.g. from a miner).

        Returns ``(features', labels', triplets')`` where ``triplets'`` holds the original triplets
        followed by ``(a, p, N + t)`` for each synthetic negative ``t``: pass it as
        ``indices_tuple`` (with ``ref_emb=features'``) to a pytorch-metric-learning triplet loss to
        score exactly the paper's tuples. Memory is O(T * D) for T triplets (about N^3/4 for a
        balanced batch of N); ``MultiMetricLoss`` uses ``synthetic_similarity`` instead.
        """
        if indices_tuple is None:
            a, p, n = lmu.get_all_triplets_indices(labels)
        else:
            a, p, n = lmu.convert_to_triplets(indices_tuple, labels)
        if ce_loss is not None:
            self.observe(ce_loss)
        if not self.enabled or len(a) == 0:
            return features, labels, (a, p, n)
        eta = self.eta().to(features.device, features.dtype)
        synth = self.synthesize(features[a], features[p], features[n], eta)
        new = torch.arange(len(a), device=a.device) + features.shape[0]
        return (
            torch.cat([features, synth]),
            torch.cat([labels, labels[n]]),
            (torch.cat([a, a]), torch.cat([p, p]), torch.cat([n, new])),
        )

    def forward(
        self, features: Tensor, labels: Tensor, ce_loss: float | Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Expanded features and labels; see ``expand`` for the triplets that go with them."""
        feats, labs, _ = self.expand(features, labels, ce_loss)
        return feats, labs


def _classification_loss(logits: Tensor, labels: Tensor) -> Tensor:
    if logits.ndim == 1 or logits.shape[-1] == 1:  # one logit for "fake"
        return F.binary_cross_entropy_with_logits(logits.reshape(-1), labels.float())
    return F.cross_entropy(logits, labels.long())


class MultiMetricLoss(nn.Module):
    """Zhang et al. Eq. 1: ``L_wc + beta * L_triplet + chi * L_CE``.

    - ``L_wc``: ``WeightCenterLoss`` (Eq. 3) on real embeddings, with ``alpha`` and ``lam``.
    - ``L_triplet``: Eq. 2, ``[S_an - S_ap + margin]_+`` with ``S`` the dot product of L2-normalised
      embeddings, over all triplets of the batch (plus AHE's synthetic ones when ``use_ahe``),
      averaged over the non-zero terms. The paper gives neither the normalisation nor the triplet
      selection; cosine keeps the margin of 1.0 meaningful.
    - ``L_CE``: cross-entropy on ``logits`` ([N, C]; a single logit [N] or [N, 1] uses BCE).
    - AHE (``use_ahe``): one synthetic negative per triplet, ``eta = exp(-ahe_alpha / L_CE)``;
      ``alpha`` is Eq. 3's. As L_CE -> 0 each synthetic term tends to ``margin`` (Eq. 6 puts the
      negative at the positive's distance), so the triplet part no longer goes to 0.

    Defaults are the paper's (Sec. 4.1): beta=2, chi=1, alpha=2, margin=1. The paper switches on
    the weight-center loss mid-training and AHE in the end stage: set ``use_wc`` / ``use_ahe`` from
    the training loop. Move the module to the model's device (it holds the centers).
    All triplets: about N^3/4 for a balanced batch of N (N=16: 896, N=64: 63k), each O(1) here.
    """

    def __init__(
        self,
        dim: int,
        num_classes: int = 2,
        beta: float = 2.0,
        chi: float = 1.0,
        alpha: float = 2.0,
        margin: float = 1.0,
        use_ahe: bool = True,
        use_wc: bool = True,
        lam: float = 0.5,
        ahe_alpha: float = 1.0,
    ):
        super().__init__()
        self.beta, self.chi = beta, chi
        self.use_ahe, self.use_wc = use_ahe, use_wc
        self.weight_center = WeightCenterLoss(num_classes, dim, alpha=alpha, lam=lam)
        self.margin = margin
        self.expander = HardnessAwareExpander(alpha=ahe_alpha)

    def forward(self, features: Tensor, logits: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        ce = _classification_loss(logits, labels)
        wc = self.weight_center(features, labels) if self.use_wc else ce.new_zeros(())
        # Eq. 2 straight from the similarity matrix: AHE's synthetic terms then cost O(T), where a
        # pytorch-metric-learning loss over the expanded set would cost O(N * T * D).
        emb = F.normalize(features, dim=1)
        sim = emb @ emb.T
        a, p, n = lmu.get_all_triplets_indices(labels)
        s_ap, s_an = sim[a, p], sim[a, n]
        n_synth = 0
        if self.use_ahe and len(a) > 0:
            self.expander.observe(ce.detach())
            eta = self.expander.eta().to(sim.device, sim.dtype)
            s_syn = self.expander.synthetic_similarity(s_ap, s_an, eta)
            s_ap, s_an, n_synth = torch.cat([s_ap, s_ap]), torch.cat([s_an, s_syn]), len(a)
        triplet = similarity_triplet_loss(s_ap, s_an, self.margin)
        total = wc + self.beta * triplet + self.chi * ce
        parts = {
            "total": total.item(),
            "weight_center": wc.item(),
            "triplet": triplet.item(),
            "ce": ce.item(),
            "eta": float(self.expander.eta()) if self.use_ahe else 1.0,
            "synthetic": float(n_synth),
        }
        return total, parts
