"""What every recipe shares: the network, the data splits (cached frozen stages, augmented copies,
bagged subsets), the typed checkpoint, and `run_recipe`, which runs any registered recipe."""
from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from dfscan.errors import UsageError
from dfscan.faceset import FaceRecord, FaceSet
from dfscan.outputs import atomic_write_text
from dfscan.train import loop
from dfscan.train.backbones import Backbone, create_backbone, with_input_size
from dfscan.train.data import (BalancedBatchSampler, FaceDataset, FeatureCache, PseudoFakeDataset,
                               build_feature_cache, parse_pseudo_fakes, select_records)
from dfscan.train.recipes.bagging import bag_subset
from dfscan.train.recipes.config import RecipeConfig
from dfscan.train.recipes.registry import get_spec, recipe_module

CACHE_SAFE_AUGMENTATIONS = {"flip"}  # can be done on cached maps (the frozen part is convolutional)
ENSEMBLE_COMBINATIONS = ("vote", "mean")
FALLBACKS = {"augment": (), "monitor": "loss", "select": "auc", "mining": "semihard"}


def resolve_defaults(cfg: RecipeConfig) -> RecipeConfig:
    """Fill the settings left to the recipe (None) from its spec, then from the loop's defaults."""
    spec = get_spec(cfg.recipe)
    values = {}
    for key, fallback in FALLBACKS.items():
        if getattr(cfg, key) is None:
            values[key] = spec.defaults.get(key, fallback)
    cfg = replace(cfg, **values)
    cfg.augment = tuple(cfg.augment or ())
    return cfg


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
    shape = get_spec(cfg.recipe).net
    return Net(backbone, proj_dim=cfg.proj_dim if shape.proj else 0, normalize=shape.normalize,
               head_out=shape.head_out)


# ---------------------------------------------------------------- the typed checkpoint

@dataclass
class CheckpointMeta:
    """What every checkpoint says about its model, beside the weights (`model`), the classifier
    (`head`: {"kind": "linear", weight, bias} or {"kind": "sklearn", classifier, estimator}) and the
    val scores the export calibrates on (`val_scores`, `val_labels`)."""
    backbone: str
    input_size: int
    mean: list[float]
    std: list[float]
    crop_margin: float
    recipe: str
    config: dict[str, Any]
    embed: dict[str, Any]               # proj_dim, normalize, head_out, dim
    backbone_license: str = ""
    geometry: dict[str, Any] = field(default_factory=dict)  # each face set's crop geometry

    @classmethod
    def of(cls, cfg: RecipeConfig, net: Net, geometry: dict[str, Any] | None = None) -> "CheckpointMeta":
        bb = net.backbone
        return cls(backbone=cfg.backbone, input_size=bb.input_size, mean=list(bb.mean), std=list(bb.std),
                   crop_margin=0.0 if cfg.crop_margin is None else cfg.crop_margin, recipe=cfg.recipe,
                   config=asdict(cfg), geometry=geometry or {},
                   embed={"proj_dim": net.proj.out_features if net.proj is not None else 0,
                          "normalize": net.normalize, "head_out": net.head.out_features if net.head else 0,
                          "dim": net.embed_dim},
                   backbone_license=bb.spec.license)


def _meta(cfg: RecipeConfig, net: Net, geometry: dict[str, Any] | None = None) -> dict[str, Any]:
    return asdict(CheckpointMeta.of(cfg, net, geometry))


# ---------------------------------------------------------------- data sources

@dataclass
class Split:
    labels: np.ndarray
    batches: Callable[..., Iterator[loop.Batch]]  # train: (epoch, start) ; val: ()
    ordered: Callable[[], Iterator[loop.Batch]]   # every item once, in order, no augmentation
    steps: int = 0
    domains: list[str] | None = None              # per item, in `ordered` order
    shards_batches: bool = False                  # train batches are this torchrun rank's share only


def load_face_set(cfg: RecipeConfig) -> FaceSet:
    """The training faces: one face set, or several as one (each its own domain)."""
    face_set = FaceSet.union(cfg.datasets)
    if cfg.methods:
        wanted = [m.lower() for m in cfg.methods]
        face_set.records = [r for r in face_set.records
                            if r.label == "real" or any(m in r.video.lower() for m in wanted)]
    return face_set


def train_records(cfg: RecipeConfig, face_set: FaceSet) -> list[FaceRecord]:
    records = select_records(face_set, "train", cfg.limit, cfg.seed)
    return bag_subset(records, [r.is_fake for r in records], cfg.bag, cfg.bags, cfg.seed)


