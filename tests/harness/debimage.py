"""Debian trees and bootable disk images for kexec-auto's slow tests.

One builder serves the chroot suite, the VM suites and the reboot benchmark.
Everything runs as root on the host and shells out to debootstrap, mount,
chroot, mkfs and sfdisk.  Every subprocess is bounded by a timeout, and a
failing command raises CommandFailed carrying its command line and output.

What is cached (under $KEXEC_AUTO_TEST_CACHE, default
/var/cache/kexec-auto-tests), and shared between test sessions of any
checkout, is only what never changes once made:

- trees/<suite>-<key>: pristine debootstrap trees, keyed by suite, mirrors
  and package set; built once under a lock in a scratch directory and renamed
  into place when complete;
- trees/<parent>+<step>: trees derived from those by one fixed step (the
  provider kernel installed; a boot loader's packages installed), made the
  same way;
- apt-archives/<suite>: downloaded .debs, one directory per suite.  A chroot
  never writes there: it gets a private archive directory filled with hard
  links, and what it downloaded is linked back when it is unmounted.

Everything mutable (scenario trees, disk images, firmware variable stores,
serial logs) lives in session_dir(), private to one test process and removed
when it exits, so that two sessions from different checkouts never clobber
each other's images.

Disk layouts (LAYOUTS): "provider" is a bare ext4 image that qemu boots with
a fixed -kernel, like a cloud provider that always boots its own kernel;
"bios" (SeaBIOS + GRUB for i386-pc), "uefi" (OVMF + GRUB EFI) and
"secureboot" (OVMF with Microsoft's keys enrolled, shim, Debian's signed GRUB
and signed kernels) are partitioned disks booted by firmware and Debian's
own boot loader, installed in the guest as on a real machine, so that kernel
installs run update-grub.  No loop device is used: sfdisk works on the image
file, mkfs.ext4 -d fills the root file system, mkfs.fat -C and mtools the
ESP, and dd puts them in place; GRUB's boot sector and core image for BIOS
are written the way grub-bios-setup writes them (write_bios_boot()).
"""
from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

CACHE_ENV = "KEXEC_AUTO_TEST_CACHE"
KEEP_ENV = "KEXEC_AUTO_TEST_KEEP"  # set to keep session directories (images, logs) after exit
DEFAULT_CACHE = Path("/var/cache/kexec-auto-tests")
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://security.debian.org/debian-security"
DEBOOTSTRAP_TIMEOUT = 1500
#: Debian's name of the machines the tests run on; trees of other
#: architectures run their programs under qemu-user-static
HOST_ARCH = "amd64"
TREE_FORMAT = "1"  # bump to rebuild every cached tree after changing how trees are made

#: suite -> debootstrap script to use when the host's debootstrap has none of
#: that name (bookworm's debootstrap knows no forky: testing is set up as sid is)
DEBOOTSTRAP_SCRIPTS = {"forky": "sid"}

#: apt configuration a suite's trees need.  The copy of testing reachable
#: here can be older than its short Valid-Until.
SUITE_APT_CONF = {"forky": 'Acquire::Check-Valid-Until "false";\n'}

#: suite -> the release before it, whose archive its trees also reach, at a
#: priority (100) that takes nothing from there unless asked for by name.
#: Testing carries one kernel release at a time; a machine upgraded to it
#: still has the previous release's kernels, and so do the test trees.
PREVIOUS_RELEASE = {"forky": "trixie"}


def previous_release_pin(previous: str) -> str:
    """apt preferences that keep the previous release's packages out unless named.

    >>> print(previous_release_pin("trixie"), end="")
    Package: *
    Pin: release n=trixie
    Pin-Priority: 100
    <BLANKLINE>
    Package: *
    Pin: release n=trixie-security
    Pin-Priority: 100
    <BLANKLINE>
    Package: *
    Pin: release n=trixie-updates
    Pin-Priority: 100
    """
    return "\n".join(f"Package: *\nPin: release n={previous}{part}\nPin-Priority: 100\n"
                     for part in ("", "-security", "-updates"))


HOST_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C.UTF-8",
    "HOME": "/root",
    "DEBIAN_FRONTEND": "noninteractive",
}


class CommandFailed(AssertionError):
    """A command exited non-zero or timed out; the message holds its output."""


BuildError = CommandFailed


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data


def describe(cmd: Sequence[str], returncode: object, stdout: str, stderr: str, tail: int = 8000) -> str:
    return (
        f"command: {shlex.join(cmd)}\n"
        f"exit status: {returncode}\n"
        f"--- stdout ---\n{stdout.rstrip()[-tail:]}\n"
        f"--- stderr ---\n{stderr.rstrip()[-tail:]}"
    )


