"""The kernel that runs, as /proc and /sys show it, and where kexec-auto runs.

Whether the running kernel is the one the system in ``root`` booted (not
in a chroot or a container, where /proc is the build host's), its release
and command line, what kexec and lockdown say, its panic timeout and its
watchdog devices.  Every function takes ``root`` (see paths).
"""

from __future__ import annotations

import functools
import os
from typing import Optional

from . import commands, files
from .cmdline import split_words
from .paths import at, is_host
from .release import unsafe_release

PROC_LIMIT = 64 << 10  # /proc and /sys files, /etc/kernel/cmdline
KERNEL_CONFIG_LIMIT = 4 << 20  # /boot/config-*: about 120-300 KB in Debian's kernels


def read(root: str, path: str, limit: int = PROC_LIMIT) -> Optional[str]:
    """The text of a small file of the target system; None when it is
    missing or unreadable.  A FIFO, a device or a file over ``limit``
    raises FileError: that is no value to guess around."""
    try:
        data = files.read_bytes(at(root, path), limit)
    except files.FileError:
        raise
    except OSError:
        return None
    return None if data is None else data.decode("utf-8", errors="surrogateescape")


def kernel_is_ours(root: str) -> bool:
    """Whether the running kernel is the one the system in ``root`` booted,
    so that its release and command line say something about that system.

    Not in a chroot or a container (an image build, the installer's
    target), where /proc is the build host's, nor when that cannot be told
    (as root; a user's ``list`` still shows the running kernel).  For
    another root, only a /proc that is not a mount point: a mounted proc
    is the host's.
    """
    if is_host(root):
        where = confinement(root)
        return where == "" or (where == "unknown" and os.geteuid() != 0)
    return not os.path.ismount(at(root, "/proc"))


def kernel_release(root: str) -> str:
    """The release of the kernel running now, whoever booted it ('' when
    /proc does not say one that can be used)."""
    text = read(root, "/proc/sys/kernel/osrelease")
    if text and text.strip():
        return "" if unsafe_release(text.strip()) else text.strip()
    return os.uname().release if is_host(root) else ""


def running_release(root: str) -> str:
    """The running kernel's release; '' when it is not this system's own
    (see kernel_is_ours): the first boot of that system tells."""
    return kernel_release(root) if kernel_is_ours(root) else ""


def current_cmdline(root: str) -> tuple[str, str]:
    """The command line to reuse and the file it came from:
    /etc/kernel/cmdline when present and not empty, else /proc/cmdline of
    a kernel that is this system's own; ``("", "")`` when there is none to
    take (in a chroot: the first boot fills it in)."""
    text = read(root, "/etc/kernel/cmdline")
    if text and text.strip():
        return " ".join(split_words(text)), "/etc/kernel/cmdline"
    if not kernel_is_ours(root):
        return "", ""
    return " ".join(split_words(read(root, "/proc/cmdline") or "")), "/proc/cmdline"


def current_cmdline_words(root: str) -> list[str]:
    """Words of the running kernel's own command line (/proc/cmdline)."""
    return split_words(read(root, "/proc/cmdline") or "")


def kexec_loaded(root: str) -> Optional[bool]:
    text = read(root, "/sys/kernel/kexec_loaded")
    return None if text is None else text.strip() == "1"


def lockdown_mode(root: str) -> Optional[str]:
    """The active mode in /sys/kernel/security/lockdown ('none', 'integrity',
    'confidentiality'), None when the file is absent."""
    text = read(root, "/sys/kernel/security/lockdown")
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
    return _host_confinement() if is_host(root) else "root"


@functools.lru_cache(maxsize=None)
def _host_confinement() -> str:
    detect = commands.which("systemd-detect-virt")
    if detect:
        for kind in ("container", "chroot"):
            result = commands.run([detect, "--quiet", f"--{kind}"])
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
        return "unknown"
    return ""


def panic_timeout(root: str) -> Optional[int]:
    """/proc/sys/kernel/panic: seconds before a panic resets the machine."""
    text = read(root, "/proc/sys/kernel/panic")
    try:
        return int(text.strip()) if text else None
    except ValueError:
        return None


def set_panic_timeout(root: str, seconds: int) -> None:
    at(root, "/proc/sys/kernel/panic").write_text(f"{seconds}\n", encoding="ascii")


