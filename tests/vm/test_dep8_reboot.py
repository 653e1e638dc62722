"""After a dist-upgrade from bookworm to trixie, a reboot still lands in the
newest kernel: kexec-auto's DEP-8 reboot test, run by autopkgtest on the
upgraded machine.

The machine is the tree tests/harness/dist_upgrade.py upgrades in a chroot (checked
there by tests/chroot/test_dist_upgrade.py), made into a disk and booted in
qemu with the bookworm provider kernel as a fixed -kernel: a firmware reset
would come back to that kernel.  autopkgtest (virt server ssh, with
tests/vm/autopkgtest-provider-vm) runs debian/tests/kexec-reboot, which
calls autopkgtest-reboot; the machine must come back in trixie's kernel,
through kexec, in the same qemu process.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from harness import autopkgtest_run
from harness import debimage
from harness import dist_upgrade
from harness.matrix import FULL_ONLY, full_matrix
from harness.debbuild import release_build

from . import guest, scenarios

#: a dist-upgrade and a boot: in the full matrix only (KEXEC_AUTO_TEST_MATRIX=full)
pytestmark = [pytest.mark.vm, *([] if full_matrix() else [FULL_ONLY])]
SETUP = Path(__file__).resolve().parent / "autopkgtest-provider-vm"
NETWORK = "[Match]\nType=ether\n\n[Network]\nDHCP=ipv4\n"


def guest_disk(upgraded: dist_upgrade.Upgraded, work: Path) -> tuple[Path, Path]:
    """The upgraded tree as a provider disk that root reaches over ssh: (disk, key)."""
    root = upgraded.root
    key = work / "id_ed25519"
    debimage.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key])
    ssh = root / "root/.ssh"
    ssh.mkdir(mode=0o700, exist_ok=True)
    (ssh / "authorized_keys").write_text(key.with_suffix(".pub").read_text())
    (root / "etc/systemd/network/80-kexec-auto-tests.network").write_text(NETWORK)
    guest.enable_unit(root, "/usr/lib/systemd/system/systemd-networkd.service")
    # The guest has no way out: autopkgtest installs from its own repository only.
    (root / "etc/apt/sources.list").write_text("")
    debimage.configure_guest(root)
    disk = work / "upgraded.img"
    debimage.make_disk(root, disk)
    return disk, key


def run_reboot_test() -> dict[str, object]:
    start = time.monotonic()
    upgraded = dist_upgrade.upgraded()
    work = debimage.work_dir("dep8-reboot")
    disk, key = guest_disk(upgraded, work)
    built = time.monotonic()
    state = work / "state"
    result = autopkgtest_run.run(
        [release_build(dist_upgrade.TO).deb],
        ["ssh", "-s", str(SETUP), "--", "--disk", str(disk), "--kernel", str(upgraded.base.kernel),
         "--initrd", str(upgraded.base.initrd), "--identity", str(key), "--state", str(state)],
        work / "autopkgtest", tests=["kexec-reboot"])
    serial = (state / "serial.log").read_text(errors="replace") if (state / "serial.log").exists() else ""
    return {"result": result, "serial": serial, "upgraded": upgraded,
            "seconds": {"tree and disk": built - start, "autopkgtest": time.monotonic() - built}}


@pytest.fixture(scope="module")
def reboot_run(vm_runs) -> dict[str, object]:
    return vm_runs.get_job("dep8-reboot", run_reboot_test)  # type: ignore[return-value]


def test_autopkgtest_reboot_after_dist_upgrade_lands_in_trixies_kernel_through_kexec(reboot_run):
    result: autopkgtest_run.Result = reboot_run["result"]
    serial: str = reboot_run["serial"]
    upgraded: dist_upgrade.Upgraded = reboot_run["upgraded"]
    print(f"dep8 reboot: {reboot_run['seconds']}")
    try:
        newest = upgraded.after["kernels"].split()[-1]
        assert "+deb13" in newest, upgraded.after["kernels"]
        assert result.summary == {"kexec-reboot": "PASS"}, result.log[-6000:]
        assert result.returncode == 0, result.log[-6000:]
        assert f"ok: running {newest}, booted through kexec" in result.log, result.log[-6000:]
        assert "ok: the trial of" in result.log
        # seen from outside: two kernels started in one qemu process, the
        # second through kexec; no firmware reset in between
        started = re.findall(r"Linux version (\S+)", serial)
        assert started[:2] == [upgraded.base.provider, newest], started
        assert "kexec_core: Starting new kernel" in serial
        assert "reboot: Restarting system" not in serial
    except AssertionError:
        keep = scenarios.ARTIFACTS
        keep.mkdir(exist_ok=True)
        (keep / "dep8-reboot.serial.log").write_text(serial)
        (keep / "dep8-reboot.autopkgtest.log").write_text(result.log)
        raise