def run(
    cmd: Sequence[str | Path],
    *,
    timeout: float = 900,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    input: str | None = None,
    stdout_path: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run cmd with a timeout; raise CommandFailed (with its output) on failure.

    On timeout the whole process group is killed: apt, dpkg and the
    maintainer scripts below a chroot must not outlive the test and keep its
    mounts busy.  stdout_path sends standard output to a file.  The
    environment is HOST_ENV unless env is given.
    """
    argv = [str(c) for c in cmd]
    out = open(stdout_path, "w") if stdout_path is not None else None
    try:
        proc = subprocess.Popen(
            argv, stdout=out or subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            env=dict(HOST_ENV if env is None else env), cwd=cwd, start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            raise CommandFailed(
                f"timed out after {timeout} s\n" + describe(argv, "killed", _text(stdout), _text(stderr))
            ) from None
    finally:
        if out is not None:
            out.close()
    if out is not None:
        stdout = f"(written to {stdout_path})"
    if check and proc.returncode != 0:
        raise CommandFailed(describe(argv, proc.returncode, stdout, stderr))
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


# ---------------------------------------------------------------------------
# the cache, and what belongs to this session only

def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive flock on path (created if needed) for the with block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_lock = locked  # the name the chroot suite's helpers used
_session: dict[str, object] = {}
_session_lock = threading.Lock()  # the VM suite builds images in threads


def session_dir() -> Path:
    """This process's private work directory below the cache.

    It holds a lock for as long as the process lives; directories of
    sessions that died (their lock is free) are removed when the next session
    starts, and the own one at exit (unless $KEXEC_AUTO_TEST_KEEP is set).
    """
    with _session_lock:
        if "path" not in _session:
            _start_session()
        return _session["path"]  # type: ignore[return-value]


def _start_session() -> None:
    top = cache_dir() / "sessions"
    top.mkdir(parents=True, exist_ok=True)
    for old in top.iterdir():
        if not old.is_dir():
            continue
        with open(old.parent / f"{old.name}.lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live session
            if not mounts_under(old):
                run(["rm", "-rf", "--one-file-system", old], timeout=600, check=False)
                (old.parent / f"{old.name}.lock").unlink(missing_ok=True)
    path = Path(tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-") + f"{os.getpid()}-", dir=top))
    path.chmod(0o755)
    handle = open(top / f"{path.name}.lock", "a")
    fcntl.flock(handle, fcntl.LOCK_EX)
    _session.update(path=path, handle=handle)
    atexit.register(_end_session, path)


def _end_session(path: Path) -> None:
    if os.environ.get(KEEP_ENV):
        print(f"kept test session directory {path}")
        return
    for point in mounts_under(path):
        unmount(point)
    if not mounts_under(path):
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)
        (path.parent / f"{path.name}.lock").unlink(missing_ok=True)


def work_dir(name: str) -> Path:
    """A fresh directory of this session (a unique name below session_dir())."""
    return Path(tempfile.mkdtemp(prefix=f"{name}.", dir=session_dir()))


# ---------------------------------------------------------------------------
# pristine debootstrap trees

def apt_sources(suite: str, mirror: str = MIRROR, extra_suites: Sequence[str] = ()) -> str:
    """sources.list reaching the release, its stable updates and its security
    suite (and those of PREVIOUS_RELEASE, pinned down by previous_release_pin).

    >>> print(apt_sources("trixie"), end="")
    deb http://deb.debian.org/debian trixie main
    deb http://deb.debian.org/debian trixie-updates main
    deb http://security.debian.org/debian-security trixie-security main
    >>> apt_sources("forky").splitlines()[-1]
    'deb http://security.debian.org/debian-security trixie-security main'
    """
    lines = []
    for release in (suite, *filter(None, [PREVIOUS_RELEASE.get(suite)])):
        lines += [
            f"deb {mirror} {release} main",
            f"deb {mirror} {release}-updates main",
            f"deb {SECURITY_MIRROR} {release}-security main",
        ]
    lines += [f"deb {mirror} {extra} main" for extra in extra_suites]
    return "".join(line + "\n" for line in lines)


sources_list = apt_sources


def debootstrap_argv(suite: str, packages: Sequence[str], target: Path, mirror: str = MIRROR,
                     scripts: Path = Path("/usr/share/debootstrap/scripts"), arch: str = HOST_ARCH) -> list[str]:
    """The debootstrap command; a suite this debootstrap has no script for
    borrows the one DEBOOTSTRAP_SCRIPTS names.  A foreign arch is
    debootstrapped in one go: its second stage runs under qemu-user-static
    (enable_foreign()).

    >>> debootstrap_argv("forky", ["b", "a"], Path("/t"), scripts=Path("/nonexistent"))[-4:]
    ['forky', '/t', 'http://deb.debian.org/debian', '/nonexistent/sid']
    >>> debootstrap_argv("bookworm", ["a"], Path("/t"), scripts=Path("/nonexistent"))[-3:]
    ['bookworm', '/t', 'http://deb.debian.org/debian']
    >>> debootstrap_argv("trixie", [], Path("/t"), arch="arm64")[:3]
    ['debootstrap', '--variant=minbase', '--arch=arm64']
    """
    argv = ["debootstrap", "--variant=minbase"]
    if arch != HOST_ARCH:
        argv.append(f"--arch={arch}")
    if packages:
        argv.append("--include=" + ",".join(sorted(set(packages))))
    argv += [suite, str(target), mirror]
    if suite in DEBOOTSTRAP_SCRIPTS and not (scripts / suite).exists():
        argv.append(str(scripts / DEBOOTSTRAP_SCRIPTS[suite]))
    return argv


def tree_key(suite: str, packages: Sequence[str], mirror: str = MIRROR,
             extra_suites: Sequence[str] = (), apt_conf: str = "", arch: str = HOST_ARCH) -> str:
    """Cache key: any change of suite, architecture, mirror, package set or
    apt settings gives a new tree.

    >>> tree_key("bookworm", ["b", "a"]) == tree_key("bookworm", ["a", "b", "a"])
    True
    >>> tree_key("bookworm", ["a"]) == tree_key("trixie", ["a"])
    False
    >>> tree_key("trixie", ["a"]) == tree_key("trixie", ["a"], arch="arm64")
    False
    """
    text = "\n".join([TREE_FORMAT, suite, mirror, *sorted(set(packages)), "--", *extra_suites])
    if arch != HOST_ARCH:
        text += "\n--arch--\n" + arch
    if apt_conf:
        text += "\n--apt--\n" + apt_conf
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def cached_tree(
    suite: str,
    packages: Sequence[str] | None = None,
    *,
    mirror: str = MIRROR,
    extra_suites: Sequence[str] = (),
    apt_conf: str = "",
    cache: Path | None = None,
    timeout: float = DEBOOTSTRAP_TIMEOUT,
    arch: str = HOST_ARCH,
) -> Path:
    """Return a pristine minbase tree of suite with packages, building it once.

    apt_conf goes to /etc/apt/apt.conf.d/90kexec-auto-tests (with what the
    suite itself needs, SUITE_APT_CONF).  The tree is built in a temporary
    directory and renamed into place when complete, under a lock, so an
    interrupted or concurrent build never leaves a half tree behind a valid
    name.  Never modify the returned tree: work on a copy (throwaway_copy,
    copy_tree, derived_tree).
    """
    packages = BASE_PACKAGES if packages is None else packages
    conf = SUITE_APT_CONF.get(suite, "") + apt_conf
    previous = PREVIOUS_RELEASE.get(suite)
    trees = (cache or cache_dir()) / "trees"
    key_conf = conf + (f"--previous--\n{previous}\n" if previous else "")
    name = (f"{suite}{'' if arch == HOST_ARCH else '-' + arch}-"
            f"{tree_key(suite, packages, mirror, extra_suites, key_conf, arch)}")
    final = trees / name
    with locked(trees / f"{name}.lock"):
        if (final / "etc/apt/sources.list").is_file():
            return final
        scratch = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=trees))
        scratch.chmod(0o755)  # the tree's /: mkdtemp's 0700 would lock _apt out
        try:
            if arch != HOST_ARCH:
                enable_foreign(arch)
            run(debootstrap_argv(suite, packages, scratch, mirror, arch=arch), timeout=timeout)
            if conf:
                (scratch / "etc/apt/apt.conf.d/90kexec-auto-tests").write_text(conf)
            (scratch / "etc/apt/sources.list").write_text(apt_sources(suite, mirror, extra_suites))
            if previous:
                (scratch / "etc/apt/preferences.d/90kexec-auto-tests").write_text(previous_release_pin(previous))
            # debootstrap leaves its downloads behind; the tree need not carry them
            for deb in (scratch / "var/cache/apt/archives").glob("*.deb"):
                deb.unlink()
            scratch.rename(final)
        except BaseException:
            for point in mounts_under(scratch):  # a failed debootstrap may leave /proc mounted
                unmount(point)
            remove_tree(scratch)
            raise
    return final


def derived_tree(parent: Path, step: str, build: Callable[[Path], dict[str, object]],
                 ) -> tuple[Path, dict[str, object]]:
    """A cached tree made from parent by build(scratch_root), once.

    build returns facts about the result (JSON), kept beside the tree as
    <tree>.json and returned with it.  step names the build and must change
    whenever build does.  Built in a scratch copy under a lock, renamed into
    place, facts written last: a tree without its facts is rebuilt.
    """
    final = parent.parent / f"{parent.name}+{step}"
    facts = parent.parent / f"{final.name}.json"
    with locked(parent.parent / f"{final.name}.lock"):
        if facts.is_file():
            return final, json.loads(facts.read_text())
        if final.exists():
            remove_tree(final)
        scratch = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=parent.parent))
        try:
            scratch.rmdir()
            run(["cp", "-a", "--reflink=auto", parent, scratch], timeout=900)
            result = build(scratch)
            scratch.rename(final)
        except BaseException:
            for point in mounts_under(scratch):
                unmount(point)
            if scratch.exists():
                remove_tree(scratch)
            raise
        facts.write_text(json.dumps(result, indent=1) + "\n")
        return final, result


# ---------------------------------------------------------------------------
# mounts, always undone

def mounts_under(path: Path) -> list[str]:
    """Mount points at or below path, deepest first (the order to unmount)."""
    prefix = str(Path(path).resolve())
    found = []
    with open("/proc/self/mounts") as handle:
        for line in handle:
            point = line.split()[1].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def unmount(point: str | Path) -> None:
    """Unmount, retrying a busy mount, and lazily as a last resort."""
    for _ in range(10):
        if str(Path(point).resolve()) not in mounts_under(Path(point)):
            return
        if run(["umount", point], timeout=60, check=False).returncode == 0:
            return
        time.sleep(0.5)
    run(["umount", "--lazy", point], timeout=60)


def remove_tree(path: Path) -> None:
    """rm -rf that refuses to cross into anything still mounted (a bound /dev!)."""
    left = mounts_under(path)
    if left:
        raise CommandFailed(f"refusing to delete {path}: still mounted: {left}")
    run(["rm", "-rf", "--one-file-system", path], timeout=600)


def copy_tree(src: Path, dst: Path) -> None:
    """dst becomes a full copy of src (reflinked where the file system can)."""
    if dst.exists():
        remove_tree(dst)
    run(["cp", "-a", "--reflink=auto", src, dst], timeout=900)


@contextlib.contextmanager
def throwaway_copy(tree: Path, workdir: Path, plain: bool = False) -> Iterator[Path]:
    """Yield a writable copy of tree below workdir; tree itself stays pristine.

    An overlayfs mount costs nothing; where overlayfs is refused, or with
    ``plain`` (a tree whose / is no mount point, as debootstrap leaves it),
    cp -a.  The copy is unmounted and deleted on exit.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    upper, work, merged = workdir / "upper", workdir / "work", workdir / "root"
    for d in (upper, work, merged):
        d.mkdir()
    overlay = not plain and run(
        ["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={tree},upperdir={upper},workdir={work}", merged],
        timeout=60, check=False,
    ).returncode == 0
    if not overlay:
        merged.rmdir()
        run(["cp", "-a", "--", tree, merged], timeout=600)
    try:
        yield merged
    finally:
        for point in mounts_under(merged):
            unmount(point)
        remove_tree(workdir)


# ---------------------------------------------------------------------------
# downloaded packages, shared per suite

def apt_archive_cache(suite: str, cache: Path | None = None) -> Path:
    """The suite's shared directory of downloaded .debs (one per suite: the
    _apt user that owns partial/ may differ between releases)."""
    path = (cache or cache_dir()) / "apt-archives" / suite
    (path / "partial").mkdir(parents=True, exist_ok=True)
    return path


def _link_debs(src: Path, dst: Path) -> int:
    linked = 0
    for deb in src.glob("*.deb"):
        target = dst / deb.name
        if target.exists():
            continue
        try:
            os.link(deb, target)
        except OSError:
            shutil.copy2(deb, target)
        linked += 1
    return linked


@dataclass
class Chroot:
    """Commands inside a Debian tree, run with chroot(8).

    Use inside `with chroot.mounted():` so /proc, /sys and /dev exist.  With
    archives (a suite's apt_archive_cache()), apt in the tree finds every
    package downloaded before and adds what it downloads.
    """

    root: Path
    archives: Path | None = None
    timeout: float = 900

    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "DEBCONF_NONINTERACTIVE_SEEN": "true",
        "LC_ALL": "C.UTF-8",
        "HOME": "/root",
        "TERM": "dumb",
    }

    def path(self, inside: str) -> Path:
        """Host path of a path inside the tree."""
        return self.root / inside.lstrip("/")

    @contextlib.contextmanager
    def mounted(self, binds: Mapping[Path, str] = {}) -> Iterator["Chroot"]:
        """Mount /proc, /sys, /dev, /dev/pts (and binds: host dir -> path inside).

        A policy-rc.d forbids starting services while mounted.  Everything
        mounted here is unmounted on exit, whatever happened.
        """
        policy = self.path("/usr/sbin/policy-rc.d")
        mounted: list[Path] = []
        private: Path | None = None
        try:
            plan: list[tuple[list[str], Path]] = [
                (["-t", "proc", "proc"], self.path("/proc")),
                (["-t", "sysfs", "sysfs"], self.path("/sys")),
                (["--bind", "/dev"], self.path("/dev")),
                (["--bind", "/dev/pts"], self.path("/dev/pts")),
            ]
            if self.archives is not None:
                private = work_dir("archives")
                private.chmod(0o755)
                (private / "partial").mkdir()
                with locked(self.archives.parent / f"{self.archives.name}.lock"):
                    _link_debs(self.archives, private)
                plan.append((["--bind", str(private)], self.path("/var/cache/apt/archives")))
            plan += [(["--bind", str(src)], self.path(dst)) for src, dst in binds.items()]
            for args, target in plan:
                target.mkdir(parents=True, exist_ok=True)
                run(["mount", *args, target], timeout=60)
                mounted.append(target)
            policy.write_text("#!/bin/sh\n# kexec-auto tests: start no service in this tree\nexit 101\n")
            policy.chmod(0o755)
            yield self
        finally:
            policy.unlink(missing_ok=True)
            for target in reversed(mounted):
                unmount(target)
            if private is not None and self.archives is not None:
                with locked(self.archives.parent / f"{self.archives.name}.lock"):
                    _link_debs(private, self.archives)
                if not mounts_under(private):
                    run(["rm", "-rf", "--one-file-system", private], timeout=600, check=False)

    def run(self, cmd: str | Sequence[str], *, timeout: float | None = None, check: bool = True,
            input: str | None = None, env: Mapping[str, str] = {}) -> subprocess.CompletedProcess[str]:
        """Run cmd (a shell string, or an argv list) inside the tree."""
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        full_env = {**self.env, **env}
        return run(
            ["chroot", self.root, "/usr/bin/env", "-i",
             *(f"{k}={v}" for k, v in full_env.items()), *argv],
            timeout=timeout or self.timeout, check=check, input=input,
        )

    def sh(self, script: str, timeout: float = 900) -> str:
        """Run a shell script with `sh -e` inside the tree; its standard output."""
        return self.run(["/bin/sh", "-ec", script], timeout=timeout).stdout

    def apt_install(self, *args: str, timeout: float = 900) -> str:
        return self.sh("apt-get install -y -q -o Dpkg::Options::=--force-confdef "
                       "-o Dpkg::Options::=--force-confold " + " ".join(args), timeout=timeout)

    def read(self, inside: str) -> str | None:
        """Content of a file inside the tree, None when absent."""
        try:
            return self.path(inside).read_text()
        except FileNotFoundError:
            return None

    def add_local_repo(self, repo: Path, inside: str = "/srv/kexec-auto-test-repo") -> str:
        """Copy a flat repository into the tree and add it to apt's sources."""
        target = self.path(inside)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(repo, target)
        for p in [target, *target.iterdir()]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        self.path("/etc/apt/sources.list.d/kexec-auto-test.list").write_text(
            f"deb [trusted=yes] file:{inside} ./\n"
        )
        return inside


