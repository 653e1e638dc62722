"""What happens around reboots: the load at shutdown, the boot after it, its trial, the hand-off.

Loading the kernel at shutdown, judging the boot that follows, the safety
net of a trial boot, and the optional hand-off after power-on."""

from __future__ import annotations

import os
from typing import Optional

from . import assess, commands, files, host, kexectools, lastboot, lock, safetynet
from .app import arm, make_plan, update
from .bootscan import image_release
from .bootstate import change_boot_state, read_boot_state
from .clock import now
from .cmdline import clean_cmdline
from .config import Config
from .kexec import load_kernel
from .kexectools import DEFAULT_KEXEC, NO_KEXEC_REBOOT
from .log import Log, stderr_log
from .paths import at, is_host
from .policy import select_kernel
from .settings import load_config

LOADED_MARKER = "/run/kexec-auto/loaded"
LOAD_FAILED_MARKER = "/var/lib/kexec-auto/load-failed"  # read and removed by the next boot
HANDOFF_OFF = "kexec_auto.handoff=0"  # on the kernel command line: no hand-off


@lock.exclusive
def boot(root: str, log: Log = stderr_log) -> int:
    """Early in every boot (kexec-auto-boot.service): judge the
    kernel that was being tried, publish the selection for ``systemctl
    kexec``, and, when HANDOFF=true and the firmware booted this kernel,
    hand off to the selected kernel."""
    method = lastboot.record(root)
    running = host.running_release(root)
    failed = files.take_text(at(root, LOAD_FAILED_MARKER, follow=False))
    if failed is not None:
        log(f"warning: the last reboot did not go through kexec: {failed}")
    returned = lastboot.kexec_returned(root, method)
    config, _ = load_config(root)

    def judge(state: assess.BootState) -> tuple[assess.BootState, list[str]]:
        events: list[str] = []
        if returned:
            state, events = assess.not_started(state, now(), returned)
        state, more = assess.assess_boot(state, running, now(), config.tries)
        return assess.reached_userspace(state, running), events + more

    if running:  # '' in a chroot: no boot of this system to judge
        for event in change_boot_state(root, judge):
            log(f"warning: {event}")
    plan = make_plan(root)
    # Keep /etc/default/kexec in step with marks, with kernels that changed
    # without a hook and with this boot's command line (the hand-off below
    # loads from it); when disabled, give it back.
    update(root, quiet=True, log=log, plan=plan)
    arm(root, plan)
    if not (plan.config.enabled and plan.config.handoff):
        return 0
    # Never hand off into a kernel whose last trial failed: this power-on
    # may be the reset its failure caused.
    suspects = {release: mark.why for release, mark in plan.boot_state.suspects().items()}
    kernels = [verdict.kernel for verdict in plan.selection.verdicts]
    target = select_kernel(kernels, plan.config, running, suspects).kernel
    if target is None or target.release == running:
        selected = plan.selection.kernel
        if selected is not None and selected.release != running and selected.release in suspects:
            log(f"hand-off to {selected.release} skipped: its last trial boot failed; "
                f"staying in {running}")
        return 0
    if method in (lastboot.KEXEC, lastboot.HANDOFF):
        # The kernel that kexec'd this one chose it: a reboot's selection,
        # perhaps a trial with tries left, or a hand-off already made.
        # Handing off again would end that trial unjudged and, at every
        # reboot, go round the same two kernels.
        log(f"hand-off to {target.release} skipped: {running} was booted through kexec, "
            "not by the firmware")
        return 0
    if HANDOFF_OFF in host.current_cmdline_words(root):
        log(f"hand-off to {target.release} skipped: {HANDOFF_OFF} is on the kernel command line")
        return 0
    if host.confinement(root) or not commands.booting():
        return 0  # never kexec a running system because its package was installed
    log(f"handing off from {running} to {target.release} through kexec")
    if target == plan.selection.kernel:
        error = _load_default_kexec(root, plan.config, log)[1]
    else:
        error = load_kernel(root, target.image, target.initrd or "", plan.append, log,
                            trial_deadline=plan.config.trial_timeout)
    if error is not None:
        return 1
    release = image_release(root, target.image) or target.release
    _start_trial(root, target.image, release)
    safetynet.arm_through_kexec(plan.config.trial_timeout, log)
    lastboot.note_handoff(root, release)
    result = commands.run(["systemctl", "--no-block", "kexec"])
    if result.returncode != 0:
        log(f"error: systemctl kexec failed: {result.stderr.strip()}")
        safetynet.disarm_kept_watchdog(root, log)  # this kernel keeps running
        return 1
    return 0


