"""Boot assessment: which kernels booted, which failed, pure state changes.

When kexec-auto reboots into kernel X through kexec, X is being *tried*.
If the machine then reaches a healthy state in X, X is marked good.  If it
comes up in another kernel first (X panicked, hung, dropped to an
emergency shell, or the power went), the trial failed.  Like systemd-boot's
boot counting, a kernel is only marked bad after ``tries`` failed trials
in a row (the TRIES setting), so that one power loss does not condemn a
good kernel; a bad kernel is never selected again until its package is
reinstalled or the mark is forgotten.  A kernel with a failed trial but
tries left is tried again at the next reboot, but never by the hand-off
at power-on (see :func:`BootState.suspects`).

>>> state = start_trial(BootState(), "6.12.117+deb12-cloud-amd64", "2026-11-25T12:00:00")
>>> state, events = assess_boot(state, "6.1.0-50-cloud-amd64", "2026-11-25T12:01:00", tries=1)
>>> state.marks["6.12.117+deb12-cloud-amd64"].state, state.trying
('bad', None)
>>> import textwrap; print(textwrap.fill(events[0], 100))
6.12.117+deb12-cloud-amd64 failed to boot (came up in 6.1.0-50-cloud-amd64 instead; it never reached
its userspace: a panic, a hang, a missing root file system or a power loss early in boot): marked
bad after 1 failed trial
"""

from __future__ import annotations

import dataclasses
from typing import Optional

GOOD, BAD, FAILED = "good", "bad", "failed"
UNTRIED = "untried"
HISTORY = 20  # events kept for `kexec-auto status`
DEFAULT_TRIES = 2
USERSPACE = "userspace"  # how far a kernel on trial got: its userspace ran kexec-auto


@dataclasses.dataclass(frozen=True)
class Mark:
    state: str  # GOOD, FAILED (failed trials, tries left) or BAD
    when: str
    why: str = ""
    failures: int = 0  # failed trials in a row


@dataclasses.dataclass(frozen=True)
class BootState:
    trying: Optional[str] = None
    trying_since: str = ""
    marks: dict[str, Mark] = dataclasses.field(default_factory=dict)
    events: tuple[str, ...] = ()
    #: what the kernel being tried reported about itself during its boot
    trying_reached: str = ""  # USERSPACE once its userspace ran
    trying_failed: str = ""  # why it gave up its trial (emergency mode, deadline)
    #: what was lost when the stored state was found damaged, until acknowledged
    damage: tuple[str, ...] = ()

    def mark_of(self, release: str) -> str:
        """'good', 'failed' (failed trials, tries left), 'bad' or 'untried'."""
        mark = self.marks.get(release)
        return mark.state if mark else UNTRIED

    def failures(self, release: str) -> int:
        mark = self.marks.get(release)
        return mark.failures if mark else 0

    def bad(self) -> dict[str, Mark]:
        return {r: m for r, m in self.marks.items() if m.state == BAD}

    def suspects(self) -> dict[str, Mark]:
        """Kernels whose last trial failed: bad ones, and those with tries
        left.  The hand-off at power-on never goes into one of them (the
        power-on may well be the reset their failure caused)."""
        return {r: m for r, m in self.marks.items() if m.state in (BAD, FAILED)}


def _with(state: BootState, now: str, event: str, **changes) -> BootState:
    events = (state.events + (f"{now} {event}",))[-HISTORY:]
    return dataclasses.replace(state, events=events, **changes)


def _not_trying(state: BootState, **changes) -> BootState:
    return dataclasses.replace(state, trying=None, trying_since="", trying_reached="", trying_failed="", **changes)


def start_trial(state: BootState, release: str, now: str) -> BootState:
    """Record that the next boot tries ``release``.

    A kernel that booted before is tried all the same: its initrd may have
    been rebuilt since, and a kernel that stopped booting must be caught
    like a new one (bless ends every trial)."""
    return dataclasses.replace(state, trying=release, trying_since=now, trying_reached="", trying_failed="")


def end_trial(state: BootState, running: str) -> tuple[BootState, list[str]]:
    """An orderly shutdown from inside the kernel being tried: it booted, so
    whatever reboot follows (a coldreboot, a poweroff) is no failure of it.
    It is not marked good either: it may not have become healthy.  A kernel
    that gave up its own trial stays on trial: the next boot counts it."""
    if state.trying != running or state.trying_failed:
        return state, []
    return _not_trying(state), []


def reached_userspace(state: BootState, running: str) -> BootState:
    """The kernel being tried runs its userspace (kexec-auto's boot unit)."""
    if state.trying != running or state.trying_reached == USERSPACE:
        return state
    return dataclasses.replace(state, trying_reached=USERSPACE)


