"""The command line, through typer's CliRunner and as a real process (kill and resume)."""
from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_cli_without
from typer.testing import CliRunner

from dfscan.cli import app
from dfscan.scan import get_scanner

runner = CliRunner()


def invoke(*args, env: dict[str, str] | None = None):
    return runner.invoke(app, [str(a) for a in args], env=env)


def test_check_exit_codes_follow_the_verdict(face_video, blank_video, bundles, tmp_path):
    assert invoke("check", face_video, "--model", bundles["all_fake"]).exit_code == 1
    assert invoke("check", face_video, "--model", bundles["all_real"]).exit_code == 0
    assert invoke("check", blank_video, "--model", bundles["all_fake"]).exit_code == 0  # NO_FACE
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    failed = invoke("check", bad, "--model", bundles["neutral"])
    assert failed.exit_code == 3 and "error:" in failed.output


def test_check_json_has_tracks_frames_and_provenance(face_video, bundles):
    result = invoke("check", face_video, "--model", bundles["all_fake"], "--json", "--frames", "5")
    data = json.loads(result.stdout)
    assert data["label"] == "FAKE" and len(data["frames"]) == 5
    assert data["tracks"][0]["observations"][0]["box"] and data["provider"]
    assert data["video"]["codec"] == "h264" and len(data["video"]["sha256"]) == 64
    assert data["threshold_name"] == "manifest"


def test_check_as_a_process_delivers_every_output_and_its_exit_code(face_video, bundles, tmp_path):
    """`dfscan check` ends its process without Python's finalisation (dfscan.cli.main): stdout going to a file
    (block-buffered), the --json-file and the exit code must all arrive whole; an unreadable file is exit 3
    with its one error line."""
    cmd = [sys.executable, "-m", "dfscan", "check", str(face_video), "--model", str(bundles["all_fake"]), "--json"]
    stdout_file, json_file = tmp_path / "stdout.json", tmp_path / "result.json"
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    with open(stdout_file, "w") as stdout:
        done = subprocess.run(cmd + ["--json-file", str(json_file)], stdout=stdout, stderr=subprocess.PIPE,
                              text=True, timeout=300, env=buffered)
    assert done.returncode == 1, done.stderr  # FAKE
    printed, written = json.loads(stdout_file.read_text()), json.loads(json_file.read_text())
    assert printed == written and printed["label"] == "FAKE" and printed["tracks"]
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    failed = subprocess.run(cmd[:4] + [str(bad)] + cmd[5:], capture_output=True, text=True, timeout=300)
    assert failed.returncode == 3 and failed.stderr.strip().count("\n") == 0
    assert failed.stderr.startswith("error: ") and "bad.mp4" in failed.stderr