def kernel_config(root: str, release: str, key: str) -> Optional[str]:
    """A value of /boot/config-RELEASE, e.g. CONFIG_PANIC_TIMEOUT."""
    text = read(root, f"/boot/config-{release}", KERNEL_CONFIG_LIMIT)
    for line in (text or "").splitlines():
        name, sep, value = line.partition("=")
        if sep and name == key:
            return value
    return None


def has_kexec_file_load(root: str, release: str) -> Optional[bool]:
    """Whether kernel ``release`` has the kexec_file_load system call
    (CONFIG_KEXEC_FILE in /boot/config-RELEASE); None when not known."""
    if not release or read(root, f"/boot/config-{release}", KERNEL_CONFIG_LIMIT) is None:
        return None
    return kernel_config(root, release, "CONFIG_KEXEC_FILE") == "y"


def watchdog_devices(root: str) -> list[str]:
    """Watchdog devices the kernel has (/sys/class/watchdog), e.g. ['watchdog0']."""
    try:
        return sorted(os.listdir(at(root, "/sys/class/watchdog")))
    except OSError:
        return []


def watchdog_identity(root: str, device: str) -> str:
    return (read(root, f"/sys/class/watchdog/{device}/identity") or "").strip()


def watchdog_state(root: str, device: str) -> str:
    """"active" or "inactive" (/sys/class/watchdog/DEVICE/state), '' if unknown."""
    return (read(root, f"/sys/class/watchdog/{device}/state") or "").strip()


def _linked_watchdog_module(root: str, device: str) -> str:
    link = at(root, f"/sys/class/watchdog/{device}/device/driver/module")
    return os.path.basename(os.path.realpath(link)) if os.path.exists(link) else ""


def _watchdog_core_users(root: str) -> list[str]:
    """The modules that use the watchdog core (its holders), but softdog
    and the pretimeout governors: the hardware watchdogs' drivers."""
    try:
        names = os.listdir(at(root, "/sys/module/watchdog/holders"))
    except OSError:
        return []
    return sorted(n for n in names if n != "softdog" and not n.startswith("pretimeout_"))


def hardware_watchdogs(root: str) -> list[tuple[str, str]]:
    """The machine's watchdogs other than softdog: (identity, module of
    its driver, '' when built in or not known).

    The module is sysfs's link from the device's parent when the driver
    gives it one (iTCO_wdt, sp5100_tco); i6300esb gives none, and its
    module is the one user of the watchdog core that no device links.
    """
    devices = [(device, watchdog_identity(root, device)) for device in watchdog_devices(root)]
    devices = [(device, identity) for device, identity in devices if identity and identity != "Software Watchdog"]
    linked = {device: _linked_watchdog_module(root, device) for device, _ in devices}
    unlinked = [m for m in _watchdog_core_users(root) if m not in linked.values()]
    guess = unlinked[0] if len(unlinked) == 1 and list(linked.values()).count("") == 1 else ""
    return [(identity, linked[device] or guess) for device, identity in devices]


def watchdog_stops_at_kexec(root: str) -> str:
    """Why this kernel's watchdog core stops the hardware watchdogs at a
    kexec, with no way for trial-watchdog to keep them armed; '' when it
    can: the core already runs with stop_on_reboot=0, or it is a module
    that can be loaded again so."""
    core = "/sys/module/watchdog"
    if (read(root, f"{core}/parameters/stop_on_reboot") or "").strip() == "0":
        return ""
    if at(root, f"{core}/initstate").exists():
        return ""
    if at(root, core).exists():
        return "the watchdog core is built into the running kernel, without watchdog.stop_on_reboot=0"
    return "the running kernel has no watchdog core loaded"


def kernel_has_module(root: str, release: str, name: str) -> bool:
    """Whether kernel ``release`` has module ``name`` (built in or not),
    from its modules.dep and modules.builtin."""
    for index in ("modules.dep", "modules.builtin"):
        text = read(root, f"/lib/modules/{release}/{index}", KERNEL_CONFIG_LIMIT) or ""
        if f"/{name}.ko" in text:
            return True
    return False


def stop_watchdog(root: str, device: str) -> Optional[OSError]:
    """Stop a running watchdog with the watchdog API's magic close: open
    /dev/DEVICE, write "V", close.  None on success, else the error
    (EBUSY: another process, such as systemd, has it open)."""
    try:
        fd = os.open(at(root, f"/dev/{device}"), os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        return error
    try:
        os.write(fd, b"V")
    except OSError as error:
        return error
    finally:
        os.close(fd)
    return None
