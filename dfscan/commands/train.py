"""`dfscan train <recipe>` and `dfscan export`: parse options and print. The work is in `dfscan.train`,
imported only when a command runs: the scanner itself runs without torch."""
from __future__ import annotations

import inspect
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from dfscan.commands.data import check_compression, default_out_dir
from dfscan.console import out
from dfscan.errors import EXIT_SETUP, EXIT_USAGE, DfscanError


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


@dataclass(frozen=True)
class _Common:
    """An option every recipe command takes: (parameter name, annotation, typer.Option)."""
    name: str
    annotation: Any
    option: Any


def _opt(name: str, annotation: Any, default: Any, *flags: str, help: str = "") -> _Common:  # noqa: A002
    return _Common(name, annotation, typer.Option(default, *flags, help=help))


# options shared by every recipe (names and defaults as before the registry: scripts keep working)
COMMON = (
    _opt("dataset", str, ..., "--dataset", help="faces:PATH (any face set) or ff++ | celebdf | dfdc (with --data-root); several, comma-separated, train as one with batches balanced over them (each face set is a domain)."),
    _opt("data_root", Optional[Path], None, "--data-root", help="Dataset root that `dfscan extract` wrote dfscan_faces/ into."),
    _opt("compression", str, "c23", "--compression", help="FaceForensics++ quality: raw | c23 | c40."),
    _opt("methods", List[str], [], "--methods", help="FaceForensics++ methods to train on (comma-separated). Default: all."),
    _opt("backbone", str, "efficientnet_lite0", "--backbone", help="efficientnet_lite0 | dlib_resnet | facenet | resnet34 | timm names (efficientnet_b4, xception...)."),
    _opt("input_size", Optional[int], None, "--input-size", help="Crop side fed to the backbone. Default: the backbone's."),
    _opt("pretrained", bool, True, "--pretrained/--no-pretrained", help="Start from the backbone's pretrained weights."),
    _opt("weights_path", Optional[Path], None, "--weights", help="Local pretrained backbone weights (facenet, dlib_resnet, resnet34)."),
    _opt("epochs", int, 5, "--epochs"),
    _opt("batch_size", int, 32, "--batch-size", help="Balanced: half real, half fake."),
    _opt("lr", float, 1e-3, "--lr"),
    _opt("weight_decay", float, 1e-4, "--weight-decay"),
    _opt("optimizer", str, "adamw", "--optimizer", help="adamw | adam (Bondi et al.) | sgd (with --momentum; Zhang et al.)."),
    _opt("momentum", float, 0.9, "--momentum", help="SGD momentum."),
    _opt("augment", List[str], [], "--augment", help="Comma-separated: flip,bc,hsv,jpeg,isonoise,gaussnoise,downscale, or none. Default: the recipe's (bce, twostep: flip,bc,hsv,jpeg as Bondi et al.)."),
    _opt("aug_copies", int, 4, "--aug-copies", help="With cached frozen stages, augmented copies of each train face cached once."),
    _opt("limit", Optional[int], None, "--limit", help="Train on a class-balanced random subset of N train faces."),
    _opt("val_limit", Optional[int], None, "--val-limit", help="Validate on a subset of N val faces."),
    _opt("seed", int, 0, "--seed"),
    _opt("device", str, "auto", "--device", help="auto | cpu | cuda."),
    _opt("out_dir", Path, ..., "--out", "-o", help="Run directory (checkpoints, log.jsonl)."),
    _opt("resume", bool, False, "--resume", help="Continue from <out>/last.pt."),
    _opt("patience", int, 3, "--patience", help="Validations without improvement of the watched val quantity (val loss; multimetric: its CE term) before stopping."),
    _opt("freeze_stages", int, 0, "--freeze-stages", help="Freeze the first K backbone stages (their maps are cached once)."),
    _opt("cache_dir", Optional[Path], None, "--cache-dir", help="Where frozen-stage maps are cached. Default: <out>/cache."),
    _opt("crop_margin", Optional[float], None, "--crop-margin", help="Margin the scanner must cut around the MTCNN box (goes to the manifest). Default: the face sets' own (faceset.json, written by `dfscan extract` / `dfscan sbi`)."),
    _opt("schedule", str, "cosine", "--schedule", help="cosine | step | constant | plateau (lr x0.1 when val loss stalls, stop below --min-lr, best val loss kept: Bondi et al.)."),
    _opt("step_every_steps", int, 0, "--step-every", help="--schedule step: lr x0.1 every N iterations (Zhang et al.: 3000). 0: every 2 epochs."),
    _opt("plateau_patience", int, 1, "--plateau-patience", help="--schedule plateau: validations without improvement per lr drop."),
    _opt("min_lr", float, 1e-8, "--min-lr", help="--schedule plateau: training ends below this lr."),
    _opt("ckpt_every", int, 0, "--ckpt-every", help="Also checkpoint every N steps (0: epoch ends only)."),
    _opt("pseudo_fakes", Optional[str], None, "--pseudo-fakes", help="sbi or sbi:FRACTION: add a self-blended twin (label fake) of that share of the real faces, blended afresh each epoch (once, when frozen stages are cached). For a larger pre-generated pool use `dfscan sbi`."),
    _opt("init", Optional[Path], None, "--init", help="Initialise the embedder from this checkpoint (e.g. twostep from a bce run)."),
    _opt("bags", int, 1, "--bags", help="Kumar & Bhavsar's bagging: K members on disjoint balanced subsets, exported as one ensemble."),
    _opt("combination", str, "vote", "--combination", help="--bags: vote (majority of the members' decisions, as the paper) | mean."),
)
CLI_ONLY = {"data_root", "compression", "out_dir", "resume", "ckpt_every"}


