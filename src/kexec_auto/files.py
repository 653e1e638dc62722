"""Reading and writing files without ever losing anything.

Reading (:func:`read_bytes`, :func:`read_text`):

* Only regular files are read, opened without blocking: a FIFO or a device
  in place of a file is refused at once instead of hanging a kernel hook
  (and apt) forever.
* Every read has a size limit; a larger file is refused with its name.
* Content is bytes where it may not be text; text must be UTF-8 or the
  error names the file.

Writing (:func:`write_atomic`, :func:`replace_managed`):

* Writes are atomic: a temporary file in the same directory, fsync, rename,
  fsync of the directory.  A crash or a full disk leaves the old file whole.
* A replaced file keeps its mode and owner; a copy kept aside keeps the
  mode and owner of what it copies, so nothing becomes more readable.
* Directories are created 0755 whatever the umask.
* Nothing is rewritten when the content is unchanged.
* Before kexec-auto first replaces a file it did not write, the original is
  kept in the state directory, so purging kexec-auto can restore it.
* A file edited by hand since kexec-auto last wrote it is copied aside
  (``<file>.kexec-auto-old``) before being replaced, and the caller says so.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import Optional, Union

STATE_DIR = "/var/lib/kexec-auto"
ORIG_SUFFIX = ".orig"  # the file as it was before kexec-auto took it over
ABSENT_SUFFIX = ".orig-absent"  # there was no file before kexec-auto
WRITTEN_SUFFIX = ".written"  # what kexec-auto last wrote
KEY_SUFFIX = ".written-key"  # digest of what that content was rendered from
OLD_SUFFIX = ".kexec-auto-old"

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


def write_atomic(
    path: Path, content: Union[str, bytes], mode: Optional[int] = None, like: Optional[os.stat_result] = None
) -> None:
    """Replace ``path`` by ``content`` atomically; on any error the old file
    stays as it was and no temporary file is left behind.

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
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(encode(content))
            handle.flush()
            if like is not None:
                if (like.st_uid, like.st_gid) != (os.geteuid(), os.getegid()):
                    try:
                        os.fchown(handle.fileno(), like.st_uid, like.st_gid)
                    except PermissionError:
                        pass  # not root: the copy is ours, with the same mode
                os.fchmod(handle.fileno(), stat.S_IMODE(like.st_mode))
            else:
                os.fchmod(handle.fileno(), FILE_MODE if mode is None else mode)
            os.fsync(handle.fileno())
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _free_name(path: Path) -> Path:
    if not os.path.lexists(path):
        return path
    number = 1
    while os.path.lexists(f"{path}.{number}"):
        number += 1
    return Path(f"{path}.{number}")


def _stat(path: Path) -> Optional[os.stat_result]:
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


@dataclasses.dataclass(frozen=True)
class WriteResult:
    changed: bool
    kept_original: Optional[Path] = None  # first takeover: original saved here
    kept_edit: Optional[Path] = None  # hand edit saved here
    restored: bool = False  # (release) the original is back in place
    removed: bool = False  # (release) the file kexec-auto had created is gone


def _state(state_dir: Path, path: Path, suffix: str) -> Optional[bytes]:
    # kexec-auto's own files: never through a symbolic link.
    return read_bytes(state_dir / f"{path.name}{suffix}", follow=False)


def unchanged_since(path: Path, state_dir: Path, key: str) -> bool:
    """Whether ``path`` still holds what kexec-auto last wrote, rendered from
    inputs with digest ``key``: then rendering again would change nothing."""
    if _state(state_dir, path, KEY_SUFFIX) != key.encode():
        return False
    written = _state(state_dir, path, WRITTEN_SUFFIX)
    return written is not None and read_bytes(path) == written


def replace_managed(path: Path, content: Union[str, bytes], state_dir: Path, key: str = "") -> WriteResult:
    """Make ``path`` hold ``content``, keeping what must not be lost.
    ``key`` identifies the inputs ``content`` was rendered from."""
    result = _replace_managed(path, encode(content), state_dir)
    key_file = state_dir / f"{path.name}{KEY_SUFFIX}"
    if key and _state(state_dir, path, KEY_SUFFIX) != key.encode():
        write_atomic(key_file, key)
    return result


def _replace_managed(path: Path, content: bytes, state_dir: Path) -> WriteResult:
    current = read_bytes(path)
    written = state_dir / f"{path.name}{WRITTEN_SUFFIX}"
    last = _state(state_dir, path, WRITTEN_SUFFIX)
    if current == content:
        if last != content:
            make_dirs(state_dir)
            write_atomic(written, content, like=_stat(path))
        return WriteResult(changed=False)

    kept_original = kept_edit = None
    make_dirs(state_dir)
    orig = state_dir / f"{path.name}{ORIG_SUFFIX}"
    absent = state_dir / f"{path.name}{ABSENT_SUFFIX}"
    taken_over = os.path.lexists(orig) or os.path.lexists(absent)
    if not taken_over:
        if current is None:
            write_atomic(absent, b"")
        else:
            write_atomic(orig, current, like=_stat(path))
            kept_original = orig
    elif current is not None and current != last:
        kept_edit = _free_name(Path(f"{path}{OLD_SUFFIX}"))
        write_atomic(kept_edit, current, like=_stat(path))
    write_atomic(path, content)
    write_atomic(written, content, like=_stat(path))
    return WriteResult(True, kept_original, kept_edit)


def release_managed(path: Path, state_dir: Path) -> WriteResult:
    """Give ``path`` back as it was before kexec-auto first replaced it: the
    original is put back (or the file removed when there was none), a hand
    edit made since kexec-auto last wrote it is first kept aside, and
    kexec-auto forgets the file.  Nothing happens to a file kexec-auto does
    not hold."""
    orig = state_dir / f"{path.name}{ORIG_SUFFIX}"
    absent = state_dir / f"{path.name}{ABSENT_SUFFIX}"
    if not (os.path.lexists(orig) or os.path.lexists(absent)):
        return WriteResult(changed=False)
    current = read_bytes(path)
    last = _state(state_dir, path, WRITTEN_SUFFIX)
    original = read_bytes(orig, follow=False) if os.path.lexists(orig) else None
    kept_edit = None
    if current is not None and current not in (last, original):
        kept_edit = _free_name(Path(f"{path}{OLD_SUFFIX}"))
        write_atomic(kept_edit, current, like=_stat(path))
    restored = removed = False
    if original is not None:
        if current != original:
            write_atomic(path, original, like=_stat(orig))
        restored = True
    elif current is not None:
        os.unlink(path)
        removed = True
    for suffix in (WRITTEN_SUFFIX, KEY_SUFFIX, ORIG_SUFFIX, ABSENT_SUFFIX):
        try:
            os.unlink(state_dir / f"{path.name}{suffix}")
        except FileNotFoundError:
            pass
    return WriteResult(True, kept_edit=kept_edit, restored=restored, removed=removed)


def hand_edited(path: Path, state_dir: Path) -> bool:
    """Whether ``path`` differs from what kexec-auto last wrote there."""
    last = _state(state_dir, path, WRITTEN_SUFFIX)
    return last is not None and read_bytes(path) != last
