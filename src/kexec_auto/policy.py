"""Choosing the kernel the next reboot boots: pure policy, no I/O.

>>> kernels = [Kernel("6.1.0-56-cloud-amd64", "/boot/vmlinuz-6.1.0-56-cloud-amd64",
...                   "/boot/initrd.img-6.1.0-56-cloud-amd64"),
...            Kernel("6.12.117+deb12-cloud-amd64", "/boot/vmlinuz-6.12.117+deb12-cloud-amd64",
...                   "/boot/initrd.img-6.12.117+deb12-cloud-amd64")]
>>> selection = select_kernel(kernels, Config(), running="6.1.0-50-cloud-amd64")
>>> selection.kernel.release, selection.reason
('6.12.117+deb12-cloud-amd64', 'newest kernel of the running flavour, cloud-amd64')
"""

from __future__ import annotations

import dataclasses
import fnmatch
from typing import Iterable, Mapping, Optional

from . import bootimage
from .config import Config
from .release import release_key, split_flavour

#: parts of a file name that mark a copy, not an installed kernel
STRAY_SUFFIXES = {
    ".dpkg-": "left over by dpkg",
    ".ucf-": "left over by ucf",
    ".sig": "a detached signature",
    ".bak": "a backup copy",
    ".old": "an old copy",
    ".orig": "an old copy",
    "~": "an editor backup",
}


@dataclasses.dataclass(frozen=True)
class Kernel:
    """A kernel found on disk; paths are as seen from the target system."""

    release: str
    image: str
    initrd: Optional[str] = None
    problem: str = ""  # why the image itself cannot be booted

    @property
    def flavour(self) -> str:
        return split_flavour(self.release)[1]


def unsafe_name_problem(why: str) -> str:
    """Why a kernel whose name is unsafe (release.unsafe_release) is never booted."""
    return f"its name cannot be written safely into /etc/default/kexec ({why})"


def stray_problem(release: str) -> str:
    """Why ``vmlinuz-RELEASE`` is a stray copy, not a kernel ('' when it is none).

    >>> stray_problem("6.1.0-56-amd64.dpkg-tmp"), stray_problem("6.1.0-56-amd64")
    ('stray file (left over by dpkg)', '')
    """
    stray = next((why for suffix, why in STRAY_SUFFIXES.items() if suffix in release), "")
    return f"stray file ({stray})" if stray else ""


def machine_problem(machine: str, lockdown: Optional[str], file_load: Optional[bool]) -> str:
    """Why this machine cannot kexec into any kernel ('' when it can):
    ``machine`` is platform.machine(), ``lockdown`` the kernel's lockdown
    mode, ``file_load`` whether the running kernel has kexec_file_load
    (None: not known).  Lockdown (Secure Boot) refuses kexec_load, and
    Debian's arm64 kernels have no kexec_file_load.

    >>> machine_problem("x86_64", "integrity", True), machine_problem("aarch64", "none", False)
    ('', '')
    >>> machine_problem("aarch64", "integrity", False)[:80]
    'kernel lockdown (integrity, Secure Boot) allows kexec only through kexec_file_lo'
    >>> machine_problem("riscv64", None, True)[:60]
    'kexec-auto does not know the kernel images of riscv64 machin'
    """
    if machine not in bootimage.FORMATS:
        known = " and ".join(sorted(set(bootimage.FORMATS.values())))
        return (f"kexec-auto does not know the kernel images of {machine} machines (only {known}): "
                "this machine reboots through its firmware")
    if lockdown not in (None, "none") and file_load is False:
        return (f"kernel lockdown ({lockdown}, Secure Boot) allows kexec only through kexec_file_load, "
                "which the running kernel does not have (CONFIG_KEXEC_FILE is not set): "
                "this machine reboots through its firmware")
    return ""


def image_problem(release: str, problem: str, lockdown: Optional[str], signed: Optional[bool],
                  machine: str = "") -> str:
    """Why the kernel image of ``release`` cannot be booted ('' when it can):
    a stray copy, why this machine cannot kexec at all (``machine``, see
    machine_problem), what its image shows (``problem``), or, under kernel
    lockdown (Secure Boot), no signature, since then only signed images can
    be loaded (kexec_file_load checks the signature).

    >>> image_problem("6.1.0-56-amd64", "", "integrity", signed=False)[:40]
    'not signed: kernel lockdown (integrity, '
    >>> image_problem("6.1.0-56-amd64", "", "none", signed=False)
    ''
    """
    problem = stray_problem(release) or machine or problem
    if not problem and lockdown not in (None, "none") and not signed:
        problem = (f"not signed: kernel lockdown ({lockdown}, Secure Boot) refuses to kexec "
                   "an image without a signature")
    return problem


