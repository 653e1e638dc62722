"""The kernels installed in /boot and by dpkg, as found on disk.

:func:`find_kernels` lists every ``/boot/vmlinuz-*`` with what its image
and its initrd show; whether each can be booted is policy's to say (see
policy.image_problem).
"""

from __future__ import annotations

import os
import platform
import stat
from pathlib import Path
from typing import Optional

from . import bootimage, files, host, policy
from .paths import at, is_host
from .policy import Kernel
from .release import unsafe_release

BOOT = "boot"
DPKG_STATUS = "/var/lib/dpkg/status"
DPKG_STATUS_LIMIT = 256 << 20
_IMAGE_PACKAGE_PREFIX = "linux-image-"


def read_header(path: Path, size: int = bootimage.HEADER_SIZE) -> Optional[bytes]:
    """The first ``size`` bytes of a regular file, without blocking; None
    when it does not exist."""
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


#: enough of an image to judge it: its boot header and its PE header
JUDGE_SIZE = 4096


def _image_problem(path: Path) -> tuple[str, Optional[bool]]:
    """Why ``path`` is no bootable image of this machine ('' when it is),
    and whether it is signed (None: not an EFI image)."""
    try:
        header = read_header(path, JUDGE_SIZE) or b""
    except OSError as error:
        return f"unreadable: {error.strerror or error}", None
    if platform.machine() in bootimage.X86_MACHINES:
        problem = bootimage.x86_problem(header)
    else:
        problem = "" if header else "empty file"
    return problem, bootimage.pe_signed(header)


def image_release(root: str, image: str) -> Optional[str]:
    """The release of the kernel that ``image`` (a path on the target
    system, e.g. /vmlinuz) really is: the version in its boot header, else
    the name it resolves to (/boot/vmlinuz-RELEASE); None when neither
    tells."""
    path = at(root, image)
    real = Path(os.path.realpath(path)) if is_host(root) else path
    try:
        header = read_header(real) or b""
    except OSError:
        header = b""
    release = bootimage.x86_release(header)
    if release and not unsafe_release(release):
        return release
    name = real.name
    if name.startswith("vmlinuz-") and not unsafe_release(name[len("vmlinuz-"):]):
        return name[len("vmlinuz-"):]
    return None


def find_kernels(root: str) -> list[Kernel]:
    """Every ``/boot/vmlinuz-*``, with why it cannot be booted if so."""
    boot = at(root, BOOT)
    lockdown = host.lockdown_mode(root)
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
            kernels.append(Kernel(shown, f"/{BOOT}/vmlinuz-{shown}", None, policy.unsafe_name_problem(unsafe)))
            continue
        image_problem, signed = ("", None) if policy.stray_problem(release) else _image_problem(path)
        initrd_name = f"initrd.img-{release}"
        initrd_path = at(root, f"/{BOOT}/{initrd_name}")
        has_initrd = initrd_path.is_file() and initrd_path.stat().st_size > 0
        kernels.append(
            Kernel(
                release=release,
                image=f"/{BOOT}/{name}",
                initrd=f"/{BOOT}/{initrd_name}" if has_initrd else None,
                problem=policy.image_problem(release, image_problem, lockdown, signed),
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
