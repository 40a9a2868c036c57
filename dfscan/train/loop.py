"""The one training loop every recipe uses.

A recipe hands over a `TrainTask`: the trainable module, its loss, a batch source for train and val
(images through a DataLoader, or cached frozen-stage maps) and a scoring rule for val AUC. The loop
does the rest: AdamW / Adam / SGD with momentum, cosine / step (by epochs or iterations) / plateau LR,
progress with images/s, checkpoints every epoch (and every N steps) that resume exactly, the best
checkpoint by val AUC or by a val loss, early stopping on a chosen val quantity, and a JSONL log of every
epoch (each loss term, train and val) in the run directory.

Under torchrun (`torchrun --nproc-per-node N -m dfscan train ...`, WORLD_SIZE > 1 in the environment) the
first `train` of each process is distributed: DistributedDataParallel (gloo on CPU, nccl on CUDA, one GPU
per local rank), each rank takes every N-th of the task's balanced batches (so every rank's batches stay
half real, half fake and the global batch is N x --batch-size), rank 0 alone validates, logs and writes
checkpoints, and all ranks resume from the same last.pt. Later `train` calls in the process (a recipe's
second step on rank 0) run alone.
"""
from __future__ import annotations

import io
import json
import math
import os
import pickle
import re
import time
from dataclasses import asdict, dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import nn

from dfscan.errors import UsageError
from dfscan.outputs import atomic_write_text, open_append

CKPT_FORMAT = "dfscan-ckpt/1"
LAST, BEST = "last.pt", "best.pt"


