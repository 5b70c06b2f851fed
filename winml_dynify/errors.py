"""The exception family, and the one place that maps any failure to a one-line message and an exit code."""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_VERIFY_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3
EXIT_IO = 4
EXIT_INTERNAL = 5
EXIT_INTERRUPTED = 130


class DynifyError(Exception):
    """Base class: a user-facing error with an exit code."""

    exit_code = EXIT_USAGE


class UsageError(DynifyError):
    """Bad arguments or an unreadable model (exit 2)."""

    exit_code = EXIT_USAGE


class RefusedError(DynifyError):
    """The model cannot be made dynamic soundly along the requested axes (exit 3)."""

    exit_code = EXIT_REFUSED


class VerificationError(DynifyError):
    """The rewritten model did not pass its parity checks (exit 1)."""

    exit_code = EXIT_VERIFY_FAILED


class OutputError(DynifyError):
    """A file could not be written (read-only folder, full disk, a directory in the way: exit 4)."""

    exit_code = EXIT_IO


class Interrupted(BaseException):
    """SIGTERM arrived: raised so that ``finally`` blocks remove temporary files."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:400] if text else type(e).__name__


def _runtime_error(e: BaseException) -> bool:
    """An exception raised by onnxruntime's or onnx's C++ code (their Python types vary by version)."""
    module = type(e).__module__ or ""
    return module.startswith(("onnxruntime", "onnx"))


def describe(e: BaseException) -> tuple[str, int]:
    """The one-line message and the exit code for any exception reaching the command line."""
    if isinstance(e, DynifyError):
        return str(e), e.exit_code
    if isinstance(e, KeyboardInterrupt | Interrupted):
        return "interrupted; nothing written, temporary files removed", EXIT_INTERRUPTED
    if isinstance(e, MemoryError):
        return "out of memory (the model or a check input does not fit; try --no-check)", EXIT_IO
    if isinstance(e, IsADirectoryError):
        return f"{e.filename or 'the path'} is a directory", EXIT_IO
    if isinstance(e, OSError):
        if e.errno == errno.ENOSPC:
            return f"no space left on the device writing {e.filename or 'the output'}", EXIT_IO
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return f"permission denied: {e.filename or _first_line(e)}", EXIT_IO
        return f"I/O error: {_first_line(e)}", EXIT_IO
    if _runtime_error(e):
        return f"{type(e).__module__.split('.')[0]} raised: {_first_line(e)}", EXIT_INTERNAL
    return f"internal error ({type(e).__name__}: {_first_line(e)}); --debug shows the traceback", EXIT_INTERNAL
