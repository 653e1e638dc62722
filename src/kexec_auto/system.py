"""The thin layer that reads the machine: /boot, /proc, /sys and commands.

Every function takes ``root``, the directory to treat as ``/``, so tests,
chroots and ``--root`` all work the same way.  Nothing here decides policy.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Optional

from .policy import Kernel

BOOT = "boot"
STRAY_SUFFIXES = {
    ".dpkg-": "left over by dpkg",
    ".ucf-": "left over by ucf",
    ".sig": "a detached signature",
    ".bak": "a backup copy",
    ".old": "an old copy",
    ".orig": "an old copy",
    "~": "an editor backup",
}
SBIN_PATH = "/usr/sbin:/sbin:/usr/bin:/bin"
# x86 boot protocol: "HdrS" at offset 0x202 of every bzImage.
_HDRS_OFFSET, _HDRS = 0x202, b"HdrS"


def at(root: str, path: str) -> Path:
    """``path`` (absolute, as on the target system) inside ``root``."""
    return Path(root, path.lstrip("/"))


def _read(root: str, path: str) -> Optional[str]:
    try:
        return at(root, path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def _image_problem(path: Path) -> str:
    """Why ``path`` is not a bootable x86 kernel image ('' when it is)."""
    try:
        size = path.stat().st_size
        if size == 0:
            return "empty file"
        if platform.machine() not in ("x86_64", "i686", "i586", "i386"):
            return ""
        with path.open("rb") as image:
            image.seek(_HDRS_OFFSET)
            if image.read(4) != _HDRS:
                return "not a Linux x86 boot image (no HdrS magic at 0x202)"
    except OSError as error:
        return f"unreadable: {error.strerror}"
    return ""


def pe_signed(path: Path) -> Optional[bool]:
    """Whether ``path``, an EFI (PE/COFF) image, carries an Authenticode
    signature (its certificate table is not empty); None when it is not a
    PE image at all.  Lockdown refuses kexec of an image without one."""
    try:
        with path.open("rb") as image:
            head = image.read(4096)
    except OSError:
        return None
    if head[:2] != b"MZ" or len(head) < 0x40:
        return None
    pe = int.from_bytes(head[0x3C:0x40], "little")
    optional = pe + 24
    if head[pe:pe + 4] != b"PE\0\0" or len(head) < optional + 2:
        return None
    magic = int.from_bytes(head[optional:optional + 2], "little")
    directories = optional + {0x10B: 96, 0x20B: 112}.get(magic, -optional)
    security = directories + 4 * 8  # the fifth data directory: the certificate table
    if directories < optional or len(head) < security + 8:
        return None
    return int.from_bytes(head[security + 4:security + 8], "little") > 0


def find_kernels(root: str) -> list[Kernel]:
    """Every ``/boot/vmlinuz-*``, with why it cannot be booted if so.

    Under kernel lockdown (Secure Boot) only signed images can be loaded
    (kexec_file_load checks the signature): an unsigned one cannot be booted."""
    boot = at(root, BOOT)
    lockdown = lockdown_mode(root)
    try:
        names = sorted(os.listdir(boot))
    except OSError:
        return []
    kernels = []
    for name in names:
        if not name.startswith("vmlinuz-") or not (boot / name).is_file():
            continue
        release = name[len("vmlinuz-"):]
        stray = next((why for s, why in STRAY_SUFFIXES.items() if s in release), "")
        problem = f"stray file ({stray})" if stray else _image_problem(boot / name)
        if not problem and lockdown not in (None, "none") and not pe_signed(boot / name):
            problem = (f"not signed: kernel lockdown ({lockdown}, Secure Boot) refuses to kexec "
                       "an image without a signature")
        initrd_name = f"initrd.img-{release}"
        initrd_path = boot / initrd_name
        has_initrd = initrd_path.is_file() and initrd_path.stat().st_size > 0
        kernels.append(
            Kernel(
                release=release,
                image=f"/{BOOT}/{name}",
                initrd=f"/{BOOT}/{initrd_name}" if has_initrd else None,
                problem=problem,
            )
        )
    return kernels


DPKG_STATUS = "/var/lib/dpkg/status"
_IMAGE_PACKAGE_PREFIX = "linux-image-"


def kernel_packages(root: str) -> dict[str, tuple[str, str]]:
    """Installed kernel packages by release: ``{release: (package, version)}``,
    read from dpkg's status file with python-debian."""
    from debian import deb822  # deferred: only `list` needs it

    packages: dict[str, tuple[str, str]] = {}
    try:
        with at(root, DPKG_STATUS).open(encoding="utf-8", errors="replace") as status:
            for paragraph in deb822.Deb822.iter_paragraphs(
                status, fields=["Package", "Status", "Version"], use_apt_pkg=False
            ):
                name = paragraph.get("Package", "")
                if not name.startswith(_IMAGE_PACKAGE_PREFIX) or not paragraph.get("Status", "").endswith(" installed"):
                    continue
                release = name[len(_IMAGE_PACKAGE_PREFIX):].removesuffix("-unsigned")
                packages[release] = (name, paragraph.get("Version", ""))
    except OSError:
        pass
    return packages


