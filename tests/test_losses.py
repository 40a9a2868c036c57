"""Losses against values worked out by hand on tiny 2-D sets."""

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pytorch_metric_learning")

from dfscan.train.losses import (  # noqa: E402
    HardnessAwareExpander,
    MultiMetricLoss,
    WeightCenterLoss,
    semihard_triplet,
    similarity_triplet_loss,
    weight_center_loss,
)

torch.set_num_threads(1)


def unit(deg: float) -> list[float]:
    return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]


def chord(deg: float) -> float:
    """Euclidean distance between two unit vectors ``deg`` degrees apart."""
    return 2 * math.sin(math.radians(deg) / 2)


def triplet_set(indices) -> set[tuple[int, int, int]]:
    return set(zip(*(t.tolist() for t in indices)))


# --- Kumar & Bhavsar: semi-hard triplets ----------------------------------------------------------


def test_semihard_triplets_by_hand():
    # Real A at 0 deg and P at 60 deg; fake N1 at 75 deg and N2 at 180 deg; margin 0.3.
    # Semi-hard means d(a,p) < d(a,n) <= d(a,p) + 0.3. Of the 8 triplets:
    #   (A,P,N1): 1.2175 - 1.0 = 0.2175 -> semi-hard    (A,P,N2): 2.0 - 1.0 -> easy
    #   (P,A,N1): 0.2611 < 1.0 -> hard                  (P,A,N2): 1.7321 - 1.0 -> easy
    #   (N1,N2,A), (N1,N2,P): both < d(N1,N2) -> hard
    #   (N2,N1,A): 2.0 - 1.5867 = 0.4133 -> easy        (N2,N1,P): 1.7321 - 1.5867 = 0.1453 -> semi-hard
    A, P, N1, N2 = 0, 1, 2, 3
    emb = torch.tensor([unit(0), unit(60), unit(75), unit(180)]) * 3.0  # scale: embeddings are normalised
    labels = torch.tensor([0, 0, 1, 1])
    loss_fn, miner = semihard_triplet(margin=0.3)
    mined = miner(emb, labels)
    assert triplet_set(mined) == {(A, P, N1), (N2, N1, P)}
    expected = ((0.3 - (chord(75) - chord(60))) + (0.3 - (chord(120) - chord(105)))) / 2
    assert loss_fn(emb, labels, mined).item() == pytest.approx(expected, abs=1e-5)


def test_semihard_squared_euclidean_is_kumar_eq1():
    emb = torch.tensor([unit(0), unit(60), unit(75), unit(180)])
    labels = torch.tensor([0, 0, 1, 1])
    loss_fn, miner = semihard_triplet(margin=0.6, distance="squared_euclidean")
    # Squared distances: d(A,P)=1, d(A,N1)=1.4824 (semi-hard), d(N2,N1)=2.5176, d(N2,P)=3 (semi-hard).
    mined = miner(emb, labels)
    assert triplet_set(mined) == {(0, 1, 2), (3, 2, 1)}
    expected = ((0.6 - (chord(75) ** 2 - 1)) + (0.6 - (3 - chord(105) ** 2))) / 2
    assert loss_fn(emb, labels, mined).item() == pytest.approx(expected, abs=1e-5)


def test_semihard_unknown_distance():
    with pytest.raises(ValueError, match="euclidean"):
        semihard_triplet(distance="manhattan")


# --- Zhang et al.: weight-center loss -----------------------------------------------------------


def test_weight_center_loss_eq3_by_hand():
    # Real (1,0) and (0,1); the first batch initialises the center to their mean, (0.5, 0.5), so
    # both have S_kc = cos 45 deg. The fake (-1,0) is ignored.
    loss_fn = WeightCenterLoss(num_classes=2, dim=2, alpha=2.0, lam=0.5)
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    s = math.cos(math.pi / 4)
    expected = math.log(1 + 2 * math.exp(-2 * (s - 0.5))) / 2
    assert loss_fn(feats, labels).item() == pytest.approx(expected, abs=1e-6)
    assert torch.allclose(loss_fn.centers[0], torch.tensor([0.5, 0.5]))  # symmetric update: no move


