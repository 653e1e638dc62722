"""The commands kexec-auto runs: systemctl, modprobe, systemd-sysctl.

Each is looked up on the system's own PATH of administrative tools, run
without our stdin, its output captured; what each returns is parsed here,
once.  Tests replace :func:`run`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import NamedTuple, Optional

SBIN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def run(argv: list[str]) -> subprocess.CompletedProcess:
    """Run a command, capturing its output (never reading our stdin)."""
    return subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)


def which(name: str) -> Optional[str]:
    return shutil.which(name, path=SBIN_PATH)


def error_line(result: subprocess.CompletedProcess) -> str:
    """The last line a failed command printed on stderr, or its exit status."""
    return (result.stderr.strip().splitlines() or [f"exit status {result.returncode}"])[-1]


def systemctl(*args: str) -> subprocess.CompletedProcess:
    return run([which("systemctl") or "systemctl", *args])


def booting() -> bool:
    """Whether systemd is still bringing the system up (not, say, starting
    a unit because a package was just installed)."""
    if not which("systemctl"):
        return False
    return systemctl("is-system-running").stdout.strip() in ("initializing", "starting")


class JobsUnknown(OSError):
    """systemctl could not list the queued jobs; str() is its error."""


class Job(NamedTuple):
    unit: str
    kind: str  # start, stop, ...
    state: str  # waiting, running


def parse_jobs(text: str) -> list[Job]:
    """The jobs in ``systemctl list-jobs --no-legend --plain`` output.

    >>> for job in parse_jobs("  1 reboot.target start waiting\\n 7 ka-hang.service start running\\n"):
    ...     print(job)
    Job(unit='reboot.target', kind='start', state='waiting')
    Job(unit='ka-hang.service', kind='start', state='running')
    """
    jobs = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            jobs.append(Job(fields[1], fields[2], fields[3]))
    return jobs


def jobs() -> list[Job]:
    """The jobs systemd has queued; JobsUnknown when systemctl cannot tell."""
    if not which("systemctl"):
        raise JobsUnknown("systemctl not found")
    result = systemctl("list-jobs", "--no-legend", "--plain", "--no-pager")
    if result.returncode != 0:
        raise JobsUnknown(error_line(result))
    return parse_jobs(result.stdout)


def failed_units() -> list[str]:
    result = systemctl("list-units", "--failed", "--plain", "--no-legend", "--no-pager")
    return [line.split()[0] for line in result.stdout.splitlines() if line.split()]


def modprobe(module: str, remove: bool = False) -> str:
    """Load (or remove) a kernel module; '' on success, else the error."""
    result = run([which("modprobe") or "modprobe", *(["-r"] if remove else []), module])
    return "" if result.returncode == 0 else (result.stderr.strip() or f"modprobe exit status {result.returncode}")


TRIAL_WATCHDOG = "/usr/lib/kexec-auto/trial-watchdog"


def keep_watchdog_armed(seconds: int) -> tuple[bool, list[str]]:
    """``trial-watchdog kexec SECONDS``: keep the hardware watchdog armed
    through the coming kexec.  Whether it did (or there was none to keep),
    and what it said, each line without its "kexec-auto: " prefix."""
    try:
        result = run([TRIAL_WATCHDOG, "kexec", str(seconds)])
    except OSError as error:
        return False, [f"cannot run {TRIAL_WATCHDOG}: {error.strerror or error}"]
    said = [line.removeprefix("kexec-auto: ") for line in result.stderr.splitlines() if line.strip()]
    return result.returncode == 0, said


def module_parameters(release: str, module: str) -> list[str]:
    """The parameters module ``module`` of kernel ``release`` takes (modinfo)."""
    modinfo = which("modinfo")
    if modinfo is None:
        return []
    result = run([modinfo, "-k", release, "-F", "parm", module])
    if result.returncode != 0:
        return []
    return [line.split(":", 1)[0] for line in result.stdout.splitlines() if line.strip()]


def apply_sysctl(prefix: str) -> None:
    """Let systemd-sysctl apply the administrator's settings under prefix."""
    for path in ("/usr/lib/systemd/systemd-sysctl", "/lib/systemd/systemd-sysctl"):
        if os.access(path, os.X_OK):
            run([path, f"--prefix={prefix}"])
            return