def local_repo(debs: Sequence[Path], dest: Path) -> Path:
    """A flat apt repository in dest holding debs (`deb [trusted=yes] file:dest ./`)."""
    dest.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        shutil.copy2(deb, dest / Path(deb).name)
    run(["apt-ftparchive", "packages", "."], cwd=dest, timeout=120,
        stdout_path=dest / "Packages")
    run(["apt-ftparchive", "release", "."], cwd=dest, timeout=120,
        stdout_path=dest / "Release.tmp")
    (dest / "Release.tmp").rename(dest / "Release")
    return dest


# ---------------------------------------------------------------------------
# file lists, to prove a purge leaves nothing behind

#: Paths that apt, dpkg, kernels and the chroot itself legitimately change.
VOLATILE = (
    "/proc", "/sys", "/dev", "/run", "/tmp", "/var/tmp",
    "/boot", "/lib/modules", "/usr/lib/modules",
    "/var/lib/apt", "/var/lib/dpkg", "/var/cache/apt", "/var/cache/debconf",
    "/var/cache/ldconfig", "/etc/ld.so.cache", "/var/log",
    "/var/lib/initramfs-tools", "/var/lib/linux-boot-probes",
    "/var/lib/systemd/deb-systemd-helper-enabled", "/var/lib/systemd/deb-systemd-user-helper-enabled",
    "/usr/sbin/policy-rc.d", "/srv/kexec-auto-test-repo", "/etc/apt/sources.list.d",
    "/vmlinuz", "/vmlinuz.old", "/initrd.img", "/initrd.img.old",
)