def test_weight_center_update_rule():
    loss_fn = WeightCenterLoss(num_classes=2, dim=2, center_lr=0.5)
    loss_fn(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))  # center (0.5, 0.5)
    # One real at (1,0): delta = (c - x) / (1 + 1) = (-0.25, 0.25); c <- c - 0.5 * delta.
    loss_fn(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    assert torch.allclose(loss_fn.centers[0], torch.tensor([0.625, 0.375]))
    loss_fn.eval()
    loss_fn(torch.tensor([[0.0, 1.0]]), torch.tensor([0]))
    assert torch.allclose(loss_fn.centers[0], torch.tensor([0.625, 0.375]))  # frozen in eval mode


def test_weight_center_no_real_in_batch_is_zero_with_graph():
    loss_fn = WeightCenterLoss(num_classes=2, dim=2)
    feats = torch.randn(3, 2, requires_grad=True)
    loss = loss_fn(feats, torch.tensor([1, 1, 1]))
    loss.backward()
    assert loss.item() == 0.0 and not bool(loss_fn.initialized[0])


def test_weight_center_eq4_weights():
    # -dL/dS_k = 1 / (exp(alpha (S_k - lam)) + sum_i exp(-alpha (S_i - S_k))), the sum over all i
    # including k (Eq. 4 prints the sum without i = k; the derivative of Eq. 3 has it).
    alpha, lam = 2.0, 0.5
    sim = torch.tensor([0.9, 0.8, 0.2], requires_grad=True)  # the last one deviates
    weight_center_loss(sim, alpha, lam).backward()
    s = sim.detach().tolist()
    for k, sk in enumerate(s):
        w = 1 / (math.exp(alpha * (sk - lam)) + sum(math.exp(-alpha * (si - sk)) for si in s))
        assert -sim.grad[k].item() == pytest.approx(w, rel=1e-5)
    assert sim.grad[2] < sim.grad[1] < sim.grad[0] < 0  # the deviating sample is pulled hardest


# --- Zhang et al.: Adaptive Hardness-aware Expander ---------------------------------------------


def test_ahe_synthesis_by_hand():
    # z = (0,0), z+ = (1,0): d+ = 1; z- = (0,3): d- = 3 > d+.
    # eta = exp(-alpha / L_CE) = 1/2 for alpha = 1, L_CE = 1/ln 2; r = 0.5*3 + 0.5*1 = 2 -> (0, 2).
    z, zp, zn = torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])
    ahe = HardnessAwareExpander(alpha=1.0)
    eta = ahe.eta(1 / math.log(2))
    assert eta.item() == pytest.approx(0.5)
    assert torch.allclose(ahe.synthesize(z, zp, zn, eta), torch.tensor([[0.0, 2.0]]))
    assert torch.allclose(ahe.synthesize(z, zp, zn, 0.0), torch.tensor([[0.0, 1.0]]))  # at d+, not past
    assert torch.allclose(ahe.synthesize(z, zp, zn, 1.0), zn)  # large CE loss: unchanged
    near = torch.tensor([[0.0, 0.5]])  # d- <= d+: already hard, unchanged
    assert torch.allclose(ahe.synthesize(z, zp, near, eta), near)


def test_ahe_synthetic_similarity_matches_synthesis():
    torch.manual_seed(0)
    z, zp, zn = (torch.nn.functional.normalize(torch.randn(64, 5), dim=1) for _ in range(3))
    for eta in (0.0, 0.3, 1.0):
        synth = HardnessAwareExpander.synthesize(z, zp, zn, eta)  # Eq. 6: not projected onto the sphere
        direct = (z * synth).sum(1)
        fast = HardnessAwareExpander.synthetic_similarity((z * zp).sum(1), (z * zn).sum(1), eta)
        assert torch.allclose(fast, direct, atol=1e-5)