def _train(recipe: str, values: dict[str, Any]) -> None:
    """Every recipe command ends here with its own options, mapped onto RecipeConfig."""
    _need_torch()
    from dfscan.train.data import parse_pseudo_fakes  # noqa: PLC0415
    from dfscan.train.loop import check_device  # noqa: PLC0415
    from dfscan.train.recipes import RecipeConfig, get_spec, run_recipe  # noqa: PLC0415
    check_device(values["device"])  # before the run writes anything
    _check_values(values)
    try:
        parse_pseudo_fakes(values.get("pseudo_fakes"))
    except ValueError as exc:
        raise _fail(str(exc)) from None
    spec = get_spec(recipe)
    for option in spec.options:
        value = values.pop(option.name)
        if option.choices and value not in option.choices:
            raise _fail(f"{option.flag} must be {' or '.join(option.choices)}")
        if option.valid and not option.valid[0](value):
            raise _fail(f"{option.flag} must be {option.valid[1]}, not {value!r}")
        values.update(option.to_config(value) if option.to_config else {option.name: value})
    paths = [resolve_dataset(d, values["data_root"], values["compression"]) for d in _split_list([values["dataset"]])]
    augment = _split_list(values.pop("augment"))
    from dfscan.train.augment import AUGMENTATIONS  # noqa: PLC0415
    unknown = [name for name in augment if name not in AUGMENTATIONS and augment != ("none",)]
    if unknown:
        raise _fail(f"--augment must name augmentations of {', '.join(AUGMENTATIONS)} (or none), not "
                    f"{', '.join(map(repr, unknown))}")
    out_dir, resume = values["out_dir"], values["resume"]
    fields = {k: v for k, v in values.items() if k not in CLI_ONLY}
    fields.update(dataset=",".join(str(p) for p in paths), methods=_split_list(values["methods"]),
                  augment=(() if augment == ("none",) else augment) or None, cache_dir=_s(values["cache_dir"]),
                  init=_s(values["init"]), weights_path=_s(values["weights_path"]),
                  ckpt_every_steps=values["ckpt_every"])
    if fields["bags"] < 1:
        raise _fail("--bags must be 1 or more")
    cfg = RecipeConfig(recipe=recipe, **fields)
    _check_run_dir(Path(out_dir), resume)
    if resume:
        _check_resume(cfg, Path(out_dir))
    try:
        best = run_recipe(cfg, out_dir, resume=resume, console=lambda s: out.print(s, highlight=False))
    except DfscanError:
        raise
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        raise _fail(str(exc), EXIT_SETUP) from None
    from dfscan.train.loop import is_main_process  # noqa: PLC0415
    if not is_main_process():  # torchrun: one report, from rank 0
        return
    out.print(f"checkpoint: {best}\nexport it with: dfscan export {best} --out BUNDLE_DIR", highlight=False)


