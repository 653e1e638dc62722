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

from . import assess, files, lock, system
from .cmdline import build_cmdline, max_length
from .config import CONFIG_LIMIT, CONFIG_PATH, KEYS, Config, ConfigError, parse_config, set_values
from .policy import Selection, select_kernel
from .render import render_default_kexec, render_key

DEFAULT_KEXEC = "/etc/default/kexec"
ENTRIES_DIR = "/run/boot-loader-entries"
BOOT_STATE = "/var/lib/kexec-auto/boot-state.json"

Log = Callable[[str], None]


def stderr_log(message: str) -> None:
    print(f"kexec-auto: {message}", file=sys.stderr)


def read_config_text(root: str) -> Optional[str]:
    """The text of the config file, None when there is none; ConfigError
    when it is not a regular UTF-8 file of sane size."""
    try:
        data = files.read_bytes(system.at(root, CONFIG_PATH), limit=CONFIG_LIMIT)
    except files.FileError as error:
        raise ConfigError(f"{CONFIG_PATH}: {str(error).rpartition(': ')[2]}") from None
    if data is None:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"{CONFIG_PATH}: not UTF-8 text (byte {error.start})") from None


def load_config(root: str) -> tuple[Config, list[str]]:
    text = read_config_text(root)
    return parse_config(text, source=CONFIG_PATH) if text is not None else (Config(), [])


def now() -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def read_boot_state(root: str) -> tuple[assess.BootState, list[str]]:
    """The boot assessment state; a corrupt file is reported, set aside and
    replaced by an empty state, never fatal."""
    path = system.at(root, BOOT_STATE)
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
def change_boot_state(
    root: str, change: Callable[[assess.BootState], tuple[assess.BootState, list[str]]]
) -> list[str]:
    """Apply ``change`` to the stored boot state; returns its events.
    A corrupt file is moved aside to ``.corrupt`` (as it was) and replaced."""
    state, corrupt = read_boot_state(root)
    new, events = change(state)
    if new != state or corrupt:
        path = system.at(root, BOOT_STATE)
        files.make_dirs(path.parent)
        if corrupt:
            os.replace(path, f"{path}.corrupt")
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
    if source:
        append = build_cmdline(config.cmdline, current, config.extra_cmdline)
    else:
        # In a chroot or container the running kernel's command line is the
        # build host's: write none, the first boot fills it in.
        append, source = "", "none yet: the first boot of this system fills it in"
    if len(append.encode("utf-8", "surrogateescape")) > max_length():
        raise ConfigError(
            f"the kernel command line would be {len(append.encode('utf-8', 'surrogateescape'))} bytes "
            f"({source} with EXTRA_CMDLINE), more than the {max_length()} the kernel accepts"
        )
    return Plan(
        config, tuple(warnings + state_warnings), running, selection, append, source, boot_state,
        system.kexec_tools_reads_load_kexec(root),
    )


def describe(selection: Selection) -> str:
    if selection.kernel is None:
        return "no kernel selected: reboots stay normal firmware reboots"
    return f"selected {selection.kernel.release} ({selection.reason})"


def show_diff(root: str, log: Log = stderr_log) -> int:
    """``update --dry-run``: print the change as a unified diff, change nothing."""
    import difflib

    plan = make_plan(root)
    for message in plan.problems:
        log(f"warning: {message}")
    for message in plan.selection.errors:
        log(f"error: {message}")
    target = system.at(root, DEFAULT_KEXEC)
    current = files.read_text(target, errors="surrogateescape") or ""
    if not plan.config.enabled:
        original = system.at(root, f"{files.STATE_DIR}/kexec{files.ORIG_SUFFIX}")
        held = os.path.lexists(original) or os.path.lexists(f"{original}-absent")
        content = (files.read_text(original, errors="surrogateescape") or "") if held else current
        log(f"disabled (ENABLED=false in {CONFIG_PATH})")
    else:
        content = plan.render()
    sys.stdout.writelines(
        difflib.unified_diff(current.splitlines(True), content.splitlines(True), DEFAULT_KEXEC, f"{DEFAULT_KEXEC} (new)")
    )
    return 1 if plan.selection.errors else 0


