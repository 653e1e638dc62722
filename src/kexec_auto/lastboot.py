"""How the running system was booted: through kexec, by the firmware, or handed off.

By the firmware means by whatever the firmware starts: a boot loader, a
provider's fixed kernel.  Handed off means through kexec from a power-on
kernel (HANDOFF=true).

The kernel says which loader started it: on x86 the boot protocol header
its loader filled in stays readable in /sys/kernel/boot_params/data, and
its byte 0x210, type_of_loader, holds the loader's id in the high nibble:
0xD for kexec (kexec-tools' kexec_load and the kernel's kexec_file_load
both set it), 0x7 for GRUB, 0xB for qemu's -kernel, and so on.  A hand-off
is a kexec too; kexec-auto leaves a marker on disk just before it hands
off, which the next boot consumes.  A reboot whose ``kexec -e`` returned
went through the firmware: the shutdown hook leaves a marker of that too.

>>> boot_method(0xD0, handoff_release=None, running="6.12.117+deb12-cloud-amd64")
'kexec'
>>> boot_method(0xD0, handoff_release="6.12.117+deb12-cloud-amd64", running="6.12.117+deb12-cloud-amd64")
'handoff'
>>> boot_method(0xB0, handoff_release="6.12.117+deb12-cloud-amd64", running="6.1.0-50-cloud-amd64")
'firmware'
>>> boot_method(None, handoff_release=None, running="6.1.0-50-cloud-amd64")
'unknown'
"""

from __future__ import annotations

from typing import Optional

from . import files, host
from .paths import at

KEXEC, FIRMWARE, HANDOFF, UNKNOWN = "kexec", "firmware", "handoff", "unknown"
METHODS = (KEXEC, FIRMWARE, HANDOFF, UNKNOWN)

BOOT_PARAMS = "/sys/kernel/boot_params/data"
TYPE_OF_LOADER = 0x210
LOADER_KEXEC = 0xD
RECORD = "/run/kexec-auto/boot-method"  # this boot's method, written early in boot
HANDOFF_MARKER = "/var/lib/kexec-auto/handoff"  # release kexec-auto is handing off to
#: written by the shutdown hook when kexec -e returned; read and removed by the next boot
KEXEC_RETURNED_MARKER = "/var/lib/kexec-auto/kexec-returned"


def boot_method(loader_type: Optional[int], handoff_release: Optional[str], running: str) -> str:
    """The way this boot happened, from the loader id the kernel kept and
    the release a hand-off was heading for (None: no hand-off)."""
    if loader_type is None:
        return UNKNOWN
    if loader_type >> 4 != LOADER_KEXEC:
        return FIRMWARE
    return HANDOFF if handoff_release == running else KEXEC


def loader_type(root: str) -> Optional[int]:
    """type_of_loader of the running kernel's boot header; None where the
    kernel does not keep it (not x86, no sysfs)."""
    try:
        with at(root, BOOT_PARAMS).open("rb") as data:
            data.seek(TYPE_OF_LOADER)
            byte = data.read(1)
    except OSError:
        return None
    return byte[0] if byte else None


def note_handoff(root: str, release: str) -> None:
    """Record, just before handing off, the release being handed off to."""
    marker = at(root, HANDOFF_MARKER)
    marker.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomic(marker, release + "\n")


def _compute(root: str, consume: bool) -> str:
    marker = at(root, HANDOFF_MARKER)
    handoff = (files.read_text(marker, errors="replace") or "").strip() or None
    method = boot_method(loader_type(root), handoff, host.running_release(root))
    if consume:
        marker.unlink(missing_ok=True)
    return method


def kexec_returned(root: str, method: str) -> str:
    """Why the last reboot's kernel was never started, when the shutdown
    hook found that ``kexec -e`` returned ('' otherwise); the hook's record
    is used up.  A boot that came through kexec (``method``) proves it did
    not return."""
    text = files.take_text(at(root, KEXEC_RETURNED_MARKER, follow=False))
    if text is None or method in (KEXEC, HANDOFF):
        return ""
    status, _, image = text.partition(" ")
    return f"kexec -e returned at shutdown with exit status {status or '?'}, {image or 'the kernel'} loaded"


def record(root: str) -> str:
    """Early in boot: work out how this boot happened and keep it in /run
    for the rest of the boot (the hand-off marker is used up here).  Run
    again in the same boot (the unit restarted by a package upgrade), it
    keeps what it found first."""
    path = at(root, RECORD)
    kept = (files.read_text(path, errors="replace") or "").strip()
    if kept in METHODS:
        return kept
    method = _compute(root, consume=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_atomic(path, method + "\n")
    except OSError:
        pass  # /run not writable (a read-only test root): the method is still returned
    return method


def read(root: str) -> str:
    """How this boot happened: what ``record`` kept, or, before it ran in
    this boot, what the kernel says (a hand-off is then not told apart)."""
    text = (files.read_text(at(root, RECORD), errors="replace") or "").strip()
    if text in METHODS:
        return text
    return _compute(root, consume=False)
