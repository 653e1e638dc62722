"""Where kexec-auto's messages go: one line each, on stderr.

Each is prefixed "kexec-auto:"; never stdout, since the kernel hooks run
under apt.  Functions that talk take a ``log`` callable, so tests collect
the lines.  A command run with any of its standard descriptors closed
still works (:func:`standard_streams`): messages to a closed stderr are
lost, output to a closed stdout is an error that says so.
"""

from __future__ import annotations

import errno
import io
import os
import sys
from typing import Callable, TextIO, cast

Log = Callable[[str], None]


def stderr_log(message: str) -> None:
    print(f"kexec-auto: {message}", file=sys.stderr)


def one_line(error: BaseException) -> str:
    """An error as one line, naming the file an OSError is about.

    >>> one_line(OSError(errno.ENOSPC, "No space left on device", "/etc/default/kexec"))
    '/etc/default/kexec: No space left on device'
    >>> one_line(ValueError("a\\nb"))
    'a b'
    """
    if isinstance(error, OSError) and error.strerror:
        where = error.filename
        text = f"{os.fsdecode(where)}: {error.strerror}" if where is not None else error.strerror
        if error.filename2 is not None:
            text += f" ({os.fsdecode(error.filename2)})"
    else:
        text = str(error)
    return " ".join(text.split("\n")) or error.__class__.__name__


class ClosedOutput(io.TextIOBase):
    """Standard output when it was closed: printing to it is an error that says so."""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        raise OSError(errno.EBADF, "standard output is closed: the output has nowhere to go")


def standard_streams() -> frozenset[int]:
    """Make descriptors 0, 1 and 2 safe, whichever of them is closed: each
    closed one is opened on /dev/null (so that no file kexec-auto opens
    lands on it), stderr then writes nowhere, and stdout becomes
    ClosedOutput.  Returns the descriptors that were closed."""
    closed = set()
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.add(fd)
    for fd in sorted(closed):
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
    if 2 in closed or sys.stderr is None:
        sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    if 1 in closed or sys.stdout is None:
        sys.stdout = cast(TextIO, ClosedOutput())
    if sys.stdin is None:
        sys.stdin = open(0, encoding="utf-8", closefd=False)
    return frozenset(closed)
