"""Kernel boot image formats, read from their first bytes: pure byte work.

An x86 bzImage carries the boot protocol header: "HdrS" at offset 0x202,
the protocol version at 0x206 and, from 2.00 on, at 0x20e the offset
(minus 0x200) of the kernel's version string ("6.1.0-50-cloud-amd64
(debian-kernel@...) #1 ...").  A kernel image signed for Secure Boot is a
PE/COFF (EFI) executable whose certificate table is not empty.

>>> header = bytearray(0x400)
>>> header[0x202:0x206] = b"HdrS"
>>> header[0x206:0x208] = (0x20F).to_bytes(2, "little")
>>> header[0x20E:0x210] = (0x100).to_bytes(2, "little")
>>> header[0x300:0x320] = b"6.1.0-50-cloud-amd64 (debian) #1"
>>> x86_problem(bytes(header)), x86_release(bytes(header))
('', '6.1.0-50-cloud-amd64')
>>> x86_problem(b"\\x7fELF" + bytes(0x300))
'not a Linux x86 boot image (no HdrS magic at 0x202)'
"""

from __future__ import annotations

from typing import Optional

#: how many bytes of an image the functions here look at, at most
HEADER_SIZE = 0x10000
_HDRS_OFFSET, _HDRS = 0x202, b"HdrS"
X86_MACHINES = ("x86_64", "i686", "i586", "i386")


def is_bzimage(header: bytes) -> bool:
    return header[_HDRS_OFFSET:_HDRS_OFFSET + 4] == _HDRS


def x86_problem(header: bytes) -> str:
    """Why ``header`` does not start an x86 kernel image ('' when it does)."""
    if not header:
        return "empty file"
    if not is_bzimage(header):
        return "not a Linux x86 boot image (no HdrS magic at 0x202)"
    return ""


def x86_release(header: bytes) -> Optional[str]:
    """The version in a bzImage's boot header (the first word of its
    version string); None when the header names none."""
    if not is_bzimage(header) or int.from_bytes(header[0x206:0x208], "little") < 0x200:
        return None
    offset = int.from_bytes(header[0x20E:0x210], "little")
    if not offset:
        return None
    version = header[offset + 0x200:offset + 0x200 + 256].split(b"\0")[0].split(b" ")[0]
    return version.decode("ascii", errors="replace") or None


def pe_signed(head: bytes) -> Optional[bool]:
    """Whether ``head``, the start of an EFI (PE/COFF) image, carries an
    Authenticode signature (its certificate table is not empty); None when
    it is not a PE image at all.  Lockdown refuses kexec of an image without
    one.

    >>> pe_signed(b"\\x7fELF" + bytes(100)) is None
    True
    """
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