def file_list(root: Path, volatile: Sequence[str] = VOLATILE) -> set[str]:
    """Every path inside root (as seen from inside), minus the volatile ones."""
    skip = {str(root / v.lstrip("/")) for v in volatile}
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip]
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            if full not in skip:
                found.add("/" + os.path.relpath(full, root))
    return found


# ---------------------------------------------------------------------------
# the chroot suite's trees

#: What the chroot test needs in every tree besides minbase: the kernel hook
#: machinery (initramfs-tools, linux-base, kmod), systemd (systemd-detect-virt)
#: and kexec-tools, so that /etc/default/kexec exists before kexec-auto arrives.
BASE_PACKAGES = (
    "busybox",
    "initramfs-tools",
    "kexec-tools",
    "kmod",
    "linux-base",
    "systemd-sysv",
    "udev",
    "zstd",
)


# ---------------------------------------------------------------------------
# VM base trees: a provider kernel installed, two newer ones downloaded

VM_PACKAGES = (
    "apt", "initramfs-tools", "kexec-tools", "kmod", "linux-base", "python3",
    "systemd-sysv", "udev", "zstd",
)
#: Kernels recommend apparmor, whose profile loading costs seconds per boot
#: under TCG and has nothing to do with kexec: keep images minimal.
VM_APT_CONF = 'APT::Install-Recommends "false";\n'

#: Kernel series used per suite; the three newest cloud kernels of the series
#: found in the archive become provider < older < newest.  Debian's
#: linux-image-*-cloud-{arch} packages carry the signed images.
KERNEL_SERIES = {
    "bookworm": r"6\.1\.0-\d+-cloud-{arch}",
    "trixie": r"6\.12\.\d+\+deb13(\.\d+)?-cloud-{arch}",
    # testing carries one kernel release at a time: the provider's and the
    # older kernel are trixie's (PREVIOUS_RELEASE), the newest is forky's
    "forky": r"(6\.12\.\d+\+deb13(\.\d+)?|\d+\.\d+\.\d+\+deb14(\.\d+)?)-cloud-{arch}",
}


def kernel_series(suite: str, arch: str = HOST_ARCH) -> str:
    r"""The kernel releases of suite for arch, as a regular expression.

    >>> kernel_series("bookworm", "arm64")
    '6\\.1\\.0-\\d+-cloud-arm64'
    """
    return KERNEL_SERIES[suite].replace("{arch}", arch)


@dataclass(frozen=True)
class Arch:
    """What a VM of one Debian architecture (ARCHES' key) needs from qemu and its tree."""
    qemu: str                  # qemu's system emulator
    machine: str               # -machine for -kernel boots ("" for qemu's default)
    cpu: str                   # -cpu ("" for qemu's default)
    console: str               # the serial console's device name
    layouts: tuple[str, ...]   # the disk layouts booted on it
    #: UEFI layout -> (code, variable store template, -machine)
    firmware: Mapping[str, tuple[Path, Path, str]]
    grub_efi: str = ""         # Debian's GRUB EFI package, its platform and image name
    grub_platform: str = ""
    efi_boot: str = ""         # the removable media path's file name
    grub_serial: bool = True   # GRUB's PC serial port (else the firmware's console)
    binfmt: str = ""           # qemu-user-static's binfmt_misc entry, for a foreign tree
    #: how much longer its boots take under TCG than amd64's (timeouts)
    slowdown: float = 1.0


OVMF = Path("/usr/share/OVMF")
AAVMF = Path("/usr/share/AAVMF")
ARCHES = {
    "amd64": Arch("qemu-system-x86_64", "", "", "ttyS0", ("provider", "bios", "uefi", "secureboot"), {
        "uefi": (OVMF / "OVMF_CODE_4M.fd", OVMF / "OVMF_VARS_4M.fd", "q35"),
        "secureboot": (OVMF / "OVMF_CODE_4M.secboot.fd", OVMF / "OVMF_VARS_4M.ms.fd", "q35,smm=on"),
    }, "grub-efi-amd64", "x86_64-efi", "BOOTX64.EFI"),
    # qemu's virt board: PL011 serial (ttyAMA0), virtio on PCIe, a device
    # tree from qemu (-kernel) or ACPI from AAVMF.  cortex-a57 is emulated
    # faster than "max" and every Debian arm64 kernel runs on it.
    "arm64": Arch("qemu-system-aarch64", "virt", "cortex-a57", "ttyAMA0", ("provider", "uefi"), {
        "uefi": (AAVMF / "AAVMF_CODE.fd", AAVMF / "AAVMF_VARS.fd", "virt"),
    }, "grub-efi-arm64", "arm64-efi", "BOOTAA64.EFI", slowdown=2.0,  # 85 s a boot against amd64's 50 (trixie)
        grub_serial=False, binfmt="qemu-aarch64"),
}
#: the guest's command line on the provider path, per architecture
APPENDS = {name: f"root=/dev/vda rw console={arch.console} panic=5" for name, arch in ARCHES.items()}

LAYOUTS = ARCHES[HOST_ARCH].layouts


