"""The boot assessment's state on disk: /var/lib/kexec-auto/boot-state.json.

assess computes, statefile reads and writes the JSON; this module keeps the
file, one writer at a time (see lock).  A damaged file is never dropped in
silence: what can be read of it is kept (statefile.salvage), the file is
set aside as it was (``.corrupt``), and what was lost is recorded in the
state itself, so that every command says so until an administrator runs
``kexec-auto acknowledge``.
"""

from __future__ import annotations

import os
from typing import Callable

from . import assess, files, lock, statefile
from .clock import now
from .paths import at

BOOT_STATE = "/var/lib/kexec-auto/boot-state.json"

Change = Callable[[assess.BootState], tuple[assess.BootState, list[str]]]


def _read(root: str) -> tuple[assess.BootState, str]:
    """The stored state, and, when the file is damaged, why and what of it
    was lost ('' when it is whole)."""
    path = at(root, BOOT_STATE)
    try:
        text = files.read_text(path, errors="replace")
    except files.FileError as error:
        return assess.BootState(), f"{str(error).rpartition(': ')[2]}; lost: all of it"
    if text is None:
        return assess.BootState(), ""
    try:
        return statefile.parse_state(text), ""
    except ValueError as error:
        state, lost = statefile.salvage(text)
        kept = f"kept {len(state.marks)} marks and {len(state.events)} events"
        return state, f"{str(error).removeprefix('not a kexec-auto boot state ')}; {kept}; lost: {lost or 'nothing'}"


def _noted(state: assess.BootState, damage: str) -> assess.BootState:
    """``state`` with the damage ``_read`` found recorded in it."""
    return assess.damaged(state, now(), f"{BOOT_STATE} {damage}") if damage else state


def read_boot_state(root: str) -> tuple[assess.BootState, list[str]]:
    """The boot assessment state, with what was recovered of a damaged
    file, and warnings: what a damage lost, until acknowledged."""
    state = _noted(*_read(root))
    return state, [f"the boot state was damaged: {notice.partition(' ')[2]} (since {notice.partition(' ')[0]}; "
                   "'kexec-auto acknowledge' once seen)" for notice in state.damage]


@lock.exclusive
def change_boot_state(root: str, change: Change) -> list[str]:
    """Apply ``change`` to the stored boot state; returns its events.
    A damaged file is moved aside to ``.corrupt`` (as it was) and replaced
    by what could be read of it, with what was lost."""
    stored, damage = _read(root)
    state = _noted(stored, damage)
    new, events = change(state)
    if new != stored or damage:
        path = at(root, BOOT_STATE)
        files.make_dirs(path.parent)
        if damage and os.path.lexists(path):
            os.replace(path, f"{path}.corrupt")
        files.write_atomic(path, statefile.dump_state(new))
    return events
