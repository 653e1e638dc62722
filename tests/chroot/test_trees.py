"""The tree builder on every Debian release the tests know, forky included.

bookworm's debootstrap has no forky script (testing is bootstrapped with
sid's), and the copy of testing reachable here may be past its Valid-Until:
the tree must still bootstrap, and apt in it must read all three suites.
It also reaches trixie's archive (testing carries one kernel release, the
older kernels of the tests are trixie's), pinned so low that nothing comes
from there unless asked for by name.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from harness import debimage

pytestmark = pytest.mark.chroot


def test_forky_tree_bootstraps_and_apt_reads_its_suites(as_root: None, tmp_path: Path) -> None:
    tree = debimage.cached_tree("forky")
    assert (tree / "etc/apt/apt.conf.d/90kexec-auto-tests").read_text() == debimage.SUITE_APT_CONF["forky"]
    assert "forky-security" in (tree / "etc/apt/sources.list").read_text()
    with debimage.throwaway_copy(tree, tmp_path / "forky") as root:
        chroot = debimage.Chroot(root, debimage.apt_archive_cache("forky"))
        with chroot.mounted():
            update = chroot.run("apt-get update", timeout=600)
            out = update.stdout + update.stderr
            # testing's -security and -updates are often empty, but apt must reach them
            for suite in ("forky", "forky-updates", "forky-security"):
                assert re.search(rf"(Get|Hit):\d+ \S+ {suite} InRelease", out), out
            assert "Err:" not in out and "E: " not in out, out
            policy = chroot.run("apt-cache policy").stdout
            assert "forky/main amd64 Packages" in policy, policy
            assert chroot.run("apt-cache show kexec-tools").returncode == 0
            # trixie's archive is there for its kernels, and gives nothing unasked
            assert "100 http://deb.debian.org/debian trixie/main amd64 Packages" in policy, policy
            candidate = chroot.run("apt-cache policy systemd").stdout
            version = re.search(r"Candidate: (\S+)", candidate).group(1)
            assert re.search(rf" {re.escape(version)} \d+\n\s+500 \S+ forky/main", candidate), candidate
    assert (tree / "etc/apt/sources.list").is_file(), "the cached tree itself was touched"
