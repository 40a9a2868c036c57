"""`scan --engine ray` against the local engine, an actor killed mid-scan, no Ray installed, and the
text-file form of SRC. Ray starts once for the whole module (it costs seconds)."""
from __future__ import annotations

import csv
import os
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import run_cli_without
from typer.testing import CliRunner

from dfscan.cli import app
from dfscan.inputs import list_inputs
from dfscan.scan import Scanner, ScanSettings

runner = CliRunner()
ROW_KEYS = ("label", "score", "n_faces", "n_tracks", "error_code")


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers can't import tests/
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def csv_rows(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len({r["path"] for r in rows}), "a video was written twice"
    return {r["path"]: {k: r[k] for k in ROW_KEYS} for r in rows}


def scan_cli(*args) -> int:
    result = runner.invoke(app, ["scan", *[str(a) for a in args], "--quiet"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code


def test_ray_rows_equal_local_rows_and_resume(ray_session, real_clips, tmp_path):
    clips = sorted(real_clips.glob("*.mp4"))
    listing = tmp_path / "videos.txt"
    listing.write_text("# the shared clips\n" + "\n".join(str(c) for c in clips) + "\n")
    local_csv, ray_csv = tmp_path / "local.csv", tmp_path / "ray.csv"
    scan_cli(real_clips, "--csv", local_csv, "--frames", "8", "--workers", "2")
    local = csv_rows(local_csv)
    # the Ray scan resumes after a first run that managed one video: the rest come from two actors
    scan_cli(clips[0], "--csv", ray_csv, "--frames", "8")
    scan_cli(listing, "--csv", ray_csv, "--frames", "8", "--resume", "--engine", "ray", "--actors", "2")
    ray_rows = csv_rows(ray_csv)
    assert set(ray_rows) == {str(c) for c in clips} == set(local)
    assert ray_rows == local
    assert {r["label"] for r in local.values()} <= {"REAL", "FAKE"}
    assert int(local[str(real_clips / "street_crowd.mp4")]["n_faces"]) > 8  # a crowd: many faces


@dataclass
class CrashingScanner:
    """Kills its own process (SIGKILL, as the OOM killer would) on paths named crash_always*, and on
    paths named crash_once* the first time only (a marker file remembers)."""
    model: str
    marker_dir: str

    def __call__(self) -> "CrashingScanner":
        self.scanner = Scanner(self.model, threads=1)
        return self

    def scan(self, path: str, settings: ScanSettings):
        name = Path(path).name
        marker = Path(self.marker_dir) / f"{name}.seen"
        if name.startswith("crash_always") or (name.startswith("crash_once") and not marker.exists()):
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return self.scanner.scan(path, settings)


def test_killed_actor_is_retried_then_one_error_row(ray_session, tmp_path, face_video, blank_video, bundles):
    from dfscan.ray_engine import iter_scan_ray

    videos = tmp_path / "videos"
    videos.mkdir()
    names = ["a.mp4", "crash_once.mp4", "crash_always.mp4", "b.mp4", "blank.mp4"]
    for name in names:
        os.symlink(blank_video if name == "blank.mp4" else face_video, videos / name)
    paths = [str(videos / n) for n in names]
    factory = CrashingScanner(str(bundles["all_fake"]), str(tmp_path))
    results = list(iter_scan_ray(paths, settings=ScanSettings(), actors=2, scanner_factory=factory))
    assert sorted(r.path for r in results) == sorted(paths)  # every input exactly once
    by_name = {Path(r.path).name: r for r in results}
    crashed = by_name.pop("crash_always.mp4")
    assert crashed.label == "ERROR" and crashed.error_code == "worker_crash" and "\n" not in crashed.reason
    assert by_name["crash_once.mp4"].label == "FAKE"  # Ray restarted the actor and ran it again
    assert (tmp_path / "crash_once.mp4.seen").exists()
    assert {n: r.label for n, r in by_name.items()} == {"a.mp4": "FAKE", "crash_once.mp4": "FAKE",
                                                          "b.mp4": "FAKE", "blank.mp4": "NO_FACE"}


def test_without_ray_one_line_and_exit_4(face_video, bundles):
    done = run_cli_without("ray", ["scan", str(face_video), "--model", str(bundles["neutral"]), "--engine", "ray"])
    assert done.returncode == 4
    lines = [line for line in done.stderr.splitlines() if line.strip() and "error" in line]
    assert len(lines) == 1 and "dfscan[cpu,ray]" in lines[0]


def test_path_list_relative_comments_and_missing(tmp_path, face_video, bundles):
    (tmp_path / "sub").mkdir()
    shutil.copyfile(face_video, tmp_path / "sub" / "one.mp4")  # a copy: a link to the same file is one video
    listing = tmp_path / "list.txt"
    listing.write_text(f"# header\n\nsub/one.mp4\n{face_video}\n  gone.mp4  \n")
    assert [f.path for f in list_inputs(listing)] == [str(tmp_path / "sub" / "one.mp4"), str(face_video),
                                                       str(tmp_path / "gone.mp4")]
    assert [f.path for f in list_inputs(face_video)] == [str(face_video)]  # a video is not a list
    out = tmp_path / "rows.csv"
    assert scan_cli(listing, "--csv", out, "--model", bundles["all_fake"]) == 1  # FAKE rows, one ERROR
    rows = csv_rows(out)
    assert [rows[p]["label"] for p in (str(tmp_path / "sub" / "one.mp4"), str(face_video))] == ["FAKE", "FAKE"]
    assert rows[str(tmp_path / "gone.mp4")]["label"] == "ERROR"


def test_a_cluster_that_cannot_serve_the_scan_is_one_line_and_exit_4(ray_session, face_video, bundles):
    """Found by a probe: --gpus-per-actor on a cluster without GPUs waited forever; an address nobody answers
    at waited minutes; a malformed one, or 'auto' with no cluster, was an internal error (exit 5)."""
    from dfscan.errors import ClusterError, UsageError
    from dfscan.ray_engine import check_address

    result = runner.invoke(app, ["scan", str(face_video), "--engine", "ray", "--gpus-per-actor", "0.5",
                                 "--model", str(bundles["neutral"])])
    assert result.exit_code == 4 and "the Ray cluster has 0 GPUs" in result.output, result.output
    for address, error, reason in (("garbage", UsageError, "not 'auto', host:port"),
                                   ("127.0.0.1:1", ClusterError, "no Ray cluster answers there"),
                                   ("ray://127.0.0.1:1", ClusterError, "no Ray cluster answers there")):
        with pytest.raises(error, match=reason):
            check_address(address)
    check_address("auto")  # Ray finds it, or says it found none (a ClusterError from ray.init)
    rows = face_video.parent / "never_written.csv"
    for args in (["--gpus-per-actor", "nan"], ["--engine", "ray", "--gpus-per-actor", "inf"], ["--address", "auto"],
                 ["--engine", "ray", "--workers", "2"], ["--engine", "ray", "--address", "garbage"]):
        refused = runner.invoke(app, ["scan", str(face_video), *args, "--csv", str(rows),
                                      "--model", str(bundles["neutral"])])
        assert refused.exit_code == 2 and not rows.exists(), (args, refused.output)


def test_a_cluster_that_loses_its_nodes_ends_the_batch_with_rows_only_for_videos_done():
    """Found by a probe: killing the node's Ray agent (the raylet with it) turned each of the 28 videos left into an
    ERROR row that --resume never retried. An actor death is that video's row while a node is alive; with none,
    the batch ends (exit 4) and the videos not done get no row, so --resume scans them."""
    ray = pytest.importorskip("ray")
    from dfscan.errors import ClusterError
    from dfscan.ray_engine import _drive

    class Ref:
        def __init__(self, path):
            self.path = path

    class Actor:
        def __init__(self):
            self.scan = self

        def remote(self, path, settings):
            return Ref(path)

    class Cluster:  # the calls _drive makes, with the actors dying as they do when a node goes
        exceptions = ray.exceptions

        def __init__(self):
            self.alive = True

        def wait(self, refs, num_returns):
            return refs[:1], refs[1:]

        def get(self, ref):
            if ref.path == "ok.mp4":
                return f"row of {ref.path}"
            self.alive = ref.path != "node_died.mp4"
            raise ray.exceptions.ActorDiedError()

        def nodes(self):
            return [{"Alive": self.alive}]

    rows = []
    with pytest.raises(ClusterError, match="lost its nodes while scanning node_died.mp4"):
        for row in _drive(Cluster(), [Actor()], ["ok.mp4", "actor_died.mp4", "node_died.mp4", "after.mp4"],
                          ScanSettings()):
            rows.append(row)
    assert rows[0] == "row of ok.mp4" and len(rows) == 2
    assert rows[1].path == "actor_died.mp4" and rows[1].label == "ERROR" and "ActorDiedError" in rows[1].reason


def test_a_ray_batch_prints_no_ray_start_up_lines(face_video, bundles):
    """Found by a third probe: Ray's own INFO and WARNING lines came out among a batch's rows and errors."""
    pytest.importorskip("ray")
    import subprocess

    done = subprocess.run([sys.executable, "-m", "dfscan", "scan", str(face_video), "--engine", "ray", "--frames", "4",
                           "--model", str(bundles["neutral"]), "--quiet"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert " INFO " not in done.stderr and " WARNING " not in done.stderr, done.stderr
