"""Training recipes. Each builds a `TrainTask` for `loop.train` and ends with the same checkpoint:

backbone name, embedder state (backbone + projection), head (linear weights or a pickled scikit-learn
estimator), input size, mean/std, crop margin, recipe and its config, val metrics and val scores.

- `triplet`  (Kumar & Bhavsar 2020): semi-hard online triplet loss on L2-normalised embeddings, then a
  RF / SGD / logistic-regression classifier on them. `mode="frozen"`: backbone frozen, its features
  cached once, only a projection trained; `mode="finetune"`: the stages after `freeze_stages` train too.
- `bce`      (Bondi et al. 2020 baseline): backbone + linear head, binary cross-entropy.
- `twostep`  (Bondi et al. 2020): triplet loss on the feature layer, then the linear head alone with BCE.
- `multimetric` (Zhang et al. 2021): weight-center + triplet + cross-entropy, optional AHE.
"""
from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from dfscan.faceset import FaceSet
from dfscan.train import loop
from dfscan.train.backbones import Backbone, create_backbone, with_input_size
from dfscan.train.data import (BalancedBatchSampler, FaceDataset, FeatureCache, PseudoFakeDataset,
                               build_feature_cache, parse_pseudo_fakes, select_records)

RECIPES = ("triplet", "bce", "twostep", "multimetric")
CACHE_SAFE_AUGMENTATIONS = {"flip"}  # can be done on cached maps


@dataclass
class RecipeConfig:
    recipe: str
    dataset: str                        # face-set directory
    backbone: str = "efficientnet_lite0"
    input_size: int | None = None       # None: the backbone's native size
    pretrained: bool = True
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    patience: int = 3
    seed: int = 0
    device: str = "cpu"
    augment: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()       # keep only fakes whose video path names one of these (FF++)
    limit: int | None = None            # train subset size (class-balanced)
    val_limit: int | None = None
    mode: str = "finetune"              # triplet: frozen | finetune
    freeze_stages: int = 0
    cache: bool = True                  # cache the frozen stages' maps when augmentations allow
    cache_dir: str | None = None        # default: <run>/cache
    classifier: str = "logreg"          # triplet: rf | sgd | logreg
    proj_dim: int = 128                 # triplet / multimetric embedding size (0: backbone features)
    margin: float = 0.2                 # triplet margin (multimetric uses the paper's 1.0)
    use_ahe: bool = True                # multimetric
    head_epochs: int = 3                # twostep, second step
    crop_margin: float | None = None    # None: from the face sets' faceset.json (the scanner's crop)
    ckpt_every_steps: int = 0
    max_steps_per_epoch: int = 0
    num_workers: int = 1
    init: str | None = None             # checkpoint whose embedder initialises this run
    progress: bool = True
    weights_path: str | None = None     # local pretrained weights (facenet, dlib_resnet)
    pseudo_fakes: str | None = None     # "sbi[:FRACTION]": self-blended twins of that share of real faces


# ---------------------------------------------------------------- the network

