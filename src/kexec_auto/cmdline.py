"""The kernel command line to hand to the next kernel.

>>> clean_cmdline('BOOT_IMAGE=/vmlinuz-6.1.0-56-amd64 root=UUID=x ro quiet initrd=\\\\initrd.img')
'root=UUID=x ro quiet'
>>> build_cmdline("", "root=/dev/vda ro", "nokaslr")
'root=/dev/vda ro nokaslr'
"""

from __future__ import annotations

import platform
from typing import Optional

from .trial import INIT_SEPARATOR, strip_trial_words

# Words a boot loader or the kernel itself adds for the booted kernel only;
# handing them on would point the next kernel at the wrong image or initrd.
BOOT_LOADER_WORDS = ("BOOT_IMAGE=", "initrd=", "elfcorehdr=", "kexec_jump_back_entry=")
# The kernel's COMMAND_LINE_SIZE (arch/*/include/uapi/asm/setup.h), the
# terminating NUL included; a longer command line is cut off by the kernel.
COMMAND_LINE_SIZE = {"x86_64": 2048, "i686": 2048, "i586": 2048, "i386": 2048, "aarch64": 2048,
                     "ppc64le": 2048, "ppc64": 2048, "armv7l": 1024, "riscv64": 1024}
_SPACE = " \t\n\v\f\r"  # the kernel's isspace(), ASCII only


def max_length(machine: Optional[str] = None) -> int:
    """The longest command line, in bytes, that the kernel of ``machine``
    (default: this one) accepts.

    >>> max_length("x86_64")
    2047
    """
    return COMMAND_LINE_SIZE.get(machine or platform.machine(), 2048) - 1


def split_words(cmdline: str) -> list[str]:
    """Words of a command line as the kernel parses it: spaces separate
    words, except inside double quotes (which stay part of the word)."""
    words: list[str] = []
    word: list[str] = []
    quoted = False
    for char in cmdline:
        if char == '"':
            quoted = not quoted
        if char in _SPACE and not quoted:
            if word:
                words.append("".join(word))
                word = []
        else:
            word.append(char)
    if word:
        words.append("".join(word))
    return words


def clean_cmdline(cmdline: str) -> str:
    """``cmdline`` without the words a boot loader injected, nor the trial
    words kexec-auto added for the boot that is running.

    >>> clean_cmdline("root=/dev/vda ro kexec_auto.trial=300 panic=10")
    'root=/dev/vda ro'
    """
    words = [w for w in split_words(cmdline) if not w.startswith(BOOT_LOADER_WORDS)]
    return " ".join(strip_trial_words(words))


def build_cmdline(configured: str, current: str, extra: str) -> str:
    """The command line for the next kernel.

    ``configured`` (the CMDLINE setting) is used as given when set;
    otherwise ``current`` (/etc/kernel/cmdline or /proc/cmdline) is reused
    without boot-loader words.  ``extra`` is added to the kernel's words:
    before a ``--``, after which every word is init's.

    >>> build_cmdline("", "root=/dev/vda ro -- single", "nokaslr")
    'root=/dev/vda ro nokaslr -- single'
    """
    base = configured.strip() if configured.strip() else clean_cmdline(current)
    if not extra.strip():
        return base
    words = split_words(base)
    if INIT_SEPARATOR not in words:
        return " ".join(part for part in (base, extra.strip()) if part)
    at = words.index(INIT_SEPARATOR)
    return " ".join(words[:at] + [extra.strip()] + words[at:])
