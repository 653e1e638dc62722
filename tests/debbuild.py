"""Building kexec-auto's .deb from this checkout for the tests.

One build per test session serves the package, chroot and VM tests alike:
``dpkg-buildpackage -us -uc -b`` in a scratch copy of the working tree, with
Debian's own tools and Python (a python3 from pyenv or a virtualenv earlier
on PATH lacks the modules pybuild needs).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[1]
DEBIAN_ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C.UTF-8",
    "HOME": os.environ.get("HOME", "/root"),
    # The unit tests run in the same session; the build only packages.
    "DEB_BUILD_OPTIONS": "nocheck",
}
_lock = threading.Lock()
_session: dict[str, Path] = {}


def tree_files(checkout: Path = CHECKOUT) -> list[str]:
    """The files git would commit: tracked ones (with uncommitted edits) and new ones."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=checkout, check=True, capture_output=True,
    ).stdout.decode()
    names = sorted(name for name in set(out.split("\0")) if name and (checkout / name).is_file())
    if "debian/control" not in names:
        raise AssertionError(f"no debian/control in {checkout}: there is no kexec-auto package to build")
    return names


def copy_tree(dest: Path, checkout: Path = CHECKOUT) -> Path:
    dest.mkdir(parents=True)
    for name in tree_files(checkout):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(checkout / name, target, follow_symlinks=False)
    return dest


def build(source: Path, timeout: float = 900) -> dict[str, Path]:
    """Run dpkg-buildpackage in ``source``; the .deb and .changes land beside it."""
    result = subprocess.run(
        ["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=source, env=DEBIAN_ENV,
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise AssertionError(f"dpkg-buildpackage failed in {source}:\n{tail}")
    (deb,) = source.parent.glob("kexec-auto_*_all.deb")
    (changes,) = source.parent.glob("kexec-auto_*.changes")
    return {"deb": deb, "changes": changes}


def session_build() -> dict[str, Path]:
    """This checkout's .deb and .changes, built once per test session."""
    with _lock:
        if not _session:
            scratch = Path(tempfile.mkdtemp(prefix="kexec-auto-deb."))
            _session.update(build(copy_tree(scratch / "src")))
        return dict(_session)
