"""kexec-auto's .deb for the VM images, built once per session from the checkout."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

CHECKOUT = Path(__file__).resolve().parents[2]
_lock = threading.Lock()
_built: list[Path] = []


def build_deb(checkout: Path = CHECKOUT, timeout: float = 900) -> Path:
    """dpkg-buildpackage -us -uc -b in a scratch copy of `git ls-files` (once)."""
    with _lock:
        if _built:
            return _built[0]
        files = subprocess.run(["git", "ls-files", "-z"], cwd=checkout, check=True,
                               capture_output=True, text=True).stdout.split("\0")
        if "debian/control" not in files:
            raise AssertionError("debian/control is not tracked: no kexec-auto package to test")
        scratch = Path(tempfile.mkdtemp(prefix="kexec-auto-vm-deb."))
        src = scratch / "kexec-auto"
        for rel in filter(None, files):
            if (checkout / rel).exists() or (checkout / rel).is_symlink():
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(checkout / rel, src / rel, follow_symlinks=False)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYTHON", "PYENV", "VIRTUAL_ENV"))}
        env["PATH"] = "/usr/sbin:/usr/bin:/sbin:/bin"
        # the package's own unit tests ran already (they are part of this suite's run)
        env["DEB_BUILD_OPTIONS"] = "nocheck"
        proc = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src, env=env,
                              capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise AssertionError(f"dpkg-buildpackage failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
        debs = sorted(scratch.glob("kexec-auto_*_all.deb"))
        if len(debs) != 1:
            raise AssertionError(f"dpkg-buildpackage built {debs} in {scratch}")
        _built.append(debs[0])
        return debs[0]
