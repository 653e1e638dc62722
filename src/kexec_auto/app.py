"""Selecting a kernel and writing /etc/default/kexec, from reading the
machine to writing files.

This module glues the pure core (config, policy, cmdline, render) to the
thin system layer (system, files); reboot.py and report.py build on it.
Messages go to the ``log`` callable (stderr by default), results are
returned, nothing here exits.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Callable, Optional

from . import assess, files, system
from .cmdline import build_cmdline
from .config import CONFIG_PATH, KEYS, Config, ConfigError, parse_config, set_values
from .policy import Selection, select_kernel
from .render import render_default_kexec, render_key

DEFAULT_KEXEC = "/etc/default/kexec"
ENTRIES_DIR = "/run/boot-loader-entries"
BOOT_STATE = "/var/lib/kexec-auto/boot-state.json"

Log = Callable[[str], None]


def stderr_log(message: str) -> None:
    print(f"kexec-auto: {message}", file=sys.stderr)


def load_config(root: str) -> tuple[Config, list[str]]:
    path = system.at(root, CONFIG_PATH)
    try:
        with path.open(encoding="utf-8") as handle:
            return parse_config(handle, source=CONFIG_PATH)
    except FileNotFoundError:
        return Config(), []
    except UnicodeDecodeError as error:
        raise ConfigError(f"{CONFIG_PATH}: not UTF-8 text ({error.reason})") from None


def now() -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def read_boot_state(root: str) -> tuple[assess.BootState, list[str]]:
    """The boot assessment state; a corrupt file is reported, set aside and
    replaced by an empty state, never fatal."""
    path = system.at(root, BOOT_STATE)
    text = files.read_text(path, errors="replace")
    if text is None:
        return assess.BootState(), []
    try:
        return assess.parse_state(text), []
    except ValueError as error:
        return assess.BootState(), [f"{BOOT_STATE} is corrupt ({error}); starting a new one"]


def change_boot_state(
    root: str, change: Callable[[assess.BootState], tuple[assess.BootState, list[str]]]
) -> list[str]:
    """Apply ``change`` to the stored boot state; returns its events.
    A corrupt file is kept aside as ``.corrupt`` and replaced."""
    state, corrupt = read_boot_state(root)
    new, events = change(state)
    if new != state or corrupt:
        path = system.at(root, BOOT_STATE)
        path.parent.mkdir(parents=True, exist_ok=True)
        if corrupt:
            files.write_atomic(Path(f"{path}.corrupt"), files.read_text(path, errors="replace") or "")
        files.write_atomic(path, assess.dump_state(new))
    return events


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything kexec-auto decided, before anything is written."""

    config: Config
    config_warnings: tuple[str, ...]
    running: str
    selection: Selection
    append: str
    cmdline_source: str
    boot_state: assess.BootState = assess.BootState()
    with_load_kexec: bool = True

    @property
    def problems(self) -> tuple[str, ...]:
        return self.config_warnings + self.selection.warnings

    def _render_args(self) -> tuple:
        kernel = self.selection.kernel
        if kernel is None:
            return (None, "", "", "", self.selection.reason, self.with_load_kexec)
        return (kernel.release, kernel.image, kernel.initrd or "", self.append, self.selection.reason,
                self.with_load_kexec)

    def render(self) -> str:
        return render_default_kexec(*self._render_args())

    def render_key(self) -> str:
        return render_key(*self._render_args())


def make_plan(root: str) -> Plan:
    """Read the config and the machine and select a kernel (raises
    ConfigError for a setting kexec-auto cannot act on)."""
    config, warnings = load_config(root)
    boot_state, state_warnings = read_boot_state(root)
    running = system.running_release(root)
    bad = {release: mark.why for release, mark in boot_state.bad().items()}
    selection = select_kernel(system.find_kernels(root), config, running, bad)
    current, source = system.current_cmdline(root)
    if config.cmdline:
        source = f"CMDLINE in {CONFIG_PATH}"
    append = build_cmdline(config.cmdline, current, config.extra_cmdline)
    return Plan(
        config, tuple(warnings + state_warnings), running, selection, append, source, boot_state,
        system.kexec_tools_reads_load_kexec(root),
    )


def describe(selection: Selection) -> str:
    if selection.kernel is None:
        return "no kernel selected: reboots stay normal firmware reboots"
    return f"selected {selection.kernel.release} ({selection.reason})"


