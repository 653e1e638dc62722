"""Fake system roots on disk for kexec-auto's tests.

kexec-auto takes a root directory everywhere, so tests build a small tree
in tmp_path (/boot, /proc, /sys, /etc) and point the code at it.
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
BZIMAGE = b"\0" * 0x202 + b"HdrS" + b"\0" * 0x1FA


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
        from kexec_auto import system

        path = self.file(system.DEFAULT_KEXEC)
        if not path.exists():
            return None
        result = subprocess.run(
            ["sh", "-c", system._SOURCE_DEFAULT_KEXEC, "sh", str(path), str(self.file(system.DEFAULT_KEXEC_D))],
            capture_output=True, check=True, stdin=subprocess.DEVNULL,
        )
        values = result.stdout.decode("utf-8", "surrogateescape").split("\0")[: len(system.DEFAULT_KEXEC_VARS)]
        return dict(zip(system.DEFAULT_KEXEC_VARS, values))


@pytest.fixture
def root(tmp_path) -> FakeRoot:
    return FakeRoot(tmp_path / "root")


@pytest.fixture
def src_env() -> dict:
    """Environment for running kexec-auto from this checkout in a subprocess."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC)
    env.pop("KEXEC_AUTO_ROOT", None)
    return env