def boot_packages(layout: str, arch: str = HOST_ARCH) -> tuple[str, ...]:
    """Debian packages of each layout's boot loader, installed in the guest
    as the installer leaves them on a real machine of that kind.

    >>> boot_packages("uefi", "arm64")
    ('grub-efi-arm64', 'efibootmgr', 'dosfstools')
    """
    grub = ARCHES[arch].grub_efi
    return {
        "provider": (),
        "bios": ("grub-pc",),
        "uefi": (grub, "efibootmgr", "dosfstools"),
        "secureboot": (grub, f"{grub}-signed", "shim-signed", "efibootmgr", "dosfstools", "mokutil"),
    }[layout]


BASE_STEP = "kernels1"
LAYOUT_STEP = "1"  # bump when _install_boot_loader changes


def enable_foreign(arch: str) -> None:
    """Make this machine run arch's programs (a foreign tree's chroot):
    qemu-user-static's binfmt_misc entry, mounted and enabled if it is not.
    Raises BuildError, saying what is missing, when it cannot."""
    qemu = ARCHES[arch].binfmt
    entry = Path("/proc/sys/fs/binfmt_misc") / qemu
    if entry.is_file() and entry.read_text().startswith("enabled"):
        return
    if not Path("/proc/sys/fs/binfmt_misc/register").exists():
        run(["mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc"], timeout=60)
    if shutil.which("update-binfmts") is None or not Path(f"/usr/share/binfmts/{qemu}").is_file():
        raise BuildError(f"an {arch} tree needs qemu-user-static and binfmt-support (.ci/deps installs them)")
    if not entry.is_file():
        run(["update-binfmts", "--import", qemu], timeout=60, check=False)
    run(["update-binfmts", "--enable", qemu], timeout=60)
    if not (entry.is_file() and entry.read_text().startswith("enabled")):
        raise BuildError(f"binfmt_misc has no enabled {qemu} entry: {arch} programs cannot run here")


@dataclass(frozen=True)
class BaseTree:
    """A cached VM tree: the provider kernel installed (and, for a firmware
    layout, its boot loader's packages); older and newest only downloaded."""
    suite: str
    path: Path
    provider: str
    older: str
    newest: str
    layout: str = "provider"
    arch: str = HOST_ARCH

    @property
    def archives(self) -> Path:
        return apt_archive_cache(self.suite)

    @property
    def kernel(self) -> Path:
        """The provider kernel, for qemu -kernel (the layout "provider")."""
        return self.path / f"boot/vmlinuz-{self.provider}"

    @property
    def initrd(self) -> Path:
        return self.path / f"boot/initrd.img-{self.provider}"


def split_target(target: str) -> tuple[str, str]:
    """(suite, arch) of a VM target: a suite, on HOST_ARCH, or suite-arch.

    >>> split_target("trixie"), split_target("bookworm-arm64")
    (('trixie', 'amd64'), ('bookworm', 'arm64'))
    """
    suite, _, arch = target.partition("-")
    if arch and arch not in ARCHES:
        raise ValueError(f"unknown architecture {arch!r} in {target!r}; known: {', '.join(ARCHES)}")
    return suite, arch or HOST_ARCH


def sort_releases(releases: Sequence[str]) -> list[str]:
    """Kernel releases oldest first, ordered by linux-base's linux-version."""
    return run(["linux-version", "sort", *releases]).stdout.split()


def pick_kernels(package_names: Sequence[str], series: str) -> tuple[str, str, str]:
    """(provider, older, newest): the three newest releases of the series.

    >>> pick_kernels(["linux-image-6.1.0-9-cloud-amd64", "linux-image-6.1.0-10-cloud-amd64",
    ...               "linux-image-6.1.0-8-cloud-amd64", "linux-image-6.1.0-10-cloud-amd64-unsigned",
    ...               "linux-image-cloud-amd64"], r"6\\.1\\.0-\\d+-cloud-amd64")
    ('6.1.0-8-cloud-amd64', '6.1.0-9-cloud-amd64', '6.1.0-10-cloud-amd64')
    """
    pattern = re.compile(rf"linux-image-({series})")
    releases = [m.group(1) for name in package_names if (m := pattern.fullmatch(name))]
    ordered = sort_releases(sorted(set(releases)))
    if len(ordered) < 3:
        raise BuildError(f"need 3 kernels of {series} in the archive, found {ordered}")
    provider, older, newest = ordered[-3:]
    return provider, older, newest


def _install_provider(suite: str, arch: str) -> Callable[[Path], dict[str, object]]:
    def build(root: Path) -> dict[str, object]:
        chroot = Chroot(root, apt_archive_cache(suite))
        with chroot.mounted():
            chroot.sh("apt-get update -q", timeout=600)
            names = chroot.sh("apt-cache pkgnames linux-image-").split()
            provider, older, newest = pick_kernels(names, kernel_series(suite, arch))
            chroot.apt_install(f"linux-image-{provider}")
            # fetch the other kernels now so that scenario builds need no network for them
            chroot.sh(f"apt-get install -y -q --download-only linux-image-{older} linux-image-{newest}")
        return {"provider": provider, "older": older, "newest": newest}
    return build


def base_tree(suite: str, layout: str = "provider", arch: str = HOST_ARCH) -> BaseTree:
    """The cached VM tree of suite for layout on arch, built once."""
    if layout not in ARCHES[arch].layouts:
        raise ValueError(f"unknown disk layout {layout!r} on {arch}; known: {', '.join(ARCHES[arch].layouts)}")
    pristine = cached_tree(suite, VM_PACKAGES, apt_conf=VM_APT_CONF, arch=arch)
    path, facts = derived_tree(pristine, BASE_STEP, _install_provider(suite, arch))
    if layout != "provider":
        path, _ = derived_tree(path, layout + LAYOUT_STEP,
                               lambda root: _install_boot_loader(root, suite, layout, arch))
    return BaseTree(suite, path, str(facts["provider"]), str(facts["older"]), str(facts["newest"]), layout, arch)


# ---------------------------------------------------------------------------
# boot loaders in the guest

ROOT_UUID = "6b657863-6175-746f-2d72-6f6f74000001"  # one per image is all a disk needs
ESP_VOLUME_ID = "4b410001"  # FAT volume id: UUID=4B41-0001
ESP_MB = 64
SECTOR = 512
START_SECTOR = 2048  # partitions start at 1 MiB, as every partitioner does

#: The disk the guest sees per layout: (root device, GRUB's name for it, partition map)
DISKS = {
    "bios": ("/dev/vda1", "hd0,msdos1", "msdos"),
    "uefi": ("/dev/vda2", "hd0,gpt2", "gpt"),
    "secureboot": ("/dev/vda2", "hd0,gpt2", "gpt"),
}

