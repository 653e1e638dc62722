"""What happens around reboots: loading the kernel at shutdown, judging
the boot that follows, the safety net of a trial boot, and the optional
hand-off after power-on."""

from __future__ import annotations

import os
from typing import Optional, Sequence

from . import assess, files, lastboot, lock, safetynet, system, trial
from .app import (DEFAULT_KEXEC, Log, arm, change_boot_state, load_config, make_plan, now, read_boot_state,
                  stderr_log, update)
from .cmdline import clean_cmdline, max_length
from .policy import select_kernel

NO_KEXEC_REBOOT = "/no-kexec-reboot"  # kexec-tools' coldreboot flag
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
    running = system.running_release(root)
    failed = system.at(root, LOAD_FAILED_MARKER, follow=False)
    if failed.exists():
        message = files.read_text(failed, errors="replace") or ""
        log(f"warning: the last reboot did not go through kexec: {message.strip()}")
        failed.unlink()
    config, _ = load_config(root)

    def judge(state: assess.BootState) -> tuple[assess.BootState, list[str]]:
        state, events = assess.assess_boot(state, running, now(), config.tries)
        return assess.reached_userspace(state, running), events

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
    if HANDOFF_OFF in system.current_cmdline_words(root):
        log(f"hand-off to {target.release} skipped: {HANDOFF_OFF} is on the kernel command line")
        return 0
    if system.confinement(root) or not system.booting():
        return 0  # never kexec a running system because its package was installed
    log(f"handing off from {running} to {target.release} through kexec")
    if target == plan.selection.kernel:
        status = load(root, log=log, for_trial=True)
    else:
        status = 0 if load_kernel(root, target.image, target.initrd or "", plan.append, log, for_trial=True) is None else 1
    if status != 0:
        return 1
    mark_loaded(root, target.image)
    release = system.image_release(root, target.image) or target.release
    change_boot_state(root, lambda state: (assess.start_trial(state, release, now()), []))
    lastboot.note_handoff(root, release)
    result = system.run(["systemctl", "--no-block", "kexec"])
    if result.returncode != 0:
        log(f"error: systemctl kexec failed: {result.stderr.strip()}")
        return 1
    return 0


@lock.exclusive
def bless(root: str, log: Log = stderr_log) -> int:
    """The system reached a healthy state (kexec-auto-bless.service, after
    boot-complete.target): the running kernel is good, and its trial boot's
    safety net is removed."""
    running = system.running_release(root)
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


FAIL_KINDS = ("emergency", "rescue", "deadline")


def fail_trial(root: str, kind: str, log: Log = stderr_log) -> int:
    """The trial boot failed (kexec-auto-fail-trial@KIND.service): record
    why, then reset the machine through the firmware, back to the kernel
    it boots by itself.  Outside a trial boot, nothing happens."""
    deadline = safetynet.on_trial(root)
    if deadline is None:
        log(f"{kind}: this boot is no trial boot of kexec-auto; nothing to do")
        return 0
    running = system.kernel_release(root)
    why = safetynet.failure_reason(kind, deadline)
    try:
        for event in change_boot_state(root, lambda state: assess.trial_failed(state, running, why, now())):
            log(f"error: {event}")
    except OSError as error:  # e.g. /var not mounted in emergency mode
        log(f"error: {running} gives up its trial boot: {why} (not recorded: {error})")
    log("resetting the machine through the firmware")
    # --force: no units are stopped, so nothing loads a kernel for this
    # reboot and the shutdown hook finds nothing to execute.
    result = system.run(["systemctl", "reboot", "--force"])
    if result.returncode != 0:
        log(f"error: systemctl reboot --force failed: {result.stderr.strip()}")
        return 1
    return 0


def watchdog_trial(root: str, log: Log = stderr_log) -> int:
    """Arm the watchdog of a trial boot (kexec-auto-trial-watchdog.service)."""
    return safetynet.arm_watchdog(root, log)


def mark_loaded(root: str, image: str) -> None:
    marker = system.at(root, LOADED_MARKER, follow=False)
    files.make_dirs(marker.parent)
    files.write_atomic(marker, image + "\n")


