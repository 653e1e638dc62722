"""The kernel command line to hand to the next kernel.

>>> clean_cmdline('BOOT_IMAGE=/vmlinuz-6.1.0-56-amd64 root=UUID=x ro quiet initrd=\\\\initrd.img')
'root=UUID=x ro quiet'
>>> build_cmdline("", "root=/dev/vda ro", "nokaslr")
'root=/dev/vda ro nokaslr'
"""

from __future__ import annotations

from .trial import strip_trial_words

# Words a boot loader or the kernel itself adds for the booted kernel only;
# handing them on would point the next kernel at the wrong image or initrd.
BOOT_LOADER_WORDS = ("BOOT_IMAGE=", "initrd=", "elfcorehdr=", "kexec_jump_back_entry=")


def split_words(cmdline: str) -> list[str]:
    """Words of a command line as the kernel parses it: spaces separate
    words, except inside double quotes (which stay part of the word)."""
    words, word, quoted = [], [], False
    for char in cmdline:
        if char == '"':
            quoted = not quoted
        if char.isspace() and not quoted:
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
    without boot-loader words.  ``extra`` is appended.
    """
    base = configured.strip() if configured.strip() else clean_cmdline(current)
    return " ".join(part for part in (base, extra.strip()) if part)