@lock.exclusive
def bless(root: str, log: Log = stderr_log) -> int:
    """The system reached a healthy state (kexec-auto-bless.service, after
    boot-complete.target): the running kernel is good, and its trial boot's
    safety net is removed."""
    running = host.running_release(root)
    if not running:
        log("the running kernel is not this system's (chroot or container): nothing to mark")
        return 0
    for event in change_boot_state(root, lambda state: assess.bless(state, running, now())):
        log(event)
    safetynet.end(root, running, log)
    return 0


@lock.exclusive
def forget(root: str, release: str, why: str = "kexec-auto forget", log: Log = stderr_log) -> int:
    """Clear what is known of ``release`` so that it can be selected again."""
    for event in change_boot_state(root, lambda state: assess.forget(state, release, now(), why)):
        log(event)
    return 0


@lock.exclusive
def acknowledge(root: str, log: Log = stderr_log) -> int:
    """The administrator saw what a damaged boot state lost: stop saying it."""
    for event in change_boot_state(root, lambda state: assess.acknowledge(state, now())):
        log(event)
    return 0


FAIL_KINDS = ("emergency", "rescue", "deadline")


def fail_trial(root: str, kind: str, log: Log = stderr_log) -> int:
    """The trial boot failed (kexec-auto-fail-trial@KIND.service): record
    why, then reset the machine through the firmware, back to the kernel
    it boots by itself.  Outside a trial boot, nothing happens."""
    deadline = safetynet.on_trial(root)
    if deadline is None:
        log(f"{kind}: this boot is no trial boot of kexec-auto; nothing to do")
        return 0
    running = host.kernel_release(root)
    why = safetynet.failure_reason(kind, deadline)
    try:
        for event in change_boot_state(root, lambda state: assess.trial_failed(state, running, why, now())):
            log(f"error: {event}")
    except OSError as error:  # e.g. /var not mounted in emergency mode
        log(f"error: {running} gives up its trial boot: {why} (not recorded: {error})")
    log("resetting the machine through the firmware")
    # --force: no units are stopped, so nothing loads a kernel for this
    # reboot and the shutdown hook finds nothing to execute.
    result = commands.run(["systemctl", "reboot", "--force"])
    if result.returncode != 0:
        log(f"error: systemctl reboot --force failed: {result.stderr.strip()}")
        return 1
    return 0


def mark_loaded(root: str, image: str) -> None:
    marker = at(root, LOADED_MARKER, follow=False)
    files.make_dirs(marker.parent)
    files.write_atomic(marker, image + "\n")


def _start_trial(root: str, image: str, release: str) -> None:
    """``image``, kernel ``release``, is loaded for the next boot, a trial:
    mark it for the shutdown hook and record the trial."""
    mark_loaded(root, image)
    change_boot_state(root, lambda state: (assess.start_trial(state, release, now()), []))


def _loaded_for_this_reboot(root: str) -> bool:
    """A kernel kexec-auto itself loaded earlier in this boot (the hand-off)
    is still loaded."""
    return at(root, LOADED_MARKER).exists() and bool(host.kexec_loaded(root))


def _load_default_kexec(root: str, config: Config, log: Log, trial: bool = True) -> tuple[str, Optional[str]]:
    """Load the kernel /etc/default/kexec names, for a trial boot unless
    ``trial`` is False: ``(image, None)`` on success, else ``(image, why
    kexec refused it)``, or ``("", "")`` after saying why nothing could be
    loaded.  OSError when the file cannot be read."""
    values = kexectools.source_default_kexec(root)
    if values is None:
        log(f"error: {DEFAULT_KEXEC} does not exist; run 'kexec-auto update' first")
        return "", ""
    if values["LOAD_KEXEC"] == "false" or not values["KERNEL_IMAGE"]:
        log(f"error: {DEFAULT_KEXEC} does not name a kernel to load (LOAD_KEXEC={values['LOAD_KEXEC']!r})")
        return "", ""
    append = values.get("APPEND") or clean_cmdline(host.current_cmdline(root)[0])
    image = values["KERNEL_IMAGE"]
    return image, load_kernel(root, image, values.get("INITRD", ""), append, log,
                              trial_deadline=config.trial_timeout if trial else None)


