"""Whether an initramfs is whole, told cheaply from its structure.

An initramfs is cpio archives (newc) one after the other, the last one
usually compressed: Debian's begin with an uncompressed one (early CPU
microcode) and end with the rest compressed by zstd (initramfs-tools'
default), gzip, xz or lz4.  :func:`problem` walks the uncompressed archives
member by member, then the compressed stream's framing where it has one
(zstd frames and blocks, the lz4 legacy blocks the kernel takes, the xz
footer), without decompressing anything: a file cut short shows as a
member or a block that runs past its end.  gzip's and bzip2's ends cannot
be told without decompressing; they are taken as they are.

``read(offset, size)`` gives the file's bytes; the module does no I/O.

>>> def newc(name, data):
...     head = b"070701" + b"".join(b"%08X" % v for v in (0, 0o100644, 0, 0, 1, 0, len(data), 0, 0, 0, 0,
...                                                         len(name) + 1, 0))
...     return pad(head + name + b"\\0") + pad(data)
>>> def pad(b): return b + bytes(-len(b) % 4)
>>> whole = newc(b"init", b"#!/bin/sh\\n") + newc(b"TRAILER!!!", b"")
>>> problem(reader(whole), len(whole)), problem(reader(whole[:130]), 130)
('', 'cut short (the cpio member at 0 runs past the end of the file)')
>>> frame = bytes.fromhex("28b52ffd") + bytes([0x20, 4]) + ((4 << 3) | 1).to_bytes(3, "little") + b"data"
>>> problem(reader(whole + frame), len(whole + frame))
''
>>> problem(reader(whole + frame[:-1]), len(whole) + len(frame) - 1)
'cut short (the zstd stream runs past the end of the file)'
"""

from __future__ import annotations

from typing import Callable

Reader = Callable[[int, int], bytes]

_NEWC = (b"070701", b"070702")
_TRAILER = b"TRAILER!!!"
_ZSTD = bytes.fromhex("28b52ffd")
_ZSTD_SKIPPABLE = range(0x184D2A50, 0x184D2A60)
_LZ4_LEGACY = bytes.fromhex("02214c18")
_XZ = bytes.fromhex("fd377a585a00")
_LZ4_LEGACY_BLOCK = 8 << 20


class Short(Exception):
    """The structure runs past the end of the file."""


def reader(data: bytes) -> Reader:
    """A reader over bytes in memory."""
    return lambda offset, size: data[offset:offset + size]


def problem(read: Reader, size: int) -> str:
    """Why the initramfs of ``size`` bytes cannot be whole ('' when, as far
    as its structure tells, it is)."""
    if size == 0:
        return "empty"
    what, offset = "cpio member", 0
    try:
        while offset < size:
            head = read(offset, 6)
            if len(head) < 6 and any(magic.startswith(head) for magic in (*_NEWC, _ZSTD, _LZ4_LEGACY, _XZ)):
                raise Short  # the start of a magic number, and the end of the file
            if head in _NEWC:
                what = f"cpio member at {offset}"
                offset = _skip_cpio(read, offset, size)
            elif head == b"\0" * len(head):
                offset = _skip_zeros(read, offset, size)
            elif head[:4] == _ZSTD or int.from_bytes(head[:4], "little") in _ZSTD_SKIPPABLE:
                what = "zstd stream"
                offset = _skip_zstd(read, offset, size)
            elif head[:4] == _LZ4_LEGACY:
                what = "lz4 stream"
                offset = _skip_lz4_legacy(read, offset, size)
            elif head == _XZ:
                what = "xz stream"
                return "" if read(_end_of_data(read, size) - 2, 2) == b"YZ" else f"cut short (the {what} has no end)"
            else:
                return ""  # gzip, bzip2, lzo or anything else: its end is not told cheaply
    except Short:
        return f"cut short (the {what} runs past the end of the file)"
    return ""


def _need(read: Reader, offset: int, size: int, length: int) -> bytes:
    if offset + length > size:
        raise Short
    data = read(offset, length)
    if len(data) < length:
        raise Short
    return data


def _skip_cpio(read: Reader, offset: int, size: int) -> int:
    """The offset after the cpio archive that starts at ``offset``."""
    while True:
        head = _need(read, offset, size, 110)
        if head[:6] not in _NEWC:
            return offset  # not a member: whatever follows is judged on its own
        try:
            filesize, namesize = int(head[54:62], 16), int(head[94:102], 16)
        except ValueError:
            raise Short from None  # a header torn in the middle
        name_end = offset + 110 + namesize
        name = _need(read, offset + 110, size, namesize).rstrip(b"\0")
        data = name_end + (-name_end % 4)
        end = data + filesize
        if end > size:
            raise Short
        offset = end + (-end % 4)
        if name == _TRAILER:
            return min(offset, size)


def _skip_zeros(read: Reader, offset: int, size: int) -> int:
    """Past the zero padding between archives."""
    while offset < size:
        chunk = read(offset, min(4096, size - offset))
        stripped = chunk.lstrip(b"\0")
        if stripped:
            return offset + len(chunk) - len(stripped)
        offset += len(chunk)
    return size


def _end_of_data(read: Reader, size: int) -> int:
    """``size`` less the zero padding at the end of the file."""
    end = size
    while end > 0:
        chunk = read(max(0, end - 4096), min(4096, end))
        stripped = chunk.rstrip(b"\0")
        if stripped:
            return end - (len(chunk) - len(stripped))
        end -= len(chunk)
    return 0


def _skip_zstd(read: Reader, offset: int, size: int) -> int:
    """Past the zstd frames that start at ``offset``: frame headers and
    block headers are read, block contents skipped."""
    while offset < size:
        magic = read(offset, 4)
        if int.from_bytes(magic, "little") in _ZSTD_SKIPPABLE:
            length = int.from_bytes(_need(read, offset + 4, size, 4), "little")
            offset += 8 + length
            if offset > size:
                raise Short
            continue
        if magic != _ZSTD:
            return offset
        descriptor = _need(read, offset + 4, size, 1)[0]
        single = descriptor & 0x20
        header = 1 + (0 if single else 1) + (0, 1, 2, 4)[descriptor & 3] \
            + ((1 if single else 0), 2, 4, 8)[descriptor >> 6]
        offset += 4 + header
        while True:
            block = int.from_bytes(_need(read, offset, size, 3), "little")
            kind, length = (block >> 1) & 3, block >> 3
            offset += 3 + (1 if kind == 1 else length)
            if offset > size:
                raise Short
            if block & 1:
                break
        if descriptor & 4:
            offset += 4  # content checksum
            if offset > size:
                raise Short
    return offset


def _skip_lz4_legacy(read: Reader, offset: int, size: int) -> int:
    """Past an lz4 legacy stream (as the kernel's initramfs takes): blocks,
    each its compressed length first, until the end or the next magic."""
    offset += 4
    while offset < size:
        head = read(offset, 4)
        if head == _LZ4_LEGACY:
            offset += 4
            continue
        length = int.from_bytes(_need(read, offset, size, 4), "little")
        if length == 0 or length > _LZ4_LEGACY_BLOCK + _LZ4_LEGACY_BLOCK // 255 + 16:
            return offset  # no block: the stream ended here
        offset += 4 + length
        if offset > size:
            raise Short
    return offset
