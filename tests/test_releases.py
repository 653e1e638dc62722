"""kexec-auto built for every Debian release it supports, inside that release.

Each release's build (debbuild.release_build, once per session) runs
dpkg-buildpackage in a plain chroot of that release that holds only
minbase, build-essential, lintian and debian/control's Build-Depends, as
root on bookworm and forky (as pbuilder does) and as an unprivileged user
on trixie (as Debian's buildds do), with the build-time tests; then that release's
``lintian --pedantic`` checks the result.  Installed paths must follow the
release: /lib on bookworm (its systemd owns the directories there), /usr/lib
from trixie on (/usr merged, DEP 17).

piuparts then installs, purges and upgrades on bookworm and on trixie; on
trixie the upgrade starts from the bookworm build, so that the move of
kexec-auto's files from /lib to /usr/lib is exercised by dpkg.
"""
from __future__ import annotations

import doctest
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import debbuild
from harness import debimage
from harness.debbuild import DEBIAN_ENV, RELEASES, release_build

REPO = Path(__file__).resolve().parents[1]
#: The directories that /usr-merge turns into symbolic links into /usr.
ALIASED = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


def test_doctests():
    result = doctest.testmod(debbuild)
    assert result.failed == 0
    assert result.attempted > 0


def test_release_versions_upgrade_from_one_release_to_the_next():
    changelog = (REPO / "debian/changelog").read_text()
    versions = [debbuild.release_changelog(changelog, suite, "Thu, 26 Nov 2026 12:00:00 +0000")[1]
                for suite in RELEASES]
    for older, newer in zip(versions, versions[1:]):
        subprocess.run(["dpkg", "--compare-versions", older, "lt", newer], check=True)
    assert versions[-1] == re.match(r"\S+ \((\S+)\)", changelog).group(1)


def installed_under_lib(install: str) -> list[str]:
    """Files debian/kexec-auto.install puts below lib/, as paths without the prefix."""
    found = []
    for line in install.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) == 2 and words[1].startswith("lib/"):
            found.append(f"{words[1].removeprefix('lib/').rstrip('/')}/{Path(words[0]).name}")
    return found


def test_installed_under_lib_reads_install_files():
    install = "a/x lib/systemd/system\n# c\nb/y etc/kernel\nc/z lib/udev/  # rules\n"
    assert installed_under_lib(install) == ["systemd/system/x", "udev/z"]


def deb_paths(deb: Path) -> list[str]:
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], check=True, capture_output=True, text=True).stdout
    return [line.split(None, 5)[5].split(" -> ")[0].removeprefix(".") for line in listing.splitlines()]


@pytest.mark.parametrize("suite", RELEASES)
@pytest.mark.chroot
@pytest.mark.package
def test_builds_inside_the_release_with_its_tools_and_its_tests_pass(suite):
    build = release_build(suite)
    log = build.build_log.read_text()
    print(f"{suite}: built {build.deb.name} in {build.seconds:.0f} s with {build.tools}")
    # the build-time tests ran (not skipped by nocheck) and passed
    summary = re.findall(r"^(\d+) passed(?:, (\d+) \w+)*.* in [\d.]+s", log, re.M)
    assert summary, f"no pytest summary in {build.build_log}"
    assert not re.search(r"^=+ .*\b(failed|error)", log, re.M), log[-3000:]
    assert int(summary[-1][0]) > 100
    if build.builder == "root":
        # root in a plain chroot, whose / is no mount point: the tests that
        # need a private mount namespace skip, and say why
        assert re.search(r"^SKIPPED .*no private mount namespace here", log, re.M), log[-3000:]
    else:
        assert re.search(r"^SKIPPED .*needs root", log, re.M), log[-3000:]
    # with this release's own debhelper and Python, not the host's
    assert build.tools["debhelper"] and build.tools["python3"]
    assert re.search(r"^I: pybuild .*python3\.\d+", log, re.M)
    version = subprocess.run(["dpkg-deb", "-f", str(build.deb), "Version"], check=True,
                             capture_output=True, text=True).stdout.strip()
    assert version == build.version
    suffix, distribution = debbuild.RELEASE_UPLOADS[suite]
    assert version.endswith(suffix)
    changes = build.changes.read_text()
    assert f"Distribution: {distribution or 'unstable'}" in changes


