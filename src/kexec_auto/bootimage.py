"""Kernel boot image formats, read from their bytes: pure byte work.

Two formats, one per architecture kexec-auto boots:

* x86 (amd64): a bzImage carries the boot protocol header: "HdrS" at 0x202,
  the protocol version at 0x206, from 2.00 on at 0x20e the offset (minus
  0x200) of the kernel's version string ("6.1.0-50-cloud-amd64
  (debian-kernel@...) #1 ..."), and the sizes of its setup (setup_sects,
  0x1f1) and of its protected-mode code (syssize, 0x1f4, in 16-byte units).
* arm64: an Image has "ARM\\x64" at 0x38 and nothing that names its release;
  the kernel's banner ("Linux version 6.12.118+deb13-cloud-arm64
  (debian-kernel@...)") sits uncompressed inside the image.

Debian's kernels of both are EFI stubs, PE/COFF executables: their section
table says how long the file must be, and a Secure Boot signature
(Authenticode) follows the sections, its place and size in the certificate
table.  A file shorter than that was cut short (an interrupted copy, a full
/boot).

>>> header = bytearray(0x400)
>>> header[0x1F1] = 1
>>> header[0x1F4:0x1F8] = (0x10).to_bytes(4, "little")
>>> header[0x202:0x206] = b"HdrS"
>>> header[0x206:0x208] = (0x20F).to_bytes(2, "little")
>>> header[0x20E:0x210] = (0x100).to_bytes(2, "little")
>>> header[0x300:0x320] = b"6.1.0-50-cloud-amd64 (debian) #1"
>>> image_problem(bytes(header), 0x500, "x86_64"), header_release(bytes(header))
('', '6.1.0-50-cloud-amd64')
>>> image_problem(bytes(header), 0x300, "x86_64")
'cut short: 768 bytes of the 1280 its header declares'
>>> image_problem(b"\\x7fELF" + bytes(0x300), 0x304, "x86_64")
'not a Linux x86 boot image (no HdrS magic at 0x202)'
>>> arm64 = bytes(0x38) + b"ARM\\x64" + bytes(0x40)
>>> image_problem(arm64, len(arm64), "aarch64"), image_problem(arm64, len(arm64), "x86_64")[:30]
('', 'not a Linux x86 boot image (no')
>>> banner_release(b"xx Linux version 6.12.118+deb13-cloud-arm64 (debian-kernel@lists.debian.org) (gcc")
'6.12.118+deb13-cloud-arm64'
"""

from __future__ import annotations

import re
from typing import Optional

#: how many bytes of an image judging it needs: its boot and PE headers
HEADER_SIZE = 4096
#: how far into a bzImage its version string may lie (a 16-bit offset)
X86_VERSION_WINDOW = 0x10000 + 0x200 + 256
_HDRS_OFFSET, _HDRS = 0x202, b"HdrS"
_ARM64_OFFSET, _ARM64 = 0x38, b"ARM\x64"

#: platform.machine() -> the image format its kernels come in
FORMATS = {"x86_64": "x86", "i686": "x86", "i586": "x86", "i386": "x86", "aarch64": "arm64"}
_NAMES = {"x86": "x86", "arm64": "arm64"}
_MAGIC = {"x86": "HdrS magic at 0x202", "arm64": "ARM\\x64 magic at 0x38"}
_BANNER = re.compile(rb"Linux version (\S+) \(")


def image_format(head: bytes) -> str:
    """'x86', 'arm64', or '' when ``head`` starts no image kexec-auto knows."""
    if head[_HDRS_OFFSET:_HDRS_OFFSET + 4] == _HDRS:
        return "x86"
    if head[_ARM64_OFFSET:_ARM64_OFFSET + 4] == _ARM64:
        return "arm64"
    return ""


def image_problem(head: bytes, size: int, machine: str) -> str:
    """Why a file of ``size`` bytes starting with ``head`` is no bootable
    kernel image for ``machine`` (platform.machine()); '' when it is, or
    when kexec-auto knows no format for ``machine``."""
    if not head:
        return "empty file"
    wanted = FORMATS.get(machine)
    if wanted is None:
        return ""
    if image_format(head) != wanted:
        return f"not a Linux {_NAMES[wanted]} boot image (no {_MAGIC[wanted]})"
    length = declared_length(head)
    if length is not None and size < length:
        return f"cut short: {size} bytes of the {length} its header declares"
    return ""