@dataclass
class LoopConfig:
    epochs: int = 5
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"            # cosine | step | constant | plateau
    step_every: int = 2                 # epochs per x0.1 drop for "step"
    step_every_steps: int = 0           # "step" by iterations instead (Zhang et al.: 3000); 0: by epochs
    warmup_steps: int = 0
    optimizer: str = "adamw"            # adamw | adam | sgd (momentum below)
    momentum: float = 0.9
    patience: int = 3                   # validations without improvement of `monitor` before stopping
    monitor: str = "loss"               # early stopping / plateau: "loss" (val total), "auc", or a loss term
    select: str = "auc"                 # best checkpoint: "auc" (highest) or as `monitor` ("monitor")
    plateau_patience: int = 1           # "plateau": validations without improvement before lr x factor
    plateau_factor: float = 0.1
    min_lr: float = 1e-8                # "plateau": stop once the lr falls below this (Bondi et al.)
    seed: int = 0
    device: str = "cpu"
    ckpt_every_steps: int = 0           # 0: only at epoch ends
    max_steps_per_epoch: int = 0        # 0: a full pass
    progress: bool = True


Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class TrainTask:
    """What a recipe gives the loop."""
    model: nn.Module
    # (model output, labels) -> (loss, parts); model output is whatever model(x) returns
    loss: Callable[[Any, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]
    # epoch, start batch -> iterator of (x, y); must be deterministic given (seed, epoch)
    train_batches: Callable[[int, int], Iterator[Batch]]
    steps_per_epoch: int
    val_batches: Callable[[], Iterator[Batch]]
    # model outputs of a whole val pass -> scores (higher = fake), for AUC
    score: Callable[[list[Any]], np.ndarray]
    extra_modules: dict[str, nn.Module] = field(default_factory=dict)  # e.g. loss centers
    on_epoch_start: Callable[[int], None] | None = None
    on_step_start: Callable[[int, int], None] | None = None  # (global step, total steps): staged losses
    parameters: list[torch.nn.Parameter] | None = None
    # torchrun: True when train_batches already yields only this rank's share (`rank_share`), so that
    # no rank loads the images of another's batches; otherwise the loop drops the other ranks' batches.
    shards_batches: bool = False


def check_device(device: str) -> None:
    """A device name training accepts: auto, cpu, cuda or cuda:N (UsageError, exit 2, otherwise)."""
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise UsageError(f"--device must be auto, cpu, cuda or cuda:N, not {device!r}")


def resolve_device(device: str) -> torch.device:
    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device available to torch")
    return torch.device(device)


def set_threads() -> None:
    from dfscan.runtime import usable_cores  # noqa: PLC0415

    cores = usable_cores()
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun: ranks on this machine
    torch.set_num_threads(max(1, cores // max(1, local_processes)))


# ---------------------------------------------------------------- distributed (torchrun)

@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


_distributed_done = False  # the first train() of a torchrun process is the distributed one
_current = Distributed()    # the job the running train() is part of


def rank_share(batches: list[Any]) -> list[Any]:
    """This rank's share of a list of batches that starts at a multiple of the world size: every
    world-th, starting at the rank (all of them outside a distributed train())."""
    return batches[_current.rank::_current.world] if _current.active else batches


def distributed_from_env() -> Distributed:
    return Distributed(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                       int(os.environ.get("LOCAL_RANK", "0")))


def is_main_process() -> bool:
    """False on torchrun ranks > 0: they train, but rank 0 alone writes checkpoints, logs and exports."""
    return distributed_from_env().main


def _start_distributed(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the torchrun process group when there is one to join; the device is this rank's."""
    import torch.distributed as tdist  # noqa: PLC0415

    ddp = distributed_from_env()
    global _current  # noqa: PLW0603
    if not ddp.active or _distributed_done or not tdist.is_available():
        return Distributed(), device
    if device.type == "cuda":
        device = torch.device("cuda", ddp.local_rank)
        torch.cuda.set_device(device)
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    _current = ddp
    return ddp, device


def _finish_distributed(ddp: Distributed) -> None:
    global _distributed_done  # noqa: PLW0603 - see _start_distributed
    if not ddp.active:
        return
    import torch.distributed as tdist  # noqa: PLC0415

    global _current  # noqa: PLW0603
    tdist.barrier()  # rank 0 has written best.pt and last.pt before anyone reads them
    tdist.destroy_process_group()
    _distributed_done, _current = True, Distributed()


def _ddp_model(model: nn.Module, ddp: Distributed, device: torch.device) -> nn.Module:
    if not ddp.active:
        return model
    from torch.nn.parallel import DistributedDataParallel  # noqa: PLC0415

    # unused parameters: recipes freeze stages and some heads sit idle in some recipes
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True)


def _average_gradients(params: list[torch.nn.Parameter], ddp: Distributed) -> None:
    """Gradients of parameters outside the DDP model (loss centres) averaged over ranks."""
    if not ddp.active:
        return
    import torch.distributed as tdist  # noqa: PLC0415

    for p in params:
        if p.grad is not None:
            tdist.all_reduce(p.grad, op=tdist.ReduceOp.SUM)
            p.grad /= ddp.world


def _rank_batches(batches: Iterator[Batch], ddp: Distributed) -> Iterator[Batch]:
    """Every world-th batch of the task's sequence, starting at this rank."""
    return batches if not ddp.active else islice(batches, ddp.rank, None, ddp.world)


def _shared_validation(result: tuple[float, float, dict[str, float]] | None, ddp: Distributed
                       ) -> tuple[float, float, dict[str, float]]:
    """Rank 0's (val loss, val AUC, val loss terms) on every rank, so that all stop early together."""
    if not ddp.active:
        assert result is not None
        return result
    import torch.distributed as tdist  # noqa: PLC0415

    box = [result]
    tdist.broadcast_object_list(box, src=0)
    return box[0]


def seed_everything(seed: int) -> None:
    import random
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_scheduler(opt: torch.optim.Optimizer, cfg: LoopConfig, total_steps: int, steps_per_epoch: int):
    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, total_steps))))
        if cfg.schedule == "step":
            every = cfg.step_every_steps or cfg.step_every * steps_per_epoch
            return 0.1 ** (step // max(1, every))
        return 1.0  # constant; "plateau" scales the lr itself, at validations
    if cfg.schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {cfg.schedule!r}; valid: {', '.join(SCHEDULES)}")
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


SCHEDULES = ("cosine", "step", "constant", "plateau")
OPTIMIZERS = ("adamw", "adam", "sgd")


def make_optimizer(params: list, cfg: LoopConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":  # Bondi et al.: Adam, L2 penalty in the gradient as in Keras/PyTorch Adam
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":  # Zhang et al.: SGD with momentum, weight decay 5e-4
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")


def monitored(cfg: LoopConfig, val_loss: float, val_auc: float, parts: dict[str, float]) -> float:
    """The val quantity early stopping and the plateau schedule watch, as lower-is-better."""
    if cfg.monitor == "loss":
        return val_loss
    if cfg.monitor == "auc":
        return -val_auc if not math.isnan(val_auc) else math.inf
    if cfg.monitor not in parts:
        raise ValueError(f"monitor {cfg.monitor!r} is not a loss term of this recipe ({', '.join(parts)})")
    return parts[cfg.monitor]


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score
    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, scores))


