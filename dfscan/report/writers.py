"""CSV and JSONL result writers for batch scans. Each finished video is written and flushed at once;
reopening with resume skips videos already written and drops a half-written last line left by a kill."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import IO, Protocol

from dfscan.results import CSV_COLUMNS, VideoResult


class ResultWriter(Protocol):
    def write(self, result: VideoResult) -> None: ...
    def close(self) -> None: ...
    def done_paths(self) -> set[str]: ...


def _drop_partial_last_line(path: Path) -> None:
    """A scan killed mid-write can leave a last line without its newline: cut it so the row is redone."""
    with open(path, "rb+") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        if size == 0:
            return
        fh.seek(size - 1)
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        data = fh.read()
        fh.seek(0)
        fh.truncate(data.rfind(b"\n") + 1)


class _LineWriter:
    def __init__(self, path: str | Path, resume: bool = False):
        self.path = Path(path)
        if resume and self.path.exists():
            _drop_partial_last_line(self.path)
            self._done = self._read_done()
            mode = "a"
        else:
            self._done = set()
            mode = "w"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh: IO[str] = open(self.path, mode, newline="", encoding="utf-8")

    def _read_done(self) -> set[str]:
        raise NotImplementedError

    def done_paths(self) -> set[str]:
        return set(self._done)

    def _flush(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


class CsvWriter(_LineWriter):
    def __init__(self, path: str | Path, resume: bool = False):
        super().__init__(path, resume)
        self.writer = csv.DictWriter(self.fh, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        if self.fh.tell() == 0:
            self.writer.writeheader()
            self._flush()

    def _read_done(self) -> set[str]:
        with open(self.path, newline="", encoding="utf-8") as fh:
            return {row["path"] for row in csv.DictReader(fh) if row.get("path")}

    def write(self, result: VideoResult) -> None:
        self.writer.writerow(result.csv_row())
        self._done.add(result.path)
        self._flush()


class JsonlWriter(_LineWriter):
    def _read_done(self) -> set[str]:
        done = set()
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                try:
                    done.add(json.loads(line)["path"])
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
        return done

    def write(self, result: VideoResult) -> None:
        self.fh.write(result.to_json(indent=None) + "\n")
        self._done.add(result.path)
        self._flush()
