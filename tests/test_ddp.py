"""`torchrun --nproc-per-node 2 -m dfscan train ...`: two CPU processes (gloo) train one model, rank 0
alone writes the checkpoints and the log, and a second run resumes from them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from dfscan.train.loop import load_checkpoint  # noqa: E402

FACES = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "dfdc_faces"
pytestmark = pytest.mark.skipif(not (FACES / "labels.csv").is_file(), reason=f"DFDC face crops not found at {FACES}")


def torchrun(out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "dfscan", "train", "bce", "--dataset", f"faces:{FACES}", "--limit", "64", "--val-limit", "32",
           "--batch-size", "8", "--input-size", "64", "--device", "cpu", "--out", str(out), *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def test_two_gloo_processes_train_one_checkpoint_and_resume(tmp_path):
    run = tmp_path / "run"
    first = torchrun(run, "--epochs", "1")
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.json", "last.pt", "log.jsonl"]
    assert first.stdout.count("checkpoint:") == 1  # one report, from rank 0
    last = load_checkpoint(run / "last.pt")
    # 64 faces / 8 a batch = 8 balanced batches, 4 to each rank: 4 optimizer steps per process
    assert last["loop"]["world_size"] == 2 and last["loop"]["global_step"] == 4
    assert last["loop_config"]["epochs"] == 1
    from dfscan.train.recipes import RecipeConfig, build_net
    start = build_net(RecipeConfig(recipe="bce", dataset=str(FACES), input_size=64)).state_dict()
    moved = [k for k, v in last["model"].items() if v.is_floating_point() and not torch.equal(v, start[k])]
    assert len(moved) > len(start) // 2, "the weights did not train"
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in log] == [1] and log[0]["train_loss"] > 0

    torchrun(run, "--epochs", "2", "--resume")
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in log] == [1, 2]  # one line an epoch: rank 1 writes nothing
    assert load_checkpoint(run / "last.pt")["loop"]["global_step"] == 8
