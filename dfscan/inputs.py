"""Finding the videos to scan in a directory tree: recursive, include/exclude globs, symlink loops
broken, unreadable entries reported instead of aborting the walk."""
from __future__ import annotations

import fnmatch
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

VIDEO_PATTERNS = ("*.mp4", "*.m4v", "*.mov", "*.avi", "*.mkv", "*.webm", "*.mpg", "*.mpeg", "*.wmv",
                  "*.flv", "*.3gp", "*.ts", "*.mts", "*.m2ts", "*.ogv")


def path_key(path: str | Path) -> str:
    """What identifies a file across runs however it was spelled (relative, absolute, through links):
    resume and the report index compare these."""
    return os.path.realpath(os.path.abspath(os.fsdecode(path)))


def confined(folder: str | Path, name: str) -> Path:
    """The file a labels file in `folder` names, if it is inside `folder` (relative names are relative to
    it); ValueError for a path outside, by `..` or absolute. The check is on the names (links inside the
    folder may point anywhere: a face set's images may live on another disk)."""
    base = os.path.normpath(os.path.abspath(folder))
    target = os.path.normpath(os.path.join(base, name)) if name else base
    if target == base or not target.startswith(base.rstrip(os.sep) + os.sep):
        raise ValueError(f"{name!r} is outside {folder}: a labels file may only name files inside its folder")
    return Path(name) if os.path.isabs(name) else Path(folder) / name


@dataclass(frozen=True)
class Found:
    path: str
    problem: str | None = None   # set when the entry can't be scanned (loop, unreadable directory)


@contextmanager
def labels_text(path: str | Path) -> Iterator[None]:
    """Around the reading of a labels CSV: text that is not UTF-8 (a Latin-1 export, or a video given where
    its labels were expected) is a ValueError naming the file, not the codec's message alone."""
    try:
        yield
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a labels CSV (not UTF-8 text: {exc.reason} at byte {exc.start}; "
                         "a labels CSV is UTF-8)") from None


def _matches(rel: str, patterns: Sequence[str]) -> bool:
    name = rel.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(name.lower(), p.lower()) or fnmatch.fnmatch(rel, p) for p in patterns)


def find_videos(root: str | Path, include: Sequence[str] = VIDEO_PATTERNS, exclude: Sequence[str] = (),
                recursive: bool = True) -> Iterator[Found]:
    """Yield candidate files under `root` in sorted order (a file given directly is yielded as is).

    Symlinked directories are followed once each (by device and inode), so a link loop ends the descent
    instead of recursing forever; a file symlink that loops or dangles is yielded with its problem."""
    root = Path(root)
    if not root.is_dir():
        yield Found(str(root))
        return
    seen: set[tuple[int, int]] = set()

    def walk(directory: Path) -> Iterator[Found]:
        try:
            st = directory.stat()
        except OSError as exc:
            yield Found(str(directory), f"cannot read directory: {exc.strerror or exc}")
            return
        key = (st.st_dev, st.st_ino)
        if key in seen:
            return
        seen.add(key)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            yield Found(str(directory), f"cannot list directory: {exc.strerror or exc}")
            return
        for entry in entries:
            path = Path(entry.path)
            rel = path.relative_to(root).as_posix()
            if exclude and _matches(rel, exclude):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError as exc:  # ELOOP on a self-referencing link
                if _matches(rel, include):
                    yield Found(str(path), f"unreadable link: {exc.strerror or exc}")
                continue
            if is_dir:
                if recursive:
                    yield from walk(path)
            elif _matches(rel, include):
                if entry.is_symlink() and not path.exists():
                    yield Found(str(path), "dangling symlink")
                else:
                    yield Found(str(path))

    yield from walk(root)


LIST_SUFFIXES = (".txt", ".lst", ".list")


def is_path_list(path: str | Path) -> bool:
    """A file named *.txt/*.lst/*.list, or any other non-video file whose start is text (no NUL bytes)."""
    path = Path(path)
    if not path.is_file():
        return False
    if path.suffix.lower() in LIST_SUFFIXES:
        return True
    if _matches(path.name, VIDEO_PATTERNS):
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
        head.decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return bool(head.strip()) and b"\0" not in head


def read_path_list(path: str | Path) -> Iterator[Found]:
    """One path a line; blank lines and lines starting with # are skipped; relative paths are taken
    relative to the list file's directory."""
    path = Path(path)
    # surrogateescape: a Linux file name may be any bytes, and a list of them is read back to the same names
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:
        for number, line in _bounded_lines(fh):
            if line is None:
                yield Found(f"{path}:{number}", f"line {number} of {path.name} is {MAX_LIST_LINE:,} characters "
                                                "or longer: not a path")
                continue
            entry = line.strip()
            if "\0" in entry:  # no file name holds one: the row says which line, the batch goes on
                yield Found(entry.replace("\0", "\\0"), f"line {number} of {path.name} holds a NUL byte: not a path")
            elif entry and not entry.startswith("#"):
                listed = Path(entry).expanduser()
                yield Found(str(listed if listed.is_absolute() else path.parent / listed))


MAX_LIST_LINE = 1 << 16  # characters: a path is at most 4,096 bytes on Linux


def _bounded_lines(fh) -> Iterator[tuple[int, str | None]]:
    """(line number, line) of a text file, a line at most MAX_LIST_LINE characters long; a longer one is
    (number, None) and is read past, not held (a 2 GB file of NUL bytes and no newline was one line)."""
    number = 0
    while line := fh.readline(MAX_LIST_LINE):
        number += 1
        if len(line) < MAX_LIST_LINE or line.endswith("\n"):
            yield number, line
            continue
        while (rest := fh.readline(MAX_LIST_LINE)) and not rest.endswith("\n"):
            pass
        yield number, None


def list_inputs(src: str | Path, include: Sequence[str] = VIDEO_PATTERNS, exclude: Sequence[str] = (),
                recursive: bool = True) -> Iterator[Found]:
    """What `dfscan scan SRC` scans: the videos under a directory, a single video, or the paths a text
    file lists (one a line); a video listed twice (in any spelling) once, where it first appears."""
    seen: set[str] = set()
    for found in read_path_list(src) if is_path_list(src) else find_videos(src, include, exclude, recursive):
        key = path_key(found.path)
        if key not in seen:
            seen.add(key)
            yield found
