"""What kexec-auto tells: the data of `kexec-auto list` and `status`, and the metrics file.
"""

from __future__ import annotations

from typing import Optional

from . import (__version__, assess, bootscan, commands, files, host, kexectools, lastboot, managed, metrics,
               safetynet, trial)
from .app import Plan, make_plan
from .clock import epoch
from .config import CONFIG_PATH, ConfigError
from .kexectools import DEFAULT_KEXEC, NO_KEXEC_REBOOT
from .log import stderr_log
from .paths import at

#: Where the package puts its systemd-shutdown hook: /usr/lib on releases
#: past the /usr merge (trixie and later), /lib on bookworm.
SHUTDOWN_HOOKS = ("/usr/lib/systemd/system-shutdown/kexec-auto", "/lib/systemd/system-shutdown/kexec-auto")
LOAD_UNIT_WANTS = "/etc/systemd/system/multi-user.target.wants/kexec-auto-load.service"
INITRAMFS_HOOK = "/usr/share/initramfs-tools/hooks/kexec-auto"
# Version of the ``status --json`` schema (kexec-auto(8)): raised only when a
# field is removed or changes meaning; new fields keep it.
STATUS_SCHEMA = 1


def kernel_list(root: str) -> dict:
    """Data behind ``kexec-auto list``."""
    plan = make_plan(root)
    chosen = plan.selection.kernel
    packages = bootscan.kernel_packages(root)
    return {
        "running": plan.running,
        "boot_state_damage": list(plan.boot_state.damage),
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
                "failed_trials": plan.boot_state.failures(v.kernel.release),
                "tries_left": assess.tries_left(plan.boot_state, v.kernel.release, plan.config.tries),
            }
            for v in plan.selection.verdicts
        ],
    }


def reboot_blockers(root: str, plan: Plan, values: Optional[dict[str, str]]) -> list[str]:
    """Reasons the next reboot will not boot the selected kernel through kexec."""
    kernel = plan.selection.kernel
    if not plan.config.enabled:
        return [f"kexec-auto is disabled (ENABLED=false in {CONFIG_PATH})"]
    if plan.machine_problem:
        return [plan.machine_problem]
    if kernel is None:
        return ["no selectable kernel is installed"]
    blockers = []
    if values is None:
        blockers.append(f"{DEFAULT_KEXEC} does not exist (run 'kexec-auto update')")
    elif values["LOAD_KEXEC"] == "false" or (values["KERNEL_IMAGE"], values["INITRD"]) != (
        kernel.image, kernel.initrd or ""
    ):
        blockers.append(f"{DEFAULT_KEXEC} does not name the selected kernel (run 'kexec-auto update')")
    if at(root, NO_KEXEC_REBOOT).exists():
        blockers.append(f"{NO_KEXEC_REBOOT} exists: the next reboot is a cold one (coldreboot)")
    hook_installed = any(at(root, hook).exists() for hook in SHUTDOWN_HOOKS)
    if not hook_installed or not at(root, LOAD_UNIT_WANTS).exists():
        blockers.append("kexec-auto's reboot hooks are not installed or not enabled (kexec-auto-load.service)")
    if not (at(root, "/usr/sbin/kexec").exists() or at(root, "/sbin/kexec").exists()):
        blockers.append("kexec is not installed (package kexec-tools)")
    where = host.confinement(root)
    if where in ("container", "chroot"):
        blockers.append(f"running inside a {where}: kexec-auto never loads a kernel there")
    elif where == "unknown":
        blockers.append("systemd-detect-virt cannot tell whether this is a chroot: kexec-auto does not load here")
    return blockers


def last_trial(state: assess.BootState) -> Optional[dict]:
    """The kernel trial under way, or else the last one judged: the kernel
    with the most recent mark.

    >>> last_trial(assess.BootState(trying="6.12.117+deb12-amd64", trying_since="2026-11-25T12:00:00+0000"))
    {'release': '6.12.117+deb12-amd64', 'outcome': 'pending', 'time': '2026-11-25T12:00:00+0000'}
    """
    if state.trying:
        return {"release": state.trying, "outcome": "pending", "time": state.trying_since}
    if not state.marks:
        return None
    release, mark = max(state.marks.items(), key=lambda item: (epoch(item[1].when) or 0.0, item[1].when))
    return {"release": release, "outcome": mark.state, "time": mark.when}


