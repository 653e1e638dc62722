"""Debian trees for kexec-auto's slow tests: debootstrap, chroot, local apt repository.

Everything here runs as root on the host and shells out to debootstrap, mount,
chroot and apt-ftparchive.  Every subprocess is bounded by a timeout, and a
failing command raises CommandFailed carrying the command line and its output,
so a red test says what broke without a rerun.

The pieces, reusable by the VM tests:

- cached_tree(suite, packages): a pristine debootstrap tree, cached under
  cache_dir() and keyed by suite, mirror and package list;
- throwaway_copy(tree): an overlayfs (or cp -a) copy that tests may wreck;
- Chroot(root).mounted(): /proc, /sys, /dev, /dev/pts mounted, always unmounted;
- local_repo(debs, dest) / Chroot.add_local_repo(): a flat apt repository;
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

CACHE_ENV = "KEXEC_AUTO_TEST_CACHE"
DEFAULT_CACHE = Path("/var/cache/kexec-auto-tests")
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://security.debian.org/debian-security"

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

DEBOOTSTRAP_TIMEOUT = 1200
TREE_FORMAT = "1"  # bump to rebuild every cached tree after changing how trees are made


class CommandFailed(AssertionError):
    """A command exited non-zero or timed out; the message holds its output."""


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return data


def describe(cmd: Sequence[str], returncode: object, stdout: str, stderr: str) -> str:
    return (
        f"command: {shlex.join(cmd)}\n"
        f"exit status: {returncode}\n"
        f"--- stdout ---\n{stdout.rstrip()}\n"
        f"--- stderr ---\n{stderr.rstrip()}"
    )


def run(
    cmd: Sequence[str],
    *,
    timeout: float,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    cwd: Path | str | None = None,
    input: str | None = None,
    stdout_path: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run cmd with a timeout; raise CommandFailed (with its output) on failure.

    On timeout the whole process group is killed: apt, dpkg and the
    maintainer scripts below a chroot must not outlive the test and keep its
    mounts busy.  stdout_path sends standard output to a file.
    """
    cmd = [str(c) for c in cmd]
    out = open(stdout_path, "w") if stdout_path is not None else None
    try:
        proc = subprocess.Popen(
            cmd, stdout=out or subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            env=None if env is None else dict(env), cwd=cwd, start_new_session=True,
        )
        try:
            stdout, stderr = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            raise CommandFailed(
                f"timed out after {timeout} s\n" + describe(cmd, "killed", _text(stdout), _text(stderr))
            ) from None
    finally:
        if out is not None:
            out.close()
    if out is not None:
        stdout = f"(written to {stdout_path})"
    if check and proc.returncode != 0:
        raise CommandFailed(describe(cmd, proc.returncode, stdout, stderr))
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


# ---------------------------------------------------------------------------
# cached debootstrap trees

def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def apt_sources(suite: str, mirror: str = MIRROR, extra_suites: Sequence[str] = ()) -> str:
    """sources.list reaching the release, its security and its stable updates.

    >>> print(apt_sources("trixie"), end="")
    deb http://deb.debian.org/debian trixie main
    deb http://deb.debian.org/debian trixie-updates main
    deb http://security.debian.org/debian-security trixie-security main
    """
    lines = [
        f"deb {mirror} {suite} main",
        f"deb {mirror} {suite}-updates main",
        f"deb {SECURITY_MIRROR} {suite}-security main",
    ]
    lines += [f"deb {mirror} {extra} main" for extra in extra_suites]
    return "".join(line + "\n" for line in lines)


def tree_key(suite: str, packages: Sequence[str], mirror: str = MIRROR,
             extra_suites: Sequence[str] = ()) -> str:
    """Cache key: any change of suite, mirror or package set gives a new tree.

    >>> tree_key("bookworm", ["b", "a"]) == tree_key("bookworm", ["a", "b", "a"])
    True
    >>> tree_key("bookworm", ["a"]) == tree_key("trixie", ["a"])
    False
    """
    text = "\n".join([TREE_FORMAT, suite, mirror, *sorted(set(packages)), "--", *extra_suites])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_tree(
    suite: str,
    packages: Sequence[str] = BASE_PACKAGES,
    *,
    mirror: str = MIRROR,
    extra_suites: Sequence[str] = (),
    cache: Path | None = None,
    timeout: float = DEBOOTSTRAP_TIMEOUT,
) -> Path:
    """Return a pristine minbase tree of suite with packages, building it once.

    The tree is built in a temporary directory and renamed into place when
    complete, under a lock, so an interrupted or concurrent build never leaves
    a half tree behind a valid name.  Never modify the returned tree: work on
    throwaway_copy(tree).
    """
    trees = (cache or cache_dir()) / "trees"
    name = f"{suite}-{tree_key(suite, packages, mirror, extra_suites)}"
    final = trees / name
    with _lock(trees / f"{name}.lock"):
        if (final / "etc/apt/sources.list").is_file():
            return final
        scratch = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=trees))
        scratch.chmod(0o755)  # the tree's /: mkdtemp's 0700 would lock _apt out
        try:
            run(
                ["debootstrap", "--variant=minbase", "--include=" + ",".join(sorted(set(packages))),
                 suite, scratch, mirror],
                timeout=timeout,
            )
            (scratch / "etc/apt/sources.list").write_text(apt_sources(suite, mirror, extra_suites))
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


def _assert_nothing_mounted_under(path: Path) -> None:
    left = mounts_under(path)
    if left:
        raise CommandFailed(f"refusing to delete {path}: still mounted: {left}")


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
    _assert_nothing_mounted_under(path)
    run(["rm", "-rf", "--one-file-system", path], timeout=600)


@contextlib.contextmanager
def throwaway_copy(tree: Path, workdir: Path) -> Iterator[Path]:
    """Yield a writable copy of tree below workdir; tree itself stays pristine.

    An overlayfs mount costs nothing; where overlayfs is refused, cp -a.
    The copy is unmounted and deleted on exit.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    upper, work, merged = workdir / "upper", workdir / "work", workdir / "root"
    for d in (upper, work, merged):
        d.mkdir()
    overlay = run(
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


@dataclass
class Chroot:
    """Commands inside a Debian tree, run with chroot(8).

    Use inside `with chroot.mounted():` so /proc, /sys and /dev exist.
    """

    root: Path
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
        try:
            plan: list[tuple[list[str], Path]] = [
                (["-t", "proc", "proc"], self.path("/proc")),
                (["-t", "sysfs", "sysfs"], self.path("/sys")),
                (["--bind", "/dev"], self.path("/dev")),
                (["--bind", "/dev/pts"], self.path("/dev/pts")),
            ]
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


def apt_archive_cache(suite: str, cache: Path | None = None) -> Path:
    """Host directory to bind on the tree's /var/cache/apt/archives.

    Downloaded kernel packages stay there between runs, one per suite (the
    _apt user that owns partial/ may differ between releases).
    """
    path = (cache or cache_dir()) / "apt-archives" / suite
    (path / "partial").mkdir(parents=True, exist_ok=True)
    return path


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
