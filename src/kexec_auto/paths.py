"""Paths of the system kexec-auto acts on, inside its root directory.

Every function of the system layer takes ``root``, the directory to treat
as ``/``, so tests, chroots and ``--root`` all work the same way.  A root
other than / is an untrusted tree (an image being built, another machine's
disk): paths inside it are resolved as that system would resolve them
(:func:`at`), so a symbolic link in it never leads a read or a write out of
it.
"""

from __future__ import annotations

import errno
import functools
import os
import stat
from pathlib import Path

_MAX_LINKS = 40  # as the kernel's path walk


@functools.lru_cache(maxsize=None)
def real_root(root: str) -> str:
    return os.path.realpath(root)


def is_host(root: str) -> bool:
    """Whether ``root`` is this system's own /."""
    return real_root(root) == "/"


def _resolve(base: str, path: str) -> Path:
    """``path`` resolved inside ``base`` as a chroot would: absolute link
    targets start again at ``base``, ``..`` stops there."""
    todo = list(reversed(path.split("/")))
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = os.path.join(base, *done, part)
        try:
            info = os.lstat(candidate)
        except OSError:
            done.append(part)  # does not exist (yet): the rest is taken as it is
            continue
        if stat.S_ISLNK(info.st_mode):
            links += 1
            if links > _MAX_LINKS:
                raise OSError(errno.ELOOP, "too many levels of symbolic links", os.path.join(base, path.lstrip("/")))
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            todo.extend(reversed(target.split("/")))
            continue
        done.append(part)
    return Path(base, *done)


def at(root: str, path: str, follow: bool = True) -> Path:
    """``path`` (absolute, as on the target system) inside ``root``.

    On a root other than /, symbolic links are resolved inside the root,
    and so is the last component unless ``follow`` is False (then the
    entry itself is named, to replace or remove it).
    """
    base = real_root(root)
    if base == "/":
        return Path("/", path.lstrip("/"))
    if not follow:
        head, _, name = path.rstrip("/").rpartition("/")
        if name not in ("", ".", ".."):
            return _resolve(base, head) / name
    return _resolve(base, path)


def unroot(root: str, path: Path) -> str:
    """``path`` (inside ``root``) as the target system names it.

    >>> unroot("/", Path("/etc/default/kexec"))
    '/etc/default/kexec'
    """
    base = real_root(root)
    return "/" + str(Path(path).relative_to(base)).lstrip("/") if base != "/" else str(path)