def _records_key(records: list[FaceRecord]) -> str:
    """Which faces, from which face set folder, with which labels, in which order: a cache's rows."""
    folders = {origin: str(Path(origin).resolve()) for origin in {r.origin for r in records}}
    rows = "\n".join(f"{folders[r.origin]}|{r.file}|{r.label}" for r in records)
    return hashlib.sha256(rows.encode()).hexdigest()[:12]


def _cache_path(cfg: RecipeConfig, run_dir: Path, stage: int, split: str, records: list[FaceRecord],
                frozen: str, augment: tuple[str, ...] = (), copies: int = 0) -> Path:
    """A cache's file name names everything its maps depend on (the faces and their order, the frozen
    stages' weights, the augmentations), so a shared --cache-dir never hands one run another's maps."""
    root = Path(cfg.cache_dir) if cfg.cache_dir else run_dir / "cache"
    name = f"{cfg.backbone}_{cfg.input_size}_s{stage}"
    if not cfg.pretrained:
        name += "_random"
    suffix = f"_n{len(records)}_{_records_key(records)}_w{frozen}"
    if augment:
        suffix += f"_aug{'-'.join(augment)}x{copies}_seed{cfg.seed}"
    if cfg.pseudo_fakes:
        suffix += "_" + cfg.pseudo_fakes.replace(":", "") + f"_seed{cfg.seed}"
    return root / name / f"{split}{suffix}"


class _Copies(torch.utils.data.Dataset):
    """`copies` augmented versions of every face of a dataset: row c * n + i is copy c of face i."""

    def __init__(self, ds: FaceDataset, copies: int):
        self.ds, self.copies = ds, copies

    def __len__(self) -> int:
        return len(self.ds) * self.copies

    @property
    def labels(self) -> list[int]:
        return list(self.ds.labels) * self.copies

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.ds[i % len(self.ds)]


def make_splits(cfg: RecipeConfig, net: Net, run_dir: Path, stage: int, use_cache: bool
                ) -> tuple[Split, Split]:
    """Train and val batch sources. With `use_cache`, stages [0, stage) run once: pixel augmentations
    (all but flip) are baked into `cfg.aug_copies` cached copies of each train face, and each batch row
    draws one copy at random; flips are done on the maps."""
    from dfscan.train.augment import build_augment

    face_set = load_face_set(cfg)
    bb = net.backbone
    size = bb.input_size
    train_rec = train_records(cfg, face_set)
    val_rec = select_records(face_set, "val", cfg.val_limit, cfg.seed)
    pixel_aug = tuple(a for a in cfg.augment if a not in CACHE_SAFE_AUGMENTATIONS)
    if use_cache:
        frozen = bb.frozen_fingerprint(stage)
        val_c = _cached(cfg, run_dir, stage, "val", face_set, val_rec, net, frozen)
        copies = max(1, cfg.aug_copies) if pixel_aug else 1
        train_c = _cached(cfg, run_dir, stage, "train", face_set, train_rec, net, frozen, pixel_aug, copies)
        plain_rec = train_rec
        train_rec, val_rec = _twinned(cfg, train_rec), _twinned(cfg, val_rec)
        n = len(train_rec)
        labels = np.asarray(train_c.labels[:n])
        sampler = BalancedBatchSampler(labels, cfg.batch_size, cfg.seed, _domains(face_set, train_rec))
        flip = "flip" in cfg.augment

        def train_batches(epoch: int, start: int) -> Iterator[loop.Batch]:
            for i, idx in enumerate(sampler.epoch_batches(epoch, start), start):
                rng = np.random.default_rng([cfg.seed, epoch, i])
                rows = np.asarray(idx) + n * rng.integers(0, copies, len(idx))
                yield train_c.batch(rows, flip, rng)

        def ordered(cache: FeatureCache, count: int) -> Callable[[], Iterator[loop.Batch]]:
            def batches() -> Iterator[loop.Batch]:
                for s in range(0, count, 256):
                    yield cache.batch(range(s, min(count, s + 256)))
            return batches

        # with augmented copies, `ordered` over train would not be plain faces: those are not cached
        plain_train = ordered(train_c, n) if not pixel_aug else _image_batches(
            _with_pseudo_fakes(cfg, FaceDataset(face_set, plain_rec, size, bb.mean, bb.std), fresh=False),
            cfg, net, stage)
        return (Split(labels, train_batches, plain_train, len(sampler), _domains(face_set, train_rec)),
                Split(val_c.labels, ordered(val_c, len(val_c)), ordered(val_c, len(val_c)),
                      domains=_domains(face_set, val_rec)))

    augment = build_augment(list(cfg.augment)) if cfg.augment else None
    train_ds = _with_pseudo_fakes(cfg, FaceDataset(face_set, train_rec, size, bb.mean, bb.std, augment), fresh=True)
    val_ds = _with_pseudo_fakes(cfg, FaceDataset(face_set, val_rec, size, bb.mean, bb.std), fresh=False)
    plain_train = _with_pseudo_fakes(cfg, FaceDataset(face_set, train_rec, size, bb.mean, bb.std), fresh=False)
    train_rec, val_rec = train_ds.records, val_ds.records
    sampler = BalancedBatchSampler(train_ds.labels, cfg.batch_size, cfg.seed, _domains(face_set, train_rec))

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


