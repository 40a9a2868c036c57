"""`RecipeConfig`: every setting a training run takes, for every recipe (torch-free)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RecipeConfig:
    recipe: str
    dataset: str                        # face-set directory; several, comma-separated: one domain each
    backbone: str = "efficientnet_lite0"
    input_size: int | None = None       # None: the backbone's native size
    pretrained: bool = True
    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"            # adamw | adam (Bondi et al.) | sgd (momentum; Zhang et al.)
    momentum: float = 0.9
    schedule: str = "cosine"            # cosine | step | constant | plateau (Bondi et al.)
    step_every_steps: int = 0           # "step" by iterations (Zhang et al.: 3000); 0: every 2 epochs
    plateau_patience: int = 1           # "plateau": validations without val-loss improvement per lr drop
    min_lr: float = 1e-8                # "plateau": training ends below this lr
    patience: int = 3
    monitor: str | None = None          # early stopping watches this val quantity; None: the recipe's
    select: str | None = None           # best checkpoint: "auc" | "monitor"; None: the recipe's
    seed: int = 0
    device: str = "cpu"
    augment: tuple[str, ...] | None = None  # None: the recipe's default (Bondi's set for bce / twostep)
    aug_copies: int = 4                 # augmented copies cached per train face when stages are cached
    methods: tuple[str, ...] = ()       # keep only fakes whose video path names one of these (FF++)
    limit: int | None = None            # train subset size (class-balanced)
    val_limit: int | None = None
    mode: str = "finetune"              # triplet: frozen | finetune
    freeze_stages: int = 0
    cache: bool = True                  # cache the frozen stages' maps
    cache_dir: str | None = None        # default: <run>/cache
    classifier: str = "logreg"          # triplet: rf | sgd | logreg
    proj_dim: int = 128                 # triplet / multimetric embedding size (0: backbone features)
    margin: float = 0.2                 # triplet margin (multimetric uses the paper's 1.0)
    mining: str | None = None           # triplet / twostep: semihard | random (Bondi's balanced triplets)
    use_ahe: bool = True                # multimetric
    head_epochs: int = 3                # twostep, second step
    crop_margin: float | None = None    # None: from the face sets' faceset.json (the scanner's crop)
    ckpt_every_steps: int = 0
    max_steps_per_epoch: int = 0
    num_workers: int = 1
    init: str | None = None             # checkpoint whose embedder initialises this run
    progress: bool = True
    weights_path: str | None = None     # local pretrained weights (facenet, dlib_resnet, resnet34)
    bags: int = 1                       # Kumar & Bhavsar: K members on disjoint balanced subsets
    bag: int = 0                        # this member's index when bags > 1
    combination: str = "vote"           # ensemble: vote (majority, as Kumar) | mean
    pseudo_fakes: str | None = None     # "sbi[:FRACTION]": self-blended twins of that share of real faces

    @property
    def datasets(self) -> list[str]:
        """The face sets this run trains on (`dataset` may hold several, comma-separated)."""
        return [d.strip() for d in str(self.dataset).split(",") if d.strip()]
