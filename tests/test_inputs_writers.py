import csv
import json
import os

import pytest

from dfscan.inputs import find_videos
from dfscan.report.writers import CsvWriter, JsonlWriter
from dfscan.results import CSV_COLUMNS, VideoResult


def test_find_videos_globs_recursion_and_symlink_loop(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for rel in ("x.mp4", "a/y.MOV", "a/b/z.mkv", "a/notes.txt", "a/b/skip_me.mp4"):
        (tmp_path / rel).write_bytes(b"0")
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "loop")        # directory loop
    os.symlink(tmp_path / "self.mp4", tmp_path / "self.mp4")          # a link to itself
    os.symlink(tmp_path / "missing.mp4", tmp_path / "dangling.mp4")
    found = list(find_videos(tmp_path, exclude=["*skip_me*"]))
    paths = {os.path.relpath(f.path, tmp_path): f.problem for f in found}
    assert paths["x.mp4"] is None and paths["a/y.MOV"] is None and paths["a/b/z.mkv"] is None
    assert "a/notes.txt" not in paths and "a/b/skip_me.mp4" not in paths
    assert paths["self.mp4"] and paths["dangling.mp4"]
    assert not any(p.startswith("a/b/loop/") for p in paths)  # the loop was entered at most once
    only_top = {os.path.relpath(f.path, tmp_path) for f in find_videos(tmp_path, recursive=False)}
    assert "a/y.MOV" not in only_top and "x.mp4" in only_top


def _result(path, label="REAL", score=0.1):
    return VideoResult(path=path, label=label, score=score, threshold=0.5)


@pytest.mark.parametrize("writer_cls,suffix", [(CsvWriter, "csv"), (JsonlWriter, "jsonl")])
def test_writer_resume_drops_partial_line_and_skips_done(tmp_path, writer_cls, suffix):
    out = tmp_path / f"out.{suffix}"
    writer = writer_cls(out)
    writer.write(_result("a.mp4"))
    writer.write(_result("b.mp4", "FAKE", 0.9))
    writer.close()
    with open(out, "a", encoding="utf-8") as fh:
        fh.write('c.mp4,REAL,0.1' if suffix == "csv" else '{"path": "c.mp4", "lab')  # killed mid-write
    resumed = writer_cls(out, resume=True)
    assert resumed.done_paths() == {"a.mp4", "b.mp4"}
    resumed.write(_result("c.mp4"))
    resumed.close()
    if suffix == "csv":
        with open(out, newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert list(rows[0].keys()) == list(CSV_COLUMNS)
    else:
        rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in rows] == ["a.mp4", "b.mp4", "c.mp4"]
    assert rows[1]["label"] == "FAKE"


def test_whole_file_outputs_get_the_permissions_a_new_file_would(tmp_path):
    """--json-file, --report and friends are written whole (a temporary file renamed over the target): the result
    is readable as any file the user's umask allows, not mkstemp's owner-only 0600, and a file it replaces keeps
    its own permissions."""
    from dfscan.outputs import atomic_write_text

    old = os.umask(0o022)
    try:
        fresh = atomic_write_text(tmp_path / "result.json", "{}\n")
        assert (fresh.stat().st_mode & 0o777, fresh.read_text()) == (0o644, "{}\n")
        os.umask(0o077)
        private = atomic_write_text(tmp_path / "private.json", "{}\n")
        assert private.stat().st_mode & 0o777 == 0o600
        os.umask(0o022)
        shared = tmp_path / "shared.html"
        shared.write_text("old")
        shared.chmod(0o664)
        atomic_write_text(shared, "new")
        assert (shared.stat().st_mode & 0o777, shared.read_text()) == (0o664, "new")
    finally:
        os.umask(old)
    assert not list(tmp_path.glob(".*.tmp"))