def test_a_reader_that_goes_away_is_not_a_crash(face_video, bundles):
    """`dfscan check ... --json | head`: the reader closes stdout before the result is printed. That is exit 141
    (what a shell reports for a SIGPIPE death), with nothing on stderr, never exit 5 and "a bug in dfscan"."""
    cmd = [sys.executable, "-m", "dfscan", "check", str(face_video), "--model", str(bundles["neutral"]), "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # long before the scan ends and prints
    stderr = proc.stderr.read()
    assert proc.wait(timeout=300) == 141, stderr
    assert stderr == ""


def test_a_closed_full_or_unread_stream_never_makes_exit_1(face_video, bundles, tmp_path):
    """Found by a probe: with stdout closed (`>&-`), stderr full (`2>/dev/full`) or stderr's reader gone, a check
    exited 1 (the FAKE code; rich ends a process with SystemExit(1) on a broken pipe) whatever its verdict."""
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    check = [sys.executable, "-m", "dfscan", "check", "--model", str(bundles["neutral"]), "--frames", "4"]

    def status(args, command=None, **streams):
        line = [sys.executable, "-m", "dfscan", *command] if command else check + [str(a) for a in args]
        return subprocess.run(line, timeout=300, **streams).returncode

    assert status([face_video], stdout=subprocess.DEVNULL) == 0  # the verdict's code, for reference
    assert status([face_video], stderr=subprocess.DEVNULL, preexec_fn=lambda: os.close(1)) == 0
    with open("/dev/full", "w") as full:
        assert status([bad], stdout=subprocess.DEVNULL, stderr=full) == 3
    with open("/dev/full", "w") as full:  # found by a probe: "cannot write: No space left on device", no stream named
        for command in ("version", "info"):
            done = subprocess.run([sys.executable, "-m", "dfscan", command], stdout=full, stderr=subprocess.PIPE,
                                  text=True, timeout=300)
            assert done.returncode == 4 and "cannot write standard output: No space left" in done.stderr, done.stderr
    read_end, unread = os.pipe()
    os.close(read_end)
    with open("/dev/full", "w") as full:  # the help, read by nobody or written to a full disk
        for stdout, expected in ((unread, 141), (full, 4)):
            assert status(["--help"], stdout=stdout, stderr=subprocess.DEVNULL, command=["--help"]) == expected
    os.close(unread)
    with open("/dev/full", "w") as full:  # a full stderr loses messages, not rows
        videos = tmp_path / "videos"
        videos.mkdir()
        for name in ("a.mp4", "b.mp4"):
            shutil.copy(face_video, videos / name)
        rows = tmp_path / "rows.csv"
        scan = [sys.executable, "-m", "dfscan", "scan", str(videos), "--csv", str(rows), "--frames", "4",
                "--model", str(bundles["neutral"])]
        assert subprocess.run(scan, stdout=subprocess.DEVNULL, stderr=full, timeout=300).returncode == 0
        assert len(rows.read_text().splitlines()) == 3
    for args, expected in (([bad], 3), ([face_video, "--frames", "0"], 2)):
        read_end, write_end = os.pipe()
        os.close(read_end)  # nobody will read what the error line says
        try:
            assert status(args, stdout=subprocess.DEVNULL, stderr=write_end) == expected, args
        finally:
            os.close(write_end)


@pytest.mark.skipif(shutil.which("capsh") is None and os.geteuid() == 0,
                    reason="as root, only capsh can take away the right to read any file")
def test_an_unreadable_video_or_folder_is_exit_3_naming_it(face_video, bundles, tmp_path):
    """Found by a probe: an unreadable video was click's "Path ... is not readable" (exit 2, a usage error), and one
    in a folder that cannot be entered "PermissionError: [Errno 13] ...". Both are the file's error, exit 3."""
    locked, shut = tmp_path / "locked.mp4", tmp_path / "shut"
    shutil.copy(face_video, locked)
    shut.mkdir()
    shutil.copy(face_video, shut / "v.mp4")
    locked.chmod(0)
    shut.chmod(0)
    prefix = ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--"] if os.geteuid() == 0 else []
    try:
        for path, reason in ((locked, "permission denied"),
                             (shut / "v.mp4", "permission denied (a folder on its path cannot be entered)")):
            command = [sys.executable, "-m", "dfscan", "check", str(path), "--model", str(bundles["neutral"])]
            if prefix:
                command = prefix + ["-c", " ".join(shlex.quote(part) for part in command)]
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
            assert done.returncode == 3 and f"error: {path}: {reason}" in done.stderr, done.stderr
    finally:
        shut.chmod(0o755)


def test_usage_and_setup_errors(face_video, bundles, tmp_path):
    assert invoke("check", face_video, "--model", bundles["neutral"], "--frames", "zero").exit_code == 2
    assert invoke("check", face_video, "--model", bundles["neutral"], "--threshold", "nonsense").exit_code == 2
    assert invoke("check").exit_code == 2
    unknown_device = invoke("check", face_video, "--model", bundles["neutral"], "--device", "tpu")
    assert unknown_device.exit_code == 2 and "--device must be one of" in unknown_device.output
    broken = tmp_path / "broken"
    shutil.copytree(bundles["neutral"], broken)
    (broken / "embedder.onnx").write_bytes(b"garbage")
    result = invoke("check", face_video, "--model", broken)
    assert result.exit_code == 4 and "manifest hash" in result.output
    assert invoke("scan", tmp_path / "nowhere").exit_code == 2
    get_scanner.cache_clear()  # the variable is read when a scanner's detector is built, once a process
    bad_runtime = invoke("check", face_video, "--model", bundles["neutral"], env={"DFSCAN_CPU_RUNTIME": "tensorrt"})
    assert bad_runtime.exit_code == 2 and "DFSCAN_CPU_RUNTIME must be one of" in bad_runtime.output


AS_DFSCAN = "import sys; sys.argv[0] = 'dfscan'; from dfscan.cli import main; main()"


@pytest.mark.parametrize(("args", "expected"), [
    (["check", "--bogus"], "error: no such option: --bogus (see 'dfscan check --help')"),
    (["nocmd"], "error: no such command 'nocmd' (see 'dfscan --help')"),
    (["scan"], "error: missing argument 'ROOT' (see 'dfscan scan --help')"),
    (["check", "--device"], "error: option '--device' requires an argument"),
    (["train", "bce", "--epochs", "two"], "error: invalid value for '--epochs': 'two' is not a valid int "
                                          "(see 'dfscan train bce --help')"),
])
def test_a_command_line_the_parser_refuses_is_one_line_and_exit_2(args, expected):
    """click draws a five-line box for these; dfscan's one error printer writes one line, as for its own."""
    done = subprocess.run([sys.executable, "-c", AS_DFSCAN, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "80"})
    assert (done.returncode, done.stdout, done.stderr) == (2, "", expected + "\n")


def test_the_error_printer_makes_a_library_message_one_line():
    from dfscan.console import MAX_ERROR_CHARS, one_line

    assert one_line("Error(s) in loading:\n\tMissing key(s): a, b.\n\n\tUnexpected: c") == \
        "Error(s) in loading: Missing key(s): a, b. Unexpected: c"
    long = one_line("x" * (MAX_ERROR_CHARS + 5))
    assert long.endswith("... (5 more characters)") and "\n" not in long


def test_no_arguments_prints_the_help_and_no_error_line():
    done = subprocess.run([sys.executable, "-c", AS_DFSCAN], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Usage:" in done.stdout + done.stderr and "error:" not in done.stderr


def test_an_empty_path_to_scan_is_refused_not_the_working_directory(tmp_path, face_video, monkeypatch):
    """typer turns an empty argument into Path("."): `scan ''` scanned the working directory."""
    shutil.copy(face_video, tmp_path / "here.mp4")
    monkeypatch.chdir(tmp_path)
    result = invoke("scan", "", "--csv", tmp_path / "out.csv")
    assert result.exit_code == 2 and "the path to scan is empty" in result.output
    assert not (tmp_path / "out.csv").exists()


def test_scan_directory_csv_jsonl_and_error_rows(tmp_path, face_video, blank_video, bundles):
    videos = tmp_path / "videos"
    (videos / "sub").mkdir(parents=True)
    shutil.copy(face_video, videos / "a.mp4")
    shutil.copy(blank_video, videos / "sub" / "b.mp4")
    (videos / "sub" / "c.mp4").write_text("garbage")
    (videos / "notes.txt").write_text("not scanned")
    out_csv, out_jsonl = tmp_path / "r.csv", tmp_path / "r.jsonl"
    result = invoke("scan", videos, "--csv", out_csv, "--jsonl", out_jsonl, "--model", bundles["all_fake"])
    assert result.exit_code == 1  # something FAKE beats the failed file
    with open(out_csv, newline="") as fh:
        rows = {os.path.basename(r["path"]): r for r in csv.DictReader(fh)}
    assert set(rows) == {"a.mp4", "b.mp4", "c.mp4"}
    assert (rows["a.mp4"]["label"], rows["b.mp4"]["label"], rows["c.mp4"]["label"]) == ("FAKE", "NO_FACE", "ERROR")
    assert rows["c.mp4"]["reason"] and rows["a.mp4"]["sha256"]
    lines = [json.loads(line) for line in out_jsonl.read_text().splitlines()]
    assert sorted(os.path.basename(r["path"]) for r in lines) == ["a.mp4", "b.mp4", "c.mp4"]
    only_bad = invoke("scan", videos, "--include", "c.mp4", "--model", bundles["all_fake"])
    assert only_bad.exit_code == 3


@pytest.mark.parametrize("stop, workers", [(signal.SIGKILL, 1), (signal.SIGINT, 1), (signal.SIGINT, 2)])
def test_killed_scan_resumes_with_every_video_exactly_once(tmp_path, face_video, bundles, stop, workers):
    """SIGKILL, and SIGINT to the whole process group as a terminal's Ctrl-C sends it (exit 130, never 1, and no
    traceback from each worker process: a second probe saw ~55 lines of them)."""
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(12):
        shutil.copy(face_video, videos / f"v{i:02d}.mp4")
    out_csv = tmp_path / "results.csv"
    cmd = [sys.executable, "-m", "dfscan", "scan", str(videos), "--csv", str(out_csv),
           "--model", str(bundles["neutral"]), "--quiet", "--workers", str(workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        if out_csv.exists() and len(out_csv.read_text().splitlines()) >= 4:  # header + 3 rows
            break
        time.sleep(0.05)
    os.killpg(proc.pid, stop)
    assert proc.wait(timeout=120) == (-signal.SIGKILL if stop == signal.SIGKILL else 130)
    assert "Traceback" not in proc.stderr.read()
    with open(out_csv, newline="") as fh:
        before = len(list(csv.DictReader(fh)))
    assert 3 <= before < 12, "the scan should have been killed part-way"
    resumed = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode in (0, 1), resumed.stderr
    with open(out_csv, newline="") as fh:
        paths = [r["path"] for r in csv.DictReader(fh)]
    assert sorted(os.path.basename(p) for p in paths) == [f"v{i:02d}.mp4" for i in range(12)]


def test_info_prints_the_manifest(bundles):
    result = invoke("info", "--model", bundles["neutral"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["operating_points"]["low-fpr"] == 0.9


def test_without_onnxruntime_one_line_says_what_to_install(face_video, bundles):
    done = run_cli_without("onnxruntime", ["check", str(face_video), "--model", str(bundles["neutral"])])
    assert done.returncode == 4
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "dfscan[cpu]" in lines[0] and "dfscan[gpu]" in lines[0]


def test_openvino_asked_for_but_not_loading_is_one_setup_error_before_anything_is_scanned(face_video, bundles,
                                                                                          tmp_path):
    """DFSCAN_CPU_RUNTIME=openvino where OpenVINO does not load: exit 4 and one line, not an ERROR row for each
    large video (the OpenVINO networks are otherwise opened on the first large frame); `auto` uses onnxruntime."""
    shutil.copy(face_video, tmp_path / "a.mp4")
    model = ["--model", str(bundles["neutral"])]
    required = {"DFSCAN_CPU_RUNTIME": "openvino"}
    out = tmp_path / "out.jsonl"
    for args in (["check", str(face_video), *model], ["scan", str(tmp_path), "--jsonl", str(out), *model]):
        done = run_cli_without("openvino", args, env=required)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 4 and len(lines) == 1 and "OpenVINO does not load" in lines[0], done.stderr
    assert not out.exists() or not out.read_text().strip()
    auto = run_cli_without("openvino", ["version"], env={"DFSCAN_CPU_RUNTIME": "auto"})
    assert auto.returncode == 0 and "face detector on CPU: onnxruntime" in auto.stdout


def test_a_broken_openvino_install_leaves_the_detector_on_onnxruntime(tmp_path):
    """An OpenVINO that fails on import however it fails (here an AttributeError, as a numpy ABI mismatch
    gives): `version` and the detector's provenance say onnxruntime, and large frames are still detected."""
    package = tmp_path / "broken" / "openvino"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('raise AttributeError("_ARRAY_API not found")\n')
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "broken")}
    code = ("from dfscan.faces.mtcnn import MTCNN; from dfscan.runtime import cpu_runtime; "
            "print(cpu_runtime(loaded=True), MTCNN(device='cpu').runtime_for(1080, 1920))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0 and done.stdout.split()[:2] == ["onnxruntime", "onnxruntime"], done.stderr


def test_cuda_asked_for_without_it_is_a_clear_setup_error(face_video, bundles):
    from dfscan.runtime import import_ort

    if "CUDAExecutionProvider" in import_ort().get_available_providers():
        pytest.skip("onnxruntime-gpu is installed here")
    result = invoke("check", face_video, "--model", bundles["neutral"], "--device", "cuda")
    assert result.exit_code == 4 and "onnxruntime-gpu" in result.output
    auto = json.loads(invoke("check", face_video, "--model", bundles["neutral"], "--json").stdout)
    assert auto["provider"] == "CPUExecutionProvider"


def test_the_command_line_keeps_numpy_blas_to_one_thread_except_for_torch_commands():
    pytest.importorskip("threadpoolctl", reason="threadpoolctl comes with scikit-learn (the [train] extra)")
    code = ("import sys; sys.argv = ['dfscan'] + sys.argv[1:]; import dfscan.cli, os, threadpoolctl; "
            "print([p['num_threads'] for p in threadpoolctl.threadpool_info() if p['internal_api'] == 'openblas'],"
            " os.environ.get('OPENBLAS_NUM_THREADS'))")
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}

    def blas_under(*argv):
        done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, check=True)
        pools, setting = done.stdout.rsplit(" ", 1)
        return json.loads(pools), setting.strip()

    pools, setting = blas_under("check", "clip.mp4")
    if not pools:
        pytest.skip("this numpy is not built on OpenBLAS")
    assert pools == [1] and setting == "1"
    assert blas_under("--debug", "train", "bce")[1] == "None"  # torch's own OpenBLAS (ARM builds) keeps its threads


def test_an_output_path_the_machine_refuses_is_one_line_not_a_crash(face_video, tmp_path):
    """Found by a probe: --out under a file (or without rights) escaped as NotADirectoryError / PermissionError,
    an internal error (exit 5). It is one line naming the path, exit 4, and the file is untouched."""
    videos = tmp_path / "videos"
    for label in ("real", "fake"):
        (videos / label).mkdir(parents=True)
        shutil.copyfile(face_video, videos / label / "clip.mp4")
    precious = tmp_path / "precious.txt"
    precious.write_text("mine")
    done = subprocess.run([sys.executable, "-m", "dfscan", "extract", "folder", str(videos), "--out",
                           str(precious / "faces"), "--frames", "2", "--size", "32"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 4 and done.stderr.strip().count("\n") == 0, done.stderr
    assert done.stderr.startswith("error: ") and "precious.txt" in done.stderr and "Not a directory" in done.stderr
    assert precious.read_text() == "mine"
    # a video that cannot be used is named with its reason, the others are extracted, and the exit says so (3)
    (videos / "fake" / "empty.mp4").write_bytes(b"")
    done = subprocess.run([sys.executable, "-m", "dfscan", "extract", "folder", str(videos), "--out",
                           str(tmp_path / "faces"), "--frames", "2", "--size", "32"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr
    assert f"failed: {videos / 'fake' / 'empty.mp4'}: empty file (0 bytes)" in done.stderr
    assert len((tmp_path / "faces" / "labels.csv").read_text().splitlines()) > 1


def test_a_manifest_nested_past_pythons_stack_is_a_bundle_error(bundles, tmp_path):
    """Found by a probe: a manifest.json of 100,000 nested lists was a RecursionError, exit 5."""
    deep = tmp_path / "deep"
    shutil.copytree(bundles["neutral"], deep)
    (deep / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    result = invoke("info", "--model", deep)
    assert result.exit_code == 4 and "manifest.json" in result.output and "internal error" not in result.output


def test_a_bundle_states_its_own_threshold(bundles, tmp_path):
    """Found by a probe: a manifest without its scan section scanned at a threshold of 0.5 shown as the
    manifest's, and a default operating point that is not among the bundle's points (or not at its threshold)
    was accepted. Each is a bundle error (exit 4)."""
    for change in ("drop scan", "unknown point", "other threshold"):
        bundle = tmp_path / change.replace(" ", "_")
        shutil.copytree(bundles["neutral"], bundle)
        manifest = json.loads((bundle / "manifest.json").read_text())
        if change == "drop scan":
            del manifest["scan"]
        else:
            manifest["scan"]["operating_point"] = "balanced" if change == "other threshold" else "nowhere"
            manifest["scan"]["threshold"] = round(manifest["operating_points"]["balanced"] / 2, 3)
        (bundle / "manifest.json").write_text(json.dumps(manifest))
        result = invoke("info", "--model", bundle)
        assert result.exit_code == 4 and "internal error" not in result.output, (change, result.output)
