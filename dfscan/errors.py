"""Error types. Each carries a short machine code (for CSV/JSON rows) and the CLI exit code it maps to."""
from __future__ import annotations

from pathlib import Path

# Documented exit codes (README "Exit codes").
EXIT_OK = 0            # scanned, nothing labelled FAKE
EXIT_FAKE = 1          # at least one video labelled FAKE
EXIT_USAGE = 2         # bad command line (typer/click also uses 2)
EXIT_INPUT_FAILED = 3  # at least one input could not be scanned (and none was FAKE)
EXIT_SETUP = 4         # cannot run at all: bad model bundle, no onnxruntime, bad weights; an output it cannot write
EXIT_CRASH = 5         # an unexpected internal error (a bug): never confused with a verdict
EXIT_INTERRUPTED = 130  # Ctrl-C, as for a process ended by SIGINT
EXIT_BROKEN_PIPE = 141  # the reader of stdout went away (`| head`): what a shell reports for a SIGPIPE death


class DfscanError(Exception):
    """Base class: a one-line, user-facing message."""

    code = "error"
    exit_code = EXIT_INPUT_FAILED

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class UsageError(DfscanError, ValueError):
    """A command-line option or library argument has a bad type or value (a ValueError to library callers)."""

    code = "usage"
    exit_code = EXIT_USAGE


class OutputError(UsageError):
    """An output path would destroy an input or an unrelated file, or is no place for one (under a file)."""

    code = "output"


class UnwritableOutput(DfscanError):
    """The machine refuses an output (read-only, no rights, full): its state, not the command line (exit 4)."""

    code = "output"
    exit_code = EXIT_SETUP


class InputError(DfscanError):
    """The path cannot be read: missing, unreadable, not a regular file, empty."""

    code = "input"


class DecodeError(DfscanError):
    """FFmpeg could not open or decode the file as a video."""

    code = "decode"


class NoVideoStreamError(DecodeError):
    code = "no_video_stream"


class NoFramesError(DecodeError):
    code = "no_frames"


class ResourceLimitError(DfscanError):
    """The input exceeds a configured bound (resolution, pixels, decode time)."""

    code = "too_large"


class ModelError(DfscanError):
    """A model bundle or weights file is missing, corrupt, or inconsistent with its manifest."""

    code = "model"
    exit_code = EXIT_SETUP


class WorkerCrashError(DfscanError):
    """A worker process died (killed, out of memory) while scanning a file."""

    code = "worker_crash"


class RuntimeMissingError(DfscanError):
    """onnxruntime (or another runtime dependency) is not installed."""

    code = "runtime"
    exit_code = EXIT_SETUP


class ClusterError(DfscanError):
    """A Ray cluster cannot be reached or joined, or lacks what the scan asks of it (GPUs)."""

    code = "cluster"
    exit_code = EXIT_SETUP


def without_path(message: str, path: object) -> str:
    """An error's reason for a row or line that names its file already (most messages start with it)."""
    for prefix in (f"{path}: ", f"{Path(str(path)).name}: "):
        if message.startswith(prefix):
            return message[len(prefix):]
    return message


class UnreadableImage(InputError, ValueError):
    """A face set's image cannot be read (missing, not an image): exit 3, as for a video that cannot be."""

    def __init__(self, message: str):
        # raised in a DataLoader worker, it reaches the main process as its whole traceback text: keep its own line
        last = message.strip().splitlines()[-1] if message.strip() else message
        super().__init__(last.partition(f"{type(self).__name__}: ")[2] or message)
