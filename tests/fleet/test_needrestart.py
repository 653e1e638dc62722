"""needrestart agrees with kexec-auto: the real needrestart (Debian's
package) in bookworm and trixie trees, kexec-auto installed with apt.

needrestart reports a pending kernel when the running kernel is not the
newest image in /boot.  kexec-auto ships /etc/needrestart/conf.d/kexec-auto.conf,
which narrows needrestart's kernelfilter to the kernel kexec-auto selected, so
that needrestart expects the kernel the next reboot boots, newest or not.

The running kernel is the host's (uname inside a chroot); an image of that
release stands in /boot for "the kernel the machine rebooted into", and a
synthetic 99.1.0-1-amd64 image is the newest of all, so that needrestart's own
choice differs from every kernel kexec-auto selects here.  Two real Debian
cloud kernels, OLD < NEW, are installed with apt (their hooks run).
"""
from __future__ import annotations

import json
import time

import pytest

from .conftest import bzimage, fresh_tree, two_kernels

pytestmark = pytest.mark.chroot

NEWER = "99.1.0-1-amd64"
SNIPPET = "/etc/needrestart/conf.d/kexec-auto.conf"
QUIET = {"NEEDRESTART_SUSPEND": "1"}  # no needrestart run from apt's hook meanwhile


def needrestart(chroot) -> dict[str, str]:
    """needrestart's kernel check in batch mode: KCUR, KEXP, KSTA
    (1: up to date, 3: a newer kernel is expected)."""
    result = chroot.run("needrestart -b -k", check=False)
    assert result.returncode == 0, result
    assert "kexec-auto" not in result.stderr and "Error" not in result.stderr, result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    return {key.removeprefix("NEEDRESTART-"): value for key, value in lines.items() if key.startswith("NEEDRESTART-K")}


def select(chroot, *settings: str) -> str | None:
    chroot.run(["kexec-auto", "set", *settings])
    chroot.run("kexec-auto update", check=False)
    return json.loads(chroot.run("kexec-auto status --json", check=False).stdout)["selected"]


def test_needrestart_expects_the_kernel_kexec_auto_selected(suite, fleet_repo, tmp_path):
    start = time.monotonic()
    with fresh_tree(suite, fleet_repo, tmp_path) as chroot:
        chroot.run("apt-get install -y -q needrestart kexec-auto", env=QUIET)
        old, new = two_kernels(chroot, suite)
        chroot.run(f"apt-get install -y -q linux-image-{old} linux-image-{new}", env=QUIET, timeout=1500)
        print(f"{suite}: needrestart, kexec-auto and two kernels installed after {time.monotonic() - start:.0f} s")
        running = chroot.run("uname -r").stdout.strip()
        version = chroot.run("uname -v").stdout.strip()
        for release, banner in ((running, f"{running} (kexec-auto test) {version}"),
                                (NEWER, f"{NEWER} (kexec-auto test) #1 SMP Debian 99.1-1")):
            chroot.path(f"/boot/vmlinuz-{release}").write_bytes(bzimage(banner))
            chroot.path(f"/boot/initrd.img-{release}").write_bytes(b"\x1f\x8b initrd")
        print(chroot.run("needrestart --version 2>&1 | head -1; ls -l /boot").stdout)
        assert chroot.path(SNIPPET).is_file()

        # needrestart's own choice, with kexec-auto disabled: the newest image
        assert select(chroot, "ENABLED=false", "FLAVOUR=any") == NEWER  # computed, not acted on
        assert needrestart(chroot) == {"KCUR": running, "KEXP": NEWER, "KSTA": "3"}

        cases = [
            ("the newest, before the reboot", ("ENABLED=true",), NEWER),
            ("FLAVOUR", ("FLAVOUR=cloud-amd64",), new),
            ("PIN", ("FLAVOUR=any", f"PIN={old}"), old),
            ("EXCLUDE", ("PIN=", "FLAVOUR=cloud-amd64", f"EXCLUDE={new}"), old),
        ]
        for what, settings, expected in cases:
            assert select(chroot, *settings) == expected, what
            assert needrestart(chroot) == {"KCUR": running, "KEXP": expected, "KSTA": "3"}, what

        # after the reboot into a pinned kernel: nothing to report, though newer ones exist
        assert select(chroot, "EXCLUDE=", f"PIN={running}") == running
        assert needrestart(chroot) == {"KCUR": running, "KEXP": running, "KSTA": "1"}
        verbose = chroot.run("needrestart -v -b -k", check=False).stderr
        assert f"[kexec-auto] expecting kernel {running}, the one kexec-auto selected" in verbose

        # NEW was tried and the machine came up in another kernel: marked bad
        assert select(chroot, "PIN=", "FLAVOUR=cloud-amd64") == new
        chroot.run(["python3", "-c", "from kexec_auto import app, assess; app.change_boot_state('/', "
                    f"lambda s: (assess.start_trial(s, {new!r}, app.now()), []))"])
        chroot.run("kexec-auto boot")
        assert json.loads(chroot.run("kexec-auto status --json", check=False).stdout)["bad_kernels"].keys() == {new}
        assert needrestart(chroot) == {"KCUR": running, "KEXP": old, "KSTA": "3"}

        # removed, not purged: the snippet stays as a conffile and does nothing
        chroot.run("apt-get remove -y -q kexec-auto", env=QUIET)
        assert chroot.path(SNIPPET).is_file()
        assert needrestart(chroot) == {"KCUR": running, "KEXP": NEWER, "KSTA": "3"}
        chroot.run("apt-get purge -y -q kexec-auto", env=QUIET)
        assert not chroot.path(SNIPPET).exists()
        print(f"{suite}: done after {time.monotonic() - start:.0f} s")
