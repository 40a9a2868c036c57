"""The `dfscan` command line. It parses options and prints; the work is done by the library
(`dfscan.scan`, `dfscan.train`, `dfscan.evaluate`)."""
from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator, List, NoReturn, Optional, TypeVar

import typer
from typer.core import TyperGroup

from dfscan import __version__
from dfscan.console import err, escape, exit_for, fail, out, print_error, print_text, set_debug
from dfscan.errors import (EXIT_BROKEN_PIPE, EXIT_CRASH, EXIT_FAKE, EXIT_INPUT_FAILED, EXIT_INTERRUPTED, EXIT_OK,
                           EXIT_SETUP, EXIT_USAGE, DfscanError)

# numpy's OpenBLAS starts a thread per core when numpy is imported, and they cost a `dfscan check` of a talking
# head ~0.25 CPU s (13%) on 2 cores for nothing: dfscan's numpy work is on small arrays, and the networks run in
# onnxruntime with threads of its own. Not for the commands that run torch, whose builds for ARM do their matrix
# products in an OpenBLAS that reads the same variable. Nothing above imports numpy; a user's own setting wins.
MAX_WORKERS_PER_CORE = 4  # scan --workers: each worker process loads its own models (~300 MB)
TORCH_COMMANDS = ("train", "export", "soup")
# After these the process ends without Python's finalisation (see `main`).
QUICK_EXIT_COMMANDS = ("check",)


# What a command interrupted by Ctrl-C leaves, and how to go on.
AFTER_INTERRUPT = {
    "scan": "the rows already written stay; rerun with --resume to scan the rest",
    "train": "the last checkpoint stays; rerun the same command with --resume to go on from it",
    "extract": "the faces already written stay; rerun the same command to extract the rest",
    "sbi": "the faces already written stay; rerun the same command to make the rest",
    "robustness": "rerun it to measure again",
}


def _command_name() -> str | None:
    return next((arg for arg in sys.argv[1:] if not arg.startswith("-")), None)


if _command_name() not in TORCH_COMMANDS:
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _click_exceptions() -> Any:
    """The click exceptions module typer raises from: typer vendors its own click (typer._click) in recent
    versions, plain click in older ones."""
    import importlib  # noqa: PLC0415

    for name in ("typer._click.exceptions", "click.exceptions"):  # the first that imports is typer's
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("typer's click is missing")


_CLICK = _click_exceptions()
# Exceptions the command-line framework handles itself (usage errors, exits).
PARSER_ERRORS = _CLICK.ClickException
ABORTS = tuple({typer.Abort, getattr(_CLICK, "Abort", typer.Abort)})
PASSTHROUGH = (typer.Exit, KeyboardInterrupt, PARSER_ERRORS, getattr(_CLICK, "Exit", typer.Exit), *ABORTS)


def _parser_error(exc: Any) -> int:
    """One line for an option or argument the parser refused, naming where the help is."""
    message = exc.format_message().strip().rstrip(".")
    if not message:  # no arguments at all: the parser has printed the help
        return exc.exit_code
    if message[1:2].islower():  # "No such option" -> "no such option", as dfscan's own messages are written
        message = message[:1].lower() + message[1:]
    context = getattr(exc, "ctx", None)
    if context is not None:
        message = f"{message} (see '{context.command_path} --help')"
    print_error(message)
    return exc.exit_code


