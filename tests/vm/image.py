"""Disk images for kexec-auto's VM tests, built at native speed in a chroot.

A cached debootstrap tree per suite carries the "provider" kernel: the old
kernel that qemu's fixed -kernel boots, exactly like a cloud provider that
always boots its own kernel.  Each scenario copies that tree, does its slow
package work in a chroot (kernel installs run initramfs-tools natively, not
under TCG), drops in the guest driver (a systemd unit that runs one stage
script per boot, see guest.py) and turns the tree into an ext4 disk image with
`mkfs.ext4 -d` (nothing is mounted for that).

Cache: $KEXEC_AUTO_TEST_CACHE (default /var/cache/kexec-auto-tests) / vm.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

CACHE_ENV = "KEXEC_AUTO_TEST_CACHE"
DEFAULT_CACHE = Path("/var/cache/kexec-auto-tests")
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
TREE_FORMAT = "3"  # bump to rebuild the cached base trees

BASE_PACKAGES = (
    "apt", "initramfs-tools", "kexec-tools", "kmod", "linux-base", "python3",
    "systemd-sysv", "udev", "zstd",
)

#: Kernel series used per suite; the three newest cloud kernels of the series
#: found in the archive become provider < older < newest.
KERNEL_SERIES = {
    "bookworm": r"6\.1\.0-\d+-cloud-amd64",
    "trixie": r"6\.12\.\d+\+deb13-cloud-amd64",
}

ENV = {
    "DEBIAN_FRONTEND": "noninteractive",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C.UTF-8",
    "HOME": "/root",
}


class BuildError(AssertionError):
    """A build command failed; the message holds the command and its output."""


def run(cmd: Sequence[str], *, timeout: float = 900, input: str | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [str(c) for c in cmd]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              input=input, env=ENV,
                              stdin=None if input is not None else subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise BuildError(f"timed out after {timeout}s: {cmd}\n{exc.stdout!r}\n{exc.stderr!r}") from None
    if check and proc.returncode != 0:
        raise BuildError(f"exit {proc.returncode}: {' '.join(cmd)}\n"
                         f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}")
    return proc


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE) / "vm"


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def sources_list(suite: str) -> str:
    """
    >>> print(sources_list("trixie"), end="")
    deb http://deb.debian.org/debian trixie main
    deb http://deb.debian.org/debian trixie-updates main
    deb http://deb.debian.org/debian-security trixie-security main
    """
    return (f"deb {MIRROR} {suite} main\n"
            f"deb {MIRROR} {suite}-updates main\n"
            f"deb {SECURITY_MIRROR} {suite}-security main\n")


def sort_releases(releases: Sequence[str]) -> list[str]:
    """Kernel releases oldest first, ordered by linux-base's linux-version."""
    out = run(["linux-version", "sort", *releases]).stdout
    return out.split()


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


class Chroot:
    """A tree with /proc, /sys, /dev mounted and services kept from starting."""

    def __init__(self, root: Path, archives: Path | None = None):
        self.root = root
        self.archives = archives

    @contextlib.contextmanager
    def mounted(self) -> Iterator["Chroot"]:
        mounts: list[Path] = []
        policy = self.root / "usr/sbin/policy-rc.d"
        try:
            for fstype, src, dst in (("proc", "proc", "proc"), ("sysfs", "sysfs", "sys")):
                run(["mount", "-t", fstype, src, self.root / dst])
                mounts.append(self.root / dst)
            for dst in ("dev", "dev/pts"):
                run(["mount", "--bind", "/" + dst, self.root / dst])
                mounts.append(self.root / dst)
            if self.archives is not None:
                self.archives.mkdir(parents=True, exist_ok=True)
                run(["mount", "--bind", self.archives, self.root / "var/cache/apt/archives"])
                mounts.append(self.root / "var/cache/apt/archives")
            policy.write_text("#!/bin/sh\nexit 101\n")
            policy.chmod(0o755)
            yield self
        finally:
            policy.unlink(missing_ok=True)
            for path in reversed(mounts):
                run(["umount", "-l", path], check=False)

    def sh(self, script: str, timeout: float = 900) -> str:
        return run(["chroot", self.root, "/bin/sh", "-ec", script], timeout=timeout).stdout

    def apt_install(self, *args: str, timeout: float = 900) -> str:
        return self.sh("apt-get install -y -q -o Dpkg::Options::=--force-confdef "
                       "-o Dpkg::Options::=--force-confold " + " ".join(args), timeout=timeout)