class Net(nn.Module):
    """backbone (from `start_stage`) -> optional projection -> optional L2 norm -> optional linear head."""

    def __init__(self, backbone: Backbone, start_stage: int = 0, proj_dim: int = 0, normalize: bool = False,
                 head_out: int = 0):
        super().__init__()
        self.backbone, self.start_stage, self.normalize = backbone, start_stage, normalize
        self.proj = nn.Linear(backbone.embed_dim, proj_dim) if proj_dim else None
        self.embed_dim = proj_dim or backbone.embed_dim
        self.head = nn.Linear(self.embed_dim, head_out) if head_out else None

    def embed_from(self, x: torch.Tensor, stage: int) -> torch.Tensor:
        f = self.backbone.forward_from(x, stage)
        if self.proj is not None:
            f = self.proj(f)
        return F.normalize(f, dim=1) if self.normalize else f

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed_from(images, 0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        emb = self.embed_from(x, self.start_stage)
        return emb, (self.head(emb) if self.head is not None else None)


class ImageEmbedder(nn.Module):
    """What goes into embedder.onnx: images -> embeddings."""

    def __init__(self, net: Net):
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.embed_images(images)


def build_net(cfg: RecipeConfig, pretrained: bool | None = None) -> Net:
    pre = cfg.pretrained if pretrained is None else pretrained
    kwargs = {"weights_path": cfg.weights_path} if cfg.weights_path else {}
    backbone = create_backbone(cfg.backbone, pretrained=pre, **kwargs)
    if cfg.input_size:
        with_input_size(backbone, cfg.input_size)
    proj = cfg.proj_dim if cfg.recipe in ("triplet", "multimetric") else 0
    normalize = cfg.recipe in ("triplet", "twostep")
    head_out = {"bce": 1, "twostep": 0, "triplet": 0, "multimetric": 2}[cfg.recipe]
    return Net(backbone, proj_dim=proj, normalize=normalize, head_out=head_out)


# ---------------------------------------------------------------- data sources

@dataclass
class Split:
    labels: np.ndarray
    batches: Callable[..., Iterator[loop.Batch]]  # train: (epoch, start) ; val: ()
    ordered: Callable[[], Iterator[loop.Batch]]   # every item once, in order, no augmentation
    steps: int = 0
    domains: list[str] | None = None              # per item, in `ordered` order
    shards_batches: bool = False                  # train batches are this torchrun rank's share only


def _cache_path(cfg: RecipeConfig, run_dir: Path, stage: int, split: str, limit: int | None) -> Path:
    root = Path(cfg.cache_dir) if cfg.cache_dir else run_dir / "cache"
    name = f"{cfg.backbone}_{cfg.input_size}_s{stage}"
    if not cfg.pretrained:
        name += "_random"
    suffix = "" if limit is None else f"_n{limit}_seed{cfg.seed}"
    if cfg.pseudo_fakes:
        suffix += "_" + cfg.pseudo_fakes.replace(":", "") + f"_seed{cfg.seed}"
    return root / name / f"{split}{suffix}"


def make_splits(cfg: RecipeConfig, net: Net, run_dir: Path, stage: int, use_cache: bool
                ) -> tuple[Split, Split]:
    from dfscan.train.augment import build_augment

    face_set = FaceSet.union(cfg.dataset.split(","))
    if cfg.methods:
        wanted = [m.lower() for m in cfg.methods]
        face_set.records = [r for r in face_set.records
                            if r.label == "real" or any(m in r.video.lower() for m in wanted)]
    bb = net.backbone
    size = bb.input_size
    train_rec = select_records(face_set, "train", cfg.limit, cfg.seed)
    val_rec = select_records(face_set, "val", cfg.val_limit, cfg.seed)
    bs = cfg.batch_size
    if use_cache:
        caches = {}
        for split, recs, limit in (("train", train_rec, cfg.limit), ("val", val_rec, cfg.val_limit)):
            caches[split] = _subset_of_full_cache(cfg, run_dir, stage, split, face_set, recs)
            if caches[split] is None:
                ds = _with_pseudo_fakes(cfg, FaceDataset(face_set, recs, size, bb.mean, bb.std), fresh=False)
                caches[split] = build_feature_cache(bb, ds, stage, _cache_path(cfg, run_dir, stage, split, limit),
                                                    progress=cfg.progress)
        train_c, val_c = caches["train"], caches["val"]
        train_rec, val_rec = _twinned(cfg, train_rec), _twinned(cfg, val_rec)
        sampler = BalancedBatchSampler(train_c.labels, bs, cfg.seed, _domains(face_set, train_rec))
        flip = "flip" in cfg.augment

        def train_batches(epoch: int, start: int) -> Iterator[loop.Batch]:
            for i, idx in enumerate(sampler.epoch_batches(epoch, start), start):
                yield train_c.batch(idx, flip, np.random.default_rng([cfg.seed, epoch, i]))

        def ordered(cache: FeatureCache) -> Callable[[], Iterator[loop.Batch]]:
            def batches() -> Iterator[loop.Batch]:
                for s in range(0, len(cache), 256):
                    yield cache.batch(range(s, min(len(cache), s + 256)))
            return batches

        return (Split(train_c.labels, train_batches, ordered(train_c), len(sampler), _domains(face_set, train_rec)),
                Split(val_c.labels, ordered(val_c), ordered(val_c), domains=_domains(face_set, val_rec)))

    augment = build_augment(list(cfg.augment)) if cfg.augment else None
    train_ds = _with_pseudo_fakes(cfg, FaceDataset(face_set, train_rec, size, bb.mean, bb.std, augment), fresh=True)
    val_ds = _with_pseudo_fakes(cfg, FaceDataset(face_set, val_rec, size, bb.mean, bb.std), fresh=False)
    plain_train = _with_pseudo_fakes(cfg, FaceDataset(face_set, train_rec, size, bb.mean, bb.std), fresh=False)
    train_rec, val_rec = train_ds.records, val_ds.records
    sampler = BalancedBatchSampler(train_ds.labels, bs, cfg.seed, _domains(face_set, train_rec))

    def train_batches(epoch: int, start: int) -> Iterator[loop.Batch]:
        batches = loop.rank_share(list(sampler.epoch_batches(epoch, start)))  # torchrun: this rank's images only
        yield from _loader(train_ds, batches, cfg.num_workers, seed=cfg.seed * 1000 + epoch)

    def ordered(ds: FaceDataset) -> Callable[[], Iterator[loop.Batch]]:
        def batches() -> Iterator[loop.Batch]:
            n = len(ds)
            yield from _loader(ds, [list(range(s, min(n, s + 64))) for s in range(0, n, 64)], cfg.num_workers)
        return batches

    return (Split(np.asarray(train_ds.labels), train_batches, ordered(plain_train), len(sampler),
                  _domains(face_set, train_rec), shards_batches=True),
            Split(np.asarray(val_ds.labels), ordered(val_ds), ordered(val_ds), domains=_domains(face_set, val_rec)))


def _with_pseudo_fakes(cfg: RecipeConfig, ds: FaceDataset, fresh: bool) -> FaceDataset | PseudoFakeDataset:
    fraction = parse_pseudo_fakes(cfg.pseudo_fakes)
    return ds if fraction is None else PseudoFakeDataset(ds, fraction, cfg.seed, fresh=fresh)


def _twinned(cfg: RecipeConfig, records: list) -> list:
    """The records in the order a pseudo-fake dataset over them lists its items."""
    fraction = parse_pseudo_fakes(cfg.pseudo_fakes)
    if fraction is None:
        return records
    return PseudoFakeDataset.twinned_records(records, fraction, cfg.seed)


def _domains(face_set: FaceSet, records: list) -> list[str]:
    return [face_set.domain_of(r) for r in records]


def _subset_of_full_cache(cfg: RecipeConfig, run_dir: Path, stage: int, split: str, face_set: FaceSet,
                          records: list) -> FeatureCache | None:
    """A subset run reuses a complete cache of the whole split when one exists (rows = split order)."""
    path = _cache_path(cfg, run_dir, stage, split, None)
    full = face_set.split(split)
    if len(records) == len(full) or not path.with_suffix(".maps.npy").is_file() or cfg.methods:
        return None
    cache = FeatureCache.load(path, mmap=True)
    if len(cache) != len(full):
        return None
    row = {id(r): i for i, r in enumerate(full)}
    idx = np.asarray([row[id(r)] for r in records])
    return FeatureCache(np.asarray(cache.maps[np.sort(idx)])[np.argsort(np.argsort(idx))], cache.labels[idx])


def _loader(ds: FaceDataset, batches: list[list[int]], workers: int, seed: int = 0) -> Iterator[loop.Batch]:
    gen = torch.Generator().manual_seed(seed)
    dl = DataLoader(ds, batch_sampler=batches, num_workers=workers, generator=gen,
                    persistent_workers=False)
    for x, y in dl:
        yield x, y.float()


# ---------------------------------------------------------------- losses and scores

def _bce_loss(out, y):
    logits = out[1][:, 0]
    loss = F.binary_cross_entropy_with_logits(logits, y)
    return loss, {"bce": float(loss.detach())}


def _bce_score(outputs: list) -> np.ndarray:
    return torch.cat([o[1][:, 0] for o in outputs]).sigmoid().numpy()


def _softmax_score(outputs: list) -> np.ndarray:
    return torch.cat([o[1] for o in outputs]).softmax(1)[:, 1].numpy()


class TripletObjective:
    """Semi-hard triplet loss; val AUC from the class centroids of the train embeddings seen so far."""

    def __init__(self, margin: float, dim: int):
        from dfscan.train.losses import semihard_triplet
        self.loss_fn, self.miner = semihard_triplet(margin)
        self.sums = torch.zeros(2, dim)
        self.counts = torch.zeros(2)

    def __call__(self, out, y):
        emb = out[0]
        labels = y.long()
        if emb.requires_grad:  # training batch: update the centroids
            with torch.no_grad():
                e = emb.detach().cpu()
                for c in (0, 1):
                    m = labels.cpu() == c
                    self.sums[c] += e[m].sum(0)
                    self.counts[c] += m.sum()
        loss = self.loss_fn(emb, labels, self.miner(emb, labels))
        return loss, {"triplet": float(loss.detach())}

    def score(self, outputs: list) -> np.ndarray:
        emb = torch.cat([o[0] for o in outputs])
        centres = F.normalize(self.sums / self.counts.clamp(min=1)[:, None], dim=1)
        return (emb @ centres[1] - emb @ centres[0]).numpy()


# ---------------------------------------------------------------- running a recipe

def run_recipe(cfg: RecipeConfig, run_dir: str | Path, resume: bool = False,
               console: Callable[[str], None] = print) -> Path:
    """Train `cfg.recipe` into `run_dir`; returns the final checkpoint path (`run_dir/best.pt`)."""
    if cfg.recipe not in RECIPES:
        raise ValueError(f"unknown recipe {cfg.recipe!r}; valid: {', '.join(RECIPES)}")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    loop.set_threads()
    torch.manual_seed(cfg.seed)
    net = build_net(cfg)
    cfg.input_size = net.backbone.input_size
    if cfg.init:
        _init_from(net, cfg.init, console)
    freeze = net.backbone.num_stages if (cfg.recipe == "triplet" and cfg.mode == "frozen") else cfg.freeze_stages
    net.backbone.freeze_stages(freeze)
    use_cache = cfg.cache and freeze > 0 and set(cfg.augment) <= CACHE_SAFE_AUGMENTATIONS
    net.start_stage = freeze if use_cache else 0
    from dfscan.faceset import training_geometry
    cfg.crop_margin, geometry = training_geometry(cfg.dataset.split(","), cfg.crop_margin)
    train_split, val_split = make_splits(cfg, net, run_dir, freeze, use_cache)
    (run_dir / "config.json").write_text(_json(asdict(cfg)), encoding="utf-8")

    if cfg.recipe == "bce":
        task_loss, score, extra = _bce_loss, _bce_score, {}
    elif cfg.recipe in ("triplet", "twostep"):
        objective = TripletObjective(cfg.margin, net.embed_dim)
        task_loss, score, extra = objective, objective.score, {}
    else:
        from dfscan.train.losses import MultiMetricLoss
        mm = MultiMetricLoss(net.embed_dim, num_classes=2, use_ahe=cfg.use_ahe)
        task_loss = lambda out, y: mm(out[0], out[1], y.long())  # noqa: E731
        score, extra = _softmax_score, {"multimetric": mm}

    def on_epoch_start(epoch: int) -> None:
        if cfg.recipe == "multimetric":  # the paper switches the centre loss on mid-way, AHE at the end
            mm.use_wc = epoch >= cfg.epochs // 3
            mm.use_ahe = cfg.use_ahe and epoch >= (2 * cfg.epochs) // 3

    task = loop.TrainTask(model=net, loss=task_loss, train_batches=train_split.batches,
                          steps_per_epoch=train_split.steps, val_batches=val_split.batches, score=score,
                          extra_modules=extra, on_epoch_start=on_epoch_start,
                          shards_batches=train_split.shards_batches)
    lcfg = loop.LoopConfig(epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay, schedule=cfg.schedule,
                           patience=cfg.patience, seed=cfg.seed, device=cfg.device,
                           ckpt_every_steps=cfg.ckpt_every_steps, max_steps_per_epoch=cfg.max_steps_per_epoch,
                           progress=cfg.progress)
    meta = {**_meta(cfg, net), "geometry": geometry}
    best = loop.train(task, lcfg, run_dir, meta, resume=resume, console=console)
    if not loop.is_main_process():  # torchrun: rank 0 alone finishes and writes the checkpoint
        return run_dir / loop.BEST
    best_path = run_dir / loop.BEST
    ckpt = loop.load_checkpoint(best_path)
    net.load_state_dict(ckpt["model"])
    net.to("cpu").eval()

    if cfg.recipe == "bce":
        head = _linear_head(net.head)
    elif cfg.recipe == "multimetric":
        head = _linear_head(net.head)
    else:
        tr_x = _embeddings(net, train_split)
        va_x = _embeddings(net, val_split)
        if cfg.recipe == "triplet":
            head, scores = _fit_sklearn(cfg, tr_x, train_split.labels, va_x)
        else:
            head, scores = _fit_linear_head(cfg, tr_x, train_split.labels, va_x, val_split.labels, run_dir)
        ckpt["val_scores"], ckpt["val_labels"] = scores, val_split.labels
        ckpt.setdefault("metrics", {})["embedding_val_auc"] = best.get("val_auc")
        best["val_auc"] = loop.roc_auc(val_split.labels, scores)
    ckpt["head"] = head
    ckpt["val_domains"] = val_split.domains
    if val_split.domains is not None and len(set(val_split.domains)) > 1:
        ckpt.setdefault("metrics", {})["val_auc_by_domain"] = _auc_by_domain(
            val_split.labels, np.asarray(ckpt["val_scores"]), val_split.domains)
    ckpt["metrics"] = {**ckpt.get("metrics", {}), **{k: v for k, v in best.items() if k != "scores"},
                       "train_images": int(len(train_split.labels)), "val_images": int(len(val_split.labels))}
    torch.save(ckpt, best_path)
    console(f"{cfg.recipe}: best epoch {best.get('epoch')} val AUC {best.get('val_auc', float('nan')):.4f} "
            f"-> {best_path}")
    return best_path


def _auc_by_domain(labels: np.ndarray, scores: np.ndarray, domains: list[str]) -> dict[str, float]:
    groups = np.asarray(domains)
    return {d: loop.roc_auc(labels[groups == d], scores[groups == d]) for d in sorted(set(domains))}


def _meta(cfg: RecipeConfig, net: Net) -> dict[str, Any]:
    bb = net.backbone
    return {"backbone": cfg.backbone, "input_size": bb.input_size, "mean": list(bb.mean), "std": list(bb.std),
            "crop_margin": 0.0 if cfg.crop_margin is None else cfg.crop_margin, "recipe": cfg.recipe, "config": asdict(cfg),
            "embed": {"proj_dim": net.proj.out_features if net.proj is not None else 0,
                      "normalize": net.normalize, "head_out": net.head.out_features if net.head else 0,
                      "dim": net.embed_dim},
            "backbone_license": bb.spec.license}


def _init_from(net: Net, path: str, console: Callable[[str], None]) -> None:
    state = loop.load_checkpoint(path)["model"]
    own = net.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    net.load_state_dict(usable, strict=False)
    console(f"initialised {len(usable)}/{len(own)} tensors from {path}")


@torch.no_grad()
def _embeddings(net: Net, split: Split) -> np.ndarray:
    net.eval()
    return torch.cat([net(x)[0] for x, _ in split.ordered()]).numpy()


def _linear_head(layer: nn.Linear) -> dict[str, Any]:
    return {"kind": "linear", "weight": layer.weight.detach().cpu().numpy(),
            "bias": layer.bias.detach().cpu().numpy()}


def _fit_sklearn(cfg: RecipeConfig, X: np.ndarray, y: np.ndarray, val_X: np.ndarray
                 ) -> tuple[dict[str, Any], np.ndarray]:
    from dfscan.train.heads import _fake_column, fit_classifier
    est = fit_classifier(cfg.classifier, X, y, seed=cfg.seed)
    scores = est.predict_proba(val_X.astype(np.float32))[:, _fake_column(est)]
    return {"kind": "sklearn", "classifier": cfg.classifier, "estimator": pickle.dumps(est)}, scores


def _fit_linear_head(cfg: RecipeConfig, X: np.ndarray, y: np.ndarray, val_X: np.ndarray, val_y: np.ndarray,
                     run_dir: Path) -> tuple[dict[str, Any], np.ndarray]:
    """Bondi's second step: the embedder fixed, only the linear classifier trained with BCE."""
    head = nn.Linear(X.shape[1], 1)
    tx, ty = torch.from_numpy(X).float(), torch.from_numpy(y).float()
    vx, vy = torch.from_numpy(val_X).float(), torch.from_numpy(val_y).float()
    sampler = BalancedBatchSampler(y, cfg.batch_size, cfg.seed)

    def train_batches(epoch: int, start: int) -> Iterator[loop.Batch]:
        for idx in sampler.epoch_batches(epoch, start):
            yield tx[idx], ty[idx]

    def val_batches() -> Iterator[loop.Batch]:
        yield vx, vy

    task = loop.TrainTask(model=head, loss=lambda out, t: (F.binary_cross_entropy_with_logits(out[:, 0], t), {}),
                          train_batches=train_batches, steps_per_epoch=len(sampler), val_batches=val_batches,
                          score=lambda outs: torch.cat(outs)[:, 0].sigmoid().numpy())
    lcfg = loop.LoopConfig(epochs=cfg.head_epochs, lr=1e-3, weight_decay=0.0, patience=cfg.head_epochs,
                           seed=cfg.seed, progress=False)
    loop.train(task, lcfg, run_dir / "head", {"recipe": "twostep-head"}, console=lambda s: None)
    head.load_state_dict(loop.load_checkpoint(run_dir / "head" / loop.BEST)["model"])
    with torch.no_grad():
        scores = head(vx)[:, 0].sigmoid().numpy()
    return _linear_head(head), scores


def _json(obj: Any) -> str:
    import json
    return json.dumps(obj, indent=2, default=str) + "\n"