class _GuardedGroup(TyperGroup):
    """Every command runs inside the one error printer: a DfscanError is one line and its exit code,
    anything unexpected is one line and exit 5 (dfscan.console), and a command line the parser refuses is one
    line and exit 2 (click would draw a five-line box)."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:  # type: ignore[override]
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except PARSER_ERRORS as exc:
            raise SystemExit(_parser_error(exc)) from None
        except ABORTS:  # click's Abort: end of input at a prompt; not a verdict, so never exit 1
            print_error("aborted")
            raise SystemExit(EXIT_INTERRUPTED) from None
        if code == EXIT_INTERRUPTED:  # Ctrl-C: typer returns 130 without a word; say what is kept
            print_error(f"interrupted; {AFTER_INTERRUPT.get(_command_name() or '', 'nothing was finished')}")
        raise SystemExit(code if isinstance(code, int) else EXIT_OK)

    def invoke(self, ctx):  # type: ignore[no-untyped-def]
        try:
            return super().invoke(ctx)
        except PASSTHROUGH:
            raise
        except Exception as exc:  # noqa: BLE001 - the one place an error becomes an exit code
            raise exit_for(exc) from None


app = typer.Typer(
    name="dfscan",
    help="Forensic video scanner: tells whether the faces in a video were manipulated.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_GuardedGroup,
)
T = TypeVar("T")

FRAMES_HELP = "Frames to sample uniformly: a number, or 'all'. Default: the model bundle's (32)."
THRESHOLD_HELP = "Decision threshold: a value in [0,1] or an operating point of the bundle (guarded, balanced, low-fpr, high-recall)."


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Print the traceback of an internal error (exit 5).")) -> None:
    set_debug(debug)


def _fail(message: str, code: int) -> typer.Exit:
    return fail(message, code)


def _run(action: Callable[[], T]) -> T:
    """Turn library errors into one line on stderr and the documented exit code."""
    try:
        return action()
    except DfscanError as exc:
        raise _fail(exc.message, exc.exit_code) from None


def _settings(frames: str | None, fps: float | None, threshold: str | None, aggregation: str | None,
              min_track_faces: int, detect_side: int, thumbnails: bool = False, min_face: int = 40):
    from dfscan.settings import settings_from_options  # noqa: PLC0415

    return _run(lambda: settings_from_options(frames, fps, threshold, aggregation, min_track_faces, detect_side,
                                              min_face, thumbnails=thumbnails))


def _preflight(settings, model: Optional[Path], device: str) -> tuple:
    """Load the bundle and the detector and resolve the settings against the bundle, before any output
    is opened: a bad bundle is exit 4, a threshold name the bundle lacks exit 2, and nothing is written."""
    from dfscan.scan import get_scanner  # noqa: PLC0415

    scanner = _run(lambda: get_scanner(None if model is None else str(model), device, None, settings.detector))
    return scanner, _run(lambda: scanner.resolve(settings))


@contextlib.contextmanager
def _terminated_like_interrupted() -> Iterator[None]:
    """SIGTERM (a `kill`, a job scheduler's stop) unwinds like Ctrl-C, so temporary files are removed; the
    process still ends with the status a SIGTERM gives (143)."""
    def unwind(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _check_outputs(outputs: list, inputs: list, overwrite: bool, resume: bool = False) -> None:
    from dfscan.outputs import check_outputs  # noqa: PLC0415

    _run(lambda: check_outputs(outputs, inputs, overwrite, resume))


# readable=False: a bundle or video the machine will not let dfscan read is the library's one-line error (exit 4 or 3),
# not click's usage error
ModelOpt = typer.Option(None, "--model", "-m", readable=False, help="Model bundle directory. Default: the bundled weights/default.")
DeviceOpt = typer.Option("auto", "--device", help="auto | cpu | cuda (auto takes CUDA when onnxruntime-gpu has a working GPU).")
FramesOpt = typer.Option(None, "--frames", "-n", help=FRAMES_HELP)
FpsOpt = typer.Option(None, "--fps", help="Sample at this rate instead of a fixed count (dense timelines).")
ThresholdOpt = typer.Option(None, "--threshold", "-t", help=THRESHOLD_HELP)
AggOpt = typer.Option(None, "--aggregation", help="Per-track rule: mean | median | max | topk. Default: the bundle's.")
MinTrackOpt = typer.Option(3, "--min-track-faces", help="Faces a track needs before it can decide the verdict (at most the frames sampled; the JSON's settings.min_track_faces_applied says what applied).")
DetectSideOpt = typer.Option(640, "--detect-side", help="Longest side (pixels) frames are shrunk to for face detection.")
MinFaceOpt = typer.Option(40, "--min-face", help="Smallest face (pixels, original frame) to detect and score.")
OverwriteOpt = typer.Option(False, "--overwrite", help="Replace existing output files that dfscan did not write.")


@app.command()
def check(
    video: Optional[Path] = typer.Argument(None, readable=False, help="The video file to check."),
    example: bool = typer.Option(False, "--example", help="Check the bundled example clip (public-domain NASA photo)."),
    model: Optional[Path] = ModelOpt,
    device: str = DeviceOpt,
    frames: Optional[str] = FramesOpt,
    fps: Optional[float] = FpsOpt,
    threshold: Optional[str] = ThresholdOpt,
    aggregation: Optional[str] = AggOpt,
    min_track_faces: int = MinTrackOpt,
    detect_side: int = DetectSideOpt,
    min_face: int = MinFaceOpt,
    json_out: bool = typer.Option(False, "--json", help="Print the full result as JSON (per-frame and per-track scores, boxes, provenance)."),
    json_file: Optional[Path] = typer.Option(None, "--json-file", help="Write the full JSON result to this file."),
    report: Optional[Path] = typer.Option(None, "--report", help="Write a self-contained HTML report (thumbnails, timeline, provenance)."),
    overwrite: bool = OverwriteOpt,
) -> None:
    """Check one video. Exit 0: not fake (or no face), 1: FAKE, 3: could not be scanned, 4: setup problem,
    5: internal error."""
    from dfscan.assets import EXAMPLE_CLIP  # noqa: PLC0415
    from dfscan.outputs import Output, atomic_write_text  # noqa: PLC0415
    from dfscan.scan import decode_for_scan  # noqa: PLC0415

    if example and video is not None:
        raise _fail(f"give a video path or --example, not both ({video} and --example)", EXIT_USAGE)
    if example:
        video = EXAMPLE_CLIP
    if video is None:
        raise _fail("give a video path, or --example", EXIT_USAGE)
    settings = _settings(frames, fps, threshold, aggregation, min_track_faces, detect_side,
                         thumbnails=report is not None, min_face=min_face)
    # The video decodes on a thread of its own from here, while the models load and the printers are imported.
    with _run(lambda: decode_for_scan(video, settings, model, device)) as decoded:
        from dfscan.report.table import print_video  # noqa: PLC0415
        from dfscan.results import shown  # noqa: PLC0415

        scanner, settings = _preflight(settings, model, device)
        _check_outputs([Output("--report", "html", report), Output("--json-file", "json", json_file)], [video],
                       overwrite)
        result = scanner.scan(video, settings, decoded)
    if report is not None:
        from dfscan.report.html import write_video_report  # noqa: PLC0415

        err.print(f"report: {escape(shown(str(write_video_report(result, report))))}", highlight=False)
    if json_file is not None:
        atomic_write_text(json_file, result.to_json() + "\n")
    if json_out:
        out.print_json(result.to_json(), highlight=False) if out.is_terminal else print_text(result.to_json())
    else:
        print_video(result, out)
    if result.label == "ERROR":
        raise _fail(f"{result.path}: {result.reason or ''}", EXIT_INPUT_FAILED)
    raise typer.Exit(EXIT_FAKE if result.label == "FAKE" else EXIT_OK)


@app.command()
def scan(
    # A str, not a Path: typer would turn an empty argument into Path("."), and `scan ''` scanned the working directory.
    source: str = typer.Argument(..., metavar="ROOT", help="Directory (scanned recursively), a single video, or a text file listing one video path a line."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Write one CSV row per video, flushed as each finishes."),
    jsonl_path: Optional[Path] = typer.Option(None, "--jsonl", help="Write one JSON result per line, flushed as each finishes."),
    include: List[str] = typer.Option([], "--include", help="Glob of file names to scan (repeatable). Default: common video extensions."),
    exclude: List[str] = typer.Option([], "--exclude", help="Glob of paths to skip (repeatable)."),
    recursive: bool = typer.Option(True, "--recursive/--no-recursive"),
    resume: bool = typer.Option(False, "--resume", help="Skip videos already in --csv/--jsonl and append to them."),
    retry_errors: bool = typer.Option(False, "--retry-errors", help="With --resume: scan again the videos whose earlier row is ERROR (a crashed worker, a lost node, a file fixed since); their ERROR rows are replaced."),
    workers: int = typer.Option(1, "--workers", "-j", help="Parallel worker processes."),
    engine: str = typer.Option("local", "--engine", help="local (process pool on this machine) | ray (Ray actors: pip install 'dfscan[cpu,ray]')."),
    address: Optional[str] = typer.Option(None, "--address", help="--engine ray: 'auto' or ray://host:port joins a cluster. Default: start a local Ray."),
    actors: Optional[int] = typer.Option(None, "--actors", help="--engine ray: scanner actors. Default: one per CPU."),
    gpus_per_actor: float = typer.Option(0.0, "--gpus-per-actor", help="--engine ray: GPU share each actor reserves (> 0 runs it on CUDA)."),
    model: Optional[Path] = ModelOpt,
    device: str = DeviceOpt,
    frames: Optional[str] = FramesOpt,
    fps: Optional[float] = FpsOpt,
    threshold: Optional[str] = ThresholdOpt,
    aggregation: Optional[str] = AggOpt,
    min_track_faces: int = MinTrackOpt,
    detect_side: int = DetectSideOpt,
    min_face: int = MinFaceOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No per-video lines, only the summary."),
    report: Optional[Path] = typer.Option(None, "--report", help="Directory for an HTML report: index.html sorted by score, a page per video."),
    overwrite: bool = OverwriteOpt,
) -> None:
    """Scan a directory of videos. Exit 0: nothing fake, 1: something FAKE, 3: some files failed
    (and none was FAKE), 4: setup problem, 5: internal error."""
    from dfscan.inputs import VIDEO_PATTERNS, list_inputs, path_key  # noqa: PLC0415
    from dfscan.runtime import usable_cores  # noqa: PLC0415
    from dfscan.outputs import REPORT_ROWS, Output  # noqa: PLC0415
    from dfscan.likelihood import attach_likelihood_ratios  # noqa: PLC0415
    from dfscan.report.table import result_line, summary_table  # noqa: PLC0415
    from dfscan.report.writers import CsvWriter, JsonlWriter, drop_error_rows, earlier_rows  # noqa: PLC0415
    from dfscan.results import VideoResult, shown  # noqa: PLC0415
    from dfscan.scan import iter_scan  # noqa: PLC0415

    if not source:
        raise _fail("the path to scan is empty", EXIT_USAGE)
    root = Path(source)
    _check_root(root)
    if workers < 1:
        raise _fail("--workers must be at least 1", EXIT_USAGE)
    if workers > MAX_WORKERS_PER_CORE * usable_cores():
        raise _fail(f"--workers {workers} is more than {MAX_WORKERS_PER_CORE} a core on this machine's "
                    f"{usable_cores()} cores: each worker loads its own models", EXIT_USAGE)
    if engine not in ("local", "ray"):
        raise _fail(f"--engine must be local or ray, not {engine!r}", EXIT_USAGE)
    if (actors is not None and actors < 1) or not (math.isfinite(gpus_per_actor) and gpus_per_actor >= 0):
        raise _fail("--actors must be at least 1 and --gpus-per-actor a number, 0 or more", EXIT_USAGE)
    ray_only = [flag for flag, given in (("--address", address is not None), ("--actors", actors is not None),
                                         ("--gpus-per-actor", gpus_per_actor != 0.0)) if given]
    if engine == "local" and ray_only:
        raise _fail(f"{', '.join(ray_only)}: only with --engine ray", EXIT_USAGE)
    if engine == "ray" and workers != 1:
        raise _fail("--workers is for --engine local; Ray's engine takes --actors", EXIT_USAGE)
    if engine == "ray" and address:
        from dfscan.ray_engine import check_address  # noqa: PLC0415 - imports no Ray

        _run(lambda: check_address(address))  # before any output is opened
    if resume and not (csv_path or jsonl_path):
        raise _fail("--resume needs --csv or --jsonl to know what is done", EXIT_USAGE)
    if retry_errors and not resume:
        raise _fail("--retry-errors goes with --resume (it replaces the ERROR rows of an earlier run)", EXIT_USAGE)
    settings = _settings(frames, fps, threshold, aggregation, min_track_faces, detect_side,
                         thumbnails=report is not None, min_face=min_face)
    _, settings = _preflight(settings, model, device)
    found = list(list_inputs(root, include or VIDEO_PATTERNS, exclude, recursive))
    if root.is_dir():
        found = _without_outputs(found, {"csv": csv_path, "jsonl": jsonl_path}, report)
    if not found:  # a mistyped folder or --include: say so, or an empty CSV looks like a clean archive
        err.print(f"[yellow]warning:[/] no videos to scan in {escape(shown(str(root)))}"
                  + (" (with these --include/--exclude patterns)" if include or exclude else ""), highlight=False)
    inputs = [f.path for f in found] + ([root] if root.is_file() else [])  # a list of paths is an input too
    _check_outputs([Output("--csv", "csv", csv_path), Output("--jsonl", "jsonl", jsonl_path),
                    Output("--report", "report", report)], inputs, overwrite, resume)
    if retry_errors:  # the report's own rows too, before it reads them: a retried video keeps one record
        report_rows = report / REPORT_ROWS if report is not None else None
        outputs = {path: kind for path, kind in ((csv_path, "csv"), (jsonl_path, "jsonl"), (report_rows, "jsonl"))
                   if path is not None}
        retried = drop_error_rows(outputs, {path_key(f.path) for f in found})
        err.print(f"retrying: {retried} videos whose earlier row was ERROR", highlight=False)
    html_report = None
    if report is not None:
        from dfscan.report.html import ScanReport  # noqa: PLC0415

        html_report = _run(lambda: ScanReport(report, resume=resume))
    writers = [w for w in (CsvWriter(csv_path, resume) if csv_path else None,
                           JsonlWriter(jsonl_path, resume) if jsonl_path else None) if w]
    earlier = earlier_rows(writers if resume else [], [path_key(f.path) for f in found], settings.threshold)
    todo = [f for f in found if path_key(f.path) not in earlier.done]
    problems = [VideoResult(path=f.path, label="ERROR", error_code="input", reason=f.problem)
                for f in todo if f.problem]
    for problem in problems:
        attach_likelihood_ratios(problem, None)
    paths = [f.path for f in todo if not f.problem]
    _print_resume(earlier, len(found), bool(todo), settings.threshold)
    counts: Counter[str] = Counter()  # labels only: a scan of thousands keeps no results in memory

    def record(result: VideoResult) -> None:
        for writer in writers:
            if path_key(result.path) not in writer.done_keys():
                writer.write(result)
        if html_report is not None:
            html_report.add(result)
        counts[result.label] += 1
        if not quiet:
            progress.console.print(result_line(result), highlight=False, soft_wrap=True)

    from rich.progress import (  # noqa: PLC0415 - only batches draw a bar; `check` starts without it
        BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn)

    started = time.perf_counter()
    progress = Progress(TextColumn("[bold]scanning"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"),
                        TimeRemainingColumn(), console=err.console, transient=False, disable=not err.is_terminal)
    try:
        with progress:
            task = progress.add_task("scan", total=len(todo), rate="")
            for result in problems:
                record(result)
                progress.advance(task)
            if engine == "ray":
                from dfscan.ray_engine import iter_scan_ray  # noqa: PLC0415

                results = iter_scan_ray(paths, model=model, device=device, settings=settings, actors=actors,
                                        address=address, gpus_per_actor=gpus_per_actor)
            else:
                results = iter_scan(paths, model=model, device=device, settings=settings, workers=workers)
            for result in results:
                record(result)
                rate = counts.total() / max(time.perf_counter() - started, 1e-6)
                progress.update(task, advance=1, rate=f"{rate:.2f} videos/s")
    finally:
        for writer in writers:
            writer.close()
        if html_report is not None:
            html_report.close()
    counts.update(earlier.labels)  # a resumed batch ends as the whole batch would: its earlier rows count too
    err.print(summary_table(counts))
    worst = counts + earlier.partial  # a row kept in one output counts for the exit code, not twice in the table
    raise typer.Exit(EXIT_FAKE if worst["FAKE"] else EXIT_INPUT_FAILED if worst["ERROR"] else EXIT_OK)


def _check_root(root: Path) -> None:
    """What to scan is there and readable, or the command line names something else (exit 2, nothing written)."""
    try:
        there = root.exists()
    except OSError as exc:  # a name too long
        raise _fail(f"{root}: {exc.strerror or exc}", EXIT_USAGE) from None
    if not there:
        why = "a symbolic link loop or a link to a missing file" if root.is_symlink() else "does not exist"
        raise _fail(f"{root}: {why}", EXIT_USAGE)
    if not os.access(root, os.R_OK | (os.X_OK if root.is_dir() else 0)):
        raise _fail(f"{root}: permission denied", EXIT_USAGE)


def _print_resume(earlier: Any, n_found: int, scanning: bool, threshold: float) -> None:
    if earlier.done:
        was = ", ".join(f"{n} {label}" for label, n in sorted(earlier.labels.items()))
        err.print(f"resuming: {len(earlier.done)} of {n_found} videos already done ({was})", highlight=False,
                  soft_wrap=True)
    if earlier.partial:
        err.print(f"[yellow]warning:[/] {earlier.partial.total()} videos have a row in one output and not in the "
                  "other: scanned again for the other, the rows there stay", highlight=False, soft_wrap=True)
    if earlier.thresholds and scanning:
        err.print(f"[yellow]warning:[/] earlier rows were judged at threshold "
                  f"{', '.join(f'{t:g}' for t in sorted(earlier.thresholds))}, this run at {threshold:g}: the "
                  "batch's rows will mix them", highlight=False, soft_wrap=True)


def _without_outputs(found: list, files: dict[str, Optional[Path]], report: Optional[Path]) -> list:
    """A folder's files less this scan's own earlier outputs (`--include '*'` found its CSV, and `--resume` then
    refused it as an input). Only files dfscan wrote: a video named as an output stays an input, and is refused."""
    from dfscan.inputs import path_key  # noqa: PLC0415
    from dfscan.outputs import is_earlier_output  # noqa: PLC0415

    own = {path_key(p): kind for kind, p in files.items() if p is not None}
    folder = path_key(report) + os.sep if report is not None else None

    def is_own(path: str) -> bool:
        key = path_key(path)
        if key in own:
            return is_earlier_output(Path(path), own[key])
        return bool(folder and key.startswith(folder) and Path(path).suffix in (".html", ".jsonl"))

    return [f for f in found if not is_own(f.path)]


@app.command()
def robustness(
    target: Path = typer.Argument(..., readable=False, help="A video, or a directory (labelled when paths contain real/ or fake/)."),
    degradations: str = typer.Option("crf23,crf32,crf40,720p,480p,social", "--degradations", "-d",
                                     help="Comma-separated: crf23, crf32, crf40, 720p, 480p, social."),
    keep: Optional[Path] = typer.Option(None, "--keep", help="Keep the re-encoded videos in this directory."),
    model: Optional[Path] = ModelOpt,
    device: str = DeviceOpt,
    frames: Optional[str] = FramesOpt,
    threshold: Optional[str] = ThresholdOpt,
    json_out: bool = typer.Option(False, "--json", help="Print rows, per-degradation summary and AUC as JSON."),
) -> None:
    """Re-encode each input (several CRFs, downscales, a social-media transcode), rescan, and report how
    scores and verdicts move; AUC per degradation on a labelled folder. Exit 0, or 3 when an input could not
    be scanned (its row says why)."""
    import json  # noqa: PLC0415

    from rich.table import Table  # noqa: PLC0415

    from dfscan.inputs import VIDEO_PATTERNS, find_videos  # noqa: PLC0415
    from dfscan.robustness import DEGRADATIONS, check_robustness  # noqa: PLC0415
    from dfscan.scan import get_scanner  # noqa: PLC0415

    names = [d.strip() for d in degradations.split(",") if d.strip()]
    if not names:
        raise _fail(f"--degradations must name at least one of {', '.join(DEGRADATIONS)}", EXIT_USAGE)
    unknown = [d for d in names if d not in DEGRADATIONS]
    if unknown:
        raise _fail(f"unknown degradation(s) {unknown}; choose from {', '.join(DEGRADATIONS)}", EXIT_USAGE)
    if not target.exists():
        raise _fail(f"{target} does not exist", EXIT_USAGE)
    settings = _settings(frames, None, threshold, None, 3, 640)
    scanner = _run(lambda: get_scanner(None if model is None else str(model), device, None, settings.detector))
    settings = _run(lambda: scanner.resolve(settings))
    paths = [f.path for f in find_videos(target, VIDEO_PATTERNS) if not f.problem]
    from dfscan.outputs import REPORT_ROWS, Output  # noqa: PLC0415

    _check_outputs([Output("--keep", "folder", keep)], [target, *paths], overwrite=False)
    if not paths:
        raise _fail(f"{target}: no video to re-encode", EXIT_INPUT_FAILED)
    with _terminated_like_interrupted():  # its re-encodes live in a temporary folder until the run ends
        report = _run(lambda: check_robustness(paths, scanner, settings, names, keep))
    failed = any(row.degradation == "original" and row.label == "ERROR" for row in report.rows)
    if json_out:
        print_text(json.dumps(report.to_dict(), indent=2))
        raise typer.Exit(EXIT_INPUT_FAILED if failed else EXIT_OK)
    table = Table(title="robustness: score change under re-encoding")
    for col in ("video", "degradation", "label", "score", "delta", "flipped"):
        table.add_column(col)
    for row in report.rows:
        table.add_row(Path(row.path).name, row.degradation, row.label, "-" if row.score is None else f"{row.score:.3f}",
                      "-" if row.delta is None else f"{row.delta:+.3f}", "yes" if row.flipped else "")
    out.print(table)
    summary = Table(title="per degradation")
    for col in ("degradation", "videos", "flips", "mean |delta|", "max |delta|", "AUC"):
        summary.add_column(col)
    for name, stats in report.summary().items():
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        summary.add_row(name, str(stats["videos"]), str(stats["flips"]), fmt(stats["mean_abs_delta"]),
                        fmt(stats["max_abs_delta"]), fmt(stats["auc"]))
    out.print(summary)
    from dfscan.results import shown  # noqa: PLC0415

    for row in report.rows:  # the table has no room for why a row is ERROR or NO_FACE: each gets its line
        if row.reason:
            err.print(f"{shown(Path(row.path).name)} {row.degradation}: {row.label}: {row.reason}",
                      highlight=False, markup=False, soft_wrap=True)
    raise typer.Exit(EXIT_INPUT_FAILED if failed else EXIT_OK)


@app.command()
def info(model: Optional[Path] = ModelOpt) -> None:
    """Show a model bundle's manifest: preprocessing, threshold, operating points, training, metrics."""
    import json  # noqa: PLC0415

    from dfscan.model.manifest import load_manifest  # noqa: PLC0415
    from dfscan.model.scorer import default_bundle_path  # noqa: PLC0415

    manifest = _run(lambda: load_manifest(model or default_bundle_path()))
    print_text(json.dumps(manifest.to_dict(), indent=2))


@app.command()
def version() -> None:
    """Print dfscan's version, the onnxruntime providers available and what runs the face detector on CPU."""
    from dfscan.runtime import cpu_runtime  # noqa: PLC0415

    try:
        import onnxruntime as ort  # noqa: PLC0415

        providers = ", ".join(ort.get_available_providers())
        runtime = f"onnxruntime {ort.__version__} ({providers}); face detector on CPU: {cpu_runtime(loaded=True)}"
    except ImportError:
        runtime = "onnxruntime not installed"
    print_text(f"dfscan {__version__}; {runtime}; python {sys.version.split()[0]}")


def _mount_commands() -> None:
    """Commands written in their own modules (training, extraction, evaluation). None of them imports
    torch or sklearn at import time, so `check` and `scan` keep working without the [train] extra."""
    from dfscan.commands.data import calibrate_lr_command, eval_command, extract_command  # noqa: PLC0415
    from dfscan.commands.faces import sbi_command  # noqa: PLC0415
    from dfscan.commands.train import export_command, soup_command, train_app  # noqa: PLC0415

    app.add_typer(train_app, name="train", help="Train a detector with one of the papers' recipes.")
    app.command("export")(export_command)
    app.command("soup")(soup_command)
    app.command("extract")(extract_command)
    app.command("sbi")(sbi_command)
    app.command("eval")(eval_command)
    app.command("calibrate-lr")(calibrate_lr_command)


_mount_commands()


def main() -> None:
    """The `dfscan` command. A `check` ends its process without Python's finalisation: tearing down the modules
    it loaded (onnxruntime, OpenCV, PyAV, numpy, typer) takes ~60 ms, more than a tenth of a talking head's
    whole check on 2 cores, and has nothing left to do: its outputs are written and closed, its threads idle,
    and it starts no processes. Other commands (Ray clusters, training's workers) end the usual way.
    Whatever happens, the status is never Python's 1 for an uncaught error: 1 means FAKE."""
    _open_closed_streams()
    stdout_at_start = _stdout_identity()
    try:
        app()
        code: object = EXIT_OK
    except SystemExit as exc:
        code = exc.code
        if code == EXIT_FAKE and stdout_at_start != _stdout_identity() == _devnull_identity():
            code = EXIT_BROKEN_PIPE  # rich's own consoles (typer's help) end a broken pipe with SystemExit(1)
    except Exception as exc:  # noqa: BLE001 - raised outside a command (help to a full disk): the same printer
        if isinstance(exc, OSError) and exc.filename is None:  # outside a command only the help is written
            exc = OSError(exc.errno, exc.strerror, "standard output")
        code = exit_for(exc).exit_code
    except BaseException:  # noqa: BLE001 - an error the one printer could not report (it failed itself)
        code = EXIT_CRASH
    if _command_name() in QUICK_EXIT_COMMANDS:
        _exit_now(code)
    raise SystemExit(code)


def _stdout_identity() -> tuple[int, int] | None:
    try:
        stat = os.fstat(1)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _devnull_identity() -> tuple[int, int]:
    stat = os.stat(os.devnull)
    return stat.st_dev, stat.st_ino


def _open_closed_streams() -> None:
    """`dfscan check v.mp4 >&-` starts with no stdout (sys.stdout is None): its output goes nowhere, as asked,
    and the exit code still says the verdict (printing to None was an AttributeError, exit 1)."""
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115 - for the process's life


def _exit_now(code: object) -> NoReturn:
    if isinstance(code, str):  # as SystemExit does: the message on stderr, status 1
        print(code, file=sys.stderr)
    status = code if isinstance(code, int) else 0 if code is None else 1
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        status = EXIT_BROKEN_PIPE
    except OSError as exc:  # a full disk under `> result.json`: the result did not arrive, say so
        print_error(f"cannot write standard output: {exc.strerror or exc}")
        status = EXIT_SETUP
    except ValueError:  # closed
        pass
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os._exit(status)


if __name__ == "__main__":
    main()
