"""Recipes against their papers: every backbone x mode trains, multimetric's schedule and validation,
Bondi's triplets / optimiser / schedule, Kumar's bagging and the ensemble bundle it exports."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import DFDC_FACES, dfdc_subset

torch = pytest.importorskip("torch")
pytest.importorskip("pytorch_metric_learning")

from dfscan.train import loop  # noqa: E402
from dfscan.train.recipes import RecipeConfig, registry, run_recipe  # noqa: E402
from dfscan.train.recipes.bagging import bag_subset  # noqa: E402

needs_faces = pytest.mark.skipif(not (DFDC_FACES / "labels.csv").is_file(),
                                 reason=f"DFDC face crops not found at {DFDC_FACES}")


def tiny(recipe: str, tmp: Path, **kw) -> RecipeConfig:
    base = dict(recipe=recipe, dataset=str(DFDC_FACES), input_size=64, epochs=1, batch_size=8, limit=48,
                val_limit=24, progress=False, num_workers=0, cache_dir=str(tmp / "cache"), proj_dim=16,
                max_steps_per_epoch=2, augment=())
    base.update(kw)
    return RecipeConfig(**base)


def log_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------- every backbone x mode

def _weights(backbone: str) -> tuple[bool, str | None]:
    """(pretrained, why not): pretrained where its weights are here, else the architecture untrained."""
    if backbone == "efficientnet_lite0":
        return True, None
    if backbone == "facenet":
        path = os.environ.get("DFSCAN_FACENET_WEIGHTS")
        return (True, None) if path and Path(path).is_file() else (False, "no VGGFace2 weights")
    if backbone == "dlib_resnet":
        from dfscan.train.dlib_resnet import default_weights_path
        return (True, None) if default_weights_path().is_file() else (False, "no dlib weights")
    if backbone == "resnet34":
        path = os.environ.get("DFSCAN_RESNET34_WEIGHTS")
        return (True, None) if path and Path(path).is_file() else (False, "no local ImageNet weights")
    try:
        import timm  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - a broken torchvision raises anything
        pytest.skip(f"{backbone}: timm is not usable here ({exc})")
    return False, "timm weights come from a hub this machine cannot reach"


SIZES = {"facenet": 96, "dlib_resnet": 150}
# finetune: Lite0 trains whole from images (the uncached path); the larger nets train their last stage
# from cached maps (the partly-frozen path), which keeps this matrix to seconds per case on 2 cores
FINETUNE_FROZEN = {"efficientnet_lite0": 0, "facenet": 5, "dlib_resnet": 5, "resnet34": 4, "timm:efficientnet_b0": 0}


@needs_faces
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["frozen", "finetune"])
@pytest.mark.parametrize("backbone", ["efficientnet_lite0", "facenet", "dlib_resnet", "resnet34",
                                      "timm:efficientnet_b0"])
def test_every_backbone_and_mode_trains(tmp_path, backbone, mode):
    pretrained, _why_untrained = _weights(backbone)  # untrained weights still run every line of the recipe
    cfg = tiny("triplet", tmp_path, backbone=backbone, mode=mode, pretrained=pretrained,
               input_size=SIZES.get(backbone, 64), limit=16, val_limit=8, classifier="logreg",
               freeze_stages=FINETUNE_FROZEN[backbone] if mode == "finetune" else 0)
    best = run_recipe(cfg, tmp_path / "run", console=lambda s: None)
    ckpt = loop.load_checkpoint(best)
    assert ckpt["backbone"] == backbone and ckpt["head"]["kind"] == "sklearn"
    assert len(ckpt["val_scores"]) == 8 and np.isfinite(ckpt["val_scores"]).all()
    if mode == "frozen":  # the projection trained, from cached pooled rows
        assert ckpt["embed"]["proj_dim"] == 16


# ---------------------------------------------------------------- multimetric

@needs_faces
@pytest.mark.slow
def test_multimetric_logs_each_term_and_ahe_runs_after_its_start(tmp_path):
    cfg = tiny("multimetric", tmp_path, epochs=3, freeze_stages=4, max_steps_per_epoch=3, patience=3)
    run_recipe(cfg, tmp_path / "run", console=lambda s: None)
    rows = log_rows(tmp_path / "run")
    # early stopping watches the val CE term, which the weight-center loss (on from iteration 3, epoch 2)
    # and AHE (from iteration 6, epoch 3) do not enter; the old watch, the total val loss, jumped with them
    assert len(rows) == 3 and [r["monitor"] for r in rows] == ["ce"] * 3
    assert all(r["monitored"] == pytest.approx(r["val_parts"]["ce"]) for r in rows)
    for r in rows:
        assert {"weight_center", "triplet", "ce", "eta", "synthetic"} <= set(r["train_parts"]) | set(r["val_parts"])
    assert rows[0]["train_parts"]["weight_center"] == 0.0 and rows[0]["train_parts"]["synthetic"] == 0.0
    assert rows[1]["train_parts"]["weight_center"] > 0 and rows[1]["train_parts"]["synthetic"] == 0.0
    assert rows[2]["train_parts"]["synthetic"] > 0 and rows[2]["train_parts"]["eta"] < 1.0


def test_validation_runs_in_eval_mode_and_leaves_the_centres_alone():
    from dfscan.train.losses import MultiMetricLoss

    torch.manual_seed(0)
    model = torch.nn.Linear(6, 4)
    head = torch.nn.Linear(4, 2)
    net = torch.nn.ModuleDict({"body": model, "head": head})
    mm = MultiMetricLoss(4)
    x, y = torch.randn(16, 6), torch.tensor([0, 1] * 8)

    def forward(inp):
        emb = net["body"](inp)
        return emb, net["head"](emb)

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, inp):
            return forward(inp)

    wrapped = Wrapped()
    mm.train()
    mm(*forward(x), y)  # a training batch sets and moves the centre
    centres = mm.weight_center.centers.clone()
    task = loop.TrainTask(model=wrapped, loss=lambda out, t: mm(out[0], out[1], t.long()),
                          train_batches=lambda e, s: iter(()), steps_per_epoch=1,
                          val_batches=lambda: iter([(torch.randn(16, 6), y.float())]),
                          score=lambda outs: torch.cat([o[1] for o in outs]).softmax(1)[:, 1].numpy(),
                          extra_modules={"multimetric": mm})
    wrapped.train()
    loss, auc, scores, labels, parts = loop.evaluate_parts(task, torch.device("cpu"))
    assert torch.equal(mm.weight_center.centers, centres)
    assert mm.training and wrapped.training  # modes restored for the next epoch
    assert {"ce", "weight_center", "triplet"} <= set(parts) and len(scores) == 16


# ---------------------------------------------------------------- Bondi: triplets, optimiser, plateau

def test_balanced_random_triplets():
    from dfscan.train.recipes.core import balanced_random_triplets
    labels = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1])
    a, p, n = balanced_random_triplets(labels)
    assert len(a) == 8 and sorted(a.tolist()) == list(range(8))
    assert (labels[a] == labels[p]).all() and (a != p).all() and (labels[a] != labels[n]).all()
    assert int((labels[a] == 0).sum()) == int((labels[a] == 1).sum()) == 4  # (r,r,f) as many as (f,f,r)


def _toy_task(steps: int = 4):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    xs, ys = torch.randn(32, 3), (torch.arange(32) % 2).float()

    def batches(epoch, start):
        for i in range(start, steps):
            yield xs[i * 8 % 32:(i * 8 % 32) + 8], ys[i * 8 % 32:(i * 8 % 32) + 8]

    def loss(out, y):
        value = torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], y)
        return value, {"bce": float(value.detach())}

    return loop.TrainTask(model=model, loss=loss, train_batches=batches, steps_per_epoch=steps,
                          val_batches=lambda: iter([(torch.randn(8, 3), ys[:8])]),  # noise: no improvement
                          score=lambda outs: torch.cat(outs)[:, 0].numpy())


def test_plateau_drops_the_lr_and_stops_below_min_lr(tmp_path):
    cfg = loop.LoopConfig(epochs=20, lr=1e-4, optimizer="adam", schedule="plateau", plateau_patience=1,
                          min_lr=1e-7, patience=100, monitor="loss", select="monitor", progress=False)
    messages = []
    loop.train(_toy_task(), cfg, tmp_path, {}, console=messages.append)
    rows = log_rows(tmp_path)
    lrs = [r["lr"] for r in rows]
    assert lrs[0] == pytest.approx(1e-4) and len(rows) < 20  # x0.1 per stalled validation, then stop
    assert all(b <= a for a, b in zip(lrs, lrs[1:])) and lrs[-1] < lrs[0]
    last = loop.load_checkpoint(tmp_path / loop.LAST)
    assert last["optimizer"]["param_groups"][0]["lr"] < 1e-7  # training ended once the lr fell below min_lr
    best = loop.load_checkpoint(tmp_path / loop.BEST)
    assert best["loop"]["best"]["val_loss"] == pytest.approx(min(r["val_loss"] for r in rows))


def test_sgd_momentum_and_step_schedule_by_iterations(tmp_path):
    cfg = loop.LoopConfig(epochs=2, lr=0.01, optimizer="sgd", momentum=0.9, weight_decay=5e-4, schedule="step",
                          step_every_steps=3, patience=10, progress=False)
    loop.train(_toy_task(steps=4), cfg, tmp_path, {})
    last = loop.load_checkpoint(tmp_path / loop.LAST)
    group = last["optimizer"]["param_groups"][0]
    assert group["momentum"] == 0.9 and group["weight_decay"] == 5e-4
    assert group["lr"] == pytest.approx(0.01 * 0.1 ** (8 // 3))  # 8 iterations: two drops


# ---------------------------------------------------------------- Kumar: bagging and the ensemble

def test_bag_subsets_are_balanced_and_split_the_larger_class():
    labels = [1] * 70 + [0] * 10  # Celeb-DF-like: seven times more fakes
    records = list(range(80))
    bags = [bag_subset(records, labels, b, 7, seed=1) for b in range(7)]
    fakes = [{r for r in bag if labels[r] == 1} for bag in bags]
    assert all(len(f) == 10 and len(bag) == 20 for f, bag in zip(fakes, bags))
    assert set().union(*fakes) == set(range(70)) and sum(len(f) for f in fakes) == 70  # disjoint parts
    assert all({r for r in bag if labels[r] == 0} == set(range(70, 80)) for bag in bags)  # every real
    balanced = [bag_subset(records[:20], [0, 1] * 10, b, 2) for b in range(2)]
    assert set(balanced[0]).isdisjoint(balanced[1]) and all(len(b) == 10 for b in balanced)


@needs_faces
@pytest.mark.slow
def test_bagged_bce_exports_an_ensemble_that_check_and_eval_run(tmp_path, face_video):
    from typer.testing import CliRunner

    from dfscan.cli import app
    runner = CliRunner()
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    result = runner.invoke(app, ["train", "bce", "--dataset", f"faces:{DFDC_FACES}", "--bags", "3", "--limit", "300",
                                 "--epochs", "1", "--out", str(run), "--input-size", "64", "--val-limit", "60",
                                 "--freeze-stages", "4", "--aug-copies", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output[-2000:]
    members = [loop.load_checkpoint(run / f"member_{i}" / "best.pt") for i in range(3)]
    assert all(m["metrics"]["train_images"] == 100 for m in members)  # 300 split three ways
    result = runner.invoke(app, ["export", str(run / "best.pt"), "--out", str(bundle), "--name", "bagged"])
    assert result.exit_code == 0, result.output[-2000:]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["ensemble"]["combination"] == "vote" and len(manifest["ensemble"]["members"]) == 3
    assert set(manifest["files"]) == {"member_0", "member_1", "member_2"}
    checked = runner.invoke(app, ["check", str(face_video), "--model", str(bundle), "--json"])
    assert checked.exit_code in (0, 1), checked.output[-2000:]
    out = json.loads(checked.stdout)
    assert out["label"] in ("FAKE", "REAL") and out["model"]["name"] == "bagged"
    assert len(out["model"]["ensemble"]["members"]) == 3

    from dfscan.evaluate import evaluate_faceset
    from dfscan.model.scorer import Scorer
    small = dfdc_subset(tmp_path / "faces", 12)
    scorer = Scorer(bundle, device="cpu")
    evaluated = evaluate_faceset(scorer, small, "val")
    assert len(evaluated.members) == 3 and all(m["frame"]["n"] == 24 for m in evaluated.members)
    votes = {item.score for item in evaluated.items if item.level == "frame"}
    assert votes <= {0.0, 1 / 3, 2 / 3, 1.0}  # fractions of the three members' decisions

    (bundle / "member_1" / "classifier.onnx").write_bytes(b"edited")
    from dfscan.errors import ModelError
    with pytest.raises(ModelError, match="hash"):
        Scorer(bundle, device="cpu")


def test_registry_lists_every_recipe_with_its_own_options():
    specs = registry()
    assert {"triplet", "bce", "twostep", "multimetric"} <= set(specs)
    assert [o.flag for o in specs["triplet"].options][:2] == ["--mode", "--classifier"]
    assert specs["bce"].defaults["augment"] == ("flip", "bc", "hsv", "jpeg")
    assert RecipeConfig(recipe="bce", dataset="a, b").datasets == ["a", "b"]


def test_train_refuses_an_unknown_device_before_writing_anything(tmp_path):
    from typer.testing import CliRunner

    from dfscan.cli import app

    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "bce", "--dataset", f"faces:{tmp_path}", "--device", "tpu",
                                      "--out", str(out)])
    assert result.exit_code == 2 and "--device must be" in result.output
    assert not out.exists()


def test_train_never_writes_over_an_earlier_run_unasked(tmp_path):
    """An --out holding an earlier run (its checkpoints, log or config) is refused before anything is written
    unless --resume continues it; an --out that is a file is refused too (it was an internal error)."""
    from typer.testing import CliRunner

    from dfscan.cli import app

    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(b"an earlier run's checkpoint")
    faces = tmp_path / "faces"
    (faces / "images").mkdir(parents=True)
    (faces / "labels.csv").write_text("file,label,split\n")
    args = ["train", "bce", "--dataset", f"faces:{faces}", "--device", "cpu"]
    result = CliRunner().invoke(app, [*args, "--out", str(run)])
    assert result.exit_code == 2 and "--resume continues it" in result.output
    assert sorted(p.name for p in run.iterdir()) == ["best.pt"]
    assert (run / "best.pt").read_bytes() == b"an earlier run's checkpoint"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    result = CliRunner().invoke(app, [*args, "--out", str(a_file)])
    assert result.exit_code == 2 and "not a directory" in result.output and a_file.read_text() == "mine"


@pytest.mark.parametrize("option, value", [
    ("--epochs", "0"), ("--batch-size", "1"), ("--lr", "-1"), ("--lr", "nan"), ("--lr", "inf"),
    ("--weight-decay", "nan"), ("--momentum", "1.5"), ("--val-limit", "0"), ("--limit", "-1"), ("--seed", "-1"),
    ("--crop-margin", "5"), ("--crop-margin", "nan"), ("--input-size", "7"), ("--aug-copies", "0"),
    ("--optimizer", "bogus"), ("--schedule", "bogus"), ("--combination", "bogus"), ("--plateau-patience", "0"),
    ("--backbone", "bogus"), ("--init", "/nowhere/best.pt"), ("--compression", "bogus"), ("--freeze-stages", "99"),
    ("--batch-size", "100000"),  # a fourth probe: memory grew 170 MB/s building one batch
    ("--augment", "flip,foo"),  # a fourth probe: exit 4 after making --out
])
def test_train_refuses_values_no_run_can_train_with(tmp_path, option, value):
    """Found by a probe: these were library errors (exit 4, some after writing config.json), an IndexError
    (exit 5), or a run that trained nothing (exit 0). Each is a usage error before anything is written."""
    from typer.testing import CliRunner

    from dfscan.cli import app

    faces = tmp_path / "faces"
    (faces / "images").mkdir(parents=True)
    (faces / "labels.csv").write_text("file,label,split\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "bce", "--dataset", f"faces:{faces}", "--device", "cpu",
                                      "--out", str(out), option, value])
    assert result.exit_code == 2 and option in result.output, result.output
    assert not out.exists()


@pytest.mark.parametrize("recipe, option, value", [
    ("triplet", "--embed-dim", "0"), ("triplet", "--margin", "nan"), ("multimetric", "--embed-dim", "-5"),
    ("twostep", "--head-epochs", "-1"), ("twostep", "--margin", "inf"),
])
def test_train_refuses_recipe_values_no_run_can_train_with(tmp_path, recipe, option, value):
    from typer.testing import CliRunner

    from dfscan.cli import app

    faces = tmp_path / "faces"
    (faces / "images").mkdir(parents=True)
    (faces / "labels.csv").write_text("file,label,split\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", recipe, "--dataset", f"faces:{faces}", "--device", "cpu",
                                      "--out", str(out), option, value])
    assert result.exit_code == 2 and f"{option} must be" in result.output, result.output
    assert not out.exists()


def _train_cli(*args: object):
    from typer.testing import CliRunner

    from dfscan.cli import app

    return CliRunner().invoke(app, ["train", *(str(a) for a in args)])


def test_resume_goes_on_with_the_same_run_and_never_writes_through_a_link(tmp_path):
    """Found by a fourth probe: --resume appended the log and rewrote config.json through links (into other
    files); resumed with another recipe or learning rate it rewrote config.json and then failed (or trained on);
    a run without last.pt was retrained from nothing, replacing its finished best.pt."""
    faces = dfdc_subset(tmp_path / "faces", 8, splits=("train", "val"))
    run = tmp_path / "run"
    tiny_run = ["--dataset", f"faces:{faces}", "--device", "cpu", "--input-size", "64", "--batch-size", "8",
                "--freeze-stages", "4", "--no-pretrained", "--out", run]
    assert _train_cli("bce", *tiny_run, "--epochs", "1").exit_code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(run / "config.json", elsewhere / "config.json")
    (run / "config.json").unlink()
    (run / "config.json").symlink_to(elsewhere / "config.json")
    os.link(run / "log.jsonl", elsewhere / "log.jsonl")
    kept = {p: p.read_bytes() for p in elsewhere.iterdir()}
    for recipe, extra, said in (("triplet", [], "recipe 'bce' -> 'triplet'"), ("bce", ["--lr", "0.5"], "lr ")):
        refused = _train_cli(recipe, *tiny_run, "--epochs", "2", "--resume", *extra)
        assert refused.exit_code == 2 and said in refused.output, refused.output
    assert {p: p.read_bytes() for p in elsewhere.iterdir()} == kept
    resumed = _train_cli("bce", *tiny_run, "--epochs", "2", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert {p: p.read_bytes() for p in elsewhere.iterdir()} == kept  # the links were replaced, not written through
    assert not (run / "config.json").is_symlink() and (run / "log.jsonl").stat().st_nlink == 1
    assert [json.loads(line)["epoch"] for line in (run / "log.jsonl").read_text().splitlines()] == [1, 2]
    best = (run / "best.pt").read_bytes()
    (run / "last.pt").unlink()
    refused = _train_cli("bce", *tiny_run, "--epochs", "3", "--resume")
    assert refused.exit_code == 2 and "no last.pt" in refused.output and (run / "best.pt").read_bytes() == best


def test_an_unreadable_face_image_or_weights_file_is_one_line_naming_it(tmp_path):
    """Found by a fourth probe: a face set's broken image stopped training with a DataLoader worker's traceback
    (exit 4); a corrupt --weights file was an internal error (exit 5)."""
    faces = tmp_path / "faces"
    linked = dfdc_subset(tmp_path / "linked", 6, splits=("train", "val"))
    (faces / "images").mkdir(parents=True)
    shutil.copy(linked / "labels.csv", faces / "labels.csv")
    names = [line.split(",")[0] for line in (faces / "labels.csv").read_text().splitlines()[1:]]
    for name in names:
        shutil.copy(linked / "images" / name, faces / "images" / name)
    broken = faces / "images" / names[0]
    broken.write_text("not a JPEG")
    args = ["bce", "--dataset", f"faces:{faces}", "--device", "cpu", "--input-size", "64", "--batch-size", "4",
            "--freeze-stages", "4", "--no-pretrained", "--epochs", "1"]
    result = _train_cli(*args, "--out", tmp_path / "run")
    assert result.exit_code == 3 and f"cannot read image {broken}: not an image" in result.output, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()[-1]) < 300
    weights = tmp_path / "corrupt.pt"
    weights.write_text("garbage")
    result = _train_cli("bce", "--dataset", f"faces:{linked}", "--device", "cpu", "--backbone", "efficientnet_lite0",
                        "--weights", weights, "--out", tmp_path / "run2")
    assert result.exit_code == 4 and f"weights {weights}: not a weights file" in result.output, result.output


def test_ctrl_c_says_what_is_kept_and_how_to_go_on(monkeypatch):
    """Found by a fourth probe: an interrupted train/extract/sbi ended with 130 and not a word."""
    import dfscan.commands.train as train_commands

    def interrupted(recipe, values):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_commands, "_train", interrupted)
    monkeypatch.setattr("sys.argv", ["dfscan", "train", "bce"])
    result = _train_cli("bce", "--dataset", "faces:x", "--out", "run")
    assert result.exit_code == 130
    assert result.output.strip().splitlines()[-1] == ("error: interrupted; the last checkpoint stays; rerun the same "
                                                      "command with --resume to go on from it")
