"""What happens around reboots: loading the kernel at shutdown, judging
the boot that follows, and the optional hand-off after power-on."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from . import assess, lastboot, system
from .app import DEFAULT_KEXEC, Log, arm, change_boot_state, load_config, make_plan, now, stderr_log, update

NO_KEXEC_REBOOT = "/no-kexec-reboot"  # kexec-tools' coldreboot flag
LOADED_MARKER = "/run/kexec-auto/loaded"
HANDOFF_OFF = "kexec_auto.handoff=0"  # on the kernel command line: no hand-off


def boot(root: str, log: Log = stderr_log) -> int:
    """Early in every boot (kexec-auto-load.service's start): judge the
    kernel that was being tried, publish the selection for ``systemctl
    kexec``, and hand off to the selected kernel when HANDOFF=true."""
    lastboot.record(root)
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
    lastboot.note_handoff(root, kernel.release)
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


def load(root: str, at_shutdown: bool = False, log: Log = stderr_log) -> int:
    """Load the kernel /etc/default/kexec names into memory with kexec."""
    if at_shutdown:
        running = system.running_release(root)
        change_boot_state(root, lambda state: assess.end_trial(state, running))
        rebooting = {"reboot.target", "kexec.target"} & set(system.queued_jobs())
        if not rebooting:
            return 0
        flag = system.at(root, NO_KEXEC_REBOOT)
        if flag.exists():
            flag.unlink()
            log("cold reboot requested (coldreboot): not loading a kernel")
            return 0
        # No confinement check here: a reboot job is queued, so systemd runs
        # this machine, and the unit does not run in containers.
        config, _ = load_config(root)
        if not config.enabled:
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