# What a training run writes into its --out (a bagged run: member_<i>/ with the same inside).
RUN_FILES = ("best.pt", "last.pt", "log.jsonl", "config.json", "member_0")
# A batch is built in memory at once (4,096 faces at 224 px: 2.4 GB of input alone).
MAX_BATCH = 4096
# What a resumed run may change: how long and where it trains, not what it trains (the weights it starts from
# are last.pt's, whatever --init/--weights/--pretrained say).
RESUMABLE_CHANGES = {"epochs", "device", "progress", "cache_dir", "num_workers", "ckpt_every_steps", "patience",
                     "max_steps_per_epoch", "init", "weights_path", "pretrained"}


def _check_run_dir(out_dir: Path, resume: bool) -> None:
    """A run never writes over an earlier one unasked: --resume continues it, otherwise --out must hold none."""
    if out_dir.exists() and not out_dir.is_dir():
        raise _fail(f"--out {out_dir} exists and is not a directory: a run writes a directory")
    earlier = [name for name in RUN_FILES if (out_dir / name).exists()]
    if earlier and not resume:
        raise _fail(f"--out {out_dir} holds an earlier run ({', '.join(earlier)}): --resume continues it, "
                    "or give another directory")


def _check_resume(cfg: Any, out_dir: Path) -> None:
    """`--resume` continues the run in --out as it was: never a finished run's best.pt retrained from nothing,
    never another recipe or other data under the same config.json (checked before anything is written)."""
    from dataclasses import asdict  # noqa: PLC0415

    bagged = not (out_dir / "config.json").is_file() and (out_dir / "member_0").is_dir()
    run = out_dir / "member_0" if bagged else out_dir  # a bagged run's members hold its config and checkpoints
    if (run / "best.pt").exists() and not (run / "last.pt").is_file():
        raise _fail(f"--resume: {run} holds best.pt but no last.pt to go on from (a finished or moved run); "
                    "train into another --out", EXIT_USAGE)
    try:
        earlier = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        earlier = None
    if not isinstance(earlier, dict):
        if (run / "last.pt").is_file():
            raise _fail(f"--resume: {run} has last.pt but no readable config.json to check this run against",
                        EXIT_USAGE)
        out.print(f"nothing to resume in {out_dir}: training from the start", highlight=False)
        return
    now = json.loads(json.dumps(asdict(cfg)))  # tuples as lists, as config.json holds them

    def same(key: str, value: Any) -> bool:
        if key == "dataset" and isinstance(earlier[key], str):  # faces:sets vs faces:/abs/sets is one face set
            return [os.path.realpath(d) for d in value.split(",")] == \
                [os.path.realpath(d) for d in earlier[key].split(",")]
        return value == earlier[key]

    changed = [k for k, v in now.items() if k not in RESUMABLE_CHANGES and k in earlier and v is not None
               and not same(k, v) and k != "bag"]
    if changed:
        what = ", ".join(f"{k} {earlier[k]!r} -> {now[k]!r}" for k in changed[:4])
        raise _fail(f"--resume: {out_dir} was trained with other settings ({what}); resume it with the same "
                    "command, or train into another --out", EXIT_USAGE)


