"""Arming and removing the safety net of a trial boot, inside the kernel on
trial.  What each piece does, and who sets it up:

* ``panic=`` (kexec-auto, on the command line it loads): a kernel panic, or
  initramfs-tools' panic() when the root file system cannot be found,
  resets the machine after that many seconds instead of waiting forever.
* emergency or rescue mode (the trial generator links
  kexec-auto-fail-trial@.service into emergency.target and rescue.target):
  the failure is recorded and the machine reset instead of waiting for a
  root password.
* a boot that does not complete (the generator's deadline timer, backed by
  JobTimeoutSec= on kexec-auto-bless.service's start job): the failure is
  recorded, with what the boot still waits for, and the machine reset.
* a hang (kexec-auto-trial-watchdog.service, ``watchdog-trial``): systemd's
  runtime watchdog is armed (a drop-in in /run/systemd/system.conf.d and a
  reload) on the machine's watchdog device, or on the kernel's softdog when
  there is none, so that a machine that stops responding is reset.

All of it ends when the trial does: :func:`end` (run by ``bless``) puts the
panic timeout and the watchdog back as they were, stops the deadline and
lets systemd drop what the generator added.
"""

from __future__ import annotations

from typing import Optional

from . import commands, host, trial
from .log import Log
from .paths import at

RUN_DIR = "/run/kexec-auto"
TRIAL_OVER = f"{RUN_DIR}/trial-over"  # the generator adds nothing once this exists
WATCHDOG_SAVED = f"{RUN_DIR}/trial-watchdog"  # whether the trial loaded softdog
WATCHDOG_DROPIN = "/run/systemd/system.conf.d/50-kexec-auto-trial.conf"
DEADLINE_TIMER = "kexec-auto-trial-deadline.timer"
SOFTDOG = "softdog"


def on_trial(root: str) -> Optional[int]:
    """The deadline of the trial this boot is, None when it is no trial or
    the trial is over."""
    if at(root, TRIAL_OVER).exists():
        return None
    return trial.trial_deadline(host.current_cmdline_words(root))


def arm_watchdog(root: str, log: Log, settle: int = 5) -> int:
    """Arm systemd's runtime watchdog for this trial boot (unless the
    administrator already runs it): a drop-in in /run/systemd/system.conf.d
    and a reload.  A hardware watchdog is preferred; the kernel's softdog is
    loaded only when there is none."""
    if on_trial(root) is None:
        return 0
    before = commands.runtime_watchdog()
    if before is None:
        log("warning: cannot read systemd's RuntimeWatchdogUSec; no watchdog for this trial boot")
        return 0
    if before != "0":
        log(f"systemd's runtime watchdog is already set ({before}); kept for this trial boot")
        return 0
    devices = host.watchdog_devices(root)
    if not devices:
        commands.udev_settle(settle)  # let udev load the driver of a hardware watchdog first
        devices = host.watchdog_devices(root)
    loaded_softdog = False
    if not devices:
        error = commands.modprobe(SOFTDOG)
        if error:
            log(f"warning: no watchdog device and softdog cannot be loaded ({error}); "
                "a hang of this trial boot is not caught")
            return 0
        loaded_softdog = True
    saved = at(root, WATCHDOG_SAVED)
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text("softdog\n" if loaded_softdog else "-\n", encoding="ascii")
    dropin = at(root, WATCHDOG_DROPIN)
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text(
        "# kexec-auto: this boot is a trial; kexec-auto bless removes this file.\n"
        f"[Manager]\nRuntimeWatchdogSec={trial.WATCHDOG_SECONDS}\n", encoding="ascii")
    result = commands.systemctl("daemon-reload")
    if result.returncode != 0:
        log(f"warning: cannot arm systemd's runtime watchdog: {result.stderr.strip()}")
        return 0
    devices = host.watchdog_devices(root)
    what = host.watchdog_identity(root, devices[0]) if devices else "?"
    log(f"trial boot: systemd's watchdog armed for {trial.WATCHDOG_SECONDS} s on {what}")
    return 0


def _restore_watchdog(root: str, log: Log) -> None:
    """After the reload that drops the drop-in (systemd then disarms the
    device): unload softdog if the trial loaded it."""
    saved = at(root, WATCHDOG_SAVED)
    try:
        softdog = saved.read_text(encoding="ascii").strip()
    except OSError:
        return
    if softdog == SOFTDOG:
        error = commands.modprobe(SOFTDOG, remove=True)
        if error:
            log(f"warning: cannot unload softdog: {error}")
    saved.unlink(missing_ok=True)


def _restore_panic(root: str, running: str, log: Log) -> None:
    added = trial.added_panic(host.current_cmdline_words(root))
    if added is None or host.panic_timeout(root) != added:
        return  # the administrator's panic= (or sysctl) is in force
    default = host.kernel_config(root, running, "CONFIG_PANIC_TIMEOUT") or "0"
    try:
        host.set_panic_timeout(root, int(default))
    except (OSError, ValueError) as error:
        log(f"warning: cannot put the panic timeout back: {error}")
        return
    commands.apply_sysctl("kernel.panic")  # a kernel.panic the administrator set wins


def end(root: str, running: str, log: Log) -> None:
    """The trial succeeded: remove every part of the safety net."""
    if on_trial(root) is None:
        return
    flag = at(root, TRIAL_OVER)
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.write_text("", encoding="ascii")
    _restore_panic(root, running, log)
    at(root, WATCHDOG_DROPIN).unlink(missing_ok=True)
    commands.systemctl("stop", DEADLINE_TIMER)
    # The generator now adds nothing: reloading drops its units and drop-ins,
    # and systemd disarms the watchdog the trial armed.
    result = commands.systemctl("daemon-reload")
    if result.returncode != 0:
        log(f"warning: systemctl daemon-reload failed: {result.stderr.strip()}")
    _restore_watchdog(root, log)


def failure_reason(kind: str, deadline: Optional[int]) -> str:
    """Why the trial boot is given up, in words, from what systemd shows."""
    if kind in ("emergency", "rescue"):
        failed = commands.failed_units()
        return f"entered {kind} mode" + (f" (failed: {', '.join(failed[:5])})" if failed else "")
    if kind == "deadline":
        try:
            waiting = [f"{job.unit} ({job.kind})" for job in commands.jobs() if job.state == "running"]
        except commands.JobsUnknown:
            waiting = []
        return (f"did not complete its boot within {deadline} s"
                + (f" (still waiting for: {', '.join(waiting[:5])})" if waiting else ""))
    return kind