def test_resume_after_a_kill_inside_a_quoted_name_or_the_first_row(tmp_path):
    """A file name may hold a newline, which CSV keeps inside quotes: a kill right after it leaves a row whose
    last physical line ends in the middle of that name, and resume must cut the whole row, not append into the
    open quote. A JSONL cut inside its very first row is still an earlier dfscan output to resume into."""
    from dfscan.outputs import is_earlier_output

    out = tmp_path / "out.csv"
    writer = CsvWriter(out)
    writer.write(_result("a.mp4"))
    writer.close()
    with open(out, "a", encoding="utf-8", newline="") as fh:
        fh.write('"b/new\n')  # killed while writing the row of "b/new\nline.mp4"
    resumed = CsvWriter(out, resume=True)
    assert resumed.done_paths() == {"a.mp4"}
    resumed.write(_result("b/new\nline.mp4"))
    resumed.close()
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == ["a.mp4", "b/new\nline.mp4"]

    cut = tmp_path / "cut.jsonl"
    cut.write_text(_result("a.mp4").to_json(indent=None)[:150])
    assert is_earlier_output(cut, "jsonl")
    resumed = JsonlWriter(cut, resume=True)
    assert resumed.done_paths() == set()
    resumed.write(_result("a.mp4"))
    resumed.close()
    assert [json.loads(line)["path"] for line in cut.read_text().splitlines()] == ["a.mp4"]
    other = tmp_path / "other.jsonl"
    other.write_text('{"my": "notes"')
    assert not is_earlier_output(other, "jsonl")


def test_a_whole_file_write_that_fails_names_its_file_and_keeps_the_old(tmp_path, monkeypatch):
    """A disk that fills up while a page, a scores file or a manifest is written: the old file stays, no
    temporary file is left, and the error names the file (it said "cannot write: No space left on device")."""
    import errno
    import os

    import dfscan.outputs
    from dfscan.console import exit_for

    target = dfscan.outputs.atomic_write_text(tmp_path / "scores.jsonl", "old\n")

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(dfscan.outputs.os, "fsync", disk_full)
    with pytest.raises(OSError) as caught:
        dfscan.outputs.atomic_write_text(target, "new\n")
    assert caught.value.filename == str(target)
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["scores.jsonl"]
    assert exit_for(caught.value).exit_code == 4


def test_a_list_line_too_long_for_a_path_is_one_error_and_never_held_whole(tmp_path, monkeypatch):
    """Found by a probe: a 2 GB list file of NUL bytes and no newline was read as one line, and the machine ran
    out of memory. A line longer than any path is one input that failed; the lines after it are read."""
    from dfscan import inputs
    from dfscan.inputs import MAX_LIST_LINE, read_path_list

    listing = tmp_path / "list.txt"
    long_line = "a" * (3 * MAX_LIST_LINE + 5)
    listing.write_text(f"{long_line}\nfirst.mp4\n{'b' * MAX_LIST_LINE}\n{'c' * (MAX_LIST_LINE - 1)}\nlast.mp4")
    held, bounded_lines = [], inputs._bounded_lines
    monkeypatch.setattr(inputs, "_bounded_lines", lambda fh: ((n, held.append(len(line or "")) or line)
                                                              for n, line in bounded_lines(fh)))
    found = list(read_path_list(listing))
    assert [(f.path, bool(f.problem)) for f in found] == [
        (f"{listing}:1", True), (str(tmp_path / "first.mp4"), False), (f"{listing}:3", True),
        (str(tmp_path / ("c" * (MAX_LIST_LINE - 1))), False), (str(tmp_path / "last.mp4"), False)]
    assert f"line 1 of list.txt is {MAX_LIST_LINE:,} characters or longer" in found[0].problem
    assert max(held) <= MAX_LIST_LINE


def test_files_written_together_are_all_replaced_or_none(tmp_path, monkeypatch):
    """Found by a third probe: `--retry-errors` on a nearly full disk rewrote the CSV without its ERROR rows and
    then failed on the JSONL, so the CSV lost rows the JSONL kept. Both are staged before either is replaced."""
    import errno

    from dfscan import outputs

    first, second = tmp_path / "rows.csv", tmp_path / "rows.jsonl"
    first.write_text("old csv")
    second.write_text("old jsonl")
    staged_copy, calls = outputs._staged_copy, []

    def full_disk_on_the_second(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return staged_copy(path, data)

    monkeypatch.setattr(outputs, "_staged_copy", full_disk_on_the_second)
    with pytest.raises(OSError, match="No space left") as failure:
        outputs.atomic_write_files({first: "new csv", second: "new jsonl"})
    assert failure.value.filename == str(second)
    assert (first.read_text(), second.read_text()) == ("old csv", "old jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.csv", "rows.jsonl"]  # no staged copy left
    monkeypatch.setattr(outputs, "_staged_copy", staged_copy)
    outputs.atomic_write_files({first: "new csv", second: b"new jsonl"})
    assert (first.read_text(), second.read_text()) == ("new csv", "new jsonl")
