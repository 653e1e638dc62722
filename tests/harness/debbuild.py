"""Building kexec-auto's .deb from this checkout for the tests.

One build per test session serves the package, chroot and VM tests alike:
``dpkg-buildpackage -us -uc -b`` in a scratch copy of the working tree, with
Debian's own tools and Python (a python3 from pyenv or a virtualenv earlier
on PATH lacks the modules pybuild needs).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from harness import debimage

CHECKOUT = Path(__file__).resolve().parents[2]
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


# ---------------------------------------------------------------------------
# one build per Debian release, inside that release's own tree

#: The releases kexec-auto is built for, oldest first.
RELEASES = ("bookworm", "trixie", "forky")

#: How each release's build is versioned and where it would be uploaded.
#: The development release (forky) gets the version of debian/changelog;
#: the stable releases get it as a backport, so that every build upgrades
#: to the next release's, as packages do across a dist-upgrade.
RELEASE_UPLOADS = {
    "bookworm": ("~bpo12+1", "bookworm-backports"),
    "trixie": ("~bpo13+1", "trixie-backports"),
    "forky": ("", ""),
}

#: What a build tree holds besides minbase and the Build-Depends (installed
#: with apt: debootstrap's own resolver does not manage lintian's dependencies).
BUILD_TREE_PACKAGES = ("build-essential", "lintian")
BUILD_USER = "builder"  # as on Debian's buildds, the build does not run as root
#: who runs each release's build: an unprivileged user, as Debian's buildds
#: and sbuild do, or root in a plain chroot (its / no mount point), as
#: pbuilder and a developer's debootstrap'd tree do; the build-time tests
#: must pass (or skip, saying why) either way
BUILDERS = {"bookworm": "root", "trixie": BUILD_USER, "forky": "root"}
BUILD_STEP = "builddeps1"  # bump when _install_build_depends changes
_release_lock = threading.Lock()
_release_locks: dict[str, threading.Lock] = {}
_release_builds: dict[str, "ReleaseBuild"] = {}


def control_field(control: str, field: str, stanza: int = 0) -> str:
    """A field of debian/control, continuation lines joined.

    >>> control_field("Source: a\\nBuild-Depends: x,\\n  y (>= 1),\\nZ: 1\\n", "Build-Depends")
    'x, y (>= 1),'
    """
    text = control.split("\n\n")[stanza]
    match = re.search(rf"^{re.escape(field)}:(.*(?:\n[ \t].*)*)", text, re.M)
    if match is None:
        raise KeyError(field)
    return " ".join(line.strip() for line in match.group(1).splitlines() if line.strip())


def release_changelog(changelog: str, suite: str, date: str) -> tuple[str, str]:
    """(debian/changelog of the build for suite, its version).

    The development release builds the changelog as it is; a stable one
    gets a backport entry on top, as Debian's backports do.

    >>> text = ("kexec-auto (0.1.0) unstable; urgency=medium\\n\\n  * x\\n\\n"
    ...         " -- A <a@b>  Wed, 25 Nov 2026 12:00:00 +0000\\n")
    >>> new, version = release_changelog(text, "trixie", "Thu, 26 Nov 2026 12:00:00 +0000")
    >>> version, new.splitlines()[0]
    ('0.1.0~bpo13+1', 'kexec-auto (0.1.0~bpo13+1) trixie-backports; urgency=medium')
    >>> release_changelog(text, "forky", "")[1]
    '0.1.0'
    """
    first = changelog.split("\n", 1)[0]
    match = re.match(r"(\S+) \((\S+)\) ", first)
    if match is None:
        raise ValueError(f"debian/changelog: cannot read the first line: {first!r}")
    source, version = match.groups()
    suffix, distribution = RELEASE_UPLOADS[suite]
    if not suffix:
        return changelog, version
    trailer = re.search(r"^ -- (.+?)  ", changelog, re.M)
    maintainer = trailer.group(1) if trailer else "kexec-auto developers <kexec-auto@packages.debian.org>"
    entry = (f"{source} ({version}{suffix}) {distribution}; urgency=medium\n\n"
             f"  * Rebuild for {distribution}.\n\n"
             f" -- {maintainer}  {date}\n\n")
    return entry + changelog, version + suffix


@dataclass
class ReleaseBuild:
    """kexec-auto built inside one release's tree, and what that release's
    lintian said about it."""
    suite: str
    version: str
    deb: Path
    changes: Path
    build_log: Path
    lintian: str            # lintian --pedantic --info output (tags only)
    lintian_status: int
    seconds: float          # the build, its tests included
    lintian_seconds: float
    tools: dict[str, str]   # versions of the release's build tools
    builder: str = BUILD_USER  # who ran the build: root or the unprivileged user

    def lintian_tags(self, *severities: str) -> list[str]:
        return [line for line in self.lintian.splitlines() if line.startswith(tuple(f"{s}:" for s in severities))]


def _install_build_depends(control: str) -> Callable[[Path], dict[str, object]]:
    depends = control_field(control, "Build-Depends").rstrip(",")

    def build(root: Path) -> dict[str, object]:
        chroot = debimage.Chroot(root, debimage.apt_archive_cache(suite_of(root)))
        with chroot.mounted():
            chroot.sh("apt-get update -q", timeout=600)
            chroot.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *BUILD_TREE_PACKAGES],
                       timeout=1500)
            chroot.run(["apt-get", "satisfy", "-y", "-q", "--no-install-recommends", depends], timeout=1500)
            chroot.run(["useradd", "--create-home", "--shell", "/bin/sh", BUILD_USER])
        return {"build-depends": depends}
    return build


def suite_of(root: Path) -> str:
    """The release a test tree holds: the suite of its sources.list's first
    line (a testing tree's os-release names no codename of its own).

    >>> import tempfile; tree = Path(tempfile.mkdtemp()); (tree / "etc/apt").mkdir(parents=True)
    >>> _ = (tree / "etc/apt/sources.list").write_text("deb http://deb.debian.org/debian forky main\\n")
    >>> suite_of(tree)
    'forky'
    """
    return (root / "etc/apt/sources.list").read_text().split()[2]


def build_tree(suite: str, control: str | None = None) -> Path:
    """The cached tree of suite that holds everything needed to build
    kexec-auto: build-essential, lintian and debian/control's Build-Depends
    (a change there gives a new tree)."""
    control = control if control is not None else (CHECKOUT / "debian/control").read_text()
    pristine = debimage.cached_tree(suite, ())  # minbase, as the buildds' chroots
    key = hashlib.sha256(control_field(control, "Build-Depends").encode()).hexdigest()[:8]
    path, _ = debimage.derived_tree(pristine, f"{BUILD_STEP}-{key}", _install_build_depends(control))
    return path


def _tool_versions(chroot: "debimage.Chroot") -> dict[str, str]:
    out = chroot.run(["dpkg-query", "-W", "-f=${Package} ${Version}\n",
                      "debhelper", "dh-python", "dpkg-dev", "lintian", "python3", "systemd"],
                     check=False).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def build_in_release(suite: str, dest: Path, checkout: Path = CHECKOUT, timeout: float = 1800) -> ReleaseBuild:
    """Build checkout with dpkg-buildpackage inside suite's build tree (its
    own debhelper, dh-python, pybuild and Python), as BUILDERS says (root or
    an unprivileged user) and with the build-time tests; then lintian
    --pedantic of that release on the result.  Everything lands in dest."""
    dest.mkdir(parents=True, exist_ok=True)
    tree = build_tree(suite, (checkout / "debian/control").read_text())
    with debimage.throwaway_copy(tree, debimage.work_dir(f"build-{suite}"), plain=True) as root:
        chroot = debimage.Chroot(root)
        home = f"/home/{BUILD_USER}"
        source = copy_tree(chroot.path(f"{home}/kexec-auto"), checkout)
        changelog = source / "debian/changelog"
        text, version = release_changelog(changelog.read_text(), suite,
                                          time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()))
        changelog.write_text(text)
        debimage.run(["chown", "-R", "--reference", chroot.path(home), chroot.path(home)])
        as_user = ["runuser", "-u", BUILD_USER, "--", "env", f"HOME={home}"]
        as_builder = as_user if BUILDERS.get(suite, BUILD_USER) == BUILD_USER else ["env", "HOME=/root"]
        with chroot.mounted():
            tools = _tool_versions(chroot)
            start = time.monotonic()
            result = chroot.run([*as_builder, "sh", "-c",
                                 f"cd {home}/kexec-auto && dpkg-buildpackage -us -uc -b > ../build.log 2>&1"],
                                timeout=timeout, check=False)
            seconds = time.monotonic() - start
            shutil.copy2(chroot.path(f"{home}/build.log"), dest / "build.log")
            if result.returncode != 0:
                tail = "\n".join((dest / "build.log").read_text().splitlines()[-60:])
                raise AssertionError(f"dpkg-buildpackage failed inside the {suite} tree "
                                     f"(log: {dest / 'build.log'}):\n{tail}")
            (deb,) = chroot.path(home).glob("kexec-auto_*_all.deb")
            (changes,) = chroot.path(home).glob("kexec-auto_*.changes")
            start = time.monotonic()
            lint = chroot.run([*as_user, "lintian", "--pedantic", "--info", "--tag-display-limit", "0",
                               f"{home}/{deb.name}", f"{home}/{changes.name}"], check=False, timeout=1200)
            lintian_seconds = time.monotonic() - start
            for built in chroot.path(home).glob("kexec-auto_*"):
                shutil.copy2(built, dest / built.name)
    return ReleaseBuild(suite, version, dest / deb.name, dest / changes.name, dest / "build.log",
                        lint.stdout + lint.stderr, lint.returncode, seconds, lintian_seconds, tools,
                        BUILDERS.get(suite, BUILD_USER))


def release_build(suite: str) -> ReleaseBuild:
    """suite's build of this checkout, made once per test session."""
    with _release_lock:
        lock = _release_locks.setdefault(suite, threading.Lock())
    with lock:
        if suite not in _release_builds:
            _release_builds[suite] = build_in_release(suite, debimage.work_dir(f"release-{suite}"))
        return _release_builds[suite]
