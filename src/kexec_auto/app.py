"""Selecting a kernel and writing /etc/default/kexec: the plan, and carrying it out.

The plan is what kexec-auto decided, from the settings and the machine.

This is the application layer: it glues the pure core (config, policy,
cmdline, render) to the system layer (bootscan, machine, kexectools,
files); reboot and report build on it.  Messages go to the ``log``
callable (stderr by default), results are returned, nothing here exits.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path
from typing import Optional

from . import assess, bootscan, debconf, files, host, kexectools, lock, managed, settings
from .bootstate import read_boot_state
from .cmdline import build_cmdline, max_length
from .config import CONFIG_PATH, KEYS, Config, ConfigError, validate
from .kexectools import DEFAULT_KEXEC
from .log import Log, stderr_log
from .paths import at, unroot
from .policy import Selection, select_kernel
from .render import render_default_kexec, render_key
from .settings import load_config

ENTRIES_DIR = "/run/boot-loader-entries"


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
    #: why this machine cannot kexec at all ('' when it can)
    machine_problem: str = ""

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
    running = host.running_release(root)
    bad = {release: mark.why for release, mark in boot_state.bad().items()}
    machine = bootscan.machine_problem(root)
    selection = select_kernel(bootscan.find_kernels(root, machine), config, running, bad)
    current, source = host.current_cmdline(root)
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
        kexectools.reads_load_kexec(root), machine,
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
    target = at(root, DEFAULT_KEXEC)
    current = files.read_text(target, errors="surrogateescape") or ""
    if not plan.config.enabled:
        original = at(root, f"{files.STATE_DIR}/kexec{managed.ORIG_SUFFIX}")
        held = os.path.lexists(original) or os.path.lexists(f"{original}-absent")
        content = (files.read_text(original, errors="surrogateescape") or "") if held else current
        log(f"disabled (ENABLED=false in {CONFIG_PATH})")
    else:
        content = plan.render()
    sys.stdout.writelines(
        difflib.unified_diff(current.splitlines(True), content.splitlines(True),
                             DEFAULT_KEXEC, f"{DEFAULT_KEXEC} (new)")
    )
    return 1 if plan.selection.errors else 0


@lock.exclusive
def update(root: str, quiet: bool = False, log: Log = stderr_log, plan: Optional[Plan] = None) -> int:
    """Regenerate /etc/default/kexec.  Returns the exit status."""
    plan = plan or make_plan(root)
    target = at(root, DEFAULT_KEXEC)
    state_dir = at(root, files.STATE_DIR)
    if not plan.config.enabled:
        return _disable(root, plan, target, state_dir, log, quiet)
    for message in plan.problems:
        log(f"warning: {message}")
    for message in plan.selection.errors:
        log(f"error: {message}")
    key = plan.render_key()
    if managed.unchanged_since(target, state_dir, key):
        result = managed.WriteResult(changed=False)  # rendering would give what is there
    else:
        files.make_dirs(target.parent)
        result = managed.replace_managed(target, plan.render(), state_dir, key)
    if result.kept_original:
        log(f"kept the original {DEFAULT_KEXEC} as {unroot(root, result.kept_original)}")
    if result.kept_edit:
        log(
            f"warning: {DEFAULT_KEXEC} was edited by hand; that version is kept as "
            f"{unroot(root, result.kept_edit)} (change settings in {CONFIG_PATH} instead)"
        )
    if plan.machine_problem:
        if not quiet:  # not at every boot: it stays so
            log(f"note: {plan.machine_problem}; {DEFAULT_KEXEC} names no kernel")
    elif plan.selection.kernel is None:
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
    result = managed.release_managed(target, state_dir)
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


def is_armed(root: str) -> bool:
    return os.path.lexists(at(root, f"{ENTRIES_DIR}/loader/entries/kexec-auto.conf", follow=False))


@lock.exclusive
def arm(root: str, plan: Optional[Plan] = None, log: Log = stderr_log) -> int:
    """Publish the selected kernel as a boot loader entry in /run, so that
    ``systemctl kexec`` (which refuses when nothing is loaded and no entry
    exists) loads it.  Removes the entry when there is nothing to boot."""
    plan = plan or make_plan(root)
    kernel = plan.selection.kernel

    def entry(name: str) -> Path:  # the entry itself, never what a link in /run points at
        return at(root, f"{ENTRIES_DIR}/{name}", follow=False)

    if not plan.config.enabled or kernel is None:
        for name in ("loader/entries/kexec-auto.conf", "kexec-auto/vmlinuz", "kexec-auto/initrd.img"):
            entry(name).unlink(missing_ok=True)
        return 0
    files.make_dirs(at(root, f"{ENTRIES_DIR}/kexec-auto"))
    files.make_dirs(at(root, f"{ENTRIES_DIR}/loader/entries"))
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


def _changes(config: Config, assignment: str) -> bool:
    """Whether KEY=VALUE gives KEY another value than ``config`` has
    (ConfigError when VALUE is invalid)."""
    key, _, text = assignment.partition("=")
    return validate(key, text) != getattr(config, KEYS[key][0]) if key in KEYS else True


@lock.exclusive
def apply_debconf(root: str, given: dict[str, str], log: Log = stderr_log) -> int:
    """Write the debconf answers in ``given`` into the settings file (the
    postinst).  An answer the file cannot take is refused with its reason
    and leaves its settings as they are; the others are written all the
    same, and the package still configures."""
    config, _ = load_config(root)
    for question, assignments in debconf.settings(given, config):
        release = given.get("release", "")
        if question == "release" and not at(root, f"/boot/vmlinuz-{release}").exists():
            log(f"kernel release {release!r} is not installed (no /boot/vmlinuz-{release}); "
                f"{CONFIG_PATH} keeps its current value")
            continue
        try:
            # Only what changes a setting is written: a file that already
            # says what the answers say stays byte for byte as it is.
            changes = [a for a in assignments if _changes(config, a)]
            if changes:
                settings.set_settings(root, changes)
        except ConfigError as error:
            log(f"error: {' '.join(str(error).split())}")
            log(f"the answer for kexec-auto/{question} was refused; {CONFIG_PATH} keeps its current value")
    return 0