@dataclasses.dataclass(frozen=True)
class Verdict:
    kernel: Kernel
    selectable: bool
    why_not: str = ""


@dataclasses.dataclass(frozen=True)
class Selection:
    kernel: Optional[Kernel]
    reason: str
    verdicts: tuple[Verdict, ...]  # every kernel, oldest first
    warnings: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()


def _why_not_eligible(kernel: Kernel, config: Config, bad: Mapping[str, str]) -> str:
    if kernel.problem:
        return kernel.problem
    if kernel.release in bad:
        return f"marked bad: {bad[kernel.release]} ('kexec-auto forget {kernel.release}' retries it)"
    if kernel.initrd is None and config.require_initrd:
        return f"no initrd (initrd.img-{kernel.release}); REQUIRE_INITRD=true"
    for pattern in config.exclude:
        if fnmatch.fnmatchcase(kernel.release, pattern):
            return f"excluded by EXCLUDE pattern {pattern!r}"
    return ""


def _newest(kernels: Iterable[Kernel], preferred_flavour: str) -> Kernel:
    # Across flavours only the version part is compared; on a tie the
    # preferred flavour wins, then linux-version order of the full release.
    return max(
        kernels,
        key=lambda k: (
            release_key(split_flavour(k.release)[0]),
            k.flavour == preferred_flavour,
            release_key(k.release),
        ),
    )


def select_kernel(
    kernels: Iterable[Kernel], config: Config, running: str, bad: Optional[Mapping[str, str]] = None
) -> Selection:
    """Select the kernel to boot next from ``kernels`` under ``config``.

    ``running`` is the release of the running kernel (its flavour is the
    default choice; '' when unknown, as in a chroot); ``bad`` maps releases that failed to boot to why.
    Never raises: problems become warnings or errors.
    """
    bad = bad or {}
    ordered = sorted(kernels, key=lambda k: release_key(k.release))
    why_not = {k.release: _why_not_eligible(k, config, bad) for k in ordered}
    eligible = [k for k in ordered if not why_not[k.release]]
    warnings: list[str] = []
    errors: list[str] = []

    running_flavour = split_flavour(running)[1]
    wanted = running_flavour if config.flavour in ("running", "any") else config.flavour
    if config.flavour == "any":
        pool, scope = eligible, "newest kernel of any flavour, as FLAVOUR=any asks"
    elif config.flavour == "running" and not running:
        # No running kernel of this system to follow (a chroot): its first
        # boot selects again, by the flavour it then runs.
        pool, scope = eligible, "newest kernel of any flavour, while the running kernel is unknown"
    else:
        pool = [k for k in eligible if k.flavour == wanted]
        scope = (
            f"newest kernel of the running flavour, {wanted}"
            if config.flavour == "running"
            else f"newest kernel of flavour {wanted}, as FLAVOUR={wanted} asks"
        )
        for kernel in eligible:
            if kernel.flavour != wanted:
                why_not[kernel.release] = f"flavour {kernel.flavour or '(none)'}, not {wanted}"
        if not pool and eligible:
            warnings.append(
                f"no selectable {wanted} kernel is installed; using the newest kernel of any flavour"
            )
            pool, scope = eligible, f"newest kernel of any flavour, since no {wanted} kernel is installed"
            for kernel in eligible:
                why_not[kernel.release] = ""

    chosen = _newest(pool, wanted) if pool else None
    reason = scope if chosen else "no selectable kernel"
    if config.pin:
        pinned = next((k for k in ordered if k.release == config.pin), None)
        if pinned is not None and not _why_not_eligible(pinned, config, bad):
            chosen, reason = pinned, f"pinned by PIN={config.pin}"
            why_not[pinned.release] = ""
        else:
            problem = "is not installed" if pinned is None else f"cannot be used: {why_not[config.pin]}"
            errors.append(
                f"PIN={config.pin}: kernel {config.pin} {problem}; "
                + (f"using {chosen.release} instead" if chosen else "no other kernel to use")
            )
    verdicts = tuple(
        Verdict(k, not why_not[k.release], why_not[k.release]) for k in ordered
    )
    return Selection(chosen, reason, verdicts, tuple(warnings), tuple(errors))
