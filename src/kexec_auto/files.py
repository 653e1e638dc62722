"""Reading and writing files without ever losing anything.

Reading (:func:`read_bytes`, :func:`read_text`):

* Only regular files are read, opened without blocking: a FIFO or a device
  in place of a file is refused at once instead of hanging a kernel hook
  (and apt) forever.
* Every read has a size limit; a larger file is refused with its name.
* Content is bytes where it may not be text; text must be UTF-8 or the
  error names the file.

Writing (:func:`write_atomic`):

* Writes are atomic: a temporary file in the same directory, fsync, rename,
  fsync of the directory.  A crash or a full disk leaves the old file whole,
  and the error names the file.
* A replaced file keeps its mode and owner (or takes those it is given).
* Directories are created 0755 whatever the umask.

Files kexec-auto takes over from others are managed (see managed).
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import Optional, Union

STATE_DIR = "/var/lib/kexec-auto"
LIMIT = 1 << 20  # default size limit of a file kexec-auto reads
DIR_MODE = 0o755
FILE_MODE = 0o644


class FileError(OSError):
    """An input file kexec-auto will not read: not a regular file, too
    large, or not text.  The message names the file."""


def read_bytes(path: Path, limit: int = LIMIT, follow: bool = True) -> Optional[bytes]:
    """The content of the regular file ``path``, None when it does not exist.

    Never blocks (O_NONBLOCK: a FIFO or a device is refused), never reads
    more than ``limit`` bytes; with ``follow`` False a symbolic link is
    refused too.  /proc and /sys files, which report a size of 0, are read
    up to the limit.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as error:
        if error.errno == errno.ELOOP and not follow:
            raise FileError(f"{path}: is a symbolic link, where kexec-auto keeps a file of its own") from None
        if error.errno in (errno.ENXIO, errno.EWOULDBLOCK):  # a socket or a FIFO without a writer
            raise FileError(f"{path}: not a regular file") from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileError(f"{path}: not a regular file")
        if info.st_size > limit:
            raise FileError(f"{path}: larger than {limit} bytes")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileError(f"{path}: larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_text(path: Path, limit: int = LIMIT, follow: bool = True, errors: str = "strict") -> Optional[str]:
    """The file's UTF-8 text, None when it does not exist; with
    ``errors="strict"`` a file that is not UTF-8 raises FileError."""
    data = read_bytes(path, limit, follow)
    if data is None:
        return None
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as error:
        raise FileError(f"{path}: not UTF-8 text (byte {error.start})") from None


def take_text(path: Path) -> Optional[str]:
    """A one-shot record kexec-auto left for itself: its text on one line
    (odd bytes replaced, each run of white space one space), None when
    there is none.  The record is removed once read, whatever it held: a
    link or a file that is no regular file reads as ''."""
    if not os.path.lexists(path):
        return None
    try:
        text = read_text(path, follow=False, errors="replace") or ""
    except FileError:
        text = ""
    _unlink(path)
    return " ".join(text.split())


def encode(content: Union[str, bytes]) -> bytes:
    # surrogateescape: bytes that came in undecodable (a command line, a
    # file name) go out exactly as they came.
    return content if isinstance(content, bytes) else content.encode("utf-8", errors="surrogateescape")


def make_dirs(path: Path, mode: int = DIR_MODE) -> None:
    """Create ``path`` and its missing parents with ``mode``, whatever the
    umask; directories that exist are left as they are."""
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise
            continue
        os.chmod(directory, mode)


class WriteError(OSError):
    """A write that failed; its message names the file and says that the
    file is left as it was."""

    def __init__(self, path: Path, error: OSError):
        super().__init__(error.errno, f"{error.strerror or error}; it is left as it was", str(path))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _rename(source: Union[str, Path], target: Union[str, Path]) -> None:
    os.rename(source, target)


def _unlink(path: Union[str, Path]) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def write_atomic(
    path: Path, content: Union[str, bytes], mode: Optional[int] = None, like: Optional[os.stat_result] = None
) -> None:
    """Replace ``path`` by ``content`` atomically; on any error the old file
    stays as it was, no temporary file is left behind, and WriteError names
    ``path``.

    The new file gets the mode and owner of ``like`` when given, else those
    of the file it replaces, else ``mode`` (default 0644) and our owner.
    """
    if like is None:
        try:
            existing = os.lstat(path)
            if stat.S_ISREG(existing.st_mode):
                like = existing
        except (FileNotFoundError, NotADirectoryError):
            pass
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise WriteError(path, error) from None
    try:
        try:
            _write_all(fd, encode(content))
            if like is not None:
                if (like.st_uid, like.st_gid) != (os.geteuid(), os.getegid()):
                    try:
                        os.fchown(fd, like.st_uid, like.st_gid)
                    except PermissionError:
                        pass  # not root: the copy is ours, with the same mode
                os.fchmod(fd, stat.S_IMODE(like.st_mode))
            else:
                os.fchmod(fd, FILE_MODE if mode is None else mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        _rename(tmp, path)
    except BaseException as error:
        _unlink(tmp)
        if isinstance(error, OSError):
            raise WriteError(path, error) from None
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
