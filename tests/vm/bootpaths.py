"""Scenarios on real boot paths: firmware and Debian's GRUB, then kexec-auto.

Each disk (layouts "bios", "uefi", "secureboot", see harness/debimage.py) boots
through its firmware and GRUB, whose default entry is pinned to the provider
kernel like a provider's choice.  kexec-auto and a newer kernel are installed
at build time (natively, in the chroot; the kernel's install runs update-grub).

Two test-only additions to the guest make the shutdown visible on the serial
console: kexec-auto's units write their messages to the console as well as
to the journal, and ka-shutdown-probe.service, which stops after both
kexec-auto's and kexec-tools' loaders, prints whether a kernel is loaded
(`shutdown_kexec_loaded`) at the end of every shutdown.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from . import guest, image, scenarios
from .scenarios import ASSESS_LIB, Built, _add_repo, _build

#: The combinations CI boots: legacy BIOS on bookworm, plain UEFI (OVMF,
#: GRUB EFI, efivars after every kexec) on trixie, and Secure Boot (shim,
#: signed GRUB and kernels, lockdown) on both.  KEXEC_AUTO_TEST_MATRIX=full
#: boots every one, the hand-off at power-on on plain UEFI on both releases
#: included, and arm64's UEFI (AAVMF, GRUB arm64) on both releases.
CI_MATRIX = (("bookworm", "bios"), ("bookworm", "secureboot"), ("trixie", "uefi"), ("trixie", "secureboot"))
FULL_MATRIX = (tuple((suite, layout) for layout in ("bios", "uefi", "secureboot") for suite in scenarios.SUITES)
               + tuple((target, "uefi") for target in scenarios.ARM64))


def matrix(*layouts: str) -> list[object]:
    """The (suite, layout) pytest parameters of the given layouts (all by
    default): CI's share runs, the rest only in the full matrix."""
    wanted = [p for p in FULL_MATRIX if not layouts or p[1] in layouts]
    return scenarios.in_matrix(wanted, CI_MATRIX, ids=lambda p: f"{p[0]}-{p[1]}")


UNITS = guest.KEXEC_AUTO_UNITS

PROBE_UNIT = """[Unit]
Description=kexec-auto tests: report at shutdown whether a kernel is loaded
# stop after both loaders (units stop in the reverse order of starting)
Before=kexec-auto-load.service kexec-load.service
After=local-fs.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
ExecStop=/usr/local/sbin/ka-shutdown-probe

[Install]
WantedBy=multi-user.target
"""

PROBE = r"""#!/bin/sh
n=$(( $(cat /var/lib/ka-test/next) - 1 ))
echo "KA-RESULT seq=$n shutdown_kexec_loaded=$(cat /sys/kernel/kexec_loaded)" > /dev/ttyS0
"""

UNSIGNED = "/var/lib/ka-test/vmlinuz-unsigned"


def unsigned_release(newest: str) -> str:
    """A release newer than newest, for the unsigned copy of its image.

    >>> unsigned_release("6.1.0-57-cloud-amd64"), unsigned_release("6.12.57+deb13-cloud-amd64")
    ('6.1.0-999-cloud-amd64', '6.12.999+deb13-cloud-amd64')
    """
    if "+" in newest:
        return re.sub(r"^(\d+\.\d+)\.\d+\+", r"\g<1>.999+", newest)
    return re.sub(r"^(\d+\.\d+\.\d+)-\d+-", r"\g<1>-999-", newest)


def _install_probes(root: Path, arch: str) -> None:
    system = root / "etc/systemd/system"
    guest.show_on_console(root)
    (system / "ka-shutdown-probe.service").write_text(PROBE_UNIT)
    (root / "usr/local/sbin").mkdir(parents=True, exist_ok=True)
    probe = root / "usr/local/sbin/ka-shutdown-probe"
    probe.write_text(guest.on_console(PROBE, arch))
    probe.chmod(0o755)
    wants = system / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "ka-shutdown-probe.service"
    link.unlink(missing_ok=True)
    link.symlink_to("/etc/systemd/system/ka-shutdown-probe.service")


def _prepare_path(layout: str):
    def prepare(chroot: image.Chroot, base: image.BaseTree) -> dict[str, str]:
        (chroot.root / "var/lib/ka-test").mkdir(parents=True, exist_ok=True)
        _add_repo(chroot)
        notes = {"install": chroot.apt_install("kexec-auto")}
        notes["kernel_install"] = chroot.apt_install(f"linux-image-{base.newest}")
        notes["kexec_built"] = chroot.sh("cat /etc/default/kexec")
        if layout == "secureboot":
            # an unsigned copy of the newest image, under a newer release:
            # what lockdown would refuse, so never to be selected there
            fake = unsigned_release(base.newest)
            boot = chroot.root / "boot"
            shutil.copy2(boot / f"vmlinuz-{base.newest}", chroot.root / UNSIGNED.lstrip("/"))
            image.run(["sbattach", "--remove", chroot.root / UNSIGNED.lstrip("/")])
            shutil.copy2(chroot.root / UNSIGNED.lstrip("/"), boot / f"vmlinuz-{fake}")
            shutil.copy2(boot / f"initrd.img-{base.newest}", boot / f"initrd.img-{fake}")
            notes["unsigned_release"] = fake
            # no hook ran for it (no package): the guest's boot sees it first
        _install_probes(chroot.root, base.arch)
        return notes
    return prepare


