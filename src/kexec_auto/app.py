"""What each kexec-auto action does, from reading the machine to writing.

This module glues the pure core (config, policy, cmdline, render) to the
thin system layer (system, files).  Messages go to the ``log`` callable
(stderr by default), results are returned, nothing here exits.
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
NO_KEXEC_REBOOT = "/no-kexec-reboot"  # kexec-tools' coldreboot flag
LOADED_MARKER = "/run/kexec-auto/loaded"
SHUTDOWN_HOOK = "/lib/systemd/system-shutdown/kexec-auto"
LOAD_UNIT_WANTS = "/etc/systemd/system/multi-user.target.wants/kexec-auto-load.service"
ENTRIES_DIR = "/run/boot-loader-entries"
BOOT_STATE = "/var/lib/kexec-auto/boot-state.json"
HANDOFF_OFF = "kexec_auto.handoff=0"  # on the kernel command line: no hand-off

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
    text = files.read_text_lenient(path)
    if text is None:
        return assess.BootState(), []
    try:
        return assess.parse_state(text), []
    except ValueError as error:
        return assess.BootState(), [f"{BOOT_STATE} is corrupt ({error}); starting a new one"]


def write_boot_state(root: str, state: assess.BootState) -> None:
    path = system.at(root, BOOT_STATE)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = files.read_text_lenient(path)
    if text is not None:
        try:
            assess.parse_state(text)
        except ValueError:
            files.write_atomic(Path(f"{path}.corrupt"), text)
    files.write_atomic(path, assess.dump_state(state))


def change_boot_state(
    root: str, change: Callable[[assess.BootState], tuple[assess.BootState, list[str]]]
) -> list[str]:
    """Apply ``change`` to the stored boot state; returns its events."""
    state, corrupt = read_boot_state(root)
    new, events = change(state)
    if new != state or corrupt:
        write_boot_state(root, new)
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


# -- reboot machinery -----------------------------------------------------


def is_armed(root: str) -> bool:
    return system.at(root, f"{ENTRIES_DIR}/loader/entries/kexec-auto.conf").exists()


def boot(root: str, log: Log = stderr_log) -> int:
    """Early in every boot (kexec-auto-load.service's start): judge the
    kernel that was being tried, publish the selection for ``systemctl
    kexec``, and hand off to the selected kernel when HANDOFF=true."""
    running = system.running_release(root)
    for event in change_boot_state(root, lambda state: assess.assess_boot(state, running, now())):
        log(f"warning: {event}; it will not be selected again until its package is "
            "reinstalled or 'kexec-auto forget' is run")
    plan = make_plan(root)
    if plan.config.enabled:
        # Keep /etc/default/kexec in step with marks and with kernels that
        # changed without a hook (the hand-off below loads from it).
        update(root, quiet=True, log=log, plan=plan)
    arm(root, plan)
    kernel = plan.selection.kernel
    if not (plan.config.enabled and plan.config.handoff) or kernel is None or kernel.release == running:
        return 0
    if HANDOFF_OFF in system.current_cmdline_words(root):
        log(f"hand-off to {kernel.release} skipped: {HANDOFF_OFF} is on the kernel command line")
        return 0
    if system.confinement(root) or not system.booting():
        return 0  # never kexec a running system because its package was installed
    log(f"handing off from {running} to {kernel.release} through kexec")
    if load(root, log=log) != 0:
        return 1
    change_boot_state(root, lambda state: (assess.start_trial(state, kernel.release, now()), []))
    result = system.run(["systemctl", "--no-block", "kexec"])
    if result.returncode != 0:
        log(f"error: systemctl kexec failed: {result.stderr.strip()}")
        return 1
    return 0


def bless(root: str, log: Log = stderr_log) -> int:
    """The system reached a healthy state (kexec-auto-bless.service, after
    boot-complete.target): the running kernel is good."""
    running = system.running_release(root)
    for event in change_boot_state(root, lambda state: assess.bless(state, running, now())):
        log(event)
    return 0


def forget(root: str, release: str, why: str = "kexec-auto forget", log: Log = stderr_log) -> int:
    """Clear what is known of ``release`` so that it can be selected again."""
    for event in change_boot_state(root, lambda state: assess.forget(state, release, now(), why)):
        log(event)
    return 0


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


def load(root: str, at_shutdown: bool = False, log: Log = stderr_log) -> int:
    """Load the kernel /etc/default/kexec names into memory with kexec."""
    if at_shutdown:
        rebooting = {"reboot.target", "kexec.target"} & set(system.queued_jobs())
        if not rebooting:
            return 0
        flag = system.at(root, NO_KEXEC_REBOOT)
        if flag.exists():
            flag.unlink()
            log("cold reboot requested (coldreboot): not loading a kernel")
            return 0
        config, _ = load_config(root)
        if not config.enabled or system.confinement(root):
            return 0
    else:
        where = system.confinement(root)
        if where:
            what = {
                "root": "from another root directory",
                "unknown": "where systemd-detect-virt cannot tell whether this is a chroot",
            }.get(where, f"inside a {where}")
            log(f"error: refusing to load a kernel {what}: it would replace the host's next boot")
            return 1
    values = system.source_default_kexec(root)
    if values is None:
        log(f"error: {DEFAULT_KEXEC} does not exist; run 'kexec-auto update' first")
        return 1
    if values["LOAD_KEXEC"] == "false" or not values["KERNEL_IMAGE"]:
        log(f"error: {DEFAULT_KEXEC} does not name a kernel to load (LOAD_KEXEC={values['LOAD_KEXEC']!r})")
        return 1
    kexec = system.kexec_binary()
    if kexec is None:
        log("error: kexec not found; install the kexec-tools package")
        return 1
    argv = kexec_argv(kexec, values, system.lockdown_mode(root), system.current_cmdline(root)[0])
    result = system.run(argv)
    if result.returncode != 0:
        why = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        log(f"error: kexec refused to load {values['KERNEL_IMAGE']}: {why}")
        return 1
    if at_shutdown:
        marker = system.at(root, LOADED_MARKER)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(values["KERNEL_IMAGE"] + "\n", encoding="utf-8")
        release = Path(values["KERNEL_IMAGE"]).name.removeprefix("vmlinuz-")
        change_boot_state(root, lambda state: (assess.start_trial(state, release, now()), []))
    log(f"loaded {values['KERNEL_IMAGE']} for the next reboot")
    return 0


def kexec_argv(kexec: str, values: dict[str, str], lockdown: Optional[str], cmdline: str) -> list[str]:
    """The kexec command line; kexec_file_load (-s) under lockdown, where
    kexec_load is refused.

    >>> kexec_argv("/sbin/kexec", {"KERNEL_IMAGE": "/boot/vmlinuz-6.1", "INITRD": "/boot/initrd.img-6.1",
    ...            "APPEND": "root=/dev/vda"}, "integrity", "")
    ['/sbin/kexec', '-s', '-l', '/boot/vmlinuz-6.1', '--initrd=/boot/initrd.img-6.1', '--append=root=/dev/vda']
    """
    argv = [kexec] + (["-s"] if lockdown not in (None, "none") else []) + ["-l", values["KERNEL_IMAGE"]]
    if values.get("INITRD"):
        argv.append(f"--initrd={values['INITRD']}")
    argv.append(f"--append={values.get('APPEND') or cmdline}")
    return argv


# -- reports --------------------------------------------------------------


def kernel_list(root: str) -> dict:
    """Data behind ``kexec-auto list``."""
    plan = make_plan(root)
    chosen = plan.selection.kernel
    packages = system.kernel_packages(root)
    return {
        "running": plan.running,
        "selected": chosen.release if chosen else None,
        "reason": plan.selection.reason,
        "warnings": list(plan.problems),
        "errors": list(plan.selection.errors),
        "kernels": [
            {
                "release": v.kernel.release,
                "flavour": v.kernel.flavour,
                "image": v.kernel.image,
                "initrd": v.kernel.initrd,
                "package": packages.get(v.kernel.release, (None, None))[0],
                "package_version": packages.get(v.kernel.release, (None, None))[1],
                "selectable": v.selectable,
                "why_not": v.why_not,
                "selected": v.kernel == chosen,
                "running": v.kernel.release == plan.running,
                "boot": plan.boot_state.mark_of(v.kernel.release),
            }
            for v in plan.selection.verdicts
        ],
    }


def reboot_blockers(root: str, plan: Plan, values: Optional[dict[str, str]]) -> list[str]:
    """Reasons the next reboot will not boot the selected kernel through kexec."""
    kernel = plan.selection.kernel
    if not plan.config.enabled:
        return [f"kexec-auto is disabled (ENABLED=false in {CONFIG_PATH})"]
    if kernel is None:
        return ["no selectable kernel is installed"]
    blockers = []
    if values is None:
        blockers.append(f"{DEFAULT_KEXEC} does not exist (run 'kexec-auto update')")
    elif values["LOAD_KEXEC"] == "false" or (values["KERNEL_IMAGE"], values["INITRD"]) != (
        kernel.image, kernel.initrd or ""
    ):
        blockers.append(f"{DEFAULT_KEXEC} does not name the selected kernel (run 'kexec-auto update')")
    if system.at(root, NO_KEXEC_REBOOT).exists():
        blockers.append(f"{NO_KEXEC_REBOOT} exists: the next reboot is a cold one (coldreboot)")
    if not system.at(root, SHUTDOWN_HOOK).exists() or not system.at(root, LOAD_UNIT_WANTS).exists():
        blockers.append("kexec-auto's reboot hooks are not installed or not enabled (kexec-auto-load.service)")
    if not (system.at(root, "/usr/sbin/kexec").exists() or system.at(root, "/sbin/kexec").exists()):
        blockers.append("kexec is not installed (package kexec-tools)")
    where = system.confinement(root)
    if where in ("container", "chroot"):
        blockers.append(f"running inside a {where}: kexec-auto never loads a kernel there")
    return blockers


def status_report(root: str) -> dict:
    """Data behind ``kexec-auto status``."""
    plan = make_plan(root)
    kernel = plan.selection.kernel
    target = system.at(root, DEFAULT_KEXEC)
    try:
        values = system.source_default_kexec(root)
        source_error = ""
    except OSError as error:
        values, source_error = None, str(error)
    blockers = reboot_blockers(root, plan, values)
    if source_error:
        blockers.insert(0, source_error)
    return {
        "running": plan.running,
        "enabled": plan.config.enabled,
        "selected": kernel.release if kernel else None,
        "reason": plan.selection.reason,
        "command_line": plan.append,
        "command_line_source": plan.cmdline_source,
        "default_kexec": values,
        "default_kexec_hand_edited": files.hand_edited(target, system.at(root, files.STATE_DIR)),
        "kexec_loaded": system.kexec_loaded(root),
        "lockdown": system.lockdown_mode(root),
        "next_reboot": (
            f"kexec into {kernel.release}" if kernel and not blockers else "firmware reboot"
        ),
        "next_reboot_ok": not blockers,
        "trying": plan.boot_state.trying,
        "bad_kernels": {r: m.why for r, m in plan.boot_state.bad().items()},
        "boot_events": list(plan.boot_state.events[-5:]),
        "blockers": blockers,
        "warnings": list(plan.problems),
        "errors": list(plan.selection.errors),
    }