def test_ahe_expand_shapes_labels_and_triplets():
    feats = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0]])
    labels = torch.tensor([0, 0, 1])
    ahe = HardnessAwareExpander(alpha=1.0)
    # No CE loss seen yet: eta = 1, synthetic negatives equal the originals.
    out, labs, (a, p, n) = ahe.expand(feats, labels)
    assert torch.allclose(out[3:], feats[[2, 2]])
    out, labs = ahe(feats, labels, ce_loss=1 / math.log(2))
    # Triplets (0,1,2) and (1,0,2): from anchor 0 as above -> (0,2); from anchor 1 (d+ = 1,
    # d- = sqrt 10): r = 0.5 (sqrt 10 + 1), along (-1, 3) / sqrt 10.
    r = 0.5 * (math.sqrt(10) + 1)
    expected = {(0.0, 2.0), (1 - r / math.sqrt(10), 3 * r / math.sqrt(10))}
    assert out.shape == (5, 2) and labs.tolist() == [0, 0, 1, 1, 1]
    got = {tuple(round(v, 5) for v in row) for row in out[3:].tolist()}
    assert got == {tuple(round(v, 5) for v in e) for e in expected}
    out, _, triplets = ahe.expand(feats, labels, ce_loss=1 / math.log(2))
    trips = triplet_set(triplets)
    assert {t for t in trips if t[2] < 3} == {(0, 1, 2), (1, 0, 2)}  # the originals, then one per synthetic
    synth = {(a, p): n for a, p, n in trips if n >= 3}
    assert synth.keys() == {(0, 1), (1, 0)} and sorted(synth.values()) == [3, 4]
    assert torch.allclose(out[synth[(0, 1)]], torch.tensor([0.0, 2.0]))
    ahe.enabled = False
    assert ahe(feats, labels, ce_loss=0.1)[0] is feats


def test_similarity_triplet_loss_eq2():
    # [S_an - S_ap + 1]+: 0.2 - 0.9 + 1 = 0.3, -0.5 - 0.8 + 1 -> 0, 0.6 - 0.1 + 1 = 1.5; mean of non-zero.
    s_ap, s_an = torch.tensor([0.9, 0.8, 0.1]), torch.tensor([0.2, -0.5, 0.6])
    assert similarity_triplet_loss(s_ap, s_an, 1.0).item() == pytest.approx((0.3 + 1.5) / 2)
    assert similarity_triplet_loss(s_ap[1:2], s_an[1:2], 1.0).item() == 0.0


# --- Zhang et al.: multi-metric loss ------------------------------------------------------------


def test_multi_metric_loss_by_hand():
    # Real A = (1,0), B = (0,1); fake F = (-1,0); logits all zero -> CE = ln 2.
    # Eq. 2 with cosine similarity, margin 1: anchor A: [S(A,F) - S(A,B) + 1]+ = [-1 - 0 + 1]+ = 0;
    # anchor B: [0 - 0 + 1]+ = 1; mean over non-zero terms = 1.
    # Weight-center: as in test_weight_center_loss_eq3_by_hand.
    feats = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    labels = torch.tensor([0, 0, 1])
    logits = torch.zeros(3, 2)
    wc = math.log(1 + 2 * math.exp(-2 * (math.cos(math.pi / 4) - 0.5))) / 2
    loss_fn = MultiMetricLoss(dim=2, use_ahe=False)
    total, parts = loss_fn(feats, logits, labels)
    assert parts["weight_center"] == pytest.approx(wc, abs=1e-6)
    assert parts["triplet"] == pytest.approx(1.0, abs=1e-6)
    assert parts["ce"] == pytest.approx(math.log(2), abs=1e-6)
    assert total.item() == pytest.approx(wc + 2 * 1.0 + math.log(2), abs=1e-5)


def test_ahe_2d_toy_case_eq6():
    # Zhang et al. Eq. 6 in 2-D: anchor z at 0 deg, positive at 30 deg, negative at 170 deg (all unit).
    # d+ = 2 sin 15, d- = 2 sin 85. With eta = 0 the synthetic negative sits on the segment z -> z-
    # at distance d+ from z: z~ = z + d+ (z- - z) / d-, and Eq. 2's similarity is the dot product
    # <z, z~> = 1 - t d-^2 / 2 with t = d+ / d-, below S_ap: the synthetic is never easier to
    # confuse with the anchor than the positive. Projected back onto the sphere, the same point would
    # sit at 5.3 deg from the anchor (cos 0.9957 > S_ap = cos 30): what the old code scored.
    z, zp, zn = unit(0), unit(30), unit(170)
    d_pos, d_neg = 2 * math.sin(math.radians(15)), 2 * math.sin(math.radians(85))
    for eta in (0.0, 0.5):
        r = eta * d_neg + (1 - eta) * d_pos
        expected = [a + r * (b - a) / d_neg for a, b in zip(z, zn)]
        got = HardnessAwareExpander.synthesize(torch.tensor([z]), torch.tensor([zp]), torch.tensor([zn]), eta)[0]
        assert got.tolist() == pytest.approx(expected, abs=1e-6)
        assert math.hypot(got[0] - z[0], got[1] - z[1]) == pytest.approx(r, abs=1e-6) and r >= d_pos
        dot = expected[0] * z[0] + expected[1] * z[1]
        fast = HardnessAwareExpander.synthetic_similarity(torch.tensor([math.cos(math.radians(30))]),
                                                          torch.tensor([math.cos(math.radians(170))]), eta)
        assert fast.item() == pytest.approx(dot, abs=1e-6)
        assert fast.item() <= math.cos(math.radians(30))
    t0 = d_pos / d_neg
    p0 = [(1 - t0) * a + t0 * b for a, b in zip(z, zn)]
    assert p0[0] / math.hypot(*p0) > math.cos(math.radians(30))  # what renormalising would have done


