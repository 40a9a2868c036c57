"""CSV and JSONL result writers for batch scans. Each finished video is written and flushed at once;
reopening with resume skips videos already written and drops a half-written last line left by a kill.
Paths are read back through `unescape_text` / `csv_uncell` (the lossless escape of dfscan.results) and
compared by `path_key` (the resolved path), so a resume that spells the root differently still matches."""
from __future__ import annotations

import csv
import io
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol, Sequence

from dfscan.inputs import path_key
from dfscan.outputs import atomic_write_files, naming_errors
from dfscan.results import CSV_COLUMNS, VideoResult, csv_uncell, unescape_text


class ResultWriter(Protocol):
    def write(self, result: VideoResult) -> None: ...
    def close(self) -> None: ...
    def done_paths(self) -> set[str]: ...
    def done_keys(self) -> set[str]: ...


def _drop_partial_last_line(path: Path, quoted_newlines: bool = False) -> None:
    """A scan killed mid-write can leave a last row without its end: cut it so the row is redone.
    quoted_newlines (CSV): a newline inside a quoted cell (a file name may hold one) does not end a row; with
    Python's csv dialect a newline ends one exactly when the quotes before it are even in number."""
    with open(path, "rb+") as fh:
        data = fh.read()
        end = data.rfind(b"\n") + 1
        if quoted_newlines:
            end = _end_of_last_csv_row(data)
        if end != len(data):
            fh.seek(0)
            fh.truncate(end)


def _end_of_last_csv_row(data: bytes) -> int:
    return sum(len(record) for record in _records(data, quoted_newlines=True)[0])


def _records(data: bytes, quoted_newlines: bool) -> tuple[list[bytes], bytes]:
    """The whole rows of a CSV (quoted_newlines) or JSONL file as their bytes, each with its newline, and what
    follows the last of them (a row a kill cut short)."""
    records: list[bytes] = []
    begin = start = quotes = 0
    while (newline := data.find(b"\n", start)) >= 0:
        quotes += data.count(b'"', start, newline) if quoted_newlines else 0
        start = newline + 1
        if quotes % 2 == 0:  # this newline is outside any quoted cell
            records.append(data[begin:start])
            begin = start
    return records, data[begin:]


def drop_error_rows(outputs: dict[Path, str], keys: set[str]) -> int:
    """`scan --resume --retry-errors`: the outputs (path -> "csv" | "jsonl") without their ERROR rows for the
    videos in `keys` (path_key), every other row byte for byte as it was, rewritten all or none (a full disk
    half-way leaves both as they were); returns the most rows one output lost."""
    rewritten: dict[Path, str | bytes] = {}
    dropped = 0
    for path, kind in outputs.items():
        if path.is_file():
            kept, n = _without_error_rows(path, keys, quoted_newlines=kind == "csv")
            if n:
                rewritten[path], dropped = kept, max(dropped, n)
    atomic_write_files(rewritten)
    return dropped


def _without_error_rows(path: Path, keys: set[str], quoted_newlines: bool) -> tuple[bytes, int]:
    records, rest = _records(path.read_bytes(), quoted_newlines)
    columns = next(csv.reader([records[0].decode("utf-8")]), []) if quoted_newlines and records else None

    def is_retried(record: bytes) -> bool:
        try:
            if columns is not None:
                row = dict(zip(columns, next(csv.reader(io.StringIO(record.decode("utf-8"), newline="")))))
                path_text = csv_uncell(row.get("path", ""))
            else:
                row = json.loads(record)
                path_text = unescape_text(row["path"])
            return row.get("label") == "ERROR" and path_key(path_text) in keys
        except (ValueError, KeyError, TypeError, AttributeError, StopIteration):
            return False

    header = records[:1] if columns is not None else []
    kept = header + [record for record in records[len(header):] if not is_retried(record)]
    return b"".join(kept) + rest, len(records) - len(kept)


