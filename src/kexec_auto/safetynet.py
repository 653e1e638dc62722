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
* a hang from the kexec on, on a machine with a hardware watchdog
  (:func:`arm_through_kexec`, run by the kernel that kexecs into the trial
  kernel): systemd arms the watchdog at the shutdown and it keeps running
  through the kexec, until the trial kernel's driver takes it over.
* a hang, from the trial kernel's initramfs on (hooks/libexec/trial-watchdog,
  run in the initramfs, or by kexec-auto-trial-watchdog.service when the
  initramfs lacks kexec-auto's hook): softdog, and a hardware watchdog
  whose timeout can be set, are started with the deadline plus 60 s and
  left running with no one to ping them.  They are listed in
  /run/kexec-auto/trial-watchdog.

All of it ends when the trial does: :func:`end` (run by ``bless``) stops
those watchdogs with the magic close, unloads the softdog it loaded, puts
the panic timeout back and stops the deadline.  The generator's units stay
loaded but do nothing: their conditions say the trial is over.  systemd is
never reloaded.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Optional, Sequence

from . import commands, host, trial
from .log import Log
from .paths import at

RUN_DIR = "/run/kexec-auto"
TRIAL_OVER = f"{RUN_DIR}/trial-over"  # the trial's units do nothing once this exists
TRIAL_WATCHDOGS = f"{RUN_DIR}/trial-watchdog"  # what trial-watchdog started
DEADLINE_TIMER = "kexec-auto-trial-deadline.timer"
SOFTDOG = "softdog"
KEPT_WATCHDOG = "watchdog0"  # the device systemd arms at shutdown, and trial-watchdog kexec with it


def on_trial(root: str) -> Optional[int]:
    """The deadline of the trial this boot is, None when it is no trial or
    the trial is over."""
    if at(root, TRIAL_OVER).exists():
        return None
    return trial.trial_deadline(host.current_cmdline_words(root))


def started_watchdogs(text: str) -> tuple[list[tuple[str, str]], bool]:
    """What /run/kexec-auto/trial-watchdog says trial-watchdog did: the
    devices it started, with their identity, and whether it loaded softdog.

    >>> started_watchdogs("watchdog0 i6300ESB timer\\nwatchdog1 Software Watchdog\\nloaded softdog\\n")
    ([('watchdog0', 'i6300ESB timer'), ('watchdog1', 'Software Watchdog')], True)
    >>> started_watchdogs("../../etc/passwd x\\n")
    ([], False)
    """
    devices: list[tuple[str, str]] = []
    loaded = False
    for line in text.splitlines():
        name, _, identity = line.partition(" ")
        if line == f"loaded {SOFTDOG}":
            loaded = True
        elif name.startswith("watchdog") and name[len("watchdog"):].isdigit():
            devices.append((name, identity.strip()))
    return devices, loaded


def _stop_watchdogs(root: str, log: Log) -> None:
    """Stop the watchdogs the trial started (magic close), then unload the
    softdog it loaded.  A device whose identity changed is left alone."""
    record = at(root, TRIAL_WATCHDOGS)
    try:
        text = record.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    devices, loaded = started_watchdogs(text)
    for device, identity in devices:
        if host.watchdog_identity(root, device) != identity:
            log(f"warning: {device} is no longer {identity!r}; not stopped")
            continue
        error = host.stop_watchdog(root, device)
        if error is not None and error.errno == errno.EBUSY:
            log(f"{device} ({identity}) is in use (systemd's RuntimeWatchdogSec=?): left to its user")
        elif error is not None:
            log(f"warning: cannot stop the trial's watchdog {device} ({identity}): {error.strerror or error}")
    if loaded:
        failure = commands.modprobe(SOFTDOG, remove=True)
        if failure:
            log(f"warning: cannot unload softdog: {failure}")
    record.unlink(missing_ok=True)


def arm_through_kexec(deadline: int, log: Log) -> None:
    """A trial kernel with this deadline is loaded for the coming kexec:
    keep the hardware watchdog armed through it (trial-watchdog kexec), for
    as long as the trial kernel's own watchdogs would run.  Never fails the
    load: what did not work is a warning."""
    kept, said = commands.keep_watchdog_armed(deadline + trial.BACKSTOP_SECONDS)
    for line in said:
        log(line if kept or line.startswith(("warning: ", "error: ")) else f"warning: {line}")


