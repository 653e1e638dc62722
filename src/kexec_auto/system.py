"""The thin layer that reads the machine: /boot, /proc, /sys and commands.

Every function takes ``root``, the directory to treat as ``/``, so tests,
chroots and ``--root`` all work the same way.  Nothing here decides policy.

A root other than / is an untrusted tree (an image being built, another
machine's disk): nothing in it is ever run, and paths inside it are
resolved as that system would resolve them (:func:`at`), so a symbolic link
in it never leads a read or a write out of it.
"""

from __future__ import annotations

import errno
import functools
import os
import platform
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Optional

from . import files, shfile
from .cmdline import split_words
from .policy import Kernel
from .release import unsafe_release

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
SBIN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
# x86 boot protocol: "HdrS" at offset 0x202 of every bzImage, the protocol
# version at 0x206 and, from 2.00 on, at 0x20e the offset (minus 0x200) of
# the kernel's version string ("6.1.0-50-cloud-amd64 (debian-kernel@...) #1 ...").
_HDRS_OFFSET, _HDRS = 0x202, b"HdrS"
_HEADER_SIZE = 0x10000
PROC_LIMIT = 64 << 10  # /proc and /sys files, /etc/kernel/cmdline
KERNEL_CONFIG_LIMIT = 4 << 20  # /boot/config-*: about 120-300 KB in Debian's kernels
_MAX_LINKS = 40  # as the kernel's path walk


@functools.lru_cache(maxsize=None)
def _real_root(root: str) -> str:
    return os.path.realpath(root)


def is_host(root: str) -> bool:
    """Whether ``root`` is this system's own /."""
    return _real_root(root) == "/"


def _resolve(base: str, path: str) -> Path:
    """``path`` resolved inside ``base`` as a chroot would: absolute link
    targets start again at ``base``, ``..`` stops there."""
    todo = list(reversed(path.split("/")))
    done: list[str] = []
    links = 0
    while todo:
        part = todo.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        candidate = os.path.join(base, *done, part)
        try:
            info = os.lstat(candidate)
        except OSError:
            done.append(part)  # does not exist (yet): the rest is taken as it is
            continue
        if stat.S_ISLNK(info.st_mode):
            links += 1
            if links > _MAX_LINKS:
                raise OSError(errno.ELOOP, "too many levels of symbolic links", os.path.join(base, path.lstrip("/")))
            target = os.readlink(candidate)
            if target.startswith("/"):
                done = []
            todo.extend(reversed(target.split("/")))
            continue
        done.append(part)
    return Path(base, *done)


def at(root: str, path: str, follow: bool = True) -> Path:
    """``path`` (absolute, as on the target system) inside ``root``.

    On a root other than /, symbolic links are resolved inside the root,
    and so is the last component unless ``follow`` is False (then the
    entry itself is named, to replace or remove it).
    """
    base = _real_root(root)
    if base == "/":
        return Path("/", path.lstrip("/"))
    if not follow:
        head, _, name = path.rstrip("/").rpartition("/")
        if name not in ("", ".", ".."):
            return _resolve(base, head) / name
    return _resolve(base, path)


def _read(root: str, path: str, limit: int = PROC_LIMIT) -> Optional[str]:
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


def _image_problem(path: Path) -> str:
    """Why ``path`` is not a bootable x86 kernel image ('' when it is)."""
    try:
        header = _header(path, 0x210)
        if not header:
            return "empty file"
        if platform.machine() not in ("x86_64", "i686", "i586", "i386"):
            return ""
        if header[_HDRS_OFFSET:_HDRS_OFFSET + 4] != _HDRS:
            return "not a Linux x86 boot image (no HdrS magic at 0x202)"
    except OSError as error:
        return f"unreadable: {error.strerror or error}"
    return ""


