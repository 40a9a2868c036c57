"""Tiny end-to-end training runs on a few dozen DFDC crops (CPU, 64 px, one epoch per recipe)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("pytorch_metric_learning")

from dfscan.train.loop import load_checkpoint  # noqa: E402
from dfscan.train.recipes import RecipeConfig, run_recipe  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FACES = SHARED / "datasets" / "dfdc_faces"
needs_faces = pytest.mark.skipif(not (FACES / "labels.csv").is_file(),
                                 reason=f"DFDC face crops not found at {FACES}")


def tiny(recipe: str, tmp: Path, **kw) -> RecipeConfig:
    base = dict(recipe=recipe, dataset=str(FACES), input_size=64, epochs=1, batch_size=8, limit=32, val_limit=24,
                freeze_stages=4, progress=False, num_workers=0, cache_dir=str(tmp / "cache"), proj_dim=16)
    base.update(kw)
    return RecipeConfig(**base)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One run per recipe, shared by the tests below."""
    if not (FACES / "labels.csv").is_file():
        pytest.skip(f"DFDC face crops not found at {FACES}")
    tmp = tmp_path_factory.mktemp("runs")
    out = {}
    for recipe, extra in (("bce", {}), ("triplet", {"classifier": "logreg"}), ("twostep", {"head_epochs": 1}),
                          ("multimetric", {})):
        out[recipe] = run_recipe(tiny(recipe, tmp, **extra), tmp / recipe, console=lambda s: None)
    return tmp, out


@needs_faces
@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["bce", "triplet", "twostep", "multimetric"])
def test_recipe_writes_a_complete_checkpoint(runs, recipe):
    tmp, paths = runs
    ckpt = load_checkpoint(paths[recipe])
    assert ckpt["recipe"] == recipe and ckpt["backbone"] == "efficientnet_lite0"
    assert ckpt["input_size"] == 64 and len(ckpt["mean"]) == 3
    assert ckpt["head"]["kind"] == ("sklearn" if recipe == "triplet" else "linear")
    assert len(ckpt["val_scores"]) == len(ckpt["val_labels"]) == 24
    log = [json.loads(line) for line in (tmp / recipe / "log.jsonl").read_text().splitlines()]
    assert log[0]["epoch"] == 1 and "val_auc" in log[0] and log[0]["images_per_s"] > 0


@needs_faces
@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["bce", "triplet"])
def test_export_bundle_loads_and_matches_torch(runs, recipe, tmp_path):
    from dfscan.model.manifest import load_manifest
    from dfscan.train.export import export_bundle

    _, paths = runs
    bundle = export_bundle(paths[recipe], tmp_path / "bundle", name="dfscan-test")
    manifest = load_manifest(bundle)
    assert manifest.preprocess.input_size == 64
    assert manifest.calibration["method"] == "temperature"
    assert set(manifest.operating_points) == {"balanced", "guarded", "low-fpr", "high-recall"}
    assert manifest.scan.operating_point == "balanced"
    assert manifest.metrics["onnx_parity_max_abs_diff"] <= 1e-3


@needs_faces
@pytest.mark.slow
def test_resume_continues_from_the_saved_epoch(tmp_path):
    cfg = tiny("bce", tmp_path, epochs=1)
    run_recipe(cfg, tmp_path / "run", console=lambda s: None)
    messages: list[str] = []
    cfg2 = tiny("bce", tmp_path, epochs=2)
    run_recipe(cfg2, tmp_path / "run", resume=True, console=messages.append)
    assert any("resumed" in m and "epoch 1" in m for m in messages)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in log] == [1, 2]
    assert load_checkpoint(tmp_path / "run" / "last.pt")["loop"]["epoch"] == 2


@needs_faces
def test_commands_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, dfscan.commands.train; print('torch' in sys.modules)"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "False"


def test_a_shared_cache_dir_never_serves_one_run_another_runs_maps(tmp_path):
    """--cache-dir shared between runs: other faces (same counts) or other frozen weights (another --init)
    get caches of their own; the same run again reuses its cache."""
    from conftest import dfdc_subset

    from dfscan.train.recipes import build_net
    from dfscan.train.recipes.core import make_splits
    first = dfdc_subset(tmp_path / "a", 4, splits=("train", "val"))
    other = dfdc_subset(tmp_path / "b", 4, splits=("train", "val"), skip=4)  # same sizes, other faces
    cache = tmp_path / "cache"

    def cache_after(faces, net) -> set[Path]:
        cfg = tiny("bce", tmp_path, dataset=str(faces), limit=None, val_limit=None, cache_dir=str(cache),
                   augment=("flip",))
        make_splits(cfg, net, tmp_path / "run", 4, use_cache=True)
        return set(cache.rglob("*.maps.npy"))

    net = build_net(tiny("bce", tmp_path, dataset=str(first)))
    after_first = cache_after(first, net)
    assert len(after_first) == 2  # train and val
    assert cache_after(first, net) == after_first  # the same run reuses its maps
    after_other = cache_after(other, net)
    assert len(after_other - after_first) == 2
    with torch.no_grad():  # the frozen stem changes, as after --init from another run
        net.backbone.stage_modules()[0].modules[0].weight.mul_(1.5)
    after_init = cache_after(first, net)
    assert len(after_init - after_other) == 2
    import numpy as np
    new_train = next(p for p in after_init - after_other if p.name.startswith("train"))
    old_train = next(p for p in after_first if p.name.startswith("train"))
    assert not np.allclose(np.load(new_train), np.load(old_train))


def test_a_checkpoint_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """Found by a probe: soup and a run's final best.pt were written in place, so a full disk left half a
    checkpoint under the final name. Every checkpoint goes through one temporary file renamed over it."""
    import errno

    from dfscan.train import loop

    path = loop.save_checkpoint({"weights": torch.ones(3)}, tmp_path / "best.pt")
    before = path.read_bytes()

    def disk_fills_up(fd):  # the new checkpoint's bytes are in the file when the disk says it is full
        raise OSError(errno.ENOSPC, "No space left on device")

    from dfscan import outputs

    monkeypatch.setattr(outputs.os, "fsync", disk_fills_up)
    with pytest.raises(OSError, match="No space left"):
        loop.save_checkpoint({"weights": torch.zeros(3)}, path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["best.pt"]
