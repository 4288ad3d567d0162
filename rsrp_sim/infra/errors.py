"""One-line errors and the exit statuses of the command line.

A :class:`UserError` is printed by the command line as one line (``error: ...``) with exit status
2, never as a traceback (unless ``--debug``).  Its message names the problem and what to do.  A
file or folder that cannot be written is a :class:`WriteError` (a :class:`UserError`), whatever the
writer: :func:`os_error_message` turns the ``OSError`` into the one line (the disk is full, the file
system is read-only, a parent is a file, ...).

Exit statuses: 0 done; 2 bad input or environment (nothing was run, nothing on disk changed);
3 a run that started and failed (it stays resumable); 130 interrupted (Ctrl-C; resumable);
1 an unexpected internal error (a bug: ``--debug`` shows its traceback).
"""
from __future__ import annotations

import difflib
import errno as _errno
from collections.abc import Iterable
from typing import Any

__all__ = ["EXIT_INTERNAL", "EXIT_USAGE", "EXIT_FAILED", "EXIT_INTERRUPTED", "DISK_FULL", "UserError", "RunFailed",
           "FolderBusy", "os_error_message", "WriteError", "one_line", "unknown"]

EXIT_INTERNAL = 1  #: an unexpected internal error (a bug); --debug shows the traceback
EXIT_USAGE = 2  #: bad input or environment (one line on stderr)
EXIT_FAILED = 3  #: the run started and failed (e.g. a non-finite reward, the disk full); it stays resumable
EXIT_INTERRUPTED = 130  #: Ctrl-C; the run is resumable

#: errno values meaning "no room for this file" (a full disk, a quota, a file-size limit)
DISK_FULL = frozenset(e for e in (getattr(_errno, n, None) for n in ("ENOSPC", "EDQUOT", "EFBIG")) if e)


class UserError(ValueError):
    """Bad input from the user (unknown name, wrong type, missing file, existing run folder...)."""

    exit_code = EXIT_USAGE


class RunFailed(UserError):
    """A run that started failed; its folder holds everything up to the last completed iteration."""

    exit_code = EXIT_FAILED


class FolderBusy(UserError):
    """A run (or group) folder is being written by another process (its lock is held)."""


def os_error_message(err: OSError, path: Any = None, writing: bool = True) -> str:
    """``err`` as one line naming the file and the reason, e.g. ``the disk is full: cannot write X``;
    ``writing=False`` when it is not known whether the file was being read or written."""
    path = path if path is not None else (err.filename or "a file")
    reason = err.strerror or str(err) or type(err).__name__
    if err.errno in DISK_FULL:
        return f"the disk is full: cannot write {path} ({reason})"
    if not writing:
        return f"{path}: {reason}"
    if err.errno == _errno.EROFS:
        return f"cannot write {path}: the file system is read-only"
    if err.errno in (_errno.EACCES, _errno.EPERM):
        return f"cannot write {path}: permission denied"
    if err.errno == _errno.ENOTDIR:
        return f"cannot write {path}: a folder on its path is a file"
    if err.errno == _errno.ENOENT:
        return f"cannot write {path}: its folder does not exist and cannot be created here"
    return f"cannot write {path} ({reason})"


class WriteError(UserError):
    """A file or folder could not be written; ``disk_full`` when there was no room for it.

    ``str()`` is :func:`os_error_message` plus what to do (``hint``); ``reason`` is the message alone.
    """

    def __init__(self, path: Any, err: OSError, hint: str = "") -> None:
        self.path, self.errno = path, err.errno
        self.disk_full = err.errno in DISK_FULL
        self.reason = os_error_message(err, path)
        super().__init__(f"{self.reason}; {hint}" if hint else self.reason)


def one_line(message: object) -> str:
    """A message as one line (newlines of e.g. a YAML error folded into spaces)."""
    return " ".join(str(message).split("\n")).strip()


def unknown(what: str, value: object, allowed: Iterable[Any]) -> UserError:
    """``unknown method 'rsrpp' (did you mean 'rsrp'?); allowed: rsrp, es``."""
    allowed = [str(a) for a in allowed]
    close = difflib.get_close_matches(str(value), allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UserError(f"unknown {what} {value!r}{hint}; allowed: {', '.join(allowed)}")