def _to(batch: Batch, device: torch.device) -> Batch:
    return batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)


@torch.no_grad()
def evaluate(task: TrainTask, device: torch.device) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Val loss (mean over batches), val AUC, scores, labels."""
    loss, auc, scores, labels, _ = evaluate_parts(task, device)
    return loss, auc, scores, labels


@torch.no_grad()
def evaluate_parts(task: TrainTask, device: torch.device
                   ) -> tuple[float, float, np.ndarray, np.ndarray, dict[str, float]]:
    """As `evaluate`, plus the mean of each loss term. The model and the loss's own modules (e.g. the
    weight-center loss's centres) run in eval mode: validation never moves them."""
    modules = [task.model, *task.extra_modules.values()]
    was_training = [m.training for m in modules]
    for m in modules:
        m.eval()
    losses, outputs, labels, parts = [], [], [], []
    try:
        for batch in task.val_batches():
            x, y = _to(batch, device)
            out = task.model(x)
            loss, batch_parts = task.loss(out, y)
            losses.append(float(loss))
            parts.append(batch_parts)
            outputs.append(_detach(out))
            labels.append(y.cpu().numpy())
    finally:
        for m, mode in zip(modules, was_training):
            m.train(mode)
    y_all = np.concatenate(labels)
    scores = task.score(outputs)
    return float(np.mean(losses)), roc_auc(y_all, scores), scores, y_all, _mean_parts(parts)


def _mean_parts(parts: list[dict[str, float]]) -> dict[str, float]:
    keys = [k for k in (parts[0] if parts else {})]
    return {k: float(np.mean([p[k] for p in parts if k in p])) for k in keys}


