"""Fixtures of the fleet tests: kexec-auto from a local apt repository in
throwaway copies of the cached bookworm and trixie trees (tests/harness/debimage.py)."""
from __future__ import annotations

import contextlib
import os
import re
import time
from pathlib import Path
from typing import Iterator

import pytest

from harness import debimage as debian_tree
from harness.debbuild import session_build

SUITES = ("bookworm", "trixie")
REPO_INSIDE = "/srv/kexec-auto-test-repo"
#: cloud kernels of each suite; the newest found is installed
KERNEL_SERIES = {
    "bookworm": r"6\.1\.0-\d+-cloud-amd64",
    "trixie": r"6\.12\.\d+\+deb13(\.\d+)?-cloud-amd64",
}


@pytest.fixture(scope="session")
def fleet_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.geteuid() != 0:
        pytest.fail("the fleet tests need root (debootstrap, mount, chroot)")
    return debian_tree.local_repo([session_build()["deb"]], tmp_path_factory.mktemp("fleet-repo"))


@pytest.fixture(params=SUITES)
def suite(request: pytest.FixtureRequest) -> str:
    return request.param


@contextlib.contextmanager
def fresh_tree(suite: str, repo: Path, workdir: Path) -> Iterator[debian_tree.Chroot]:
    """A mounted throwaway copy of the cached suite tree, the kexec-auto
    repository in its sources and apt's lists fresh."""
    start = time.monotonic()
    tree = debian_tree.cached_tree(suite)
    with debian_tree.throwaway_copy(tree, workdir / suite) as root:
        chroot = debian_tree.Chroot(root, debian_tree.apt_archive_cache(suite))
        chroot.add_local_repo(repo, REPO_INSIDE)
        with chroot.mounted():
            chroot.run("apt-get update -q", timeout=600)
            print(f"{suite}: tree ready after {time.monotonic() - start:.0f} s")
            yield chroot


def newest_kernel(chroot: debian_tree.Chroot, suite: str) -> str:
    """The newest cloud kernel release of the suite that apt offers."""
    names = chroot.run("apt-cache pkgnames linux-image-").stdout.split()
    found = sorted({n.removeprefix("linux-image-") for n in names
                    if re.fullmatch(KERNEL_SERIES[suite], n.removeprefix("linux-image-"))})
    assert found, f"{suite}: no cloud kernel in the archive"
    return chroot.run(["linux-version", "sort", *found]).stdout.split()[-1]


def bzimage(banner: str, size: int = 1_100_000) -> bytes:
    """A file that reads as an x86 kernel image to kexec-auto ("HdrS" at
    0x202) and to needrestart (the version string the header's
    kernel_version field points at; at least 1 MB)."""
    at = 0x1000
    data = bytearray(size)
    data[0x202:0x206] = b"HdrS"
    data[0x20E:0x210] = (at - 0x200).to_bytes(2, "little")
    data[at:at + len(banner) + 1] = banner.encode() + b"\0"
    return bytes(data)