@lock.exclusive
def update(root: str, quiet: bool = False, log: Log = stderr_log, plan: Optional[Plan] = None) -> int:
    """Regenerate /etc/default/kexec.  Returns the exit status."""
    plan = plan or make_plan(root)
    target = system.at(root, DEFAULT_KEXEC)
    state_dir = system.at(root, files.STATE_DIR)
    if not plan.config.enabled:
        return _disable(root, plan, target, state_dir, log, quiet)
    for message in plan.problems:
        log(f"warning: {message}")
    for message in plan.selection.errors:
        log(f"error: {message}")
    key = plan.render_key()
    if files.unchanged_since(target, state_dir, key):
        result = files.WriteResult(changed=False)  # rendering would give what is there
    else:
        files.make_dirs(target.parent)
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


def _disable(root: str, plan: Plan, target: Path, state_dir: Path, log: Log, quiet: bool) -> int:
    """ENABLED=false: give /etc/default/kexec back as it was before
    kexec-auto, so that no kernel stays named there, and withdraw the
    boot loader entry."""
    result = files.release_managed(target, state_dir)
    if result.kept_edit:
        log(f"warning: {DEFAULT_KEXEC} was edited by hand; that version is kept as {unroot(root, result.kept_edit)}")
    if result.restored:
        log(f"disabled (ENABLED=false in {CONFIG_PATH}): {DEFAULT_KEXEC} is back as it was before kexec-auto")
    elif result.removed:
        log(f"disabled (ENABLED=false in {CONFIG_PATH}): removed {DEFAULT_KEXEC}, which kexec-auto had created")
    elif not quiet:
        log(f"disabled (ENABLED=false in {CONFIG_PATH}); {DEFAULT_KEXEC} not changed")
    arm(root, plan)
    return 0


def unroot(root: str, path: Path) -> str:
    base = system._real_root(root)
    return "/" + str(Path(path).relative_to(base)).lstrip("/") if base != "/" else str(path)


@lock.exclusive
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
    current = read_config_text(root)
    lines = (current or "").split("\n")  # sh splits lines at newlines only
    if lines[-1] == "":
        lines.pop()
    lines = set_values(lines, updates)
    content = "\n".join(lines) + "\n"
    parse_config(content, source=CONFIG_PATH)  # the whole file must stay valid
    if content != current:
        files.make_dirs(path.parent)
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
    return os.path.lexists(system.at(root, f"{ENTRIES_DIR}/loader/entries/kexec-auto.conf", follow=False))


@lock.exclusive
def arm(root: str, plan: Optional[Plan] = None, log: Log = stderr_log) -> int:
    """Publish the selected kernel as a boot loader entry in /run, so that
    ``systemctl kexec`` (which refuses when nothing is loaded and no entry
    exists) loads it.  Removes the entry when there is nothing to boot."""
    plan = plan or make_plan(root)
    kernel = plan.selection.kernel

    def entry(name: str) -> Path:  # the entry itself, never what a link in /run points at
        return system.at(root, f"{ENTRIES_DIR}/{name}", follow=False)

    if not plan.config.enabled or kernel is None:
        for name in ("loader/entries/kexec-auto.conf", "kexec-auto/vmlinuz", "kexec-auto/initrd.img"):
            entry(name).unlink(missing_ok=True)
        return 0
    files.make_dirs(system.at(root, f"{ENTRIES_DIR}/kexec-auto"))
    files.make_dirs(system.at(root, f"{ENTRIES_DIR}/loader/entries"))
    lines = [f"title kexec-auto: {kernel.release}", "linux /kexec-auto/vmlinuz"]
    pairs = [("vmlinuz", kernel.image)]
    if kernel.initrd:
        lines.append("initrd /kexec-auto/initrd.img")
        pairs.append(("initrd.img", kernel.initrd))
    for name, target in pairs:
        link = entry(f"kexec-auto/{name}")
        if link.is_symlink() and os.readlink(link) == target:
            continue
        tmp = entry(f"kexec-auto/.{name}.tmp")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        os.replace(tmp, link)
    if not kernel.initrd:
        entry("kexec-auto/initrd.img").unlink(missing_ok=True)
    lines.append(f"options {plan.append}")
    conf, text = entry("loader/entries/kexec-auto.conf"), "\n".join(lines) + "\n"
    try:
        same = files.read_bytes(conf, follow=False) == files.encode(text)
    except files.FileError:
        same = False
    if not same:
        files.write_atomic(conf, text)
    return 0
