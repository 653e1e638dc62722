"""Writing /etc/default/kexec without ever losing anything.

* Writes are atomic: a temporary file in the same directory, fsync, rename,
  fsync of the directory.  A crash or a full disk leaves the old file whole.
* Nothing is rewritten when the content is unchanged.
* Before kexec-auto first replaces a file it did not write, the original is
  kept in the state directory, so purging kexec-auto can restore it.
* A file edited by hand since kexec-auto last wrote it is copied aside
  (``<file>.kexec-auto-old``) before being replaced, and the caller says so.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path
from typing import Optional

STATE_DIR = "/var/lib/kexec-auto"
ORIG_SUFFIX = ".orig"  # the file as it was before kexec-auto took it over
ABSENT_SUFFIX = ".orig-absent"  # there was no file before kexec-auto
WRITTEN_SUFFIX = ".written"  # what kexec-auto last wrote
KEY_SUFFIX = ".written-key"  # digest of what that content was rendered from
OLD_SUFFIX = ".kexec-auto-old"


def read_text(path: Path, errors: str = "strict") -> Optional[str]:
    """The file's UTF-8 text, None when it does not exist."""
    try:
        return path.read_text(encoding="utf-8", errors=errors)
    except FileNotFoundError:
        return None


def write_atomic(path: Path, content: str, mode: int = 0o644) -> None:
    """Replace ``path`` by ``content`` atomically; on any error the old file
    stays as it was and no temporary file is left behind."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
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
    if not path.exists():
        return path
    number = 1
    while Path(f"{path}.{number}").exists():
        number += 1
    return Path(f"{path}.{number}")


@dataclasses.dataclass(frozen=True)
class WriteResult:
    changed: bool
    kept_original: Optional[Path] = None  # first takeover: original saved here
    kept_edit: Optional[Path] = None  # hand edit saved here


def unchanged_since(path: Path, state_dir: Path, key: str) -> bool:
    """Whether ``path`` still holds what kexec-auto last wrote, rendered from
    inputs with digest ``key``: then rendering again would change nothing."""
    if read_text(state_dir / f"{path.name}{KEY_SUFFIX}") != key:
        return False
    written = read_text(state_dir / f"{path.name}{WRITTEN_SUFFIX}")
    return written is not None and read_text(path) == written


def replace_managed(path: Path, content: str, state_dir: Path, key: str = "") -> WriteResult:
    """Make ``path`` hold ``content``, keeping what must not be lost.
    ``key`` identifies the inputs ``content`` was rendered from."""
    result = _replace_managed(path, content, state_dir)
    key_file = state_dir / f"{path.name}{KEY_SUFFIX}"
    if key and read_text(key_file) != key:
        write_atomic(key_file, key)
    return result


def _replace_managed(path: Path, content: str, state_dir: Path) -> WriteResult:
    current = read_text(path)
    written = state_dir / f"{path.name}{WRITTEN_SUFFIX}"
    last = read_text(written)
    if current == content:
        if last != content:
            state_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(written, content)
        return WriteResult(changed=False)

    kept_original = kept_edit = None
    state_dir.mkdir(parents=True, exist_ok=True)
    orig = state_dir / f"{path.name}{ORIG_SUFFIX}"
    absent = state_dir / f"{path.name}{ABSENT_SUFFIX}"
    taken_over = orig.exists() or absent.exists()
    if not taken_over:
        if current is None:
            write_atomic(absent, "")
        else:
            write_atomic(orig, current)
            kept_original = orig
    elif current is not None and current != last:
        kept_edit = _free_name(Path(f"{path}{OLD_SUFFIX}"))
        write_atomic(kept_edit, current)
    write_atomic(path, content)
    write_atomic(written, content)
    return WriteResult(True, kept_original, kept_edit)


def hand_edited(path: Path, state_dir: Path) -> bool:
    """Whether ``path`` differs from what kexec-auto last wrote there."""
    last = read_text(state_dir / f"{path.name}{WRITTEN_SUFFIX}")
    return last is not None and read_text(path) != last