@dataclass(frozen=True)
class BaseTree:
    suite: str
    path: Path
    provider: str
    older: str
    newest: str

    @property
    def archives(self) -> Path:
        return self.path.parent / "archives"

    @property
    def kernel(self) -> Path:
        return self.path.parent / f"vmlinuz-{self.provider}"

    @property
    def initrd(self) -> Path:
        return self.path.parent / f"initrd.img-{self.provider}"


def base_tree(suite: str) -> BaseTree:
    """The cached debootstrap tree of suite with the provider kernel installed."""
    top = cache_dir() / f"{suite}-{TREE_FORMAT}"
    tree = top / "tree"
    stamp = top / "kernels"
    with locked(top.parent / f"{suite}-{TREE_FORMAT}.lock"):
        if stamp.is_file():
            provider, older, newest = stamp.read_text().split()
            return BaseTree(suite, tree, provider, older, newest)
        bootstrapped = top / "debootstrapped"
        if not bootstrapped.is_file():
            shutil.rmtree(tree, ignore_errors=True)
            top.mkdir(parents=True, exist_ok=True)
            run(["debootstrap", "--variant=minbase", "--include=" + ",".join(BASE_PACKAGES),
                 suite, tree, MIRROR], timeout=1500)
            bootstrapped.write_text("")
        (tree / "etc/apt/sources.list").write_text(sources_list(suite))
        # Kernels recommend apparmor, whose profile loading costs seconds per
        # boot under TCG and has nothing to do with kexec: keep images minimal.
        (tree / "etc/apt/apt.conf.d/90ka-no-recommends").write_text(
            'APT::Install-Recommends "false";\n')
        chroot = Chroot(tree, top / "archives")
        with chroot.mounted():
            chroot.sh("apt-get update -q", timeout=600)
            names = chroot.sh("apt-cache pkgnames linux-image-").split()
            provider, older, newest = pick_kernels(names, KERNEL_SERIES[suite])
            chroot.apt_install(f"linux-image-{provider}")
            # fetch the other kernels now so that scenario builds need no network for them
            chroot.sh(f"apt-get install -y -q --download-only linux-image-{older} linux-image-{newest}")
        shutil.copy2(tree / f"boot/vmlinuz-{provider}", top / f"vmlinuz-{provider}")
        shutil.copy2(tree / f"boot/initrd.img-{provider}", top / f"initrd.img-{provider}")
        stamp.write_text(f"{provider} {older} {newest}\n")
        return BaseTree(suite, tree, provider, older, newest)


def copy_tree(src: Path, dst: Path) -> None:
    if dst.exists():
        run(["rm", "-rf", "--one-file-system", dst])
    run(["cp", "-a", "--reflink=auto", src, dst], timeout=600)


def configure_guest(tree: Path) -> None:
    """What every test guest needs to boot from /dev/vda quietly and reproducibly."""
    (tree / "etc/fstab").write_text("/dev/vda / ext4 rw,errors=remount-ro 0 1\n")
    (tree / "etc/hostname").write_text("ka-vm\n")
    (tree / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    masked = tree / "etc/systemd/system"
    masked.mkdir(parents=True, exist_ok=True)
    # The serial console belongs to the stage runner; a getty there would only add noise.
    for unit in ("serial-getty@ttyS0.service", "getty@tty1.service",
                 "apt-daily.timer", "apt-daily-upgrade.timer", "e2scrub_all.timer",
                 "fstrim.timer", "man-db.timer"):
        link = masked / unit
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")


def make_disk(tree: Path, image: Path, headroom_mb: int = 1536) -> None:
    """ext4 image holding tree, with room for what the guest installs."""
    used = int(run(["du", "-s", "--block-size=1M", "--one-file-system", tree]).stdout.split()[0])
    image.unlink(missing_ok=True)
    run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", tree, image, f"{used + headroom_mb}M"],
        timeout=600)


def local_repo(repo: Path, debs: Sequence[Path]) -> None:
    """A flat apt repository (deb [trusted=yes] file:/... ./) holding debs."""
    repo.mkdir(parents=True, exist_ok=True)
    for deb in debs:
        shutil.copy2(deb, repo / deb.name)
    packages = subprocess.run(["apt-ftparchive", "packages", "."], cwd=repo, capture_output=True,
                              text=True, check=True, timeout=120).stdout
    (repo / "Packages").write_text(packages)


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
