"""The kernels installed in /boot and by dpkg, as found on disk.

:func:`find_kernels` lists every ``/boot/vmlinuz-*``, whatever it is, with
what its image and its initrd show (bootimage, initrd); whether each can be
booted is policy's to say (see policy.image_problem).
"""

from __future__ import annotations

import os
import platform
import stat
from pathlib import Path
from typing import Optional

from . import bootimage, files, host, initrd, policy
from .paths import at, is_host
from .policy import Kernel
from .release import unsafe_release

BOOT = "boot"
DPKG_STATUS = "/var/lib/dpkg/status"
DPKG_STATUS_LIMIT = 256 << 20
_IMAGE_PACKAGE_PREFIX = "linux-image-"


def _open(path: Path) -> int:
    """A descriptor of the regular file ``path``, opened without blocking."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise files.FileError(f"{path}: not a regular file")
    return fd


def read_header(path: Path, size: int = bootimage.HEADER_SIZE) -> tuple[bytes, int]:
    """The first ``size`` bytes of the regular file ``path`` and its size;
    FileNotFoundError when it does not exist."""
    fd = _open(path)
    try:
        return os.read(fd, size), os.fstat(fd).st_size
    finally:
        os.close(fd)


_KINDS = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket",
          stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}


def not_regular(path: Path) -> str:
    """Why ``path`` (resolved inside its root) is no regular file; '' when it is one."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "a dangling symbolic link" if os.path.islink(path) or not path.exists() else "missing"
    except OSError as error:
        return f"unreadable: {error.strerror or error}"
    if stat.S_ISREG(info.st_mode):
        return ""
    return f"not a regular file ({_KINDS.get(stat.S_IFMT(info.st_mode), 'not a file')})"


def _image_problem(path: Path) -> tuple[str, Optional[bool]]:
    """Why ``path`` is no bootable image of this machine ('' when it is),
    and whether it is signed (None: not an EFI image)."""
    try:
        header, size = read_header(path)
    except OSError as error:
        return f"unreadable: {error.strerror or error}", None
    return bootimage.image_problem(header, size, platform.machine()), bootimage.pe_signed(header)


def _initrd_problem(path: Path) -> str:
    """Why the initrd ``path`` is not whole ('' when, as far as can be told, it is)."""
    try:
        fd = _open(path)
        try:
            problem = initrd.problem(lambda offset, size: os.pread(fd, size, offset), os.fstat(fd).st_size)
        finally:
            os.close(fd)
    except OSError as error:
        problem = f"unreadable: {error.strerror or error}"
    return f"initrd {path.name} is {problem}" if problem else ""


def _banner_release(path: Path) -> Optional[str]:
    try:
        with open(path, "rb") as handle:
            return bootimage.banner_release(handle.read(files.LIMIT * 128))
    except OSError:
        return None


def image_release(root: str, image: str) -> Optional[str]:
    """The release of the kernel that ``image`` (a path on the target
    system, e.g. /vmlinuz) really is: the version in its boot header, else
    the name it resolves to (/boot/vmlinuz-RELEASE); None when neither
    tells."""
    path = at(root, image)
    real = Path(os.path.realpath(path)) if is_host(root) else path
    try:
        header = read_header(real, bootimage.X86_VERSION_WINDOW)[0]
    except OSError:
        header = b""
    release = bootimage.header_release(header)
    if release is None and bootimage.image_format(header) == "arm64":
        release = _banner_release(real)
    if release and not unsafe_release(release):
        return release
    name = real.name
    if name.startswith("vmlinuz-") and not unsafe_release(name[len("vmlinuz-"):]):
        return name[len("vmlinuz-"):]
    return None


def machine_problem(root: str) -> str:
    """Why this machine cannot kexec into any kernel ('' when it can; see
    policy.machine_problem)."""
    lockdown = host.lockdown_mode(root)
    file_load = None
    if lockdown not in (None, "none"):
        file_load = host.has_kexec_file_load(root, host.running_release(root))
    return policy.machine_problem(platform.machine(), lockdown, file_load)


def find_kernels(root: str, machine: Optional[str] = None) -> list[Kernel]:
    """Every ``/boot/vmlinuz-*``, with why it cannot be booted if so
    (``machine``: machine_problem, if known already)."""
    boot = at(root, BOOT)
    lockdown = host.lockdown_mode(root)
    if machine is None:
        machine = machine_problem(root)
    try:
        names = sorted(os.listdir(boot))
    except OSError:
        return []
    kernels = []
    for name in names:
        if not name.startswith("vmlinuz-"):
            continue
        path = at(root, f"/{BOOT}/{name}")
        release = name[len("vmlinuz-"):]
        unsafe = unsafe_release(release)
        if unsafe:
            # Shown, never written anywhere: its name as printable text.
            shown = release.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            kernels.append(Kernel(shown, f"/{BOOT}/vmlinuz-{shown}", None, policy.unsafe_name_problem(unsafe)))
            continue
        initrd_name = f"initrd.img-{release}"
        initrd_path = at(root, f"/{BOOT}/{initrd_name}")
        has_initrd = initrd_path.is_file() and initrd_path.stat().st_size > 0
        image_problem, signed, initrd_problem = not_regular(path), None, ""
        if not image_problem and not policy.stray_problem(release):
            image_problem, signed = _image_problem(path)
            initrd_problem = _initrd_problem(initrd_path) if has_initrd and not image_problem else ""
        kernels.append(
            Kernel(
                release=release,
                image=f"/{BOOT}/{name}",
                initrd=f"/{BOOT}/{initrd_name}" if has_initrd else None,
                problem=policy.image_problem(release, image_problem or initrd_problem, lockdown, signed,
                                             machine),
            )
        )
    return kernels


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
