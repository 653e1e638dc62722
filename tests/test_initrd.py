"""An initramfs cut short anywhere is told from a whole one, by its structure alone."""
from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kexec_auto import initrd


def newc(name: bytes, data: bytes) -> bytes:
    def pad(b: bytes) -> bytes:
        return b + bytes(-len(b) % 4)

    fields = (0, 0o100644, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
    return pad(b"070701" + b"".join(b"%08X" % v for v in fields) + name + b"\0") + pad(data)


def cpio(*members: tuple[bytes, bytes]) -> bytes:
    return b"".join(newc(n, d) for n, d in members) + newc(b"TRAILER!!!", b"")


def compress(tool: list[str], data: bytes) -> bytes:
    if shutil.which(tool[0]) is None:
        pytest.skip(f"{tool[0]} is not installed")
    return subprocess.run(tool, input=data, capture_output=True, check=True).stdout


PAYLOAD = cpio((b"init", b"#!/bin/sh\nexec /sbin/init\n"),
               (b"lib/modules/big.ko", bytes(range(256)) * 2000 + b"x" * 300_000))


EARLY = cpio((b"kernel/x86/microcode/GenuineIntel.bin", b"\x01" * 5000))
#: where an initramfs cut short is a whole one still: right after the
#: early archive, or in the padding after it
WHOLE_PREFIXES = range(len(EARLY), len(EARLY) + (-len(EARLY) % 512) + 1)


def initramfs(tool: tuple[str, ...] = ("zstd", "-q", "-c", "-19", "-B131072")) -> bytes:
    """As Debian's: microcode uncompressed, padding, the rest compressed."""
    return EARLY + bytes(-len(EARLY) % 512) + compress(list(tool), PAYLOAD)


@pytest.mark.parametrize("tool", [("zstd", "-q", "-c", "-19", "-B131072"), ("xz", "-c", "--check=crc32"),
                                  ("lz4", "-q", "-l", "-c")])
def test_every_prefix_of_an_initramfs_is_cut_short_and_the_whole_is_not(tool):
    whole = initramfs(tool)
    assert initrd.problem(initrd.reader(whole), len(whole)) == ""
    # every prefix up to the compressed part's first kilobyte, then every 97th byte
    ends = list(range(1, min(len(whole), 7000))) + list(range(7000, len(whole), 97)) + [len(whole) - 1]
    for end in ends:
        if end in WHOLE_PREFIXES:
            assert initrd.problem(initrd.reader(whole[:end]), end) == ""
            continue
        assert initrd.problem(initrd.reader(whole[:end]), end) != "", (tool[0], end)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_any_prefix_of_an_uncompressed_initramfs_is_caught(data):
    members = data.draw(st.lists(st.tuples(st.binary(min_size=1, max_size=20).filter(lambda b: b"\0" not in b),
                                           st.binary(max_size=300)), max_size=5))
    whole = cpio(*members)
    end = data.draw(st.integers(min_value=1, max_value=len(whole) - 1))
    assert initrd.problem(initrd.reader(whole), len(whole)) == ""
    assert initrd.problem(initrd.reader(whole[:end]), end).startswith("cut short"), end


def test_trailing_zero_padding_and_gzip_are_taken_as_they_are():
    whole = initramfs() + bytes(4096)
    assert initrd.problem(initrd.reader(whole), len(whole)) == ""
    gz = cpio((b"a", b"b")) + compress(["gzip", "-c"], PAYLOAD)
    assert initrd.problem(initrd.reader(gz), len(gz)) == ""
    assert initrd.problem(initrd.reader(b""), 0) == "empty"