def update(
    root: str, dry_run: bool = False, quiet: bool = False, log: Log = stderr_log, plan: Optional[Plan] = None
) -> int:
    """Regenerate /etc/default/kexec.  Returns the exit status."""
    plan = plan or make_plan(root)
    if not plan.config.enabled:
        log(f"disabled (ENABLED=false in {CONFIG_PATH}); {DEFAULT_KEXEC} not changed")
        return 0
    for message in plan.problems:
        log(f"warning: {message}")
    for message in plan.selection.errors:
        log(f"error: {message}")
    target = system.at(root, DEFAULT_KEXEC)
    if dry_run:
        import difflib

        content = plan.render()
        current = files.read_text(target) or ""
        sys.stdout.writelines(
            difflib.unified_diff(
                current.splitlines(True), content.splitlines(True), DEFAULT_KEXEC, f"{DEFAULT_KEXEC} (new)"
            )
        )
        return 1 if plan.selection.errors else 0
    state_dir = system.at(root, files.STATE_DIR)
    key = plan.render_key()
    if files.unchanged_since(target, state_dir, key):
        result = files.WriteResult(changed=False)  # rendering would give what is there
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        result = files.replace_managed(target, plan.render(), state_dir, key)
    if result.kept_original:
        log(f"kept the original {DEFAULT_KEXEC} as {unroot(root, result.kept_original)}")
    if result.kept_edit:
        log(
            f"warning: {DEFAULT_KEXEC} was edited by hand; that version is kept as "
            f"{unroot(root, result.kept_edit)} (change settings in {CONFIG_PATH} instead)"
        )
    if plan.selection.kernel is None:
        log(f"warning: no selectable kernel; {DEFAULT_KEXEC} names none, reboots stay firmware reboots")
    elif result.changed or not quiet:
        state = "updated" if result.changed else "unchanged"
        log(f"{DEFAULT_KEXEC} {state}: {describe(plan.selection)}")
    if is_armed(root):
        arm(root, plan)
    return 1 if plan.selection.errors else 0


def unroot(root: str, path: Path) -> str:
    return "/" + str(path.relative_to(Path(root))).lstrip("/") if root != "/" else str(path)


def set_settings(root: str, assignments: list[str], log: Log = stderr_log) -> int:
    """Write KEY=VALUE settings into the config file, keeping everything
    else in it; nothing is written unless every value is valid."""
    updates = {}
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        if not sep:
            raise ConfigError(f"{assignment!r}: expected KEY=VALUE")
        updates[key] = value
    path = system.at(root, CONFIG_PATH)
    current = files.read_text(path)
    lines = set_values((current or "").splitlines(), updates)
    content = "\n".join(lines) + "\n"
    parse_config(content.splitlines(), source=CONFIG_PATH)  # the whole file must stay valid
    if content != current:
        path.parent.mkdir(parents=True, exist_ok=True)
        files.write_atomic(path, content)
    return 0


def get_settings(root: str, keys: list[str]) -> int:
    config, _ = load_config(root)
    for key in keys:
        if key not in KEYS:
            raise ConfigError(f"unknown setting {key}")
        value = getattr(config, KEYS[key][0])
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, tuple):
            value = " ".join(value)
        print(value)
    return 0


def is_armed(root: str) -> bool:
    return system.at(root, f"{ENTRIES_DIR}/loader/entries/kexec-auto.conf").exists()


def arm(root: str, plan: Optional[Plan] = None, log: Log = stderr_log) -> int:
    """Publish the selected kernel as a boot loader entry in /run, so that
    ``systemctl kexec`` (which refuses when nothing is loaded and no entry
    exists) loads it.  Removes the entry when there is nothing to boot."""
    plan = plan or make_plan(root)
    entries = system.at(root, ENTRIES_DIR)
    kernel = plan.selection.kernel
    if not plan.config.enabled or kernel is None:
        for name in ("loader/entries/kexec-auto.conf", "kexec-auto/vmlinuz", "kexec-auto/initrd.img"):
            (entries / name).unlink(missing_ok=True)
        return 0
    links = entries / "kexec-auto"
    links.mkdir(parents=True, exist_ok=True)
    (entries / "loader/entries").mkdir(parents=True, exist_ok=True)
    lines = [f"title kexec-auto: {kernel.release}", "linux /kexec-auto/vmlinuz"]
    pairs = [("vmlinuz", kernel.image)]
    if kernel.initrd:
        lines.append("initrd /kexec-auto/initrd.img")
        pairs.append(("initrd.img", kernel.initrd))
    for name, target in pairs:
        if (links / name).is_symlink() and os.readlink(links / name) == target:
            continue
        tmp = links / f".{name}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        os.replace(tmp, links / name)
    if not kernel.initrd:
        (links / "initrd.img").unlink(missing_ok=True)
    lines.append(f"options {plan.append}")
    entry, text = entries / "loader/entries/kexec-auto.conf", "\n".join(lines) + "\n"
    if files.read_text(entry) != text:
        files.write_atomic(entry, text)
    return 0
