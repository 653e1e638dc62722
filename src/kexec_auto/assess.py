"""Boot assessment: which kernels booted, which failed, pure state changes.

When kexec-auto reboots into kernel X through kexec, X is being *tried*.
If the machine then reaches a healthy state in X, X is marked good; if it
comes up in another kernel first (X panicked and the machine was reset, the
provider booted its own kernel), X is marked bad and never selected again
until its package is reinstalled or the mark is forgotten.

>>> state = start_trial(BootState(), "6.12.117+deb12-cloud-amd64", "2026-11-25T12:00:00")
>>> state, events = assess_boot(state, running="6.1.0-50-cloud-amd64", now="2026-11-25T12:01:00")
>>> state.marks["6.12.117+deb12-cloud-amd64"].state, state.trying
('bad', None)
>>> events[0]
'6.12.117+deb12-cloud-amd64 failed to boot: the machine came up in 6.1.0-50-cloud-amd64 instead'
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

GOOD, BAD = "good", "bad"
HISTORY = 20  # events kept for `kexec-auto status`


@dataclasses.dataclass(frozen=True)
class Mark:
    state: str  # GOOD or BAD
    when: str
    why: str = ""


@dataclasses.dataclass(frozen=True)
class BootState:
    trying: Optional[str] = None
    trying_since: str = ""
    marks: dict[str, Mark] = dataclasses.field(default_factory=dict)
    events: tuple[str, ...] = ()

    def mark_of(self, release: str) -> str:
        """'good', 'bad' or 'untried'."""
        mark = self.marks.get(release)
        return mark.state if mark else "untried"

    def bad(self) -> dict[str, Mark]:
        return {r: m for r, m in self.marks.items() if m.state == BAD}


def _with(state: BootState, now: str, event: str, **changes) -> BootState:
    events = (state.events + (f"{now} {event}",))[-HISTORY:]
    return dataclasses.replace(state, events=events, **changes)


def start_trial(state: BootState, release: str, now: str) -> BootState:
    """Record that the next boot tries ``release``.

    A kernel that booted before is tried all the same: its initrd may have
    been rebuilt since, and a kernel that stopped booting must be caught
    like a new one (bless ends every trial)."""
    return dataclasses.replace(state, trying=release, trying_since=now)


def end_trial(state: BootState, running: str) -> tuple[BootState, list[str]]:
    """An orderly shutdown from inside the kernel being tried: it booted, so
    whatever reboot follows (a coldreboot, a poweroff) is no failure of it.
    It is not marked good either: it may not have become healthy."""
    if state.trying != running:
        return state, []
    return dataclasses.replace(state, trying=None, trying_since=""), []


def assess_boot(state: BootState, running: str, now: str) -> tuple[BootState, list[str]]:
    """Early in boot: a kernel being tried that is not the one running failed."""
    if state.trying is None or state.trying == running:
        return state, []
    failed = state.trying
    event = f"{failed} failed to boot: the machine came up in {running} instead"
    marks = dict(state.marks)
    marks[failed] = Mark(BAD, now, f"came up in {running} instead (tried since {state.trying_since})")
    return _with(state, now, event, trying=None, trying_since="", marks=marks), [event]


def bless(state: BootState, running: str, now: str) -> tuple[BootState, list[str]]:
    """The system reached a healthy state in ``running``: it is good."""
    if state.mark_of(running) == GOOD and state.trying != running:
        return state, []
    marks = dict(state.marks)
    marks[running] = Mark(GOOD, now)
    event = f"{running} booted and reached a healthy state: marked good"
    trying = None if state.trying == running else state.trying
    since = "" if trying is None else state.trying_since
    return _with(state, now, event, trying=trying, trying_since=since, marks=marks), [event]


def forget(state: BootState, release: str, now: str, why: str) -> tuple[BootState, list[str]]:
    """Drop the mark of ``release`` (reinstalled, or `kexec-auto forget`)."""
    if release not in state.marks and state.trying != release:
        return state, []
    marks = {r: m for r, m in state.marks.items() if r != release}
    event = f"forgot what was known of {release} ({why})"
    trying = None if state.trying == release else state.trying
    return _with(state, now, event, trying=trying, marks=marks), [event]


def note(state: BootState, now: str, event: str) -> tuple[BootState, list[str]]:
    """Record an event that changes no mark (shown by `kexec-auto status`)."""
    return _with(state, now, event), [event]


def dump_state(state: BootState) -> str:
    return json.dumps(
        {
            "trying": state.trying,
            "trying_since": state.trying_since,
            "marks": {r: dataclasses.asdict(m) for r, m in sorted(state.marks.items())},
            "events": list(state.events),
        },
        indent=1,
    ) + "\n"


def parse_state(text: str) -> BootState:
    """The state stored in ``text``; ValueError when it is not a valid state.

    >>> parse_state(dump_state(BootState(trying="6.1.0-56-amd64"))).trying
    '6.1.0-56-amd64'
    """
    try:
        data = json.loads(text)
        marks = {
            str(release): Mark(str(m["state"]), str(m["when"]), str(m.get("why", "")))
            for release, m in data["marks"].items()
        }
        if any(m.state not in (GOOD, BAD) for m in marks.values()):
            raise ValueError("unknown mark")
        trying = data["trying"]
        if trying is not None and not isinstance(trying, str):
            raise ValueError("trying is not a release")
        return BootState(trying, str(data.get("trying_since", "")), marks, tuple(map(str, data.get("events", []))))
    except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as error:
        raise ValueError(f"not a kexec-auto boot state ({error.__class__.__name__}: {error})") from None