def test_multi_metric_loss_ahe_by_hand():
    # Real A at 0 deg, B at 60 deg; fake F at 180 deg; zero logits: CE = ln 2, eta = exp(-1/ln 2).
    # Original triplets are easy: (A,B,F): [-1 - 0.5 + 1]+ = 0; (B,A,F): [-0.5 - 0.5 + 1]+ = 0.
    # AHE, anchor A: d- = 2 > d+ = 1: F~ = A + (2 eta + 1 - eta)(F - A)/2 = (-eta, 0), <A, F~> = -eta:
    # [-eta - 0.5 + 1]+ = 0.5 - eta. Anchor B: d- = sqrt 3 > d+ = 1, F~ = B + r (F - B) / sqrt 3 with
    # r = eta sqrt 3 + (1 - eta): <B, F~> - 0.5 + 1. Eq. 2 takes the dot product with F~ as Eq. 6 puts it.
    A, B, Fk = unit(0), unit(60), unit(180)
    feats = torch.tensor([A, B, Fk])
    labels = torch.tensor([0, 0, 1])
    eta = math.exp(-1 / math.log(2))
    r = eta * math.sqrt(3) + (1 - eta)
    synth = [b + r * (f - b) / math.sqrt(3) for b, f in zip(B, Fk)]
    terms = [0.5 - eta, B[0] * synth[0] + B[1] * synth[1] + 0.5]
    expected_triplet = sum(terms) / len(terms)  # mean over the non-zero terms
    wc = math.log(1 + 2 * math.exp(-2 * (math.cos(math.radians(30)) - 0.5))) / 2  # center at 30 deg

    total, parts = MultiMetricLoss(dim=2, use_ahe=True)(feats, torch.zeros(3, 2), labels)
    assert parts["eta"] == pytest.approx(eta, rel=1e-6)
    assert parts["synthetic"] == 2
    assert parts["triplet"] == pytest.approx(expected_triplet, abs=1e-5)
    assert total.item() == pytest.approx(wc + 2 * expected_triplet + math.log(2), abs=1e-5)
    _, parts = MultiMetricLoss(dim=2, use_ahe=False)(feats, torch.zeros(3, 2), labels)
    assert parts["triplet"] == 0.0  # without AHE every triplet is easy


def test_multi_metric_loss_with_ahe_backprops():
    torch.manual_seed(0)
    feats = torch.randn(8, 4, requires_grad=True)
    logits = torch.randn(8, 2, requires_grad=True)
    labels = torch.tensor([0, 1] * 4)
    loss_fn = MultiMetricLoss(dim=4)
    total, parts = loss_fn(feats, logits, labels)
    total.backward()
    assert torch.isfinite(feats.grad).all() and torch.isfinite(logits.grad).all()
    assert parts["synthetic"] == 4 * 3 * 4 * 2  # one per triplet: 8 anchors x 3 positives x 4 negatives
    assert parts["eta"] == pytest.approx(math.exp(-1 / parts["ce"]), rel=1e-4)
    assert parts["total"] == pytest.approx(
        parts["weight_center"] + 2 * parts["triplet"] + parts["ce"], abs=1e-5
    )
    # Duplicated embeddings (zero distances) keep gradients finite.
    dup = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    total, _ = MultiMetricLoss(dim=2)(dup, torch.zeros(4, 2), torch.tensor([0, 0, 1, 1]))
    total.backward()
    assert torch.isfinite(dup.grad).all()
    # One fake logit per sample works too (BCE).
    total, parts = loss_fn(feats, torch.zeros(8), labels)
    assert parts["ce"] == pytest.approx(math.log(2), abs=1e-6)