#: grub-probe, while the tree is built: the tree is not on its disk yet, so
#: grub-mkconfig (update-grub, run by every kernel install through
#: /etc/kernel/postinst.d/zz-update-grub) is told what the real grub-probe
#: will find in the guest.  The real one is put back before the disk is made.
GRUB_PROBE_STANDIN = """#!/bin/sh
# kexec-auto tests, image build only: what grub-probe will find on the guest's disk
target=device
while [ $# -gt 0 ]; do
    case $1 in
        --target=*) target=${{1#--target=}} ;;
        -t) shift; target=$1 ;;
    esac
    shift
done
case $target in
    device) echo {device} ;;
    disk) echo /dev/vda ;;
    fs) echo ext2 ;;
    fs_uuid) echo {uuid} ;;
    fs_label) echo root ;;
    partmap) echo {partmap} ;;
    abstraction) ;;
    drive) echo '({drive})' ;;
    compatibility_hint) echo {drive} ;;
    hints_string) echo '--hint-bios={drive} --hint-efi={drive} --hint-baremetal=ahci0,{part}' ;;
    partuuid) echo {uuid} ;;
    *) echo "grub-probe (image build stand-in): no answer for --target=$target" >&2; exit 1 ;;
esac
"""

#: grub-install, while the tree is built: the boot loader goes onto the image
#: file later (install_boot_loader_files, make_image); never onto a host disk.
GRUB_INSTALL_STANDIN = """#!/bin/sh
echo "grub-install (image build stand-in): not installing onto a host device: $*" >&2
exit 0
"""

STANDINS = {"/usr/sbin/grub-probe": GRUB_PROBE_STANDIN, "/usr/sbin/grub-install": GRUB_INSTALL_STANDIN}


def _standin_text(path: str, layout: str) -> str:
    device, drive, partmap = DISKS[layout]
    return STANDINS[path].format(device=device, drive=drive, partmap=partmap, uuid=ROOT_UUID,
                                 part=drive.split(",")[1])


def _install_boot_loader(root: Path, suite: str, layout: str, arch: str = HOST_ARCH) -> dict[str, object]:
    """Debian's boot loader packages for layout, installed with grub-install
    and grub-probe replaced by stand-ins (kept in the cached tree: the
    scenario's kernel installs run update-grub; restore_grub_tools() puts
    the real ones back before the image is made)."""
    chroot = Chroot(root, apt_archive_cache(suite))
    for path in STANDINS:
        chroot.run(["dpkg-divert", "--local", "--rename", "--divert", path + ".real", "--add", path])
        chroot.path(path).parent.mkdir(parents=True, exist_ok=True)
        chroot.path(path).write_text(_standin_text(path, layout))
        chroot.path(path).chmod(0o755)
    with chroot.mounted():
        chroot.run(["debconf-set-selections"], input=(
            "grub-pc grub-pc/install_devices multiselect \n"
            "grub-pc grub-pc/install_devices_empty boolean true\n"
            f"{ARCHES[arch].grub_efi} grub2/update_nvram boolean false\n"
            f"{ARCHES[arch].grub_efi}-signed grub2/update_nvram boolean false\n"))
        chroot.sh("apt-get update -q", timeout=600)
        chroot.apt_install(*boot_packages(layout, arch))
        chroot.path("/boot/grub").mkdir(parents=True, exist_ok=True)
        if layout != "bios":
            chroot.path("/boot/efi").mkdir(parents=True, exist_ok=True)
    return {"packages": list(boot_packages(layout, arch))}


def grub_settings(timeout: int, default: str, cmdline: str, serial: bool = True) -> str:
    """/etc/default/grub.d/ snippet: timeout, pinned default entry, serial
    console (serial=False: the firmware's console, which AAVMF puts on the
    serial port; GRUB's serial ports are PC ones).

    >>> print(grub_settings(5, "6.1.0-9-cloud-amd64", "console=ttyS0"), end="")
    # kexec-auto tests: the firmware boot loader of a machine whose provider picks the kernel
    GRUB_TIMEOUT=5
    GRUB_DEFAULT="gnulinux-advanced-6b657863-6175-746f-2d72-6f6f74000001>gnulinux-6.1.0-9-cloud-amd64-advanced-6b657863-6175-746f-2d72-6f6f74000001"
    GRUB_CMDLINE_LINUX="console=ttyS0"
    GRUB_CMDLINE_LINUX_DEFAULT=""
    GRUB_TERMINAL=serial
    GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
    GRUB_DISABLE_OS_PROBER=true
    """
    entry = f"gnulinux-advanced-{ROOT_UUID}>gnulinux-{default}-advanced-{ROOT_UUID}"
    return (
        "# kexec-auto tests: the firmware boot loader of a machine whose provider picks the kernel\n"
        f"GRUB_TIMEOUT={timeout}\n"
        f'GRUB_DEFAULT="{entry}"\n'
        f'GRUB_CMDLINE_LINUX="{cmdline}"\n'
        'GRUB_CMDLINE_LINUX_DEFAULT=""\n'
        + ("GRUB_TERMINAL=serial\n"
           'GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"\n' if serial else "GRUB_TERMINAL=console\n")
        + "GRUB_DISABLE_OS_PROBER=true\n"
    )


def configure_grub(chroot: Chroot, default: str, timeout: int, cmdline: str, arch: str = HOST_ARCH) -> str:
    """Pin GRUB's default to the kernel release default (a provider's
    choice), set its timeout, run update-grub; then put the real grub-probe
    and grub-install back.  Returns the generated grub.cfg."""
    conf = chroot.path("/etc/default/grub.d/kexec-auto-tests.cfg")
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(grub_settings(timeout, default, cmdline, serial=ARCHES[arch].grub_serial))
    chroot.run(["update-grub"])
    chroot.run(["grub-editenv", "/boot/grub/grubenv", "create"])
    restore_grub_tools(chroot)
    return chroot.read("/boot/grub/grub.cfg") or ""


def restore_grub_tools(chroot: Chroot) -> None:
    for path in STANDINS:
        chroot.path(path).unlink(missing_ok=True)
        chroot.run(["dpkg-divert", "--local", "--rename", "--remove", path])


