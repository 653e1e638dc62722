"""Shared fixtures of kexec-auto's tests: fake system roots on disk, and a
fake root treated as the running machine.

kexec-auto takes a root directory everywhere, so tests build a small tree
in tmp_path (/boot, /proc, /sys, /etc) and point the code at it.  Only
process execution is replaced (FakeRun): kexec, systemctl and modprobe
must not really run here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

# The x86 boot protocol header: "HdrS" at 0x202 marks a bzImage.
BZIMAGE = b"\0" * 0x1F1 + b"\x01" + b"\0" * 0x10 + b"HdrS" + b"\0" * 0x1FA  # setup_sects 1: 1 KiB long


class FakeRoot:
    def __init__(self, path: Path):
        self.path = path
        self.running("6.1.0-50-cloud-amd64")
        self.write("/proc/cmdline", "BOOT_IMAGE=/boot/vmlinuz-6.1.0-50-cloud-amd64 root=/dev/vda ro console=ttyS0\n")
        self.write("/sys/kernel/kexec_loaded", "0\n")
        (path / "etc/default").mkdir(parents=True)
        # bookworm's kexec-tools, which still reads LOAD_KEXEC.
        self.write("/etc/init.d/kexec-load", "#!/bin/sh\n", 0o755)

    def __str__(self) -> str:
        return str(self.path)

    def file(self, path: str) -> Path:
        return self.path / path.lstrip("/")

    def write(self, path: str, content, mode: int = 0o644) -> Path:
        target = self.file(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
        target.chmod(mode)
        return target

    def read(self, path: str) -> str:
        return self.file(path).read_text(encoding="utf-8")

    def exists(self, path: str) -> bool:
        return self.file(path).exists()

    def running(self, release: str) -> None:
        self.write("/proc/sys/kernel/osrelease", release + "\n")

    def add_kernel(self, release: str, initrd: bool = True, image: bytes = BZIMAGE) -> None:
        self.write(f"/boot/vmlinuz-{release}", image)
        if initrd:
            self.write(f"/boot/initrd.img-{release}", b"\x1f\x8b initrd")

    def remove_kernel(self, release: str) -> None:
        for name in (f"vmlinuz-{release}", f"initrd.img-{release}"):
            self.file(f"/boot/{name}").unlink(missing_ok=True)

    def config(self, text: str) -> None:
        self.write("/etc/default/kexec-auto", text)

    def sourced(self) -> Optional[dict]:
        """/etc/default/kexec and kexec.d/* of this tree as sh sources them
        (kexec-auto itself never runs files of a root other than /)."""
        from kexec_auto import kexectools

        path = self.file(kexectools.DEFAULT_KEXEC)
        if not path.exists():
            return None
        result = subprocess.run(
            ["sh", "-c", kexectools._SOURCE_DEFAULT_KEXEC, "sh", str(path),
             str(self.file(kexectools.DEFAULT_KEXEC_D))],
            capture_output=True, check=True, stdin=subprocess.DEVNULL,
        )
        values = result.stdout.decode("utf-8", "surrogateescape").split("\0")[: len(kexectools.DEFAULT_KEXEC_VARS)]
        return dict(zip(kexectools.DEFAULT_KEXEC_VARS, values))


def mount_namespace_problem() -> str:
    """Why a private mount namespace cannot be had here ('' when it can):
    it needs root, unshare, and a / that is a mount point (not so in a plain
    chroot, where a package build may run the tests)."""
    import functools
    import shutil

    @functools.lru_cache(maxsize=None)
    def probe() -> str:
        if os.geteuid() != 0:
            return "needs root"
        if shutil.which("unshare") is None:
            return "needs unshare (util-linux)"
        result = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                                capture_output=True, text=True)
        return "" if result.returncode == 0 else f"no private mount namespace here: {result.stderr.strip()}"

    return probe()


#: for tests that run commands in a private mount namespace
needs_mount_namespace = pytest.mark.skipif(bool(mount_namespace_problem()),
                                           reason=mount_namespace_problem() or "a private mount namespace")


#: a file's content before and after a write (tests of files and managed)
KEXEC_OLD = "LOAD_KEXEC=false\n"
KEXEC_NEW = "LOAD_KEXEC=true\nKERNEL_IMAGE=/boot/vmlinuz-x\n"


@pytest.fixture
def target(tmp_path) -> Path:
    """etc/kexec in tmp_path, holding KEXEC_OLD."""
    (tmp_path / "etc").mkdir()
    path = tmp_path / "etc/kexec"
    path.write_text(KEXEC_OLD)
    return path


def leftovers(directory: Path) -> list[str]:
    """The temporary files a write left in ``directory``."""
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture
def root(tmp_path) -> FakeRoot:
    return FakeRoot(tmp_path / "root")


def pe_image(signed: bool, magic: int = 0x20B, length: int = 4096) -> bytes:
    """A bzImage with an EFI stub's PE header, as Debian's kernels have:
    one section from 1 KiB to the signature (256 bytes, when ``signed``)
    or the end, ``length`` bytes in all."""
    image = bytearray(BZIMAGE + b"\0" * (length - len(BZIMAGE)))
    image[0:2] = b"MZ"
    pe = 0x80
    image[0x3C:0x40] = pe.to_bytes(4, "little")
    image[pe:pe + 4] = b"PE\0\0"
    image[pe + 6:pe + 8] = (1).to_bytes(2, "little")  # one section
    optional = pe + 24
    size = 240 if magic == 0x20B else 224
    image[pe + 20:pe + 22] = size.to_bytes(2, "little")
    image[optional:optional + 2] = magic.to_bytes(2, "little")
    certificates = 0x100 if signed else 0
    section = optional + size
    image[section:section + 8] = b".text\0\0\0"
    image[section + 16:section + 24] = ((length - 1024 - certificates).to_bytes(4, "little")
                                        + (1024).to_bytes(4, "little"))
    security = optional + (112 if magic == 0x20B else 96) + 4 * 8
    if signed:
        image[security:security + 4] = (length - certificates).to_bytes(4, "little")
        image[security + 4:security + 8] = certificates.to_bytes(4, "little")
    return bytes(image)


class FakeRun:
    """Stands in for process execution (commands.run): records every
    command and answers as configured."""

    def __init__(self, returncode: int = 0, stderr: str = "", root: Optional[FakeRoot] = None):
        self.calls: list[list[str]] = []
        self.root = root
        self.returncode, self.stderr = returncode, stderr
        #: what a command prints, by its name and first argument (e.g. ("modinfo", "-k"))
        self.outputs: dict[tuple[str, str], str] = {}

    def __call__(self, argv):
        self.calls.append(argv)
        out = self.outputs.get((argv[0].rsplit("/", 1)[-1], argv[1] if len(argv) > 1 else ""), "")
        return subprocess.CompletedProcess(argv, self.returncode, out, self.stderr)

    def named(self, *prefix):
        return [c for c in self.calls if c[: len(prefix)] == list(prefix)]

    def ending(self, name):
        return [c[1:] for c in self.calls if c[0].endswith(name)]


def queued(*units: str):
    """A stand-in for commands.jobs: start jobs of ``units`` queued."""
    from kexec_auto import commands

    return lambda: [commands.Job(unit, "start", "waiting") for unit in units]


@pytest.fixture
def fake_run(monkeypatch, root) -> FakeRun:
    """Process execution replaced by a FakeRun that succeeds."""
    from kexec_auto import commands

    fake = FakeRun(root=root)
    monkeypatch.setattr(commands, "run", fake)
    return fake


@pytest.fixture
def machine(root, monkeypatch, fake_run) -> FakeRoot:
    """A fake root treated as the running machine: no container or chroot,
    kexec installed, systemd still booting with a reboot queued, and every
    command it runs answered by ``machine.fake_run``.  Modules add their
    kernels in a fixture of the same name that takes this one."""
    from kexec_auto import commands, host, kexectools

    monkeypatch.setattr(host, "confinement", lambda r: "")
    monkeypatch.setattr(kexectools, "kexec_binary", lambda: "/sbin/kexec")
    monkeypatch.setattr(commands, "jobs", queued("reboot.target"))
    monkeypatch.setattr(commands, "booting", lambda: True)
    root.fake_run = fake_run  # type: ignore[attr-defined]
    return root


@pytest.fixture
def src_env() -> dict:
    """Environment for running kexec-auto from this checkout in a subprocess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC)
    env.pop("KEXEC_AUTO_ROOT", None)
    return env
