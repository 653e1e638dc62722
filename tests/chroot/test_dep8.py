"""kexec-auto's DEP-8 tests, run by autopkgtest in a chroot.

autopkgtest-virt-chroot on a mounted throwaway copy of the cached trixie
tree: autopkgtest installs trixie's build of kexec-auto with apt and runs
debian/tests/control as Debian's CI would in a testbed that cannot reboot:
kernel-hooks installs and removes real trixie kernels, kexec-reboot is
skipped for its restrictions.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from harness import autopkgtest_run
from harness import debimage
from harness.debbuild import release_build

pytestmark = pytest.mark.chroot
SUITE = "trixie"


def test_autopkgtest_kernel_hooks_in_a_trixie_chroot(as_root: None, tmp_path: Path) -> None:
    build = release_build(SUITE)
    start = time.monotonic()
    with debimage.throwaway_copy(debimage.cached_tree(SUITE), tmp_path / "testbed") as root:
        chroot = debimage.Chroot(root, debimage.apt_archive_cache(SUITE))
        with chroot.mounted():
            chroot.run("apt-get update -q", timeout=600)
            result = autopkgtest_run.run([build.deb], ["chroot", str(root)], tmp_path / "autopkgtest")
    print(f"autopkgtest kernel-hooks ({SUITE} chroot): {time.monotonic() - start:.0f} s")
    log = result.log
    # a chroot cannot reboot: kexec-reboot (needs-reboot, isolation-machine)
    # is skipped by autopkgtest itself, never run, never failed
    assert result.summary == {"kernel-hooks": "PASS", "kexec-reboot": "SKIP"}, log[-6000:]
    assert re.search(r"kexec-reboot\s+SKIP .*requires testbed capability", log), log[-6000:]
    # autopkgtest's exit status 2: at least one test skipped, none failed
    assert result.returncode == 2, log[-6000:]
    # the test really went through the order and the fallback with two kernels
    for step in (r"after installing the older \S+ after it", r"after removing \S+", r"after installing \S+ over \S+"):
        assert re.search(rf"ok: {step}: ", log), f"{step!r} not reached:\n{log[-6000:]}"
    assert "kexec-auto load refused inside a container or chroot" in log