def _report(layout: str) -> str:
    lines = [
        "ka_file cmdline /proc/cmdline",
        "ka_run lockdown cat /sys/kernel/security/lockdown",
        "ka_json list kexec-auto list --json",
    ]
    if layout != "bios":
        lines += [
            "ka_run efivars sh -c 'ls /sys/firmware/efi/efivars | wc -l; "
            "od -An -t u1 /sys/firmware/efi/efivars/BootCurrent-8be4df61-93ca-11d2-aa0d-00e098032b8c'",
            "ka_run secureboot od -An -t u1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c",
            "ka_run efibootmgr efibootmgr",
        ]
    return "\n".join(lines) + "\n"


#: how long kexec-auto's units and Python take in this boot (TCG)
MEASURE = r"""systemctl is-system-running --wait >/dev/null 2>&1
ka_run chain systemd-analyze critical-chain multi-user.target
ka_run blame sh -c 'systemd-analyze blame | head -n 25'
for u in kexec-auto-boot.service kexec-auto-load.service; do
    ka_result "times.$u" "$(systemctl show -P ActiveEnterTimestampMonotonic -P InactiveExitTimestampMonotonic \
        -P ExecMainStartTimestampMonotonic -P ExecMainExitTimestampMonotonic "$u" | tr '\n' ' ')"
done
ka_result times.multi-user "$(systemctl show -P ActiveEnterTimestampMonotonic multi-user.target)"
ka_run watchdog_unit sh -c 'journalctl -b -k --no-pager -o short-monotonic | grep -e "softdog: initialized" \
    -e "did not stop"; journalctl -b --no-pager -o cat -u kexec-auto-trial-watchdog.service'
ka_run py_start bash -c 'time python3 -c pass'
ka_run ka_status bash -c 'time kexec-auto status >/dev/null'
ka_run ka_boot bash -c 'time kexec-auto boot'
"""


def _path_stages(layout: str):
    def stages(base: image.BaseTree) -> list[str]:
        report = ASSESS_LIB + _report(layout)
        out = [
            # 0: firmware + GRUB -> the provider kernel (qemu run 0)
            report + MEASURE + "ka_do reboot\n",
            # 1: the newest, through kexec: a trial boot
            report + MEASURE + "ka_do reboot\n",
            # 2: the newest again, kexec'd from a kexec'd kernel
            report + "ka_do coldreboot\n",
            # 3: firmware + GRUB again (qemu run 1): the provider kernel
            report + "ka_result flag $(test -e /no-kexec-reboot && echo present || echo absent)\n"
            "ka_do reboot\n",
            # 4: the newest again, through kexec
            report,
        ]
        if layout == "uefi":
            # 4 -> 5: HANDOFF=true, then a power-on: GRUB boots the provider
            # kernel and kexec-auto hands off to the newest by itself
            out[4] += "ka_run handoff kexec-auto set HANDOFF=true\nka_do coldreboot\n"
            out.append(report + "ka_wait_bless\nka_run journal journalctl -b --no-pager -o cat "
                       + " ".join(f"-u {u}" for u in UNITS) + "\n")
        if layout == "secureboot":
            # 4 -> 5: the selected image loses its signature behind kexec-auto's
            # back: the load at shutdown fails, the reboot goes through the firmware
            out[4] += (f"cp {UNSIGNED} /boot/vmlinuz-{base.newest}\n"
                       "ka_do reboot\n")
            out.append(report + "ka_wait_bless\nka_json status_json kexec-auto status --json\n"
                       "ka_run journal journalctl -b --no-pager -o cat "
                       + " ".join(f"-u {u}" for u in UNITS) + "\n")
        return out
    return stages


def build_path(suite: str, layout: str) -> Built:
    return _build(suite, f"path-{layout}", _prepare_path(layout), _path_stages(layout),
                  {"boot_timeout": 420, "total_timeout": 2400}, layout=layout, grub_timeout=5)


def builders() -> dict[str, tuple[int, object]]:
    """Entries for conftest.BUILDERS: scenario -> (weight, build(suite))."""
    return {f"path-{layout}": (5, (lambda layout: lambda suite: build_path(suite, layout))(layout))
            for layout in ("bios", "uefi", "secureboot")}


def serial_between(chain: guest.Chain, start: str, end: str | None) -> str:
    """The serial log from the first line holding start to the next holding end."""
    text = chain.log.read_text(errors="replace")
    i = text.index(start)
    j = text.find(end, i) if end else -1
    return text[i:j if j >= 0 else len(text)]