def trial_failed(state: BootState, running: str, why: str, now: str) -> tuple[BootState, list[str]]:
    """The kernel being tried reports that its boot failed (emergency mode,
    deadline missed) just before it resets the machine; the next boot
    counts the failure and gives this reason."""
    if state.trying != running:
        return state, []
    event = f"{running} gives up its trial boot: {why}"
    return _with(state, now, event, trying_failed=why), [event]


def not_started(state: BootState, now: str, why: str) -> tuple[BootState, list[str]]:
    """The kernel being tried was never started (``kexec -e`` returned at
    shutdown and the machine rebooted through its firmware): its trial ends
    and is no failure of it.

    >>> state = start_trial(BootState(), "6.12.117+deb12-cloud-amd64", "2026-11-25T12:00:00")
    >>> state, events = not_started(state, "2026-11-25T12:01:00", "kexec -e returned at shutdown")
    >>> state.trying, state.mark_of("6.12.117+deb12-cloud-amd64")
    (None, 'untried')
    """
    if state.trying is None:
        return state, []
    event = (f"{state.trying} was never started ({why}): the reboot went through the firmware; "
             "its trial is not counted as a failed boot")
    return _with(_not_trying(state), now, event), [event]


def _silent_failure(state: BootState, running: str) -> str:
    if state.trying_reached == USERSPACE:
        return (f"came up in {running} instead; it had started its userspace: a crash, a hang, "
                "a reset or a power loss before its boot completed")
    return (f"came up in {running} instead; it never reached its userspace: a panic, a hang, "
            "a missing root file system or a power loss early in boot")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def assess_boot(state: BootState, running: str, now: str, tries: int = DEFAULT_TRIES
                ) -> tuple[BootState, list[str]]:
    """Early in boot: a kernel being tried that is not the one running failed."""
    if state.trying is None or state.trying == running:
        return state, []
    failed = state.trying
    why = state.trying_failed or _silent_failure(state, running)
    failures = state.failures(failed) + 1
    marks = dict(state.marks)
    if failures >= tries:
        marks[failed] = Mark(BAD, now, f"{why} (tried since {state.trying_since})", failures)
        outcome = f"marked bad after {_plural(failures, 'failed trial')}"
    else:
        marks[failed] = Mark(FAILED, now, f"{why} (tried since {state.trying_since})", failures)
        left = tries - failures
        outcome = (f"failed trial {failures} of {tries}; it is tried again at the next reboot "
                   f"({_plural(left, 'try')} left), but not by the hand-off at power-on")
    event = f"{failed} failed to boot ({why}): {outcome}"
    return _with(_not_trying(state), now, event, marks=marks), [event]


def tries_left(state: BootState, release: str, tries: int) -> int:
    """Failed trials ``release`` may still have before it is marked bad."""
    if state.mark_of(release) == BAD:
        return 0
    return max(tries - state.failures(release), 0)


def bless(state: BootState, running: str, now: str) -> tuple[BootState, list[str]]:
    """The system reached a healthy state in ``running``: it is good."""
    if state.mark_of(running) == GOOD and state.trying != running:
        return state, []
    marks = dict(state.marks)
    marks[running] = Mark(GOOD, now)
    event = f"{running} booted and reached a healthy state: marked good"
    if state.trying == running:
        return _with(_not_trying(state), now, event, marks=marks), [event]
    return _with(state, now, event, marks=marks), [event]


def forget(state: BootState, release: str, now: str, why: str) -> tuple[BootState, list[str]]:
    """Drop the mark of ``release`` (reinstalled, or `kexec-auto forget`)."""
    if release not in state.marks and state.trying != release:
        return state, []
    marks = {r: m for r, m in state.marks.items() if r != release}
    event = f"forgot what was known of {release} ({why})"
    if state.trying == release:
        return _with(_not_trying(state), now, event, marks=marks), [event]
    return _with(state, now, event, marks=marks), [event]


def note(state: BootState, now: str, event: str) -> tuple[BootState, list[str]]:
    """Record an event that changes no mark (shown by `kexec-auto status`)."""
    return _with(state, now, event), [event]


def damaged(state: BootState, now: str, what: str) -> BootState:
    """The stored state was damaged: ``what`` says what of it was lost."""
    return _with(state, now, f"the boot state was damaged: {what}", damage=state.damage + (f"{now} {what}",))


def acknowledge(state: BootState, now: str) -> tuple[BootState, list[str]]:
    """An administrator saw what a damaged state lost."""
    if not state.damage:
        return state, []
    event = "the damage to the boot state was acknowledged"
    return _with(state, now, event, damage=()), [event]