def declared_length(head: bytes) -> Optional[int]:
    """The length the image's headers say its file has at least: the end
    of its last section, or of its signature (PE); else, for a bzImage, its
    setup and code.  None when they do not tell."""
    pe = _pe_length(head)
    if pe is not None:
        return pe
    if image_format(head) == "x86" and len(head) >= 0x1F8:
        setup = head[0x1F1] or 4
        return (setup + 1) * 512 + int.from_bytes(head[0x1F4:0x1F8], "little") * 16
    return None


def _pe_optional(head: bytes) -> Optional[tuple[int, int, int]]:
    """(offset of the PE header, of its optional header, of its data
    directories) when ``head`` is a PE image; None otherwise."""
    if head[:2] != b"MZ" or len(head) < 0x40:
        return None
    pe = int.from_bytes(head[0x3C:0x40], "little")
    optional = pe + 24
    if head[pe:pe + 4] != b"PE\0\0" or len(head) < optional + 2:
        return None
    magic = int.from_bytes(head[optional:optional + 2], "little")
    if magic not in (0x10B, 0x20B):
        return None
    return pe, optional, optional + (96 if magic == 0x10B else 112)


def _certificate_table(head: bytes) -> Optional[tuple[int, int]]:
    """(file offset, size) of a PE image's certificate table, the fifth
    data directory; None when ``head`` does not hold it."""
    found = _pe_optional(head)
    if found is None:
        return None
    security = found[2] + 4 * 8
    if len(head) < security + 8:
        return None
    offset = int.from_bytes(head[security:security + 4], "little")
    return offset, int.from_bytes(head[security + 4:security + 8], "little")


def _pe_length(head: bytes) -> Optional[int]:
    if head[:2] != b"MZ":
        return None
    if len(head) < 0x40:
        return 0x40  # the DOS header, which names where the PE header is
    pe = int.from_bytes(head[0x3C:0x40], "little")
    if len(head) < pe + 26:
        return pe + 26 if head[pe:pe + 4] in (b"PE\0\0"[:len(head) - pe], b"") else None
    found = _pe_optional(head)
    if found is None:
        return None
    _, optional, _ = found
    sections = int.from_bytes(head[pe + 6:pe + 8], "little")
    table = optional + int.from_bytes(head[pe + 20:pe + 22], "little")
    if not sections:
        return None
    if len(head) < table + 40 * sections:
        return table + 40 * sections
    end = 0
    for n in range(sections):
        entry = table + 40 * n
        raw_size = int.from_bytes(head[entry + 16:entry + 20], "little")
        raw_pointer = int.from_bytes(head[entry + 20:entry + 24], "little")
        if raw_size:
            end = max(end, raw_pointer + raw_size)
    certificates = _certificate_table(head)
    if certificates and certificates[1]:
        end = max(end, certificates[0] + certificates[1])
    return end or None


def pe_signed(head: bytes) -> Optional[bool]:
    """Whether ``head``, the start of an EFI (PE/COFF) image, carries an
    Authenticode signature (its certificate table is not empty); None when
    it is not a PE image at all.  Lockdown refuses kexec of an image without
    one.

    >>> pe_signed(b"\\x7fELF" + bytes(100)) is None
    True
    """
    certificates = _certificate_table(head)
    return None if certificates is None else certificates[1] > 0


def header_release(head: bytes) -> Optional[str]:
    """The version in a bzImage's boot header (the first word of its
    version string, which ``head`` must reach: X86_VERSION_WINDOW bytes
    always do); None when the header names none."""
    if image_format(head) != "x86" or int.from_bytes(head[0x206:0x208], "little") < 0x200:
        return None
    offset = int.from_bytes(head[0x20E:0x210], "little")
    if not offset:
        return None
    version = head[offset + 0x200:offset + 0x200 + 256].split(b"\0")[0].split(b" ")[0]
    return version.decode("ascii", errors="replace") or None


def banner_release(data: bytes) -> Optional[str]:
    """The release in the first "Linux version RELEASE (" banner of an
    uncompressed image (arm64); None when there is none."""
    match = _BANNER.search(data)
    return match.group(1).decode("ascii", errors="replace") if match else None