def running_release(root: str) -> str:
    text = _read(root, "/proc/sys/kernel/osrelease")
    return text.strip() if text and text.strip() else os.uname().release


def current_cmdline(root: str) -> tuple[str, str]:
    """The command line to reuse and the file it came from:
    /etc/kernel/cmdline when present and not empty, else /proc/cmdline."""
    for path in ("/etc/kernel/cmdline", "/proc/cmdline"):
        text = _read(root, path)
        if text and text.strip():
            return " ".join(text.split()), path
    return "", "/proc/cmdline"


def current_cmdline_words(root: str) -> list[str]:
    """Words of the running kernel's own command line (/proc/cmdline)."""
    return (_read(root, "/proc/cmdline") or "").split()


def kexec_loaded(root: str) -> Optional[bool]:
    text = _read(root, "/sys/kernel/kexec_loaded")
    return None if text is None else text.strip() == "1"


def lockdown_mode(root: str) -> Optional[str]:
    """The active mode in /sys/kernel/security/lockdown ('none', 'integrity',
    'confidentiality'), None when the file is absent."""
    text = _read(root, "/sys/kernel/security/lockdown")
    if not text:
        return None
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return None


def confinement(root: str) -> str:
    """'container', 'chroot', 'root' (a --root other than /), 'unknown'
    (the check itself failed) or '' when kexec-auto runs on the machine it
    would reboot."""
    if Path(root).resolve() != Path("/"):
        return "root"
    detect = shutil.which("systemd-detect-virt", path=SBIN_PATH)
    if detect:
        for kind in ("container", "chroot"):
            result = run([detect, "--quiet", f"--{kind}"])
            if result.returncode == 0:
                return kind
            if result.stderr.strip():  # e.g. /proc/1/root unreadable: cannot tell
                return "unknown"
        return ""
    if os.path.exists("/run/systemd/container") or os.path.exists("/.dockerenv"):
        return "container"
    try:
        if os.stat("/proc/1/root") != os.stat("/"):
            return "chroot"
    except OSError:
        pass
    return ""


_SOURCE_DEFAULT_KEXEC = r"""
. "$1"
if [ -d "$2" ]; then
    for snippet in $(run-parts --list "$2"); do . "$snippet"; done
fi
printf '%s\0' "${LOAD_KEXEC-}" "${KERNEL_IMAGE-}" "${INITRD-}" "${APPEND-}" "${USE_GRUB_CONFIG-}"
"""
DEFAULT_KEXEC_VARS = ("LOAD_KEXEC", "KERNEL_IMAGE", "INITRD", "APPEND", "USE_GRUB_CONFIG")


def source_default_kexec(root: str) -> Optional[dict[str, str]]:
    """What kexec-tools sees: /etc/default/kexec and /etc/default/kexec.d/*
    sourced by sh.  None when the file does not exist."""
    path = at(root, "/etc/default/kexec")
    if not path.exists():
        return None
    result = subprocess.run(
        ["sh", "-c", _SOURCE_DEFAULT_KEXEC, "sh", str(path), str(at(root, "/etc/default/kexec.d"))],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise OSError(f"{path}: sh cannot source it: {message[-1] if message else 'error'}")
    values = result.stdout.decode(errors="replace").split("\0")[: len(DEFAULT_KEXEC_VARS)]
    return dict(zip(DEFAULT_KEXEC_VARS, values))


def kexec_tools_reads_load_kexec(root: str) -> bool:
    """Whether the installed kexec-tools still has its LOAD_KEXEC setting
    (its kexec-load init script, bookworm and older)."""
    return at(root, "/etc/init.d/kexec-load").exists()


def kexec_binary() -> Optional[str]:
    return shutil.which("kexec", path=SBIN_PATH)


def run(argv: list[str]) -> subprocess.CompletedProcess:
    """Run a command, capturing its output (never reading our stdin)."""
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)


def booting() -> bool:
    """Whether systemd is still bringing the system up (not, say, starting
    a unit because a package was just installed)."""
    systemctl = shutil.which("systemctl", path=SBIN_PATH)
    if not systemctl:
        return False
    state = run([systemctl, "is-system-running"]).stdout.strip()
    return state in ("initializing", "starting")


def queued_jobs() -> list[str]:
    """Units with a queued job (systemctl list-jobs), e.g. 'reboot.target'."""
    systemctl = shutil.which("systemctl", path=SBIN_PATH)
    if not systemctl:
        return []
    result = run([systemctl, "list-jobs", "--no-legend", "--plain"])
    return [line.split()[1] for line in result.stdout.splitlines() if len(line.split()) > 1]