def _refuse_other_root(root: str, log: Log) -> bool:
    if is_host(root) or host.confinement(root) != "root":
        return False
    log("error: refusing to load a kernel from another root directory: it would replace the host's next boot")
    return True


@lock.exclusive
def load_at_shutdown(root: str, log: Log = stderr_log) -> int:
    """Load the selected kernel for a trial boot while the system shuts
    down (kexec-auto-load.service's ExecStop), only when a reboot is
    queued and not after coldreboot, and mark it for the shutdown hook."""
    if _refuse_other_root(root, log):
        return 1
    running = host.kernel_release(root)  # a reboot job is queued: systemd runs this machine
    change_boot_state(root, lambda state: assess.end_trial(state, running))
    try:
        jobs = {job.unit for job in commands.jobs()}
    except commands.JobsUnknown as error:
        log(f"warning: systemctl list-jobs failed ({error}): cannot tell a reboot from "
            "another shutdown; not loading a kernel, so a reboot now goes through the firmware")
        return 0
    if not {"reboot.target", "kexec.target"} & jobs:
        return 0
    state, _ = read_boot_state(root)
    if state.trying == running and state.trying_failed:
        log(f"{running} gave up its trial boot: not loading a kernel, the reboot goes through the firmware")
        return 0
    flag = at(root, NO_KEXEC_REBOOT, follow=False)
    if os.path.lexists(flag):
        # bookworm's kexec-load stops after this unit: while it would load
        # a kernel (LOAD_KEXEC=true) it must find the flag, which it then
        # removes; nothing else reads the flag, so then it goes here.
        values = kexectools.source_default_kexec(root) or {}
        if not (kexectools.reads_load_kexec(root) and values.get("LOAD_KEXEC") == "true"):
            flag.unlink()
        log("cold reboot requested (coldreboot): not loading a kernel")
        return 0
    # No confinement check here: a reboot job is queued, so systemd runs
    # this machine, and the unit does not run in containers.
    config, _ = load_config(root)
    if _loaded_for_this_reboot(root) or not config.enabled:
        return 0
    image, refused = _load_default_kexec(root, config, log)
    if refused:
        event = f"loading {image} at shutdown failed ({refused}): that reboot went through the firmware"
        change_boot_state(root, lambda state: assess.note(state, now(), event))
        marker = at(root, LOAD_FAILED_MARKER, follow=False)
        files.make_dirs(marker.parent)
        files.write_atomic(marker, event + "\n")
    if refused is not None:
        return 1
    # Judge the kernel really loaded (KERNEL_IMAGE=/vmlinuz is a link).
    release = image_release(root, image)
    if release:
        _start_trial(root, image, release)
        safetynet.arm_through_kexec(config.trial_timeout, log)
    else:
        mark_loaded(root, image)
        log(f"warning: cannot tell which kernel release {image} is; its boot is not judged")
    return 0


@lock.exclusive
def load_now(root: str, log: Log = stderr_log) -> int:
    """``kexec-auto load``: load the kernel /etc/default/kexec names now,
    for ``systemctl kexec``; never in a chroot, a container or another root."""
    if _refuse_other_root(root, log):
        return 1
    config, _ = load_config(root)
    if not config.enabled:
        log("error: kexec-auto is disabled (ENABLED=false in /etc/default/kexec-auto): not loading a kernel")
        return 1
    where = host.confinement(root)
    if where:
        what = {
            "unknown": "where systemd-detect-virt cannot tell whether this is a chroot",
        }.get(where, f"inside a {where}")
        log(f"error: refusing to load a kernel {what}: it would replace the host's next boot")
        return 1
    return 0 if _load_default_kexec(root, config, log, trial=False)[1] is None else 1