def _number(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


class _LineWriter:
    def __init__(self, path: str | Path, resume: bool = False):
        self.path = Path(path)
        if resume and self.path.exists():
            _drop_partial_last_line(self.path, quoted_newlines=isinstance(self, CsvWriter))
            self._earlier = self._read_done()
            self._done = set(self._earlier)
            self._keys: set[str] = set()
            mode = "a"
        else:
            self._earlier = {}
            self._done = set()
            self._keys = set()
            mode = "w"
            if self.path.exists() or self.path.is_symlink():
                # a new file, not the old one cut to nothing: --overwrite replaces a link or a hard link (another
                # name of a video, say), never the file it shares
                self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh: IO[str] = open(self.path, mode, newline="", encoding="utf-8")

    def _read_done(self) -> dict[str, tuple[str, float | None]]:
        """Path (as given) -> (label, threshold) of every row already written."""
        raise NotImplementedError

    def done_labels(self) -> dict[str, str]:
        """`path_key` -> label of the rows an earlier run wrote (what a resumed batch's exit code counts too)."""
        return {path_key(p): label for p, (label, _) in self._earlier.items()}

    def done_thresholds(self) -> set[float]:
        """The thresholds the earlier rows were judged at."""
        return {threshold for _, threshold in self._earlier.values() if threshold is not None}

    def done_paths(self) -> set[str]:
        """The paths already written, as they were given (original text, escape undone)."""
        return set(self._done)

    def done_keys(self) -> set[str]:
        """`path_key` of every path already written."""
        if len(self._keys) != len(self._done):
            self._keys = {path_key(p) for p in self._done}
        return self._keys

    def write(self, result: VideoResult) -> None:
        """Append one result's row and put it on disk before returning."""
        with naming_errors(self.path):
            self._write_row(result)
            self._flush()
        self._done.add(result.path)
        self._keys.add(path_key(result.path))

    def _write_row(self, result: VideoResult) -> None:
        raise NotImplementedError

    def _flush(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        with naming_errors(self.path):
            self.fh.close()


class CsvWriter(_LineWriter):
    def __init__(self, path: str | Path, resume: bool = False):
        super().__init__(path, resume)
        # resuming a CSV an older dfscan began: keep its columns, so appended rows line up with its header
        columns = self._existing_header() if self.fh.tell() else None
        self.writer = csv.DictWriter(self.fh, fieldnames=columns or CSV_COLUMNS, extrasaction="ignore")
        if self.fh.tell() == 0:
            self.writer.writeheader()
            self._flush()

    def _read_done(self) -> dict[str, tuple[str, float | None]]:
        with open(self.path, newline="", encoding="utf-8") as fh:
            return {csv_uncell(row["path"]): (row.get("label") or "", _number(row.get("threshold")))
                    for row in csv.DictReader(fh) if row.get("path")}

    def _existing_header(self) -> list[str] | None:
        with open(self.path, newline="", encoding="utf-8") as fh:
            return next(csv.reader(fh), None)

    def _write_row(self, result: VideoResult) -> None:
        self.writer.writerow(result.csv_row())


class JsonlWriter(_LineWriter):
    def _read_done(self) -> dict[str, tuple[str, float | None]]:
        done = {}
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                    done[unescape_text(row["path"])] = (str(row.get("label") or ""), _number(row.get("threshold")))
                except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                    continue
        return done

    def _write_row(self, result: VideoResult) -> None:
        self.fh.write(result.to_json(indent=None) + "\n")


@dataclass
class EarlierRows:
    """What the outputs a batch resumes into already hold for its inputs."""
    done: set[str] = field(default_factory=set)            # path_keys every output has a row for: not scanned again
    labels: Counter[str] = field(default_factory=Counter)  # their labels (the batch's exit code counts them)
    partial: Counter[str] = field(default_factory=Counter)  # labels of rows only some outputs have: scanned again
    thresholds: set[float] = field(default_factory=set)    # thresholds of those rows other than this run's


def earlier_rows(writers: Sequence[_LineWriter], keys: Sequence[str], threshold: float) -> EarlierRows:
    """`keys`: the path_keys of the batch's inputs. Rows of other videos in the outputs do not count."""
    if not writers:
        return EarlierRows()
    wanted = set(keys)
    done = set.intersection(*(w.done_keys() for w in writers)) & wanted
    labels: dict[str, str] = {}
    for writer in reversed(writers):  # the first output's label where they differ
        labels.update(writer.done_labels())
    thresholds = {t for writer in writers for t in writer.done_thresholds() if abs(t - threshold) > 5e-7}
    return EarlierRows(done, Counter(labels[key] for key in done),
                       Counter(labels[key] for key in wanted & set(labels) - done), thresholds)
