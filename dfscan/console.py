"""The one error printer for every command: a user error is one line on stderr and its documented exit
code; an unexpected error (a bug) is one line, exit 5 (never 1, which means FAKE), and the traceback goes
to a file named in that line (`dfscan --debug ...` or DFSCAN_DEBUG=1 prints it instead)."""
from __future__ import annotations

import errno
import os
import sys
import tempfile
import time
import traceback

from typing import TYPE_CHECKING, Any

import typer

from dfscan.errors import EXIT_BROKEN_PIPE, EXIT_CRASH, EXIT_SETUP, DfscanError
from dfscan.outputs import naming_errors

if TYPE_CHECKING:
    from rich.console import Console


class LazyConsole:
    """The rich Console every command prints with, made on first use: importing rich takes ~25 ms, which a
    `check` spends decoding its video instead (the console is needed only once there is something to print)."""

    def __init__(self, stderr: bool = False):
        self._stderr = stderr
        self._console: Console | None = None

    @property
    def console(self) -> Console:
        if self._console is None:
            self._console = _console_class()(stderr=self._stderr)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.console, name)


def _console_class() -> type:
    from rich.console import Console  # noqa: PLC0415

    class QuietOnBrokenPipe(Console):
        """rich ends the process with SystemExit(1) when a write meets a broken pipe, and 1 means FAKE. Here the
        console goes quiet instead: a stdout whose reader went away raises BrokenPipeError, which the one error
        printer turns into 141 (as a SIGPIPE death); a stderr gone or full only loses its messages, and the
        command goes on to its own exit code."""

        def on_broken_pipe(self) -> None:
            self.quiet = True
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.file.fileno())
            except (OSError, ValueError):
                pass
            if not self.stderr:
                raise BrokenPipeError(errno.EPIPE, "the reader of standard output went away")

        def _write_buffer(self) -> None:
            if not self.stderr:
                with naming_errors("standard output"):
                    super()._write_buffer()
                return
            try:
                super()._write_buffer()
            except OSError:  # stderr full or gone: only messages are lost; a batch goes on to its own exit code
                self.quiet = True
                del self._buffer[:]

    return QuietOnBrokenPipe


out, err = LazyConsole(), LazyConsole(stderr=True)


def print_text(text: str) -> None:
    """A line on standard output as it is (JSON: no markup, no wrapping)."""
    with naming_errors("standard output"):
        print(text)


def escape(text: str) -> str:
    """`text` with rich markup escaped."""
    from rich.markup import escape as escape_markup  # noqa: PLC0415

    return escape_markup(text)


DEBUG = {"on": os.environ.get("DFSCAN_DEBUG", "") not in ("", "0")}


def set_debug(on: bool) -> None:
    DEBUG["on"] = DEBUG["on"] or on


MAX_ERROR_CHARS = 1000


def one_line(message: str) -> str:
    """A message as one line: a library's multi-line text (torch's lists of keys) joined, and cut if long."""
    text = " ".join(part.strip() for part in message.splitlines() if part.strip())
    if len(text) > MAX_ERROR_CHARS:
        text = f"{text[:MAX_ERROR_CHARS]}... ({len(text) - MAX_ERROR_CHARS} more characters)"
    return text


def print_error(message: str) -> None:
    from dfscan.results import escape_text  # noqa: PLC0415 - file names may hold undecodable bytes

    try:
        err.print(f"[bold red]error:[/] {escape(escape_text(one_line(message)))}", highlight=False, soft_wrap=True)
    except (OSError, ValueError):  # stderr full, closed or its reader gone: the exit code still says what happened
        pass


def fail(message: str, code: int) -> typer.Exit:
    """Print `message` and return the Exit to raise: `raise fail("...", EXIT_USAGE)`."""
    print_error(message)
    return typer.Exit(code)


def report_crash(exc: BaseException) -> typer.Exit:
    """One line naming the error and where its traceback is; exit 5."""
    text = "".join(traceback.format_exception(exc))
    what = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    if DEBUG["on"]:
        err.print(text, markup=False, highlight=False)
        return fail(f"internal error ({what}); this is a bug in dfscan, please report it", EXIT_CRASH)
    where = _save_traceback(text)
    return fail(f"internal error ({what}); traceback in {where} (or rerun with dfscan --debug); "
                "this is a bug in dfscan, please report it", EXIT_CRASH)


def _save_traceback(text: str) -> str:
    try:
        fd, path = tempfile.mkstemp(prefix=f"dfscan-crash-{time.strftime('%Y%m%d-%H%M%S')}-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
            fh.write(text)
        return path
    except OSError:
        return "(could not be saved)"


def exit_for(exc: BaseException) -> typer.Exit:
    """The Exit for an exception escaping a command."""
    if isinstance(exc, DfscanError):
        return fail(exc.message, exc.exit_code)
    if isinstance(exc, BrokenPipeError):
        return _reader_gone()
    if isinstance(exc, OSError) and exc.errno in WRITE_FAILURES:
        where = f" {exc.filename}" if exc.filename else ""
        return fail(f"cannot write{where}: {exc.strerror or exc}", EXIT_SETUP)
    if isinstance(exc, OSError) and exc.errno in PATH_FAILURES and exc.filename:
        return fail(f"{os.fsdecode(exc.filename)}: {exc.strerror or exc}", EXIT_SETUP)
    return report_crash(exc)


# A destination that filled up or went read-only while a command wrote to it: the machine's state, not a bug.
WRITE_FAILURES = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO)
# A path the machine will not let a command use (a folder that is a file, no rights, already there): the same,
# for the commands that do not check every path first (train, export, soup, extract, sbi).
PATH_FAILURES = (errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.ENAMETOOLONG,
                 errno.ELOOP)


def _reader_gone() -> typer.Exit:
    """stdout's reader closed it (`dfscan check ... --json | head`): not a bug, nothing to print. What is left in
    stdout's buffer goes nowhere, so that Python's own final flush does not raise the same error again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return typer.Exit(EXIT_BROKEN_PIPE)