def _loaded_for_this_reboot(root: str) -> bool:
    """A kernel kexec-auto itself loaded earlier in this boot (the hand-off)
    is still loaded."""
    return system.at(root, LOADED_MARKER).exists() and bool(system.kexec_loaded(root))


@lock.exclusive
def load(root: str, at_shutdown: bool = False, log: Log = stderr_log, for_trial: bool = False) -> int:
    """Load the kernel /etc/default/kexec names into memory with kexec.
    At shutdown (and for the hand-off) it is loaded for a trial boot: with
    the trial words on its command line, and recorded as being tried."""
    if not system.is_host(root) and system.confinement(root) == "root":
        log("error: refusing to load a kernel from another root directory: it would replace the host's next boot")
        return 1
    config, _ = load_config(root)
    if at_shutdown:
        running = system.kernel_release(root)  # a reboot job is queued: systemd runs this machine
        change_boot_state(root, lambda state: assess.end_trial(state, running))
        try:
            jobs = system.queued_jobs()
        except system.JobsUnknown as error:
            log(f"warning: systemctl list-jobs failed ({error}): cannot tell a reboot from "
                "another shutdown; not loading a kernel, so a reboot now goes through the firmware")
            return 0
        if not {"reboot.target", "kexec.target"} & set(jobs):
            return 0
        state, _ = read_boot_state(root)
        if state.trying == running and state.trying_failed:
            log(f"{running} gave up its trial boot: not loading a kernel, the reboot goes through the firmware")
            return 0
        flag = system.at(root, NO_KEXEC_REBOOT, follow=False)
        if os.path.lexists(flag):
            # bookworm's kexec-load stops after this unit: while it would load
            # a kernel (LOAD_KEXEC=true) it must find the flag, which it then
            # removes; nothing else reads the flag, so then it goes here.
            values = system.source_default_kexec(root) or {}
            if not (system.kexec_tools_reads_load_kexec(root) and values.get("LOAD_KEXEC") == "true"):
                flag.unlink()
            log("cold reboot requested (coldreboot): not loading a kernel")
            return 0
        if _loaded_for_this_reboot(root):
            return 0
        # No confinement check here: a reboot job is queued, so systemd runs
        # this machine, and the unit does not run in containers.
        if not config.enabled:
            return 0
        for_trial = True
    else:
        if not config.enabled:
            log("error: kexec-auto is disabled (ENABLED=false in /etc/default/kexec-auto): not loading a kernel")
            return 1
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
    append = values.get("APPEND") or clean_cmdline(system.current_cmdline(root)[0])
    error = load_kernel(root, values["KERNEL_IMAGE"], values.get("INITRD", ""), append, log,
                        for_trial=for_trial, deadline=config.trial_timeout)
    status = 0 if error is None else 1
    if error is not None and at_shutdown:
        event = (f"loading {values['KERNEL_IMAGE']} at shutdown failed ({error}): "
                 "that reboot went through the firmware")
        change_boot_state(root, lambda state: assess.note(state, now(), event))
        marker = system.at(root, LOAD_FAILED_MARKER, follow=False)
        files.make_dirs(marker.parent)
        files.write_atomic(marker, event + "\n")
    if status == 0 and at_shutdown:
        mark_loaded(root, values["KERNEL_IMAGE"])
        # Judge the kernel really loaded (KERNEL_IMAGE=/vmlinuz is a link).
        release = system.image_release(root, values["KERNEL_IMAGE"])
        if release:
            change_boot_state(root, lambda state: (assess.start_trial(state, release, now()), []))
        else:
            log(f"warning: cannot tell which kernel release {values['KERNEL_IMAGE']} is; its boot is not judged")
    return status