def _detach(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.detach().cpu()
    if isinstance(out, (tuple, list)):
        return type(out)(_detach(o) for o in out)
    return out


class RunLog:
    def __init__(self, run_dir: Path):
        self.path = run_dir / "log.jsonl"

    def write(self, row: dict[str, Any]) -> None:
        with open_append(self.path) as fh:
            fh.write(json.dumps(row) + "\n")


def save_checkpoint(ckpt: dict[str, Any], path: str | Path) -> Path:
    """torch.save, written whole (`outputs.atomic_write_text`): a full disk or a kill leaves the earlier
    checkpoint (or none), never half of one that `--resume` or `export` would then fail on."""
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    return atomic_write_text(path, buffer.getvalue())


def train(task: TrainTask, cfg: LoopConfig, run_dir: Path, meta: dict[str, Any], resume: bool = False,
          console: Callable[[str], None] = print) -> dict[str, Any]:
    """Train; returns the state of the best epoch ({"epoch", "val_auc", "val_loss", "scores", "labels"}).

    `meta` (backbone, recipe, config...) is stored in every checkpoint. Checkpoints: `last.pt` (exact
    resume: weights, optimizer, scheduler, epoch, step in epoch, early-stopping state) and `best.pt`.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    set_threads()
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    ddp, device = _start_distributed(device)
    if not ddp.main:
        console, cfg = (lambda s: None), replace(cfg, progress=False)
    task.model.to(device)
    for m in task.extra_modules.values():
        m.to(device)
    forward = _ddp_model(task.model, ddp, device)
    params = task.parameters or [p for p in task.model.parameters() if p.requires_grad]
    extra_params = [p for m in task.extra_modules.values() for p in m.parameters() if p.requires_grad]
    params += extra_params
    opt = make_optimizer(params, cfg)
    steps = task.steps_per_epoch if not cfg.max_steps_per_epoch else min(task.steps_per_epoch,
                                                                          cfg.max_steps_per_epoch)
    if ddp.active:
        if steps < ddp.world:
            raise ValueError(f"{steps} batches per epoch cannot feed {ddp.world} processes: "
                             "lower --batch-size or use more faces")
        steps //= ddp.world  # per rank; each rank's batches are its share of the task's sequence
    sched = make_scheduler(opt, cfg, steps * cfg.epochs, steps)
    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_auc": -1.0, "best_loss": math.inf,
             "bad_epochs": 0, "best": None, "best_monitor": math.inf, "plateau_bad": 0, "lr_scale": 1.0,
             "world_size": ddp.world}
    log = RunLog(run_dir)
    if resume and (run_dir / LAST).is_file():
        state = {**state, **_load_last(run_dir / LAST, task, opt, sched, device)}
        # a step is one batch per rank: a run resumed with another process count restarts at the same batch
        saved_world = state.get("world_size", 1)
        state["step_in_epoch"] = state["step_in_epoch"] * saved_world // ddp.world
        state["world_size"] = ddp.world
        console(f"resumed from {run_dir / LAST}: epoch {state['epoch']}, step {state['step_in_epoch']}")

    def save(path: Path, extra: dict[str, Any] | None = None) -> None:
        if not ddp.main:
            return
        ckpt = {"format": CKPT_FORMAT, **meta, "model": task.model.state_dict(),
                "extra": {k: m.state_dict() for k, m in task.extra_modules.items()},
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "loop": dict(state),
                "loop_config": asdict(cfg)}
        ckpt.update(extra or {})
        save_checkpoint(ckpt, path)

    lr_floor_hit = False
    while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience and not lr_floor_hit:
        epoch = state["epoch"]
        if task.on_epoch_start:
            task.on_epoch_start(epoch)
        task.model.train()
        for m in task.extra_modules.values():
            m.train()
        t0, seen, running, train_parts = time.time(), 0, [], []
        start = state["step_in_epoch"]
        batches = task.train_batches(epoch, start * ddp.world)
        if not task.shards_batches:
            batches = _rank_batches(batches, ddp)
        bar = _bar(range(start, steps), f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress)
        for step, batch in zip(bar, batches):
            if task.on_step_start:
                task.on_step_start(state["global_step"], steps * cfg.epochs)
            x, y = _to(batch, device)
            loss, parts = task.loss(forward(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            _average_gradients(extra_params, ddp)
            opt.step()
            sched.step()
            seen += len(y)
            running.append(float(loss.detach()))
            train_parts.append(parts)
            state["step_in_epoch"], state["global_step"] = step + 1, state["global_step"] + 1
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{np.mean(running[-20:]):.4f}", img_s=f"{seen / (time.time() - t0):.0f}")
            if cfg.ckpt_every_steps and state["global_step"] % cfg.ckpt_every_steps == 0:
                save(run_dir / LAST)
        train_time = time.time() - t0
        scores = labels = None
        val_loss, val_auc, val_parts = math.nan, math.nan, {}
        if ddp.main:
            val_loss, val_auc, scores, labels, val_parts = evaluate_parts(task, device)
        val_loss, val_auc, val_parts = _shared_validation((val_loss, val_auc, val_parts) if ddp.main else None, ddp)
        state["epoch"], state["step_in_epoch"] = epoch + 1, 0
        watched = monitored(cfg, val_loss, val_auc, val_parts)
        improved = watched < state["best_monitor"] - 1e-4
        state["best_monitor"] = min(state["best_monitor"], watched)
        state["best_loss"] = min(state["best_loss"], val_loss)
        state["bad_epochs"] = 0 if improved else state["bad_epochs"] + 1
        row = {"epoch": epoch + 1, "train_loss": float(np.mean(running)) if running else None,
               "val_loss": val_loss, "val_auc": val_auc, "monitor": cfg.monitor, "monitored": watched,
               "lr": opt.param_groups[0]["lr"], "train_parts": _mean_parts(train_parts), "val_parts": val_parts,
               "images_per_s": seen / max(train_time, 1e-9), "train_s": train_time, "time": time.time()}
        if ddp.main:
            log.write(row)
        console(f"epoch {epoch + 1}: train_loss {row['train_loss']:.4f} val_loss {val_loss:.4f} "
                f"val_auc {val_auc:.4f} ({row['images_per_s']:.0f} img/s)")
        if cfg.select == "monitor":
            is_best = improved
        else:
            is_best = not math.isnan(val_auc) and val_auc > state["best_auc"]
        if not math.isnan(val_auc):
            state["best_auc"] = max(state["best_auc"], val_auc)
        if is_best:
            state["best"] = {"epoch": epoch + 1, "val_auc": val_auc, "val_loss": val_loss,
                             "monitored": watched, "images_per_s": row["images_per_s"]}
            save(run_dir / BEST, {"val_scores": scores, "val_labels": labels})
        if cfg.schedule == "plateau":
            lr_floor_hit = _plateau_step(cfg, state, improved, opt, sched, console)
        save(run_dir / LAST)
    if state["bad_epochs"] >= cfg.patience:
        console(f"early stop: val {cfg.monitor} did not improve for {cfg.patience} epochs")
    if state["best"] is None:  # e.g. a single-class val set: keep the last weights as "best"
        save(run_dir / BEST)
    _finish_distributed(ddp)
    return state["best"] or {}


def _plateau_step(cfg: LoopConfig, state: dict[str, Any], improved: bool, opt, sched,
                  console: Callable[[str], None]) -> bool:
    """Bondi et al.: lr x `plateau_factor` after `plateau_patience` validations without improvement;
    True once the lr has fallen below `min_lr` (training ends there)."""
    state["plateau_bad"] = 0 if improved else state["plateau_bad"] + 1
    if state["plateau_bad"] >= cfg.plateau_patience:
        state["plateau_bad"] = 0
        state["lr_scale"] *= cfg.plateau_factor
        sched.base_lrs = [lr * cfg.plateau_factor for lr in sched.base_lrs]
        for group, base in zip(opt.param_groups, sched.base_lrs):
            group["lr"] = base
        console(f"plateau: lr -> {opt.param_groups[0]['lr']:.2e}")
    return opt.param_groups[0]["lr"] < cfg.min_lr


def _load_last(path: Path, task: TrainTask, opt, sched, device: torch.device) -> dict[str, Any]:
    ckpt = torch.load(path, map_location=device, weights_only=False)
    task.model.load_state_dict(ckpt["model"])
    for k, m in task.extra_modules.items():
        if k in ckpt.get("extra", {}):
            m.load_state_dict(ckpt["extra"][k])
    opt.load_state_dict(ckpt["optimizer"])
    sched.load_state_dict(ckpt["scheduler"])
    return dict(ckpt["loop"])


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    try:
        ckpt = torch.load(Path(path), map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, AttributeError, ImportError) as exc:
        raise ValueError(f"{path} is not a dfscan checkpoint (unreadable: {type(exc).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CKPT_FORMAT:
        raise ValueError(f"{path} is not a dfscan checkpoint ({CKPT_FORMAT})")
    if not isinstance(ckpt.get("model"), dict) and "ensemble" not in ckpt:
        raise ValueError(f"{path} is not a complete dfscan checkpoint (no model weights)")
    return ckpt


def _bar(it, desc: str, enabled: bool):
    if not enabled:
        return it
    try:
        from tqdm import tqdm
    except ImportError:
        return it
    return tqdm(it, desc=desc, unit="batch", mininterval=5, dynamic_ncols=True)