def trial_guards(root: str, plan: Plan) -> list[safetynet.Guard]:
    """Which failures the selected kernel's trial boots are guarded against."""
    kernel = plan.selection.kernel
    panic = trial.cmdline_panic(plan.append.split())
    if panic is None:
        panic = trial.PANIC_SECONDS  # kexec-auto adds it, unless the command line has its own
    hook: Optional[bool] = None
    if at(root, INITRAMFS_HOOK).exists():
        hook = False
        if kernel is not None and kernel.initrd:
            try:
                hook = at(root, kernel.initrd).stat().st_mtime >= at(root, INITRAMFS_HOOK).stat().st_mtime
            except OSError:
                hook = False
    softdog = kernel is not None and host.kernel_has_module(root, kernel.release, safetynet.SOFTDOG)
    # trial-watchdog sets a hardware watchdog's timeout by reloading its module with heartbeat=
    hardware = [(identity, bool(module) and kernel is not None
                 and "heartbeat" in commands.module_parameters(kernel.release, module))
                for identity, module in host.hardware_watchdogs(root)]
    return safetynet.guards(panic, plan.config.trial_timeout, hook, softdog, hardware,
                            host.watchdog_stops_at_kexec(root))


def status_report(root: str) -> dict:
    """Data behind ``kexec-auto status``."""
    plan = make_plan(root)
    kernel = plan.selection.kernel
    target = at(root, DEFAULT_KEXEC)
    try:
        values = kexectools.source_default_kexec(root)
        source_error = ""
    except OSError as error:
        values, source_error = None, str(error)
    blockers = reboot_blockers(root, plan, values)
    if source_error:
        blockers.insert(0, source_error)
    return {
        "schema_version": STATUS_SCHEMA,
        "running": plan.running,
        "enabled": plan.config.enabled,
        "selected": kernel.release if kernel else None,
        "reason": plan.selection.reason,
        "command_line": plan.append,
        "command_line_source": plan.cmdline_source,
        "default_kexec": values,
        "default_kexec_hand_edited": managed.hand_edited(target, at(root, files.STATE_DIR)),
        "kexec_loaded": host.kexec_loaded(root),
        "lockdown": host.lockdown_mode(root),
        "next_reboot": (
            f"kexec into {kernel.release}" if kernel and not blockers else "firmware reboot"
        ),
        "next_reboot_ok": not blockers,
        "boot_method": lastboot.read(root),
        "trying": plan.boot_state.trying,
        "trial_boot": safetynet.on_trial(root) is not None,
        "tries": plan.config.tries,
        "trial_timeout": plan.config.trial_timeout,
        "last_trial": last_trial(plan.boot_state),
        "trial_guards": [{"failure": g.failure, "guarded": g.guarded, "why": g.why}
                         for g in trial_guards(root, plan)],
        "bad_kernels": {r: m.why for r, m in plan.boot_state.bad().items()},
        "boot_state_damage": list(plan.boot_state.damage),
        "failed_kernels": {
            r: {"failed_trials": m.failures, "tries_left": assess.tries_left(plan.boot_state, r, plan.config.tries),
                "why": m.why}
            for r, m in plan.boot_state.marks.items() if m.state == assess.FAILED
        },
        "boot_events": list(plan.boot_state.events[-5:]),
        "blockers": blockers,
        "warnings": list(plan.problems),
        "errors": list(plan.selection.errors),
    }


def write_metrics(root: str) -> bool:
    """Rewrite prometheus-node-exporter's textfile of kexec-auto
    (metrics.TEXTFILE_DIR) when that directory exists (the exporter is
    installed) and the content changed, atomically, so that the file's
    mtime is the time of the last change; returns whether it was written.
    Never raises: metrics must not fail the command or hook that changed
    the state."""
    directory = at(root, metrics.TEXTFILE_DIR)
    if not directory.is_dir():
        return False
    try:
        try:
            status = status_report(root)
        except ConfigError as error:
            status = {"running": host.running_release(root), "config_error": str(error)}
        text = metrics.render(status, __version__)
        path = directory / metrics.FILE_NAME
        if files.read_text(path, errors="replace") == text:
            return False
        files.write_atomic(path, text)
        return True
    except Exception as error:  # noqa: BLE001 - see the docstring
        stderr_log(f"warning: cannot write {metrics.TEXTFILE_DIR}/{metrics.FILE_NAME}: {error}")
        return False
