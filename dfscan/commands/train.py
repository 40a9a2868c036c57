"""`dfscan train <recipe>` and `dfscan export`: parse options and print. The work is in `dfscan.train`,
imported only when a command runs: the scanner itself runs without torch."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape

from dfscan.commands.data import default_out_dir
from dfscan.errors import EXIT_SETUP, EXIT_USAGE

out = Console()
err = Console(stderr=True)

train_app = typer.Typer(name="train", help="Train a detector on a face set (needs dfscan[train]).",
                        no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

NAMED_DATASETS = ("ff++", "celebdf", "dfdc")
TORCH_MISSING = "training needs torch: pip install 'dfscan[train]'"


def _fail(message: str, code: int = EXIT_USAGE) -> typer.Exit:
    from dfscan.console import fail  # noqa: PLC0415 - the one error printer

    return fail(message, code)


def _need_torch() -> None:
    try:
        import torch  # noqa: F401, PLC0415
    except ImportError:
        raise _fail(TORCH_MISSING, EXIT_SETUP) from None


def resolve_dataset(dataset: str, data_root: Path | None, compression: str) -> Path:
    """`faces:PATH` -> PATH; `ff++|celebdf|dfdc` -> <data-root>/dfscan_faces/<dataset>[_<compression>]."""
    if dataset.startswith("faces:"):
        path = Path(dataset[len("faces:"):]).expanduser()
        where = f"face set {path}"
    elif dataset in NAMED_DATASETS:
        if data_root is None:
            raise _fail(f"--dataset {dataset} needs --data-root (the folder `dfscan extract` wrote into)")
        path = default_out_dir(dataset, data_root.expanduser(), compression)  # where `dfscan extract` wrote it
        flag = f" --compression {compression}" if dataset == "ff++" else ""
        where = (f"no extracted faces for {dataset} at {path}: run "
                 f"`dfscan extract {dataset} {data_root}{flag}` first")
    else:
        raise _fail(f"--dataset must be faces:PATH or one of {', '.join(NAMED_DATASETS)}, not {dataset!r}")
    if not (path / "labels.csv").is_file():
        raise _fail(where if dataset in NAMED_DATASETS else f"{where} has no labels.csv")
    return path


def _split_list(values: List[str]) -> tuple[str, ...]:
    return tuple(v.strip() for value in values for v in value.split(",") if v.strip())


# options shared by every recipe
DatasetOpt = typer.Option(..., "--dataset", help="faces:PATH (any face set) or ff++ | celebdf | dfdc (with --data-root); several, comma-separated, train as one with batches balanced over them (each face set is a domain).")
DataRootOpt = typer.Option(None, "--data-root", help="Dataset root that `dfscan extract` wrote dfscan_faces/ into.")
CompressionOpt = typer.Option("c23", "--compression", help="FaceForensics++ quality: c23 | c40.")
MethodsOpt = typer.Option([], "--methods", help="FaceForensics++ methods to train on (comma-separated). Default: all.")
BackboneOpt = typer.Option("efficientnet_lite0", "--backbone", help="efficientnet_lite0 | dlib_resnet | facenet | timm names (efficientnet_b4, xception, resnet34...).")
InputSizeOpt = typer.Option(None, "--input-size", help="Crop side fed to the backbone. Default: the backbone's.")
EpochsOpt = typer.Option(5, "--epochs")
BatchOpt = typer.Option(32, "--batch-size", help="Balanced: half real, half fake.")
LrOpt = typer.Option(1e-3, "--lr")
AugOpt = typer.Option([], "--augment", help="Comma-separated: flip,bc,hsv,jpeg,isonoise,gaussnoise,downscale.")
LimitOpt = typer.Option(None, "--limit", help="Train on a class-balanced random subset of N train faces.")
ValLimitOpt = typer.Option(None, "--val-limit", help="Validate on a subset of N val faces.")
SeedOpt = typer.Option(0, "--seed")
DeviceOpt = typer.Option("auto", "--device", help="auto | cpu | cuda.")
OutOpt = typer.Option(..., "--out", "-o", help="Run directory (checkpoints, log.jsonl).")
ResumeOpt = typer.Option(False, "--resume", help="Continue from <out>/last.pt.")
PatienceOpt = typer.Option(3, "--patience", help="Epochs without val-loss improvement before stopping.")
FreezeOpt = typer.Option(0, "--freeze-stages", help="Freeze the first K backbone stages (their maps are cached once).")
CacheDirOpt = typer.Option(None, "--cache-dir", help="Where frozen-stage maps are cached. Default: <out>/cache.")
MarginOpt = typer.Option(None, "--crop-margin", help="Margin the scanner must cut around the MTCNN box (goes to the manifest). Default: the face sets' own (faceset.json, written by `dfscan extract` / `dfscan sbi`).")
ScheduleOpt = typer.Option("cosine", "--schedule", help="cosine | step | constant.")
CkptStepsOpt = typer.Option(0, "--ckpt-every", help="Also checkpoint every N steps (0: epoch ends only).")
PseudoOpt = typer.Option(None, "--pseudo-fakes", help="sbi or sbi:FRACTION: add a self-blended twin (label fake) of that share of the real faces, blended afresh each epoch (once, when frozen stages are cached). For a larger pre-generated pool use `dfscan sbi`.")
InitOpt = typer.Option(None, "--init", help="Initialise the embedder from this checkpoint (e.g. twostep from a bce run).")


def _train(recipe: str, dataset: str, data_root: Optional[Path], compression: str, methods: List[str],
           out_dir: Path, resume: bool, cache_dir: Optional[Path], init: Optional[Path], ckpt_every: int,
           **kwargs: object) -> None:
    """Every recipe command ends here with its own options (`**locals()`), mapped onto RecipeConfig."""
    _need_torch()
    from dfscan.train.data import parse_pseudo_fakes  # noqa: PLC0415
    try:
        parse_pseudo_fakes(kwargs.get("pseudo_fakes"))  # type: ignore[arg-type]
    except ValueError as exc:
        raise _fail(str(exc)) from None
    kwargs.update(cache_dir=_s(cache_dir), init=_s(init), ckpt_every_steps=ckpt_every)
    path = ",".join(str(resolve_dataset(part.strip(), data_root, compression))
                    for part in dataset.split(",") if part.strip())
    from dfscan.train.recipes import RecipeConfig, run_recipe  # noqa: PLC0415
    augment = _split_list(kwargs.pop("augment"))  # type: ignore[arg-type]
    cfg = RecipeConfig(recipe=recipe, dataset=str(path), augment=augment, methods=_split_list(methods),
                       **kwargs)  # type: ignore[arg-type]
    try:
        best = run_recipe(cfg, out_dir, resume=resume, console=lambda s: out.print(s, highlight=False))
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        raise _fail(str(exc), EXIT_SETUP) from None
    from dfscan.train.loop import is_main_process  # noqa: PLC0415
    if not is_main_process():  # torchrun: one report, from rank 0
        return
    out.print(f"checkpoint: {best}\nexport it with: dfscan export {best} --out BUNDLE_DIR", highlight=False)


@train_app.command()
def triplet(
    dataset: str = DatasetOpt, data_root: Optional[Path] = DataRootOpt, compression: str = CompressionOpt,
    methods: List[str] = MethodsOpt, backbone: str = BackboneOpt, input_size: Optional[int] = InputSizeOpt,
    epochs: int = EpochsOpt, batch_size: int = BatchOpt, lr: float = LrOpt, augment: List[str] = AugOpt,
    limit: Optional[int] = LimitOpt, val_limit: Optional[int] = ValLimitOpt, seed: int = SeedOpt,
    device: str = DeviceOpt, out_dir: Path = OutOpt, resume: bool = ResumeOpt, patience: int = PatienceOpt,
    freeze_stages: int = FreezeOpt, cache_dir: Optional[Path] = CacheDirOpt, crop_margin: Optional[float] = MarginOpt,
    schedule: str = ScheduleOpt, ckpt_every: int = CkptStepsOpt, init: Optional[Path] = InitOpt,
    pseudo_fakes: Optional[str] = PseudoOpt,
    mode: str = typer.Option("finetune", "--mode", help="frozen (cache backbone features, train a projection) | finetune."),
    classifier: str = typer.Option("logreg", "--classifier", help="rf | sgd | logreg, fit on the learned embeddings."),
    margin: float = typer.Option(0.2, "--margin", help="Triplet margin (L2-normalised embeddings)."),
    proj_dim: int = typer.Option(128, "--embed-dim", help="Embedding size (projection after the backbone)."),
) -> None:
    """Kumar & Bhavsar: semi-hard triplet loss on L2-normalised embeddings, then RF/SGD/logreg."""
    if mode not in ("frozen", "finetune"):
        raise _fail("--mode must be frozen or finetune")
    _train("triplet", **locals())


@train_app.command()
def bce(
    dataset: str = DatasetOpt, data_root: Optional[Path] = DataRootOpt, compression: str = CompressionOpt,
    methods: List[str] = MethodsOpt, backbone: str = BackboneOpt, input_size: Optional[int] = InputSizeOpt,
    epochs: int = EpochsOpt, batch_size: int = BatchOpt, lr: float = LrOpt, augment: List[str] = AugOpt,
    limit: Optional[int] = LimitOpt, val_limit: Optional[int] = ValLimitOpt, seed: int = SeedOpt,
    device: str = DeviceOpt, out_dir: Path = OutOpt, resume: bool = ResumeOpt, patience: int = PatienceOpt,
    freeze_stages: int = FreezeOpt, cache_dir: Optional[Path] = CacheDirOpt, crop_margin: Optional[float] = MarginOpt,
    schedule: str = ScheduleOpt, ckpt_every: int = CkptStepsOpt, init: Optional[Path] = InitOpt,
    pseudo_fakes: Optional[str] = PseudoOpt,
) -> None:
    """Bondi et al. baseline: backbone + linear head trained with binary cross-entropy."""
    _train("bce", **locals())


@train_app.command()
def twostep(
    dataset: str = DatasetOpt, data_root: Optional[Path] = DataRootOpt, compression: str = CompressionOpt,
    methods: List[str] = MethodsOpt, backbone: str = BackboneOpt, input_size: Optional[int] = InputSizeOpt,
    epochs: int = EpochsOpt, batch_size: int = BatchOpt, lr: float = LrOpt, augment: List[str] = AugOpt,
    limit: Optional[int] = LimitOpt, val_limit: Optional[int] = ValLimitOpt, seed: int = SeedOpt,
    device: str = DeviceOpt, out_dir: Path = OutOpt, resume: bool = ResumeOpt, patience: int = PatienceOpt,
    freeze_stages: int = FreezeOpt, cache_dir: Optional[Path] = CacheDirOpt, crop_margin: Optional[float] = MarginOpt,
    schedule: str = ScheduleOpt, ckpt_every: int = CkptStepsOpt, init: Optional[Path] = InitOpt,
    pseudo_fakes: Optional[str] = PseudoOpt,
    margin: float = typer.Option(0.2, "--margin", help="Triplet margin (L2-normalised features)."),
    head_epochs: int = typer.Option(3, "--head-epochs", help="Epochs of the second step (linear head, BCE)."),
) -> None:
    """Bondi et al. two-step: triplet loss on the feature layer, then the classifier alone with BCE
    (the paper starts from a BCE-trained network: pass --init <bce run>/best.pt)."""
    _train("twostep", **locals())


@train_app.command()
def multimetric(
    dataset: str = DatasetOpt, data_root: Optional[Path] = DataRootOpt, compression: str = CompressionOpt,
    methods: List[str] = MethodsOpt, backbone: str = BackboneOpt, input_size: Optional[int] = InputSizeOpt,
    epochs: int = EpochsOpt, batch_size: int = BatchOpt, lr: float = LrOpt, augment: List[str] = AugOpt,
    limit: Optional[int] = LimitOpt, val_limit: Optional[int] = ValLimitOpt, seed: int = SeedOpt,
    device: str = DeviceOpt, out_dir: Path = OutOpt, resume: bool = ResumeOpt, patience: int = PatienceOpt,
    freeze_stages: int = FreezeOpt, cache_dir: Optional[Path] = CacheDirOpt, crop_margin: Optional[float] = MarginOpt,
    schedule: str = ScheduleOpt, ckpt_every: int = CkptStepsOpt, init: Optional[Path] = InitOpt,
    pseudo_fakes: Optional[str] = PseudoOpt,
    no_ahe: bool = typer.Option(False, "--no-ahe", help="Switch the Adaptive Hardness-aware Expander off."),
    proj_dim: int = typer.Option(128, "--embed-dim", help="Embedding size (projection after the backbone)."),
) -> None:
    """Zhang et al.: weight-center + triplet + cross-entropy (beta=2, chi=1, alpha=2, margin=1), with AHE."""
    use_ahe = not no_ahe
    del no_ahe
    _train("multimetric", **locals())


def export_command(
    checkpoint: Path = typer.Argument(..., help="A checkpoint a training run wrote (<run>/best.pt)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Bundle directory to write."),
    name: str = typer.Option("dfscan-custom", "--name", help="Manifest name."),
    version: Optional[str] = typer.Option(None, "--version", help="Manifest version. Default: today's date."),
    license_text: Optional[str] = typer.Option(None, "--license", help="Licence statement for the manifest."),
    default_point: str = typer.Option("balanced", "--default-point", help="Operating point the bundle scans with by default: balanced (EER) | guarded (FPR <= 5% in every val domain) | low-fpr (1%) | high-recall."),
) -> None:
    """Export a checkpoint as a model bundle: ONNX embedder + classifier, calibration, thresholds."""
    _need_torch()
    from dfscan.train.export import export_bundle  # noqa: PLC0415
    if not checkpoint.is_file():
        raise _fail(f"no checkpoint at {checkpoint}")
    try:
        bundle = export_bundle(checkpoint, out_dir, name=name, version=version, license_text=license_text,
                               default_point=default_point)
    except (ValueError, RuntimeError) as exc:
        raise _fail(str(exc), EXIT_SETUP) from None
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    m = manifest["metrics"]
    out.print(f"wrote {bundle}: val AUC {m['val_auc']:.4f}, EER {m['val_eer']:.4f}, threshold "
              f"{manifest['scan']['threshold']:.4f} ({manifest['scan']['operating_point']})", highlight=False)


def _s(path: Optional[Path]) -> Optional[str]:
    return str(path) if path is not None else None
