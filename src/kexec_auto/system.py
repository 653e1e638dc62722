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


def find_kernels(root: str) -> list[Kernel]:
    """Every ``/boot/vmlinuz-*``, with why it cannot be booted if so."""
    boot = at(root, BOOT)
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


# -- the safety net of a trial boot ------------------------------------------

def systemctl(*args: str) -> subprocess.CompletedProcess:
    return run([shutil.which("systemctl", path=SBIN_PATH) or "systemctl", *args])


def panic_timeout(root: str) -> Optional[int]:
    """/proc/sys/kernel/panic: seconds before a panic resets the machine."""
    text = _read(root, "/proc/sys/kernel/panic")
    try:
        return int(text.strip()) if text else None
    except ValueError:
        return None


def set_panic_timeout(root: str, seconds: int) -> None:
    at(root, "/proc/sys/kernel/panic").write_text(f"{seconds}\n", encoding="ascii")


def kernel_config(root: str, release: str, key: str) -> Optional[str]:
    """A value of /boot/config-RELEASE, e.g. CONFIG_PANIC_TIMEOUT."""
    text = _read(root, f"/boot/config-{release}")
    for line in (text or "").splitlines():
        name, sep, value = line.partition("=")
        if sep and name == key:
            return value
    return None


def apply_sysctl(prefix: str) -> None:
    """Let systemd-sysctl apply the administrator's settings under prefix."""
    for path in ("/usr/lib/systemd/systemd-sysctl", "/lib/systemd/systemd-sysctl"):
        if os.access(path, os.X_OK):
            run([path, f"--prefix={prefix}"])
            return


def runtime_watchdog() -> Optional[str]:
    """systemd's RuntimeWatchdogUSec as systemctl shows it ('0': off), None
    when it cannot be read.  (There is no system bus this early in boot, and
    systemd's private socket takes no busctl: systemctl is the way.)"""
    result = systemctl("show", "--property=RuntimeWatchdogUSec", "--value")
    value = result.stdout.strip()
    return value if result.returncode == 0 and value else None


def watchdog_devices(root: str) -> list[str]:
    """Watchdog devices the kernel has (/sys/class/watchdog), e.g. ['watchdog0']."""
    try:
        return sorted(os.listdir(at(root, "/sys/class/watchdog")))
    except OSError:
        return []


def watchdog_identity(root: str, device: str) -> str:
    return (_read(root, f"/sys/class/watchdog/{device}/identity") or "").strip()


def modprobe(module: str, remove: bool = False) -> str:
    """Load (or remove) a kernel module; '' on success, else the error."""
    argv = [shutil.which("modprobe", path=SBIN_PATH) or "modprobe", *(["-r"] if remove else []), module]
    result = run(argv)
    return "" if result.returncode == 0 else (result.stderr.strip() or f"modprobe exit status {result.returncode}")


def udev_settle(seconds: int) -> None:
    udevadm = shutil.which("udevadm", path=SBIN_PATH)
    if udevadm:
        run([udevadm, "settle", f"--timeout={seconds}"])


def failed_units() -> list[str]:
    result = systemctl("list-units", "--failed", "--plain", "--no-legend", "--no-pager")
    return [line.split()[0] for line in result.stdout.splitlines() if line.split()]


def running_jobs() -> list[str]:
    """Units whose job is running (what a boot that does not complete waits for)."""
    result = systemctl("list-jobs", "--no-legend", "--plain", "--no-pager")
    jobs = []
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[3] == "running":
            jobs.append(f"{fields[1]} ({fields[2]})")
    return jobs