@pytest.mark.parametrize("suite", RELEASES)
@pytest.mark.chroot
@pytest.mark.package
def test_lintian_of_the_release_is_clean(suite):
    build = release_build(suite)
    print(f"{suite}: lintian {build.tools.get('lintian')} took {build.lintian_seconds:.0f} s:\n{build.lintian}")
    assert build.lintian_tags("E", "W") == [], build.lintian
    assert build.lintian_status == 0, build.lintian


@pytest.mark.parametrize("suite", RELEASES)
@pytest.mark.chroot
@pytest.mark.package
def test_installed_paths_follow_the_release(suite):
    paths = deb_paths(release_build(suite).deb)
    files = [p for p in paths if not p.endswith("/")]
    moved = installed_under_lib((REPO / "debian/kexec-auto.install").read_text())
    assert moved, "debian/kexec-auto.install installs nothing under lib/"
    if suite == "bookworm":
        # bookworm's systemd has its directories in /lib: stay there
        expected = [f"/lib/{p}" for p in moved]
        assert not [p for p in files if p.startswith("/usr/lib/systemd/")], files
    else:
        # merged /usr: nothing on an aliased path
        expected = [f"/usr/lib/{p}" for p in moved]
        aliased = [p for p in paths if p.split("/")[1] in ALIASED]
        assert aliased == [], f"{suite}: files on aliased paths: {aliased}"
    missing = [p for p in expected if p not in files]
    assert missing == [], f"{suite}: not where the release expects them: {missing}\n{files}"
    mode = subprocess.run(["dpkg-deb", "-c", str(release_build(suite).deb)], check=True,
                          capture_output=True, text=True).stdout
    for hook in (p for p in expected if "/systemd/system-" in p):
        assert re.search(rf"^-rwxr-xr-x .*\.{re.escape(hook)}$", mode, re.M), f"{hook} is not executable"


# -- piuparts ------------------------------------------------------------------

MIRROR = os.environ.get("KEXEC_AUTO_TEST_MIRROR", debimage.MIRROR)


@pytest.mark.chroot
@pytest.mark.package
def test_piuparts_on_trixie_installs_purges_and_upgrades_from_the_bookworm_build(tmp_path):
    """piuparts installs trixie's build in a minimal trixie and purges it;
    then installs bookworm's build with apt from a local repository,
    upgrades it to trixie's (every file moves from /lib to /usr/lib) and
    purges.  It fails on any file left behind, any file of another package
    removed, or any maintainer script error."""
    if os.geteuid() != 0 or shutil.which("piuparts") is None:
        pytest.fail("needs root and piuparts")
    previous, current = release_build("bookworm"), release_build("trixie")
    repo = debimage.local_repo([previous.deb], tmp_path / "repo")
    base = debimage.cache_dir() / "piuparts-trixie.tgz"
    with debimage.locked(debimage.cache_dir() / "piuparts-trixie.lock"):
        where = ["-b", str(base)] if base.exists() else ["--save", str(base)]
        result = subprocess.run(
            ["piuparts", "-d", "trixie", "-m", MIRROR, *where,
             # made by trixie's dpkg-preconfigure for any package with debconf
             # questions that apt installs, and kept on purpose (debconf 1.5.82)
             "-i", "/var/cache/debconf/tmp.ci/",
             f"--extra-repo=deb [trusted=yes] file://{repo} ./", f"--bindmount={repo}", str(current.deb)],
            env=DEBIAN_ENV, cwd=tmp_path, capture_output=True, text=True, timeout=1800,
        )
    log = result.stdout + result.stderr
    (tmp_path / "piuparts.log").write_text(log)
    assert result.returncode == 0 and "PASS: All tests." in log, "\n".join(log.splitlines()[-80:])
    # both tests really ran: a plain install, and the upgrade from bookworm's build
    assert f"Setting up kexec-auto ({current.version})" in log
    assert f"Setting up kexec-auto ({previous.version})" in log
    assert f"Unpacking kexec-auto ({current.version}) over ({previous.version})" in log


def test_autopkgtest_summary_doctests():
    from harness import autopkgtest_run

    result = doctest.testmod(autopkgtest_run)
    assert result.failed == 0 and result.attempted > 0
