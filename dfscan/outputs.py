"""Outputs never destroy anything: every path a command will write is checked before any video is read.

Refused (OutputError, exit 2): an output that is one of the inputs; one path named for two outputs; an
existing file that is not an earlier output of the same kind (unless `overwrite`; never inside an input
directory, where it may be one of the files read); a destination that
cannot be written ("cannot write PATH: reason"). Whole-file outputs are written to a temporary file in
the same folder and renamed over the target (`atomic_write_text`), so a crash never leaves half a page.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

from dfscan.errors import OutputError, UnwritableOutput

KINDS = ("csv", "jsonl", "html", "json", "report", "scores", "pages", "folder", "bundle")
HTML_MARKERS = ('<meta name="generator" content="dfscan', "<title>dfscan")
SVG_MARKER = "<!-- generator: dfscan -->"  # the first line of each figure `eval --report` writes as a file
REPORT_INDEX = "index.html"
REPORT_ROWS = "index.jsonl"
JSONL_ROW_START = b'{"path": '  # how every dfscan result row begins (VideoResult.to_json)
MAX_JSON_RESULT = 1 << 27  # bytes of an existing --json-file read to tell whether dfscan wrote it


@dataclass(frozen=True)
class Output:
    option: str   # how the user named it: --csv, --jsonl, --report ...
    kind: str     # one of KINDS; "report" (scan), "pages" (eval), "folder" (new or empty) and "bundle" (a model
                  # bundle, written whole by `staged_directory`) are directories
    path: Path


def _key(path: Path | str) -> str:
    return os.path.realpath(os.path.abspath(os.fsdecode(path)))


def _head(path: Path, size: int = 4096) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(size)


def is_earlier_output(path: Path, kind: str) -> bool:
    """Whether an existing file is something dfscan wrote of this kind (or empty: nothing to lose)."""
    try:
        head = _head(path)
    except OSError:
        return False
    if not head.strip():
        return True
    first = head.split(b"\n", 1)[0].strip()
    if kind == "csv":
        return first.startswith(b"path,label,")
    if kind in ("html", "report_html"):  # check's page is one video's, never a file of a scan's report
        return any(marker.encode() in head for marker in HTML_MARKERS) and (
            kind == "report_html" or not _in_scan_report(path))
    if kind == "svg":
        return head.startswith(SVG_MARKER.encode())
    if kind == "jsonl" and head.startswith(JSONL_ROW_START) and not _first_line(path).endswith(b"\n"):
        return True  # one row, cut by a kill before its end: resume drops it and redoes it
    if kind == "json" and _is_json_line(_first_line(path)):  # a scan's JSONL of one row, not check's JSON
        return False
    if kind in ("jsonl", "json", "scores"):
        try:
            data = json.loads(_first_line(path) if kind != "json" else _head(path, MAX_JSON_RESULT))
        except (ValueError, OSError):
            return False
        keys = {"id", "label", "score"} if kind == "scores" else {"path", "label", "dfscan_version"}
        return isinstance(data, dict) and keys <= data.keys()
    return False


def _is_json_line(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _in_scan_report(path: Path) -> bool:
    """A file of a `scan --report` folder: its index.html, or a page in its videos/."""
    folder = path.parent.parent if path.parent.name == "videos" else path.parent
    return (folder / REPORT_ROWS).is_file()


def _holds_rows(path: Path, kind: str) -> bool:
    """Whether an earlier CSV/JSONL output holds a result (more than a CSV header): a batch never drops one
    unasked."""
    rows = _head(path, 1 << 16).split(b"\n")
    return any(line.strip() for line in (rows[1:] if kind == "csv" else rows))


def _first_line(path: Path, limit: int = 1 << 24) -> bytes:
    with open(path, "rb") as fh:
        return fh.readline(limit)


def _report_files(out_dir: Path) -> list[tuple[Path, str]]:
    """The files of a report directory a new report would replace, with their kind."""
    files = [(out_dir / REPORT_INDEX, "report_html"), (out_dir / REPORT_ROWS, "jsonl_rows")]
    pages = out_dir / "videos"
    if pages.is_dir():
        files.extend((page, "report_html") for page in sorted(pages.glob("*.html")))
    return files


def _rows_file_ok(path: Path) -> bool:
    try:
        first = _head(path).split(b"\n", 1)[0]
        return not first.strip() or {"path", "label", "page"} <= json.loads(first).keys()
    except (OSError, ValueError, AttributeError):
        return False


def check_outputs(outputs: Iterable[Output], inputs: Iterable[str | Path] = (), overwrite: bool = False,
                  resume: bool = False) -> None:
    """Raise OutputError unless every output can be written without destroying anything."""
    outputs = [o for o in outputs if o.path is not None]
    input_keys = {_key(p) for p in inputs}
    input_dirs = [Path(key) for key in input_keys if os.path.isdir(key)]
    claimed: dict[str, str] = {}
    for out in outputs:
        targets = [out.path / REPORT_INDEX, out.path / REPORT_ROWS] if out.kind == "report" else [out.path]
        for target in targets:
            key = _key(target)
            if key in claimed:
                raise OutputError(f"{claimed[key]} and {out.option} both name {target}: give each output its own path")
            claimed[key] = out.option
        if _key(out.path) in input_keys:
            raise OutputError(f"{out.option} {out.path} is one of the inputs: it would be overwritten")
    for out in outputs:
        if out.kind == "report":
            _check_report_dir(out, overwrite, input_keys, resume)
        elif out.kind == "pages":
            _check_pages_dir(out, overwrite, input_dirs)
        elif out.kind == "folder":
            _check_folder(out, overwrite)
        elif out.kind == "bundle":
            _check_bundle_dir(out, overwrite, input_keys)
        else:
            _check_not_inside_inputs(out, input_dirs)
            _check_file(out, overwrite, resume and out.kind in ("csv", "jsonl"))
        _check_writable(out)


def _check_not_inside_inputs(out: Output, input_dirs: list[Path]) -> None:
    """An existing file inside an input directory may be one of the files read from it (a face set's
    labels.csv or images): there only an earlier output of the same kind is replaced, --overwrite or not."""
    path = out.path
    if not path.is_file() or is_earlier_output(path, out.kind):
        return
    inside = [folder for folder in input_dirs if folder in Path(_key(path)).parents]
    if inside:
        raise OutputError(f"{out.option} {path} lies inside the input {inside[0]} and is not an earlier dfscan "
                          f"{out.kind} output: it may be one of the inputs; give another path")


def _check_file(out: Output, overwrite: bool, appending: bool) -> None:
    path = out.path
    if path.is_dir():
        raise OutputError(f"cannot write {path}: is a directory")
    if not path.exists() and not path.is_symlink():
        return
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        # a device, pipe or socket: replacing it would destroy it (/dev/null), reading it may never end
        raise OutputError(f"cannot write {path}: not a regular file; give a file path")
    if is_earlier_output(path, out.kind):
        if out.kind in ("csv", "jsonl") and not appending and not overwrite and _holds_rows(path, out.kind):
            raise OutputError(f"{out.option} {path} holds the results of an earlier scan: --resume adds to them, "
                              "--overwrite replaces them, or give another path")
        return
    if appending:
        raise OutputError(f"{out.option} {path} is not an earlier dfscan {out.kind} output: cannot resume into it")
    if not overwrite:
        raise OutputError(f"{out.option} {path} exists and is not an earlier dfscan {out.kind} output; "
                          "give another path, or --overwrite to replace it")


def _check_report_dir(out: Output, overwrite: bool, input_keys: set[str], resume: bool = False) -> None:
    path = out.path
    if path.exists() and not path.is_dir():
        raise OutputError(f"{out.option} {path} exists and is not a directory")
    if not path.is_dir():
        return
    rows = path / REPORT_ROWS
    if not resume and not overwrite and rows.is_file() and _rows_file_ok(rows) and _holds_rows(rows, "jsonl"):
        raise OutputError(f"{out.option} {path} holds the report of an earlier scan: --resume (with that scan's "
                          "--csv or --jsonl) adds to it, --overwrite replaces it, or give another directory")
    for file, kind in _report_files(path):
        if _key(file) in input_keys:
            raise OutputError(f"{out.option} would overwrite the input {file}")
        if not file.exists():
            continue
        ok = _rows_file_ok(file) if kind == "jsonl_rows" else is_earlier_output(file, kind)
        if not ok and not overwrite:
            raise OutputError(f"{out.option}: {file} exists and is not an earlier dfscan report; "
                              "give another directory, or --overwrite to replace it")


def _check_folder(out: Output, overwrite: bool) -> None:
    """A new or empty directory (robustness --keep, whose file names could be anything's)."""
    path = out.path
    if path.exists() and not path.is_dir():
        raise OutputError(f"{out.option} {path} exists and is not a directory")
    if path.is_dir() and not overwrite and any(path.iterdir()):
        raise OutputError(f"{out.option} {path} is not empty: give a new or empty directory")


def _check_pages_dir(out: Output, overwrite: bool, input_dirs: list[Path]) -> None:
    """eval --report: a directory outside the inputs where the page's files (index.html and its figures) are
    absent or earlier dfscan ones; a foreign one is replaced only with `overwrite` (by a new file: a link there is
    replaced, never written through)."""
    from dfscan.report.eval_page import FIGURES  # noqa: PLC0415

    path = out.path
    if path.exists() and not path.is_dir():
        raise OutputError(f"{out.option} {path} exists and is not a directory")
    real = Path(_key(path))  # through links: a link into the face set is inside it
    inside = [folder for folder in input_dirs if folder == real or folder in real.parents]
    if inside:
        raise OutputError(f"{out.option} {path} lies inside the input {inside[0]}: give a directory outside the "
                          "inputs")
    if not path.is_dir():
        return
    index = path / REPORT_INDEX
    earlier_page = index.is_file() and is_earlier_output(index, "html")
    foreign = [] if earlier_page or not index.exists() else [index]
    if not earlier_page:  # the figures of an earlier page are its own; without one, each must say it is dfscan's
        foreign += [path / f"{name}.svg" for name in FIGURES
                    if (path / f"{name}.svg").exists() and not is_earlier_output(path / f"{name}.svg", "svg")]
    if foreign and not overwrite:
        raise OutputError(f"{out.option}: {foreign[0]} exists and is not an earlier dfscan page; give another "
                          "directory, or --overwrite to replace it")


def _check_bundle_dir(out: Output, overwrite: bool, input_keys: set[str]) -> None:
    """A model bundle is replaced as a whole directory: only an earlier bundle (it holds a manifest.json), only
    with `overwrite`, and never one that holds an input (a run's checkpoint)."""
    path = out.path
    if path.exists() and not path.is_dir():
        raise OutputError(f"{out.option} {path} exists and is not a directory")
    if not path.is_dir() or not any(path.iterdir()):
        return
    inside = [key for key in input_keys if Path(_key(path)) in Path(key).parents]
    if inside:
        raise OutputError(f"{out.option} {path} holds the input {inside[0]}: give a new directory")
    if not (path / "manifest.json").is_file():
        raise OutputError(f"{out.option} {path} is not empty and holds no model bundle: give a new or empty directory")
    if not overwrite:
        raise OutputError(f"{out.option} {path} holds a model bundle: --overwrite replaces it, or give another path")


@contextmanager
def staged_directory(target: str | Path) -> Iterator[Path]:
    """A new directory beside `target` to write into; when the block ends without an error it takes the place of
    `target` (an earlier one is removed), otherwise it is removed: `target` is the old or the new, never half."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name[:40]}.new-"))
    try:
        yield staging
        # mkdtemp's 0o700 would hide the bundle from everyone else: the old directory's mode, or a new one's
        os.chmod(staging, stat.S_IMODE(target.stat().st_mode) if target.is_dir() else 0o777 & ~_umask())
        if target.is_dir():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name[:40]}.old-"))
            os.replace(target, old / target.name)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _nearest_existing(path: Path) -> Path:
    """The deepest folder on the way to `path` that is there: a link counts (one in a loop is no folder)."""
    path = Path(os.path.abspath(path))
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _check_writable(out: Output) -> None:
    """Probe the destination folder with a real file, so read-only mounts and missing rights show now."""
    target = out.path if out.kind in ("report", "pages", "folder") else out.path.parent
    folder = _nearest_existing(target)
    if not folder.is_dir():
        raise OutputError(f"cannot write {out.path}: {folder} is not a directory")
    if out.kind != "report" and out.path.exists() and not os.access(out.path, os.W_OK):
        raise UnwritableOutput(f"cannot write {out.path}: permission denied")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".dfscan-probe-"):
            pass
    except OSError as exc:  # a read-only mount, no rights, a full disk: the machine's state, exit 4
        raise UnwritableOutput(f"cannot write {out.path}: {exc.strerror or exc}") from None


@contextmanager
def naming_errors(name: str | Path) -> Iterator[None]:
    """A write that fails names what it was writing (a file, or "standard output"): an OSError of a full disk names
    nothing by itself, and the one error printer says "cannot write NAME". A broken pipe stays one (exit 141)."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        if exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror, str(name)) from None


def open_append(path: str | Path) -> IO[str]:
    """`path` opened to append text. A link or a hard link there (another name of some other file) is first
    replaced by a file of its own holding what it held: appending never writes into the file it shares."""
    path = Path(path)
    try:
        info = path.lstat()
    except FileNotFoundError:
        info = None
    if info is not None and (stat.S_ISLNK(info.st_mode) or (stat.S_ISREG(info.st_mode) and info.st_nlink > 1)):
        try:
            held = path.read_bytes()
        except FileNotFoundError:  # a link to nothing
            held = b""
        atomic_write_text(path, held)
    return open(path, "a", newline="", encoding="utf-8")


def atomic_write_text(path: str | Path, text: str | bytes) -> Path:
    """Write a whole file so that readers see the old or the new content, never half of it (text as UTF-8).
    A new file takes the name: a link or a hard link there is replaced, never written through."""
    atomic_write_files({Path(path): text})
    return Path(path)


def atomic_write_files(contents: dict[Path, str | bytes]) -> None:
    """Write several whole files all or none: each goes to a temporary file beside it first, and only when every
    one is on disk do they take their names (a full disk half-way leaves every old file as it was)."""
    staged: list[tuple[str, Path]] = []
    current = next(iter(contents), None)
    try:
        for current, text in contents.items():
            current.parent.mkdir(parents=True, exist_ok=True)
            staged.append((_staged_copy(current, text if isinstance(text, bytes) else text.encode("utf-8")), current))
        for tmp, current in staged:
            os.replace(tmp, current)
    except BaseException as exc:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno is not None and not exc.filename:
            # a write that fails (a full disk) names no file by itself; the error printer says which
            raise OSError(exc.errno, exc.strerror or str(exc), str(current)) from None
        raise


def _staged_copy(path: Path, data: bytes) -> str:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:40]}.", suffix=".tmp")
    try:
        os.fchmod(fd, _mode_for(path))
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return tmp


def _mode_for(path: Path) -> int:
    """The permissions the written file gets: those of the file it replaces, else what open() gives a new file
    (0o666 less the umask). mkstemp's own 0o600 would hide a report or a JSON result from everyone else."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask
