"""The exception family. The CLI maps each class to one exit code and a one-line message."""

from __future__ import annotations

EXIT_OK = 0
EXIT_VERIFY_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3


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
