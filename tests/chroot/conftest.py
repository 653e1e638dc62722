"""Fixtures of the chroot tests: the built .deb, its apt repository, Debian trees.

Each release gets the .deb built inside its own tree (debbuild.release_build),
as Debian builds a package for each release.

Environment:
  KEXEC_AUTO_TEST_CACHE  where trees and downloaded packages are cached
                         (default /var/cache/kexec-auto-tests)
  KEXEC_AUTO_TEST_DEB    an already built kexec-auto .deb to test on every
                         release instead of building one from this checkout
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Iterator

import pytest

from harness.debbuild import release_build

from harness import debimage

CHECKOUT = Path(__file__).resolve().parents[2]
SUITES = ("bookworm", "trixie", "forky")
REPO_INSIDE = "/srv/kexec-auto-test-repo"


@pytest.fixture(scope="session")
def as_root() -> None:
    # Fail, not skip: a skipped integration test reads as green in CI.
    if os.geteuid() != 0:
        pytest.fail("the chroot tests need root (debootstrap, mount, chroot)")


@pytest.fixture
def kexec_auto_deb(as_root: None, suite: str) -> Path:
    """The kexec-auto .deb under test on suite: built inside suite's tree, or $KEXEC_AUTO_TEST_DEB."""
    given = os.environ.get("KEXEC_AUTO_TEST_DEB")
    if given:
        if not Path(given).is_file():
            pytest.fail(f"KEXEC_AUTO_TEST_DEB={given} is not a file")
        return Path(given)
    start = time.monotonic()
    deb = release_build(suite).deb  # once per session and suite
    print(f"{suite}: {deb.name} ready after {time.monotonic() - start:.0f} s")
    return deb


@pytest.fixture
def kexec_auto_repo(kexec_auto_deb: Path, tmp_path: Path) -> Path:
    """A flat apt repository holding only the kexec-auto .deb."""
    return debimage.local_repo([kexec_auto_deb], tmp_path / "repo")


@pytest.fixture(params=SUITES)
def suite(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def package_tree(
    as_root: None, suite: str, kexec_auto_repo: Path, tmp_path: Path
) -> Iterator[debimage.Chroot]:
    """A mounted throwaway copy of the cached suite tree, apt lists fresh,
    the kexec-auto repository in its sources, downloads kept in the cache."""
    start = time.monotonic()
    tree = debimage.cached_tree(suite)
    print(f"{suite}: tree {tree} ready after {time.monotonic() - start:.0f} s")
    with debimage.throwaway_copy(tree, tmp_path / suite) as root:
        chroot = debimage.Chroot(root, debimage.apt_archive_cache(suite))
        chroot.add_local_repo(kexec_auto_repo, REPO_INSIDE)
        with chroot.mounted():
            chroot.run("apt-get update -q", timeout=600)
            yield chroot