def disarm_kept_watchdog(root: str, log: Log) -> None:
    """The kexec that :func:`arm_through_kexec` prepared for does not come:
    stop /dev/watchdog0 if it was started for it (without a system bus,
    trial-watchdog starts it at once), so that it does not reset this
    kernel.  A watchdog another process holds (systemd's RuntimeWatchdogSec=)
    is left to it."""
    device = KEPT_WATCHDOG
    if host.watchdog_state(root, device) != "active":
        return
    error = host.stop_watchdog(root, device)
    if error is not None and error.errno != errno.EBUSY:
        log(f"warning: cannot stop {device}, started for the kexec: {error.strerror or error}")


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
    _stop_watchdogs(root, log)
    _restore_panic(root, running, log)
    commands.systemctl("stop", DEADLINE_TIMER)


@dataclass(frozen=True)
class Guard:
    """Whether trial boots on this machine are brought back from one way of failing."""
    failure: str
    guarded: bool
    why: str


def guards(panic: int, deadline: int, initramfs_hook: Optional[bool], softdog: bool,
           hardware: Sequence[tuple[str, bool]], kexec_gap: str = "") -> list[Guard]:
    """Which failures the next trial boot is guarded against, and why (not).

    ``panic`` is the panic= of the trial command line, ``initramfs_hook``
    whether the trial kernel's initrd has kexec-auto's hook (None: no
    initramfs-tools), ``softdog`` whether that kernel has the module,
    ``hardware`` the machine's hardware watchdogs with whether their timeout
    can be set, ``kexec_gap`` why the running kernel stops them at the
    kexec ('' when it can keep them armed through it).

    >>> for g in guards(10, 300, True, True, [("i6300ESB timer", True)]):
    ...     print(g.failure, g.guarded)
    panic True
    root not found True
    emergency True
    deadline True
    soft hang True
    hard hang True
    early hang True
    >>> guards(10, 300, True, True, [("i6300ESB timer", True)])[6].why
    'from the kexec on: i6300ESB timer stays armed through it, then the initramfs starts the watchdogs'
    >>> print(guards(10, 300, True, True, [])[6].why)  # doctest: +NORMALIZE_WHITESPACE
    from the initramfs on; not in purgatory or before the initramfs runs:
    no hardware watchdog to keep armed through the kexec
    >>> [g.why for g in guards(0, 300, False, False, []) if not g.guarded][:2]
    ['panic=0 on the command line: a panic waits forever', 'panic=0 on the command line: a panic waits forever']
    >>> guards(10, 300, False, True, [])[6].why
    "the trial kernel's initrd has no kexec-auto hook (update-initramfs -u): watchdogs start in its userspace"
    """
    reset = deadline + trial.BACKSTOP_SECONDS
    out = []
    if panic > 0:
        out.append(Guard("panic", True, f"panic={panic}: the kernel resets the machine"))
        out.append(Guard("root not found", True, f"initramfs-tools panics, and panic={panic} resets"))
    else:
        why = f"panic={panic} on the command line: a panic waits forever"
        out += [Guard("panic", False, why), Guard("root not found", False, why)]
    out.append(Guard("emergency", True, "kexec-auto-fail-trial@emergency.service records why and resets"))
    out.append(Guard("deadline", True, f"a boot not complete {deadline} s after the kernel started is reset"))
    usable = [name for name, settable in hardware if settable]
    watchdogs = (["softdog"] if softdog else []) + usable
    if watchdogs:
        out.append(Guard("soft hang", True, f"{' and '.join(watchdogs)}, {reset} s after the kernel started"))
    else:
        out.append(Guard("soft hang", False, "no softdog module and no hardware watchdog"))
    if usable:
        out.append(Guard("hard hang", True, f"{usable[0]}, {reset} s after the kernel started"))
    elif hardware:
        out.append(Guard("hard hang", False, f"the timeout of {hardware[0][0]} cannot be set "
                         "(its driver has no heartbeat parameter); softdog stops with the CPU"))
    else:
        out.append(Guard("hard hang", False, "no hardware watchdog; softdog stops with the CPU"))
    if not watchdogs:
        out.append(Guard("early hang", False, "no watchdog"))
    elif initramfs_hook and usable and not kexec_gap:
        out.append(Guard("early hang", True, f"from the kexec on: {usable[0]} stays armed through it, "
                         "then the initramfs starts the watchdogs"))
    elif initramfs_hook:
        gap = kexec_gap if usable else "no hardware watchdog to keep armed through the kexec"
        out.append(Guard("early hang", True, f"from the initramfs on; not in purgatory or before the "
                         f"initramfs runs: {gap}"))
    elif initramfs_hook is None:
        out.append(Guard("early hang", False, "no initramfs-tools: watchdogs start in the trial's userspace"))
    else:
        out.append(Guard("early hang", False, "the trial kernel's initrd has no kexec-auto hook "
                         "(update-initramfs -u): watchdogs start in its userspace"))
    return out


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