def _header(path: Path, size: int = _HEADER_SIZE) -> Optional[bytes]:
    """The first ``size`` bytes of a regular file, without blocking."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise files.FileError(f"{path}: not a regular file")
        return os.read(fd, size)
    finally:
        os.close(fd)


def image_release(root: str, image: str) -> Optional[str]:
    """The release of the kernel that ``image`` (a path on the target
    system, e.g. /vmlinuz) really is: the version in its x86 boot header,
    else the name it resolves to (/boot/vmlinuz-RELEASE); None when neither
    tells."""
    path = at(root, image)
    real = Path(os.path.realpath(path)) if is_host(root) else path
    try:
        header = _header(real) or b""
    except OSError:
        header = b""
    if header[_HDRS_OFFSET:_HDRS_OFFSET + 4] == _HDRS and int.from_bytes(header[0x206:0x208], "little") >= 0x200:
        offset = int.from_bytes(header[0x20E:0x210], "little")
        if offset:
            version = header[offset + 0x200:offset + 0x200 + 256].split(b"\0")[0].split(b" ")[0]
            release = version.decode("ascii", errors="replace")
            if release and not unsafe_release(release):
                return release
    name = real.name
    if name.startswith("vmlinuz-") and not unsafe_release(name[len("vmlinuz-"):]):
        return name[len("vmlinuz-"):]
    return None


def pe_signed(path: Path) -> Optional[bool]:
    """Whether ``path``, an EFI (PE/COFF) image, carries an Authenticode
    signature (its certificate table is not empty); None when it is not a
    PE image at all.  Lockdown refuses kexec of an image without one."""
    try:
        head = _header(path, 4096) or b""
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
        if not name.startswith("vmlinuz-"):
            continue
        path = at(root, f"/{BOOT}/{name}")
        if not path.is_file():
            continue
        release = name[len("vmlinuz-"):]
        unsafe = unsafe_release(release)
        if unsafe:
            # Shown, never written anywhere: its name as printable text.
            shown = release.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            kernels.append(Kernel(shown, f"/{BOOT}/vmlinuz-{shown}", None,
                                  f"its name cannot be written safely into /etc/default/kexec ({unsafe})"))
            continue
        stray = next((why for s, why in STRAY_SUFFIXES.items() if s in release), "")
        problem = f"stray file ({stray})" if stray else _image_problem(path)
        if not problem and lockdown not in (None, "none") and not pe_signed(path):
            problem = (f"not signed: kernel lockdown ({lockdown}, Secure Boot) refuses to kexec "
                       "an image without a signature")
        initrd_name = f"initrd.img-{release}"
        initrd_path = at(root, f"/{BOOT}/{initrd_name}")
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
DPKG_STATUS_LIMIT = 256 << 20
_IMAGE_PACKAGE_PREFIX = "linux-image-"


def kernel_packages(root: str) -> dict[str, tuple[str, str]]:
    """Installed kernel packages by release: ``{release: (package, version)}``,
    read from dpkg's status file with python-debian."""
    from debian import deb822  # deferred: only `list` needs it

    packages: dict[str, tuple[str, str]] = {}
    try:
        data = files.read_bytes(at(root, DPKG_STATUS), limit=DPKG_STATUS_LIMIT)
    except OSError:
        return packages
    status = (data or b"").decode("utf-8", errors="replace").splitlines(keepends=True)
    for paragraph in deb822.Deb822.iter_paragraphs(status, fields=["Package", "Status", "Version"], use_apt_pkg=False):
        name = paragraph.get("Package", "")
        if not name.startswith(_IMAGE_PACKAGE_PREFIX) or not paragraph.get("Status", "").endswith(" installed"):
            continue
        release = name[len(_IMAGE_PACKAGE_PREFIX):].removesuffix("-unsigned")
        packages[release] = (name, paragraph.get("Version", ""))
    return packages


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
    text = _read(root, "/proc/sys/kernel/osrelease")
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
    text = _read(root, "/etc/kernel/cmdline")
    if text and text.strip():
        return " ".join(split_words(text)), "/etc/kernel/cmdline"
    if not kernel_is_ours(root):
        return "", ""
    return " ".join(split_words(_read(root, "/proc/cmdline") or "")), "/proc/cmdline"


def current_cmdline_words(root: str) -> list[str]:
    """Words of the running kernel's own command line (/proc/cmdline)."""
    return split_words(_read(root, "/proc/cmdline") or "")


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
    return _host_confinement() if is_host(root) else "root"


@functools.lru_cache(maxsize=None)
def _host_confinement() -> str:
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
        return "unknown"
    return ""