def _image_batches(ds: FaceDataset, cfg: RecipeConfig, net: Net, stage: int) -> Callable[[], Iterator[loop.Batch]]:
    """Plain (unaugmented) faces through the frozen stages, for a model that starts at `stage`."""
    def batches() -> Iterator[loop.Batch]:
        n = len(ds)
        for x, y in _loader(ds, [list(range(s, min(n, s + 64))) for s in range(0, n, 64)], cfg.num_workers):
            with torch.no_grad():
                maps = net.backbone.features_until(x, stage)
                if stage >= net.backbone.num_stages:
                    maps = net.backbone.pool(maps)
            yield maps, y
    return batches


def _cached(cfg: RecipeConfig, run_dir: Path, stage: int, split: str, face_set: FaceSet,
            records: list[FaceRecord], net: Net, frozen: str, pixel_aug: tuple[str, ...] = (), copies: int = 1
            ) -> FeatureCache:
    """The cached maps of stages [0, stage) for `records`; `frozen` is those stages' weight fingerprint."""
    from dfscan.train.augment import build_augment
    bb = net.backbone
    if not pixel_aug:
        full = _subset_of_full_cache(cfg, run_dir, stage, split, face_set, records, frozen)
        if full is not None:
            return full
    path = _cache_path(cfg, run_dir, stage, split, records, frozen, pixel_aug, copies)
    augment = build_augment(list(pixel_aug)) if pixel_aug else None
    ds: torch.utils.data.Dataset = _with_pseudo_fakes(
        cfg, FaceDataset(face_set, records, bb.input_size, bb.mean, bb.std, augment), fresh=False)
    if pixel_aug:
        ds = _Copies(ds, copies)
        random.seed(cfg.seed)  # albumentations draws from the global generators
        np.random.seed(cfg.seed)
    return build_feature_cache(bb, ds, stage, path, progress=cfg.progress)


def _subset_of_full_cache(cfg: RecipeConfig, run_dir: Path, stage: int, split: str, face_set: FaceSet,
                          records: list[FaceRecord], frozen: str) -> FeatureCache | None:
    """A subset run reuses a complete cache of the whole split when one exists (rows = split order)."""
    full = face_set.split(split)
    path = _cache_path(cfg, run_dir, stage, split, full, frozen)
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


# ---------------------------------------------------------------- objectives