def install_boot_loader_files(chroot: Chroot, layout: str, stage: Path, arch: str = HOST_ARCH) -> dict[str, Path]:
    """What grub-install would put on the disk, made with the guest's own GRUB
    into stage (a host directory): {"esp/<path>": file} for the ESP, or
    "boot.img"/"core.img" for BIOS.  GRUB's modules go to /boot/grub in the
    tree, as grub-install copies them."""
    stage.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    if layout == "bios":
        platform = "i386-pc"
        shutil.copytree(chroot.path(f"/usr/lib/grub/{platform}"), chroot.path(f"/boot/grub/{platform}"),
                        dirs_exist_ok=True)
        chroot.run(["grub-mkimage", "-O", platform, "-d", f"/usr/lib/grub/{platform}",
                    "-o", "/tmp/core.img", "-p", f"({DISKS[layout][1]})/boot/grub",
                    "biosdisk", "part_msdos", "ext2"])
        shutil.move(chroot.path("/tmp/core.img"), stage / "core.img")
        shutil.copy2(chroot.path(f"/usr/lib/grub/{platform}/boot.img"), stage / "boot.img")
        return {"boot.img": stage / "boot.img", "core.img": stage / "core.img"}
    esp_cfg = stage / "grub.cfg"
    esp_cfg.write_text(f"search.fs_uuid {ROOT_UUID} root {DISKS[layout][1]}\n"
                       "set prefix=($root)'/boot/grub'\n"
                       "configfile $prefix/grub.cfg\n")
    out["esp/EFI/debian/grub.cfg"] = esp_cfg
    if layout == "uefi":
        machine = ARCHES[arch]
        platform = machine.grub_platform
        grub = "grub" + machine.efi_boot.removeprefix("BOOT").lower()  # grubx64.efi, grubaa64.efi
        shutil.copytree(chroot.path(f"/usr/lib/grub/{platform}"), chroot.path(f"/boot/grub/{platform}"),
                        dirs_exist_ok=True)
        chroot.run(["grub-mkimage", "-O", platform, "-d", f"/usr/lib/grub/{platform}",
                    "-o", f"/tmp/{grub}", "-p", "/EFI/debian",
                    "part_gpt", "fat", "ext2", "search", "search_fs_uuid", "normal", "configfile",
                    "linux", "boot", "echo", "gzio", "serial", "terminal", "test", "efi_gop"])
        shutil.move(chroot.path(f"/tmp/{grub}"), stage / grub)
        out[f"esp/EFI/BOOT/{machine.efi_boot}"] = stage / grub
        out[f"esp/EFI/debian/{grub}"] = stage / grub
    else:  # secureboot: shim (signed by Microsoft) -> Debian's signed GRUB
        shim = chroot.path("/usr/lib/shim/shimx64.efi.signed")
        mok = chroot.path("/usr/lib/shim/mmx64.efi.signed")
        grub = chroot.path("/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed")
        for name, src in (("BOOTX64.EFI", shim), ("mmx64.efi", mok), ("grubx64.efi", grub)):
            shutil.copy2(src, stage / name)
            out[f"esp/EFI/BOOT/{name}"] = stage / name
            out[f"esp/EFI/debian/{name.replace('BOOTX64.EFI', 'shimx64.efi')}"] = stage / name
    return out


# ---------------------------------------------------------------------------
# guests and disks

def configure_guest(tree: Path, layout: str = "provider", arch: str = HOST_ARCH) -> None:
    """What every test guest needs to boot from its disk quietly and reproducibly."""
    if layout == "provider":
        fstab = "/dev/vda / ext4 rw,errors=remount-ro 0 1\n"
    else:
        fstab = f"UUID={ROOT_UUID} / ext4 errors=remount-ro 0 1\n"
        if layout != "bios":
            # systemd's default 90 s wait for the device was too short for udev
            # in a TCG guest on a busy host: boot-efi.mount failed, emergency mode
            fstab += (f"UUID={ESP_VOLUME_ID[:4].upper()}-{ESP_VOLUME_ID[4:].upper()} /boot/efi vfat "
                      "umask=0077,x-systemd.device-timeout=10min 0 1\n")
    (tree / "etc/fstab").write_text(fstab)
    (tree / "etc/hostname").write_text("ka-vm\n")
    (tree / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    masked = tree / "etc/systemd/system"
    masked.mkdir(parents=True, exist_ok=True)
    # The serial console belongs to the stage runner; a getty there would only add noise.
    for unit in (f"serial-getty@{ARCHES[arch].console}.service", "getty@tty1.service",
                 "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
                 "fstrim.timer", "man-db.timer"):
        link = masked / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")


def _used_mb(tree: Path) -> int:
    return int(run(["du", "-s", "--block-size=1M", "--one-file-system", tree]).stdout.split()[0])


def make_disk(tree: Path, image: Path, headroom_mb: int = 1536) -> None:
    """ext4 image holding tree, with room for what the guest installs."""
    image.unlink(missing_ok=True)
    run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", tree, image, f"{_used_mb(tree) + headroom_mb}M"],
        timeout=600)


def partition_script(layout: str, root_sectors: int) -> str:
    """sfdisk input for layout: msdos with one root partition (BIOS), or GPT
    with an ESP and a root partition (UEFI).

    >>> print(partition_script("bios", 4096), end="")
    label: dos
    unit: sectors
    start=2048, size=4096, type=83, bootable
    >>> print(partition_script("uefi", 4096), end="")
    label: gpt
    unit: sectors
    first-lba: 2048
    start=2048, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI System Partition"
    start=133120, size=4096, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="root"
    """
    if layout == "bios":
        return f"label: dos\nunit: sectors\nstart={START_SECTOR}, size={root_sectors}, type=83, bootable\n"
    esp = ESP_MB * 1024 * 1024 // SECTOR
    return (
        "label: gpt\nunit: sectors\nfirst-lba: 2048\n"
        f'start={START_SECTOR}, size={esp}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI System Partition"\n'
        f'start={START_SECTOR + esp}, size={root_sectors}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="root"\n'
    )


def bios_boot_sectors(mbr: bytes, boot_img: bytes, core_img: bytes, core_sector: int = 1) -> tuple[bytes, bytes]:
    """(MBR, core image) as grub-bios-setup writes them for a core image
    embedded right after the MBR: boot.img with the disk's partition table,
    the core's sector and no drive check; the core's first sector
    (diskboot.img) with the block list of the rest.

    >>> boot = bytes(512); core = bytes(512 * 3)
    >>> new_mbr, new_core = bios_boot_sectors(b"\\1" * 512, boot, core)
    >>> new_mbr[0x1b8:0x1fe] == b"\\1" * (0x1fe - 0x1b8), new_mbr[0x66:0x68], new_mbr[0x5c]
    (True, b'\\x90\\x90', 1)
    >>> struct.unpack("<QHH", new_core[500:512])
    (2, 2, 2080)
    """
    if len(boot_img) != SECTOR or len(mbr) != SECTOR:
        raise BuildError("boot.img and the MBR must be one sector each")
    boot = bytearray(boot_img)
    boot[0x03:0x5a] = mbr[0x03:0x5a]        # BIOS parameter block
    boot[0x1b8:0x1fe] = mbr[0x1b8:0x1fe]    # disk signature and partition table
    boot[0x1fe:0x200] = b"\x55\xaa"
    boot[0x5c:0x64] = struct.pack("<Q", core_sector)  # where the core image starts
    boot[0x64] = 0xFF                        # boot drive: the one the BIOS booted
    boot[0x66:0x68] = b"\x90\x90"            # hard disk: skip the floppy drive check
    core = bytearray(core_img + b"\0" * (-len(core_img) % SECTOR))
    sectors = len(core) // SECTOR
    # diskboot.img loads the rest of the core: one block list entry, then a terminator
    core[SECTOR - 12:SECTOR] = struct.pack("<QHH", core_sector + 1, sectors - 1, 0x820)
    core[SECTOR - 24:SECTOR - 12] = bytes(12)
    return bytes(boot), bytes(core)