#: kexec's options per system call, in the order they are tried.
#: kexec_load (-c) goes without the digest (-i): kexec-tools then neither
#: hashes kernel and initrd while loading nor has purgatory check that hash
#: before starting the kernel, two passes over tens of megabytes that cost
#: a reboot a tenth of a second natively and seconds on an emulated CPU.  The
#: check guards only the moment between the load at shutdown and the kexec,
#: and a mismatch stops the machine in purgatory for good, with no watchdog
#: left to reset it; without it a damaged kernel fails to boot, which the
#: trial's safety net and the firmware recover from.  kexec_file_load (-s)
#: always hashes, in the kernel, and is the only call kernel lockdown (Secure
#: Boot) allows.  Both are named: a plain "kexec -l" is kexec_load with
#: bookworm's kexec-tools but kexec_file_load first from 2.0.28 (trixie) on.
KEXEC_LOAD = ("kexec_load", ("-c", "-i"))
KEXEC_FILE_LOAD = ("kexec_file_load", ("-s",))


def kexec_calls(lockdown: Optional[str]) -> list[tuple[str, tuple[str, ...]]]:
    """The system calls to load a kernel with, in order: kexec_load, then
    kexec_file_load should it be refused (an IMA policy that appraises
    kernels refuses kexec_load too); under lockdown kexec_file_load only.

    >>> [call for call, _ in kexec_calls("none")], [call for call, _ in kexec_calls("integrity")]
    (['kexec_load', 'kexec_file_load'], ['kexec_file_load'])
    """
    if lockdown not in (None, "none"):
        return [KEXEC_FILE_LOAD]
    return [KEXEC_LOAD, KEXEC_FILE_LOAD]


def load_kernel(root: str, image: str, initrd: str, append: str, log: Log, for_trial: bool = False,
                deadline: Optional[int] = None) -> Optional[str]:
    """Load one kernel with kexec (see kexec_calls); for a trial boot the
    command line gets the trial words.  None on success, else why not."""
    kexec = system.kexec_binary()
    if kexec is None:
        log("error: kexec not found; install the kexec-tools package")
        return "kexec not found"
    if for_trial:
        if deadline is None:
            deadline = load_config(root)[0].trial_timeout
        append = trial.trial_cmdline(append, deadline)
        if len(append.encode()) > max_length():
            log(f"error: the command line with the trial words is {len(append.encode())} bytes, longer than "
                f"the kernel accepts ({max_length()}); not loading {image}: shorten CMDLINE or EXTRA_CMDLINE")
            return "command line too long"
    values = {"KERNEL_IMAGE": image, "INITRD": initrd, "APPEND": append}
    cmdline = system.current_cmdline(root)[0]
    refusals: list[str] = []
    for call, options in kexec_calls(system.lockdown_mode(root)):
        result = system.run(kexec_argv(kexec, values, options, cmdline))
        if result.returncode == 0:
            break
        why = (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]
        refusals.append(f"{call}: {why}")
    else:
        why = "; ".join(refusals)
        log(f"error: kexec refused to load {image}: {why}")
        return why
    refused = f" ({refusals[0]})" if refusals else ""
    log(f"loaded {image} for the next reboot with {call}{refused}" + (" (trial boot)" if for_trial else ""))
    return None


def kexec_argv(kexec: str, values: dict[str, str], options: Sequence[str], cmdline: str) -> list[str]:
    """The kexec command line that loads KERNEL_IMAGE with options (a
    system call's, see kexec_calls).  An empty APPEND reuses ``cmdline``
    (the running one) without the boot loader's words, never with them.

    >>> kexec_argv("/sbin/kexec", {"KERNEL_IMAGE": "/boot/vmlinuz-6.1", "INITRD": "/boot/initrd.img-6.1",
    ...            "APPEND": "root=/dev/vda"}, ["-s"], "")
    ['/sbin/kexec', '-s', '-l', '/boot/vmlinuz-6.1', '--initrd=/boot/initrd.img-6.1', '--append=root=/dev/vda']
    """
    argv = [kexec, *options, "-l", values["KERNEL_IMAGE"]]
    if values.get("INITRD"):
        argv.append(f"--initrd={values['INITRD']}")
    argv.append(f"--append={values.get('APPEND') or clean_cmdline(cmdline)}")
    return argv
