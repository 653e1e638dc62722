"""The safety net of a trial boot: the words kexec-auto adds to a trial kernel's command line.

Every kernel kexec-auto boots through kexec is on trial until
kexec-auto-bless.service marks it good.  Its command line then carries
``kexec_auto.trial=SECONDS`` (the deadline for the boot to complete) and,
unless the administrator's command line already sets ``panic=``, a
``panic=SECONDS`` word, so that a kernel panic or initramfs-tools' panic()
resets the machine instead of waiting forever.  The kexec-auto trial
generator reads the trial word early in boot and adds the rest of the net
(see debian/kexec-auto-trial-generator).

The words always come as a block: the trial word, then kexec-auto's own
``panic=`` if it added one.  The block is inserted before ``--`` (after
which words go to init) and removed again whenever a command line is
reused, so that the next trial starts from the administrator's words.

>>> trial_cmdline("root=/dev/vda ro", deadline=300)
'root=/dev/vda ro kexec_auto.trial=300 panic=10'
>>> trial_cmdline("root=/dev/vda ro panic=30", deadline=300)
'root=/dev/vda ro panic=30 kexec_auto.trial=300'
>>> strip_trial_words("root=/dev/vda ro kexec_auto.trial=300 panic=10".split())
['root=/dev/vda', 'ro']
"""

from __future__ import annotations

from typing import Iterable, Optional

TRIAL_WORD = "kexec_auto.trial"
PANIC_WORD = "panic"
#: Seconds a trial kernel waits after a panic before it resets the machine.
PANIC_SECONDS = 10
#: How much longer than the deadline the boot-completion job may wait before
#: systemd itself forces the reboot (in case the deadline service cannot run);
#: the trial's watchdogs fire as late (hooks/libexec/trial-watchdog).
BACKSTOP_SECONDS = 60
INIT_SEPARATOR = "--"


def _key(word: str) -> str:
    return word.split("=", 1)[0]


def cmdline_panic(words: Iterable[str]) -> Optional[int]:
    """The panic= seconds the command line gives the kernel (the last one
    counts; a value that is no number means 0), None when it gives none.

    >>> cmdline_panic(["ro", "panic=5", "panic=0"]), cmdline_panic(["ro", "panic_on_warn=1", "--", "panic=3"])
    (0, None)
    """
    panic = None
    for word in words:
        if word == INIT_SEPARATOR:
            break
        key, _, value = word.partition("=")
        if key == PANIC_WORD:
            panic = int(value) if value.lstrip("-").isdigit() else 0
    return panic


def sets_panic(words: Iterable[str]) -> bool:
    """Whether the command line already says what a panic does.

    >>> sets_panic(["ro", "panic=0"]), sets_panic(["ro", "panic_on_warn=1"])
    (True, False)
    """
    return cmdline_panic(words) is not None


def trial_words(words: list[str], deadline: int, panic: int = PANIC_SECONDS) -> list[str]:
    """The block of words kexec-auto adds to ``words`` for a trial boot."""
    block = [f"{TRIAL_WORD}={deadline}"]
    if not sets_panic(words):
        block.append(f"{PANIC_WORD}={panic}")
    return block


def trial_cmdline(cmdline: str, deadline: int, panic: int = PANIC_SECONDS) -> str:
    """``cmdline`` with the trial block inserted (before ``--``, if any).

    >>> trial_cmdline("root=/dev/vda -- single", deadline=120)
    'root=/dev/vda kexec_auto.trial=120 panic=10 -- single'
    """
    words = strip_trial_words(cmdline.split())
    block = trial_words(words, deadline, panic)
    if INIT_SEPARATOR in words:
        at = words.index(INIT_SEPARATOR)
        words = words[:at] + block + words[at:]
    else:
        words = words + block
    return " ".join(words)


def strip_trial_words(words: list[str]) -> list[str]:
    """``words`` without the trial blocks kexec-auto added.

    >>> strip_trial_words(["ro", "kexec_auto.trial=300", "panic=10", "quiet"])
    ['ro', 'quiet']
    >>> strip_trial_words(["ro", "panic=30", "kexec_auto.trial=300", "quiet"])
    ['ro', 'panic=30', 'quiet']
    """
    kept: list[str] = []
    skip_panic = False
    for word in words:
        if _key(word) == TRIAL_WORD:
            skip_panic = True
            continue
        if skip_panic and _key(word) == PANIC_WORD:
            skip_panic = False
            continue
        skip_panic = False
        kept.append(word)
    return kept


def trial_deadline(words: Iterable[str]) -> Optional[int]:
    """The deadline of the trial this command line starts, None when it
    starts none.

    >>> trial_deadline(["ro", "kexec_auto.trial=300"]), trial_deadline(["ro"])
    (300, None)
    >>> trial_deadline(["kexec_auto.trial=soon"]) is None
    True
    """
    for word in words:
        key, sep, value = word.partition("=")
        if key == TRIAL_WORD and sep and value.isascii() and value.isdigit():
            return int(value)
    return None


def added_panic(words: Iterable[str]) -> Optional[int]:
    """The ``panic=`` seconds kexec-auto itself added to this command line.

    >>> added_panic("ro kexec_auto.trial=300 panic=10".split())
    10
    >>> added_panic("ro panic=30 kexec_auto.trial=300".split()) is None
    True
    """
    previous = ""
    for word in words:
        key, _, value = word.partition("=")
        if key == PANIC_WORD and _key(previous) == TRIAL_WORD:
            try:
                return int(value)
            except ValueError:
                return None
        previous = word
    return None
