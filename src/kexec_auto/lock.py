"""One writer at a time.

Kernel hooks, initramfs hooks, ``kexec-auto update``, ``boot``, ``bless``,
``forget``, ``set`` and the shutdown load can all run at once (apt runs
hooks while an administrator runs commands).  Each of them reads files,
decides, and writes; two of them interleaved would lose what one of them
wrote.  So every such read-decide-write holds one lock per system root, an
flock(2) on /var/lib/kexec-auto/lock, waited for at most ``timeout``
seconds.  Reading commands (``list``, ``status``, ``update --dry-run``)
take no lock: every file is replaced atomically, so they never see half a
file.

The lock is reentrant within a process: ``boot`` holds it and calls
``update``, which takes it again.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import stat
import time
from typing import Callable, Iterator, TypeVar

from . import files
from .paths import at

LOCK_PATH = f"{files.STATE_DIR}/lock"
TIMEOUT = 60.0  # seconds; KEXEC_AUTO_LOCK_TIMEOUT overrides
_POLL = 0.02

_held: dict[str, list[int]] = {}  # lock file -> [fd, depth]


class LockTimeout(OSError):
    """The lock was held by another kexec-auto for longer than the timeout."""


def _timeout() -> float:
    try:
        return float(os.environ.get("KEXEC_AUTO_LOCK_TIMEOUT", TIMEOUT))
    except ValueError:
        return TIMEOUT


@contextlib.contextmanager
def held(root: str) -> Iterator[None]:
    """Hold the lock of ``root`` for the duration of the block."""
    path = at(root, LOCK_PATH, follow=False)
    key = str(path)
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    try:
        files.make_dirs(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, files.FILE_MODE)
    except OSError as error:
        if error.errno != errno.EROFS:
            raise
        yield  # a read-only system: no writer can lose anything there
        return
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise files.FileError(f"{path}: not a regular file")
        if stat.S_IMODE(info.st_mode) != files.FILE_MODE and info.st_uid == os.geteuid():
            os.fchmod(fd, files.FILE_MODE)  # as created under any umask
        deadline = time.monotonic() + _timeout()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
                    raise LockTimeout(
                        f"another kexec-auto{f' (pid {holder})' if holder.isdigit() else ''} has held "
                        f"{LOCK_PATH} for more than {_timeout():g} s; nothing was changed, try again later"
                    ) from None
                time.sleep(_POLL)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held[key] = [fd, 1]
        try:
            yield
        finally:
            del _held[key]
    finally:
        os.close(fd)  # releases the flock


F = TypeVar("F", bound=Callable)


def exclusive(function: F) -> F:
    """Run ``function(root, ...)`` holding the lock of ``root``."""

    @functools.wraps(function)
    def locked(root: str, *args, **kwargs):
        with held(root):
            return function(root, *args, **kwargs)

    return locked  # type: ignore[return-value]