@dataclass
class Objective:
    """A recipe's loss on the model's output, its val score (higher = fake) and its schedule hooks."""
    loss: Callable[[Any, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]
    score: Callable[[list], np.ndarray]
    extra_modules: dict[str, nn.Module] = field(default_factory=dict)
    on_epoch_start: Callable[[int], None] | None = None
    on_step_start: Callable[[int, int], None] | None = None


class TripletObjective:
    """Triplet loss on L2-normalised embeddings; val AUC from the class centroids of the train
    embeddings seen so far. `mining`: "semihard" (Kumar & Bhavsar: online semi-hard) or "random"
    (Bondi et al.: per batch, (real, real, fake) and (fake, fake, real) triplets in equal number, each
    anchor with a random positive and a random negative)."""

    def __init__(self, margin: float, dim: int, mining: str = "semihard"):
        from pytorch_metric_learning import losses as pml_losses

        from dfscan.train.losses import _distance, semihard_triplet
        if mining not in ("semihard", "random"):
            raise ValueError(f"unknown triplet mining {mining!r}; valid: semihard, random")
        self.loss_fn, self.miner = semihard_triplet(margin)
        if mining == "random":
            self.loss_fn = pml_losses.TripletMarginLoss(margin=margin, distance=_distance("euclidean"))
        self.mining = mining
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
        triplets = self.miner(emb, labels) if self.mining == "semihard" else balanced_random_triplets(labels)
        loss = self.loss_fn(emb, labels, triplets)
        return loss, {"triplet": float(loss.detach()), "triplets": float(len(triplets[0]))}

    def score(self, outputs: list) -> np.ndarray:
        emb = torch.cat([o[0] for o in outputs])
        centres = F.normalize(self.sums / self.counts.clamp(min=1)[:, None], dim=1)
        return (emb @ centres[1] - emb @ centres[0]).numpy()


def balanced_random_triplets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One triplet per anchor: a random other face of its class and a random face of the other class.
    A balanced batch gives as many (real, real, fake) as (fake, fake, real) triplets."""
    labels = labels.cpu()
    anchors, positives, negatives = [], [], []
    for i, c in enumerate(labels.tolist()):
        same = torch.nonzero((labels == c) & (torch.arange(len(labels)) != i)).flatten()
        other = torch.nonzero(labels != c).flatten()
        if len(same) == 0 or len(other) == 0:
            continue
        anchors.append(i)
        positives.append(int(same[torch.randint(len(same), (1,))]))
        negatives.append(int(other[torch.randint(len(other), (1,))]))
    return torch.tensor(anchors, dtype=torch.long), torch.tensor(positives, dtype=torch.long), \
        torch.tensor(negatives, dtype=torch.long)


# ---------------------------------------------------------------- running a recipe

def run_recipe(cfg: RecipeConfig, run_dir: str | Path, resume: bool = False,
               console: Callable[[str], None] = print) -> Path:
    """Train `cfg.recipe` into `run_dir`; returns the final checkpoint path (`run_dir/best.pt`).
    With `cfg.bags > 1`: K members in `run_dir/member_<i>`, and `best.pt` lists them (an ensemble)."""
    get_spec(cfg.recipe)
    if cfg.bags > 1:
        return _run_bagged(cfg, Path(run_dir), resume, console)
    return _run_single(cfg, Path(run_dir), resume, console)


def _run_bagged(cfg: RecipeConfig, run_dir: Path, resume: bool, console: Callable[[str], None]) -> Path:
    if cfg.combination not in ENSEMBLE_COMBINATIONS:
        raise ValueError(f"unknown combination {cfg.combination!r}; valid: {', '.join(ENSEMBLE_COMBINATIONS)}")
    members = []
    shared_cache = cfg.cache_dir or str(run_dir / "cache")  # the val cache is the same for every member
    for bag in range(cfg.bags):
        console(f"bag {bag + 1}/{cfg.bags}")
        member = replace(cfg, bag=bag, cache_dir=shared_cache)
        path = _run_single(member, run_dir / f"member_{bag}", resume, console)
        members.append(path.relative_to(run_dir).as_posix())
    ckpt = {"format": loop.CKPT_FORMAT, "ensemble": {"members": members, "combination": cfg.combination,
                                                     "bags": cfg.bags},
            "recipe": cfg.recipe, "config": asdict(cfg)}
    best = run_dir / loop.BEST
    loop.save_checkpoint(ckpt, best)
    console(f"{cfg.recipe} x{cfg.bags} ({cfg.combination}): ensemble -> {best}")
    return best


def _run_single(cfg: RecipeConfig, run_dir: Path, resume: bool, console: Callable[[str], None]) -> Path:
    cfg = resolve_defaults(cfg)
    spec, module = get_spec(cfg.recipe), recipe_module(cfg.recipe)
    loop.set_threads()
    torch.manual_seed(cfg.seed)
    net = build_net(cfg)
    if cfg.freeze_stages > net.backbone.num_stages:
        raise UsageError(f"--freeze-stages must be at most {net.backbone.num_stages} for {cfg.backbone} (its "
                         f"stages; that many freezes the whole backbone), not {cfg.freeze_stages}")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg.input_size = net.backbone.input_size
    if cfg.init:
        _init_from(net, cfg.init, console)
    freeze = module.frozen_stages(cfg, net) if hasattr(module, "frozen_stages") else cfg.freeze_stages
    net.backbone.freeze_stages(freeze)
    use_cache = cfg.cache and freeze > 0
    net.start_stage = freeze if use_cache else 0
    from dfscan.faceset import training_geometry
    cfg.crop_margin, geometry = training_geometry(cfg.datasets, cfg.crop_margin)
    train_split, val_split = make_splits(cfg, net, run_dir, freeze, use_cache)
    atomic_write_text(run_dir / "config.json", _json(asdict(cfg)))

    objective: Objective = module.objective(cfg, net)
    task = loop.TrainTask(model=net, loss=objective.loss, train_batches=train_split.batches,
                          steps_per_epoch=train_split.steps, val_batches=val_split.batches,
                          score=objective.score, extra_modules=objective.extra_modules,
                          on_epoch_start=objective.on_epoch_start, on_step_start=objective.on_step_start,
                          shards_batches=train_split.shards_batches)
    best = loop.train(task, loop_config(cfg), run_dir, _meta(cfg, net, geometry), resume=resume, console=console)
    if not loop.is_main_process():  # torchrun: rank 0 alone finishes and writes the checkpoint
        return run_dir / loop.BEST
    best_path = run_dir / loop.BEST
    ckpt = loop.load_checkpoint(best_path)
    net.load_state_dict(ckpt["model"])
    net.to("cpu").eval()

    if spec.head == "linear" and net.head is not None:
        head = linear_head(net.head)
    else:
        head, scores = module.fit_head(cfg, net, train_split, val_split, run_dir)
        ckpt["val_scores"], ckpt["val_labels"] = scores, val_split.labels
        ckpt.setdefault("metrics", {})["embedding_val_auc"] = best.get("val_auc")
        best["val_auc"] = loop.roc_auc(val_split.labels, scores)
    ckpt["head"] = head
    ckpt["val_domains"] = val_split.domains
    if val_split.domains is not None and len(set(val_split.domains)) > 1:
        ckpt.setdefault("metrics", {})["val_auc_by_domain"] = auc_by_domain(
            val_split.labels, np.asarray(ckpt["val_scores"]), val_split.domains)
    ckpt["metrics"] = {**ckpt.get("metrics", {}), **{k: v for k, v in best.items() if k != "scores"},
                       "train_images": int(len(train_split.labels)), "val_images": int(len(val_split.labels))}
    loop.save_checkpoint(ckpt, best_path)
    console(f"{cfg.recipe}: best epoch {best.get('epoch')} val AUC {best.get('val_auc', float('nan')):.4f} "
            f"-> {best_path}")
    return best_path


def auc_by_domain(labels: np.ndarray, scores: np.ndarray, domains: list[str]) -> dict[str, float]:
    groups = np.asarray(domains)
    return {d: loop.roc_auc(labels[groups == d], scores[groups == d]) for d in sorted(set(domains))}


def loop_config(cfg: RecipeConfig, **overrides: Any) -> loop.LoopConfig:
    values = dict(epochs=cfg.epochs, lr=cfg.lr, weight_decay=cfg.weight_decay, schedule=cfg.schedule,
                  step_every_steps=cfg.step_every_steps, optimizer=cfg.optimizer, momentum=cfg.momentum,
                  patience=cfg.patience, monitor=cfg.monitor or "loss", select=cfg.select or "auc",
                  plateau_patience=cfg.plateau_patience, min_lr=cfg.min_lr, seed=cfg.seed, device=cfg.device,
                  ckpt_every_steps=cfg.ckpt_every_steps, max_steps_per_epoch=cfg.max_steps_per_epoch,
                  progress=cfg.progress)
    values.update(overrides)
    return loop.LoopConfig(**values)


def _init_from(net: Net, path: str, console: Callable[[str], None]) -> None:
    state = loop.load_checkpoint(path)["model"]
    own = net.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    net.load_state_dict(usable, strict=False)
    console(f"initialised {len(usable)}/{len(own)} tensors from {path}")


@torch.no_grad()
def embeddings(net: Net, split: Split) -> np.ndarray:
    net.eval()
    return torch.cat([net(x)[0] for x, _ in split.ordered()]).numpy()


def linear_head(layer: nn.Linear) -> dict[str, Any]:
    return {"kind": "linear", "weight": layer.weight.detach().cpu().numpy(),
            "bias": layer.bias.detach().cpu().numpy()}


def bce_loss(out, y):
    logits = out[1][:, 0]
    loss = F.binary_cross_entropy_with_logits(logits, y)
    return loss, {"bce": float(loss.detach())}


def bce_score(outputs: list) -> np.ndarray:
    return torch.cat([o[1][:, 0] for o in outputs]).sigmoid().numpy()


def _json(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str) + "\n"
