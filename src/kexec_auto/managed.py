"""Files kexec-auto takes over from others, written without ever losing anything.

/etc/default/kexec is kexec-tools' file; kexec-auto writes it while it is
enabled and gives it back afterwards.  Beside it, in the state directory,
kexec-auto keeps records: the original (``kexec.orig``, or
``kexec.orig-absent`` when there was none), what it last wrote
(``kexec.written``), what it is writing (``kexec.pending``) and a digest
of what that was rendered from (``kexec.written-key``).

* Before kexec-auto first replaces a file it did not write, the original is
  kept, so disabling or purging kexec-auto can restore it.
* A file edited by hand since kexec-auto last wrote it is copied aside
  (``<file>.kexec-auto-old``, once per edit) before being replaced, and
  the caller says so.  A copy kept aside keeps the mode and owner of what
  it copies, so nothing becomes more readable.
* Nothing is rewritten when the content is unchanged.
* An update is a transaction: the content to be written is recorded as
  pending before the file is replaced, and becomes what kexec-auto wrote by
  a rename afterwards; the original is forgotten last on release.  Should
  any write or rename fail, the files left tell the next run exactly what
  happened, so it never takes kexec-auto's own write for a hand edit.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Optional, Union

from . import files
from .files import encode, make_dirs, read_bytes, write_atomic

ORIG_SUFFIX = ".orig"  # the file as it was before kexec-auto took it over
ABSENT_SUFFIX = ".orig-absent"  # there was no file before kexec-auto
WRITTEN_SUFFIX = ".written"  # what kexec-auto last wrote
PENDING_SUFFIX = ".pending"  # what kexec-auto is writing now
KEY_SUFFIX = ".written-key"  # digest of what that content was rendered from
OLD_SUFFIX = ".kexec-auto-old"


@dataclasses.dataclass(frozen=True)
class WriteResult:
    changed: bool
    kept_original: Optional[Path] = None  # first takeover: original saved here
    kept_edit: Optional[Path] = None  # hand edit saved here
    restored: bool = False  # (release) the original is back in place
    removed: bool = False  # (release) the file kexec-auto had created is gone


def _record(state_dir: Path, path: Path, suffix: str) -> Path:
    return state_dir / f"{path.name}{suffix}"


def _read_record(state_dir: Path, path: Path, suffix: str) -> Optional[bytes]:
    # kexec-auto's own files: never through a symbolic link.
    return read_bytes(_record(state_dir, path, suffix), follow=False)


def _stat(path: Path) -> Optional[os.stat_result]:
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def _ours(path: Path, state_dir: Path, current: Optional[bytes]) -> tuple[Optional[bytes], bool]:
    """What kexec-auto last wrote to ``path``, and whether ``current`` is
    kexec-auto's own (not a hand edit).  The pending content counts as
    written when the file holds it (a run failed after replacing the file,
    before recording it); before any write, the original is kexec-auto's
    starting point, and so it stays (it is kept, nothing of it can be lost)."""
    pending = _read_record(state_dir, path, PENDING_SUFFIX)
    written = pending if pending is not None and current == pending else None
    written = written if written is not None else _read_record(state_dir, path, WRITTEN_SUFFIX)
    original = _read_record(state_dir, path, ORIG_SUFFIX)
    return written, current == written or (current is not None and current == original) \
        or (written is None and current is None)


def _settle(path: Path, state_dir: Path, current: Optional[bytes]) -> None:
    """Finish or undo what a failed run left pending."""
    pending = _record(state_dir, path, PENDING_SUFFIX)
    if not os.path.lexists(pending):
        return
    if read_bytes(pending, follow=False) == current:
        files._rename(pending, _record(state_dir, path, WRITTEN_SUFFIX))  # the file was replaced
    else:
        files._unlink(pending)  # the file never was


def _taken_over(state_dir: Path, path: Path) -> bool:
    return any(os.path.lexists(_record(state_dir, path, s)) for s in (ORIG_SUFFIX, ABSENT_SUFFIX))


def _keep_edit(path: Path, current: bytes) -> Path:
    """Copy a hand edit aside, unless the newest copy already holds it (a
    run that failed after copying it)."""
    copies = [Path(f"{path}{OLD_SUFFIX}")]
    while os.path.lexists(copies[-1]):
        copies.append(Path(f"{path}{OLD_SUFFIX}.{len(copies)}"))
    if len(copies) > 1 and read_bytes(copies[-2], follow=False) == current:
        return copies[-2]
    write_atomic(copies[-1], current, like=_stat(path))
    return copies[-1]


class ManagedError(OSError):
    """A managed file's update failed at one of its other files; the message
    names that file and says what became of the managed one."""


def _transaction(path: Path, operation: Callable[[], WriteResult]) -> WriteResult:
    before = read_bytes(path)
    try:
        return operation()
    except OSError as error:
        if error.filename in (str(path), path) or not error.strerror:
            raise
        try:
            state = "is left as it was" if read_bytes(path) == before else "holds the new content"
        except OSError:
            state = "cannot be read"
        raise ManagedError(error.errno, f"{error.strerror}; {path} {state}", error.filename, None,
                           error.filename2) from None


def unchanged_since(path: Path, state_dir: Path, key: str) -> bool:
    """Whether ``path`` still holds what kexec-auto last wrote, rendered from
    inputs with digest ``key``: then rendering again would change nothing."""
    if _read_record(state_dir, path, KEY_SUFFIX) != key.encode():
        return False
    written = _read_record(state_dir, path, WRITTEN_SUFFIX)
    pending = os.path.lexists(_record(state_dir, path, PENDING_SUFFIX))
    return written is not None and not pending and read_bytes(path) == written


def replace_managed(path: Path, content: Union[str, bytes], state_dir: Path, key: str = "") -> WriteResult:
    """Make ``path`` hold ``content``, keeping what must not be lost.
    ``key`` identifies the inputs ``content`` was rendered from."""
    return _transaction(path, lambda: _replace(path, encode(content), state_dir, key))


def _replace(path: Path, data: bytes, state_dir: Path, key: str) -> WriteResult:
    current = read_bytes(path)
    last, ours = _ours(path, state_dir, current)
    make_dirs(state_dir)
    _settle(path, state_dir, current)
    kept_original = kept_edit = None
    written = _record(state_dir, path, WRITTEN_SUFFIX)
    if current != data:
        if not _taken_over(state_dir, path):
            if current is None:
                write_atomic(_record(state_dir, path, ABSENT_SUFFIX), b"")
            else:
                write_atomic(_record(state_dir, path, ORIG_SUFFIX), current, like=_stat(path))
                kept_original = _record(state_dir, path, ORIG_SUFFIX)
        elif current is not None and not ours:
            kept_edit = _keep_edit(path, current)
        pending = _record(state_dir, path, PENDING_SUFFIX)
        write_atomic(pending, data, like=_stat(path))
        write_atomic(path, data)
        files._rename(pending, written)
    elif last != data:
        write_atomic(written, data, like=_stat(path))
    if key and _read_record(state_dir, path, KEY_SUFFIX) != key.encode():
        write_atomic(_record(state_dir, path, KEY_SUFFIX), key)
    return WriteResult(current != data, kept_original, kept_edit)


def release_managed(path: Path, state_dir: Path) -> WriteResult:
    """Give ``path`` back as it was before kexec-auto first replaced it: the
    original is put back (or the file removed when there was none), a hand
    edit made since kexec-auto last wrote it is first kept aside, and
    kexec-auto forgets the file, its original last.  Nothing happens to a
    file kexec-auto does not hold."""
    return _transaction(path, lambda: _release(path, state_dir))


def _release(path: Path, state_dir: Path) -> WriteResult:
    if not _taken_over(state_dir, path):
        return WriteResult(changed=False)
    orig = _record(state_dir, path, ORIG_SUFFIX)
    current = read_bytes(path)
    _, ours = _ours(path, state_dir, current)
    _settle(path, state_dir, current)
    original = read_bytes(orig, follow=False) if os.path.lexists(orig) else None
    kept_edit = None
    if current is not None and not ours and current != original:
        kept_edit = _keep_edit(path, current)
    restored = removed = False
    if original is not None:
        if current != original:
            write_atomic(path, original, like=_stat(orig))
        restored = True
    elif current is not None:
        files._unlink(path)
        removed = True
    for suffix in (PENDING_SUFFIX, WRITTEN_SUFFIX, KEY_SUFFIX, ORIG_SUFFIX, ABSENT_SUFFIX):
        files._unlink(_record(state_dir, path, suffix))
    return WriteResult(True, kept_edit=kept_edit, restored=restored, removed=removed)


def hand_edited(path: Path, state_dir: Path) -> bool:
    """Whether ``path`` differs from what kexec-auto last wrote there."""
    current = read_bytes(path)
    last, ours = _ours(path, state_dir, current)
    return last is not None and not ours