DEFAULT_KEXEC = "/etc/default/kexec"
DEFAULT_KEXEC_D = "/etc/default/kexec.d"
_SOURCE_DEFAULT_KEXEC = r"""
. "$1"
if [ -d "$2" ]; then
    for snippet in $(run-parts --list "$2"); do . "$snippet"; done
fi
printf '%s\0' "${LOAD_KEXEC-}" "${KERNEL_IMAGE-}" "${INITRD-}" "${APPEND-}" "${USE_GRUB_CONFIG-}"
"""
DEFAULT_KEXEC_VARS = ("LOAD_KEXEC", "KERNEL_IMAGE", "INITRD", "APPEND", "USE_GRUB_CONFIG")
_RUN_PARTS_NAME = re.compile(r"[A-Za-z0-9_-]+")
SOURCE_TIMEOUT = 10  # seconds


def _snippets(root: str) -> list[Path]:
    """/etc/default/kexec.d/* in the order run-parts --list gives them."""
    directory = at(root, DEFAULT_KEXEC_D)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    found = []
    for name in sorted(names, key=lambda n: n.encode("utf-8", "surrogateescape")):
        path = at(root, f"{DEFAULT_KEXEC_D}/{name}")
        if _RUN_PARTS_NAME.fullmatch(name) and path.is_file():
            found.append(path)
    return found


def source_default_kexec(root: str) -> Optional[dict[str, str]]:
    """What kexec-tools sees: /etc/default/kexec and /etc/default/kexec.d/*
    as sh sources them.  None when the file does not exist.

    On this system's own root they are sourced by sh, as kexec-tools does
    (after checking that each is a regular file of sane size, so that sh
    cannot hang on a FIFO).  In another root nothing is run: the files are
    read as plain assignments (see shfile), and anything else in them is
    an error naming the file and line.
    """
    path = at(root, DEFAULT_KEXEC)
    main = files.read_bytes(path)
    if main is None:
        return None
    snippets = _snippets(root)
    if not is_host(root):
        values: dict[str, str] = {}
        for source, data in [(path, main)] + [(p, files.read_bytes(p) or b"") for p in snippets]:
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise files.FileError(f"{source}: not UTF-8 text") from None
            try:
                shfile.parse(text, variables=values)
            except shfile.ShSyntaxError as error:
                raise OSError(f"{source}:{error.line}: cannot be read without running it ({error}); "
                              "kexec-auto runs nothing from another root") from None
        return {name: values.get(name, "") for name in DEFAULT_KEXEC_VARS}
    for snippet in snippets:
        files.read_bytes(snippet)  # a FIFO or a huge file is refused here, not hung on in sh
    try:
        result = subprocess.run(
            ["sh", "-c", _SOURCE_DEFAULT_KEXEC, "sh", str(path), str(at(root, DEFAULT_KEXEC_D))],
            capture_output=True, stdin=subprocess.DEVNULL, check=False, timeout=SOURCE_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        raise OSError(f"{path}: sh did not finish sourcing it within {SOURCE_TIMEOUT} s") from None
    if result.returncode != 0:
        message = result.stderr.decode(errors="replace").strip().splitlines()
        raise OSError(f"{path}: sh cannot source it: {message[-1] if message else 'error'}")
    values_list = result.stdout.decode(errors="surrogateescape").split("\0")[: len(DEFAULT_KEXEC_VARS)]
    return dict(zip(DEFAULT_KEXEC_VARS, values_list))


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


class JobsUnknown(OSError):
    """systemctl could not list the queued jobs; str() is its error."""


def queued_jobs() -> list[str]:
    """Units with a queued job (systemctl list-jobs), e.g. 'reboot.target'.
    Raises JobsUnknown when systemctl cannot tell."""
    systemctl = shutil.which("systemctl", path=SBIN_PATH)
    if not systemctl:
        raise JobsUnknown("systemctl not found")
    result = run([systemctl, "list-jobs", "--no-legend", "--plain"])
    if result.returncode != 0:
        raise JobsUnknown((result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1])
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
    text = _read(root, f"/boot/config-{release}", KERNEL_CONFIG_LIMIT)
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