def make_image(tree: Path, image: Path, layout: str, boot_files: Mapping[str, Path] | None = None,
               headroom_mb: int = 1536) -> None:
    """The guest's disk for layout.  provider: a bare ext4 file system.
    Otherwise a partitioned disk: root made by mkfs.ext4 -d, the ESP by
    mkfs.fat -C + mtools, both put in place with dd, and GRUB's boot sectors
    for BIOS; all on the image file, with no loop device."""
    if layout == "provider":
        make_disk(tree, image, headroom_mb)
        return
    boot_files = dict(boot_files or {})
    root_mb = _used_mb(tree) + headroom_mb
    root_sectors = root_mb * 1024 * 1024 // SECTOR
    esp_sectors = 0 if layout == "bios" else ESP_MB * 1024 * 1024 // SECTOR
    root_start = START_SECTOR + esp_sectors
    total = (root_start + root_sectors + START_SECTOR) * SECTOR  # 1 MiB at the end: GPT's backup
    root_fs = image.with_name(image.name + ".root")
    image.unlink(missing_ok=True)
    try:
        run(["mkfs.ext4", "-q", "-F", "-L", "root", "-U", ROOT_UUID, "-d", tree, root_fs, f"{root_mb}M"],
            timeout=600)
        with open(image, "wb") as handle:
            handle.truncate(total)
        run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", image],
            input=partition_script(layout, root_sectors), timeout=60)
        run(["dd", f"if={root_fs}", f"of={image}", "bs=1M", f"seek={root_start * SECTOR // (1024 * 1024)}",
             "conv=notrunc,sparse", "status=none"], timeout=600)
    finally:
        root_fs.unlink(missing_ok=True)
    if layout == "bios":
        with open(image, "r+b") as disk:
            mbr = disk.read(SECTOR)
            boot, core = bios_boot_sectors(mbr, boot_files["boot.img"].read_bytes(),
                                           boot_files["core.img"].read_bytes())
            if len(core) > (START_SECTOR - 1) * SECTOR:
                raise BuildError(f"GRUB's core image ({len(core)} bytes) does not fit before the first partition")
            disk.seek(0)
            disk.write(boot)
            disk.write(core)
        return
    esp = image.with_name(image.name + ".esp")
    esp.unlink(missing_ok=True)
    try:
        run(["mkfs.fat", "-C", "-i", ESP_VOLUME_ID, "-n", "EFI", esp, str(ESP_MB * 1024)], timeout=60)
        dirs = sorted({str(Path(name).parent) for name in boot_files if name.startswith("esp/")})
        made: set[str] = set()
        for d in dirs:
            parts = Path(d.removeprefix("esp")).parts[1:]
            for i in range(1, len(parts) + 1):
                sub = "/".join(parts[:i])
                if sub not in made:
                    run(["mmd", "-i", esp, "::/" + sub], timeout=60)
                    made.add(sub)
        for name, src in sorted(boot_files.items()):
            if name.startswith("esp/"):
                run(["mcopy", "-i", esp, src, "::/" + name.removeprefix("esp/")], timeout=60)
        run(["dd", f"if={esp}", f"of={image}", "bs=1M", f"seek={START_SECTOR * SECTOR // (1024 * 1024)}",
             "conv=notrunc", "status=none"], timeout=120)
    finally:
        esp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------
# qemu, per layout

def firmware_vars(layout: str, dest: Path, arch: str = HOST_ARCH) -> Path | None:
    """A VM's own copy of the firmware's variable store (None without UEFI)."""
    firmware = ARCHES[arch].firmware
    if layout not in firmware:
        return None
    shutil.copy2(firmware[layout][1], dest)
    return dest


def qemu_command(layout: str, disk: Path, log: Path, *, kernel: Path | None = None,
                 initrd: Path | None = None, append: str = "", vars_file: Path | None = None,
                 memory: int = 1536, extra: Sequence[str] = (), reset_ends: bool = True,
                 nic: str = "none", arch: str = HOST_ARCH) -> list[str]:
    """The qemu command line of one boot of disk under layout.

    Always TCG with one CPU (KVM does not work here, -smp 2 double-faults
    under TCG), -no-reboot so that a firmware reset ends qemu while a kexec
    keeps it running (reset_ends=False: a reset boots the same -kernel or
    firmware again, as a real machine does), the serial console appended to
    log.  provider boots kernel/initrd/append with -kernel; the others boot
    the disk through their firmware.  nic is qemu's -nic (no network unless
    given).  extra goes last (devices such as -device i6300esb).

    >>> cmd = qemu_command("secureboot", Path("d.img"), Path("s.log"), vars_file=Path("v.fd"))
    >>> cmd[cmd.index("-machine") + 1], "-kernel" in cmd
    ('q35,smm=on', False)
    >>> cmd = qemu_command("provider", Path("d.img"), Path("s.log"), kernel=Path("k"), initrd=Path("i"), arch="arm64")
    >>> cmd[0], cmd[cmd.index("-machine") + 1], cmd[cmd.index("-cpu") + 1]
    ('qemu-system-aarch64', 'virt', 'cortex-a57')
    """
    machine = ARCHES[arch]
    cmd = [
        machine.qemu, "-accel", "tcg", "-m", str(memory), "-smp", "1",
        "-display", "none", "-monitor", "none", *(["-no-reboot"] if reset_ends else []),
        "-chardev", f"file,id=ser0,path={log},append=on", "-serial", "chardev:ser0",
    ]
    if machine.cpu:
        cmd += ["-cpu", machine.cpu]
    if layout not in machine.layouts:
        raise ValueError(f"unknown disk layout {layout!r} on {arch}")
    if layout == "provider":
        if kernel is None or initrd is None:
            raise ValueError("the provider layout boots a fixed -kernel and -initrd")
        if machine.machine:
            cmd += ["-machine", machine.machine]
        cmd += ["-kernel", str(kernel), "-initrd", str(initrd), "-append", append]
    elif layout == "bios":
        cmd += ["-machine", "pc"]
    else:
        code, _, board = machine.firmware[layout]
        if vars_file is None:
            raise ValueError(f"{layout} needs the VM's own firmware variable store (firmware_vars)")
        cmd += ["-machine", board]
        if layout == "secureboot":
            cmd += ["-global", "driver=cfi.pflash01,property=secure,value=on"]
        cmd += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                "-drive", f"if=pflash,format=raw,unit=1,file={vars_file}"]
    cmd += ["-drive", f"file={disk},format=raw,if=virtio", "-nic", nic, *extra]
    return cmd


# ---------------------------------------------------------------------------
# an initrd that panics, for boot assessment

def _newc_member(name: str, mode: int, data: bytes, ino: int) -> bytes:
    """One member of a cpio archive in the kernel's initramfs ("newc") format."""
    encoded = name.encode() + b"\0"
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0)
    member = b"070701" + b"".join(b"%08X" % value for value in fields) + encoded
    member += b"\0" * (-len(member) % 4)
    return member + data + b"\0" * (-len(data) % 4)


def panicking_initrd() -> bytes:
    """An initramfs that makes any kernel panic early in boot.

    Its /init exists (so the kernel does not fall back to mounting root=)
    but cannot be executed: its interpreter does not exist, and there is no
    /sbin/init, /bin/sh, ... either, so the kernel panics with "No working
    init found"; panic=N on the command line then resets the machine.

    >>> data = panicking_initrd()
    >>> data[:6], b"TRAILER!!!" in data, len(data) % 4
    (b'070701', True, 0)
    """
    return (_newc_member("init", 0o100755, b"#!/nonexistent/sh\nexit 1\n", 1)
            + _newc_member("TRAILER!!!", 0, b"", 0))
