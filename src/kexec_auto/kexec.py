"""Loading a kernel with kexec-tools' kexec, by the system call that suits
this machine.

kexec_load (``-c``) goes without the digest (``-i``): kexec-tools then
neither hashes kernel and initrd while loading nor has purgatory check that
hash before starting the kernel, two passes over tens of megabytes that cost
a reboot a tenth of a second natively and seconds on an emulated CPU.  The
check guards only the moment between the load at shutdown and the kexec,
and a mismatch stops the machine in purgatory for good, with no watchdog
left to reset it; without it a damaged kernel fails to boot, which the
trial's safety net and the firmware recover from.  kexec_file_load (``-s``)
always hashes, in the kernel, and is the only call kernel lockdown (Secure
Boot) allows.  Both are named: a plain "kexec -l" is kexec_load with
bookworm's kexec-tools but kexec_file_load first from 2.0.28 (trixie) on.
"""

from __future__ import annotations

from typing import Optional, Sequence

from . import commands, host, kexectools, trial
from .cmdline import clean_cmdline, max_length
from .log import Log

#: kexec's options per system call, in the order they are tried.
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


def load_kernel(root: str, image: str, initrd: str, append: str, log: Log,
                trial_deadline: Optional[int] = None) -> Optional[str]:
    """Load one kernel with kexec (see kexec_calls); with ``trial_deadline``
    (seconds) it is loaded for a trial boot, with the trial words on its
    command line.  None on success, else why not."""
    kexec = kexectools.kexec_binary()
    if kexec is None:
        log("error: kexec not found; install the kexec-tools package")
        return "kexec not found"
    if trial_deadline is not None:
        append = trial.trial_cmdline(append, trial_deadline)
        if len(append.encode()) > max_length():
            log(f"error: the command line with the trial words is {len(append.encode())} bytes, longer than "
                f"the kernel accepts ({max_length()}); not loading {image}: shorten CMDLINE or EXTRA_CMDLINE")
            return "command line too long"
    values = {"KERNEL_IMAGE": image, "INITRD": initrd, "APPEND": append}
    cmdline = host.current_cmdline(root)[0]
    refusals: list[str] = []
    for call, options in kexec_calls(host.lockdown_mode(root)):
        result = commands.run(kexec_argv(kexec, values, options, cmdline))
        if result.returncode == 0:
            break
        refusals.append(f"{call}: {commands.error_line(result)}")
    else:
        why = "; ".join(refusals)
        log(f"error: kexec refused to load {image}: {why}")
        return why
    refused = f" ({refusals[0]})" if refusals else ""
    log(f"loaded {image} for the next reboot with {call}{refused}"
        + (" (trial boot)" if trial_deadline is not None else ""))
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