def _check_values(values: dict[str, Any]) -> None:
    """Values no run can train with are usage errors before anything is written (exit 2), not a library's
    message after the run directory exists, and not a run that trains nothing."""
    from dfscan.model.manifest import ENSEMBLE_COMBINATIONS  # noqa: PLC0415
    from dfscan.settings import crop_margin_ok, input_size_ok  # noqa: PLC0415
    from dfscan.train.backbones import is_known_backbone, list_backbones  # noqa: PLC0415
    from dfscan.train.loop import OPTIMIZERS, SCHEDULES  # noqa: PLC0415

    def number(value: Any, low: float, high: float = math.inf) -> bool:
        return isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high

    checks = (
        ("epochs", lambda v: v >= 1, "at least 1"),
        ("batch_size", lambda v: 2 <= v <= MAX_BATCH, f"2 to {MAX_BATCH} (half real, half fake)"),
        ("lr", lambda v: number(v, 0) and v > 0, "a number above 0"),
        ("weight_decay", lambda v: number(v, 0), "a number, 0 or more"),
        ("momentum", lambda v: number(v, 0, 1) and v < 1, "a number in [0, 1)"),
        ("min_lr", lambda v: number(v, 0), "a number, 0 or more"),
        ("aug_copies", lambda v: v >= 1, "at least 1"),
        ("limit", lambda v: v is None or v >= 2, "at least 2 (a real and a fake face)"),
        ("val_limit", lambda v: v is None or v >= 2, "at least 2 (a real and a fake face)"),
        ("seed", lambda v: 0 <= v < 2**32, "a whole number in [0, 2^32)"),
        ("patience", lambda v: v >= 0, "0 or more"),
        ("freeze_stages", lambda v: v >= 0, "0 or more"),
        ("step_every_steps", lambda v: v >= 0, "0 or more"),
        ("plateau_patience", lambda v: v >= 1, "at least 1"),
        ("ckpt_every", lambda v: v >= 0, "0 or more"),
        ("input_size", lambda v: v is None or input_size_ok(v), "a whole number in [16, 1024] (a bundle's bounds)"),
        ("crop_margin", lambda v: v is None or crop_margin_ok(v), "a number in (-0.5, 2] (a bundle's bounds)"),
        ("optimizer", lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
        ("schedule", lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
        ("combination", lambda v: v in ENSEMBLE_COMBINATIONS, f"one of {', '.join(ENSEMBLE_COMBINATIONS)}"),
    )
    check_compression(values["compression"])
    if not is_known_backbone(values["backbone"]):
        raise _fail(f"--backbone must be one of {', '.join(list_backbones())}, not {values['backbone']!r}")
    if values.get("init") is not None and not Path(values["init"]).is_file():
        raise _fail(f"--init {values['init']}: no checkpoint there")
    for name, ok, expected in checks:
        if name in values and not ok(values[name]):
            flag = next(c.option.param_decls[0] for c in COMMON if c.name == name)
            raise _fail(f"{flag} must be {expected}, not {values[name]!r}")


def _command(recipe: str, summary: str, options: tuple) -> Callable[..., None]:
    """A typer command for `recipe`: the common options, then the recipe's own (from its spec)."""
    own = [_Common(o.name, o.type, typer.Option(o.default, o.flag, help=o.help)) for o in options]
    params = [inspect.Parameter(c.name, inspect.Parameter.KEYWORD_ONLY, default=c.option, annotation=c.annotation)
              for c in (*COMMON, *own)]

    def command(**values: Any) -> None:
        _train(recipe, values)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__name__ = recipe
    command.__doc__ = summary
    return command


def _register_recipes() -> None:
    from dfscan.train.recipes import registry  # noqa: PLC0415 - torch-free: specs only
    for name, spec in registry().items():
        train_app.command(name)(_command(name, spec.summary, spec.options))


_register_recipes()


def export_command(
    checkpoint: Path = typer.Argument(..., help="A checkpoint a training run wrote (<run>/best.pt)."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="Bundle directory to write."),
    name: str = typer.Option("dfscan-custom", "--name", help="Manifest name."),
    version: Optional[str] = typer.Option(None, "--version", help="Manifest version. Default: today's date."),
    license_text: Optional[str] = typer.Option(None, "--license", help="Licence statement for the manifest."),
    default_point: str = typer.Option("balanced", "--default-point", help="Operating point the bundle scans with by default: balanced (EER) | guarded (FPR <= 5% in every val domain) | low-fpr (1%) | high-recall."),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="int8: an int8 embedder (about 2.5x faster on CPU), calibrated on the training faces; thresholds fitted on its own val scores."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the model bundle already in --out (the whole directory)."),
) -> None:
    """Export a checkpoint as a model bundle: ONNX embedder + classifier, calibration, thresholds."""
    _need_torch()
    from dfscan.outputs import Output, check_outputs  # noqa: PLC0415
    from dfscan.train.export import OPERATING_POINTS, QUANTIZATIONS, export_bundle  # noqa: PLC0415
    if not checkpoint.is_file():
        raise _fail(f"no checkpoint at {checkpoint}")
    if default_point not in OPERATING_POINTS:
        raise _fail(f"--default-point must be one of {', '.join(OPERATING_POINTS)}, not {default_point!r}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise _fail(f"--quantize must be one of {', '.join(QUANTIZATIONS)}, not {quantize!r}")
    try:
        check_outputs([Output("--out", "bundle", out_dir)], [checkpoint], overwrite)
    except DfscanError as exc:
        raise _fail(exc.message, exc.exit_code) from None
    try:
        bundle = export_bundle(checkpoint, out_dir, name=name, version=version, license_text=license_text,
                               default_point=default_point, quantize=quantize)
    except (ValueError, RuntimeError) as exc:
        raise _fail(str(exc), EXIT_SETUP) from None
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    m = manifest["metrics"]
    out.print(f"wrote {bundle}: val AUC {m['val_auc']:.4f}, EER {m['val_eer']:.4f}, threshold "
              f"{manifest['scan']['threshold']:.4f} ({manifest['scan']['operating_point']})", highlight=False)


def soup_command(
    checkpoints: List[Path] = typer.Argument(..., help="Two or more checkpoints of one architecture, fine-tuned from one starting point (<run>/best.pt)."),
    out_path: Path = typer.Option(..., "--out", "-o", help="Checkpoint to write (export it with `dfscan export`)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Comma-separated weights, one per checkpoint (normalised to sum 1). Default: equal."),
) -> None:
    """Average fine-tuned checkpoints into one model (a model soup); its val split is scored again."""
    _need_torch()
    from dfscan.train.soup import make_soup, normalised_weights  # noqa: PLC0415
    missing = [str(c) for c in checkpoints if not c.is_file()]
    if missing:
        raise _fail(f"no checkpoint at {missing[0]}")
    if out_path.exists():
        raise _fail(f"{out_path} exists: choose a new --out (a soup never overwrites a checkpoint)")
    if len(checkpoints) < 2:
        raise _fail("a soup needs at least two checkpoints")
    try:
        values = [float(w) for w in weights.split(",")] if weights else None
    except ValueError:
        raise _fail(f"--weights must be comma-separated numbers, not {weights!r}") from None
    try:
        normalised_weights(values, len(checkpoints))
    except ValueError as exc:
        raise _fail(f"--weights: {exc}") from None
    try:
        metrics = make_soup(checkpoints, out_path, values)["metrics"]
    except ValueError as exc:
        raise _fail(str(exc), EXIT_SETUP) from None
    by_domain = ", ".join(f"{d} {a:.4f}" for d, a in metrics.get("val_auc_by_domain", {}).items())
    out.print(f"wrote {out_path}: val AUC {metrics['val_auc']:.4f}" + (f" ({by_domain})" if by_domain else "")
              + f"\nexport it with: dfscan export {out_path} --out BUNDLE_DIR", highlight=False)


def _s(path: Optional[Path]) -> Optional[str]:
    return str(path) if path is not None else None
