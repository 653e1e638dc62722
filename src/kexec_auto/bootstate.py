"""The boot assessment's state on disk: /var/lib/kexec-auto/boot-state.json.

assess computes; this module reads the file and writes it back, one
writer at a time (see lock).
"""

from __future__ import annotations

import os
from typing import Callable

from . import assess, files, lock
from .paths import at

BOOT_STATE = "/var/lib/kexec-auto/boot-state.json"

Change = Callable[[assess.BootState], tuple[assess.BootState, list[str]]]


def read_boot_state(root: str) -> tuple[assess.BootState, list[str]]:
    """The boot assessment state; a corrupt file is reported, set aside and
    replaced by an empty state, never fatal."""
    path = at(root, BOOT_STATE)
    try:
        text = files.read_text(path, errors="replace")
    except files.FileError as error:
        return assess.BootState(), [f"{BOOT_STATE} is corrupt ({str(error).rpartition(': ')[2]}); starting a new one"]
    if text is None:
        return assess.BootState(), []
    try:
        return assess.parse_state(text), []
    except ValueError as error:
        return assess.BootState(), [f"{BOOT_STATE} is corrupt ({error}); starting a new one"]


@lock.exclusive
def change_boot_state(root: str, change: Change) -> list[str]:
    """Apply ``change`` to the stored boot state; returns its events.
    A corrupt file is moved aside to ``.corrupt`` (as it was) and replaced."""
    state, corrupt = read_boot_state(root)
    new, events = change(state)
    if new != state or corrupt:
        path = at(root, BOOT_STATE)
        files.make_dirs(path.parent)
        if corrupt:
            os.replace(path, f"{path}.corrupt")
        files.write_atomic(path, assess.dump_state(new))
    return events
