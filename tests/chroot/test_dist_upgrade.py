"""A dist-upgrade from bookworm to trixie with kexec-auto installed (tests/harness/dist_upgrade.py).

The upgrade must keep the configuration (a debconf answer, `kexec-auto set`
settings, a line written by hand), upgrade kexec-auto to trixie's build
(its files move from /lib to /usr/lib), and leave /etc/default/kexec naming
the newest kernel, trixie's, which the upgrade installed.
tests/vm/test_dep8_reboot.py boots the result.
"""
from __future__ import annotations

import pytest

from harness import dist_upgrade
from harness.matrix import FULL_ONLY, full_matrix
from harness.debbuild import release_build

#: about 13 minutes: in the full matrix only (KEXEC_AUTO_TEST_MATRIX=full)
pytestmark = [pytest.mark.chroot, *([] if full_matrix() else [FULL_ONLY])]


@pytest.fixture(scope="module")
def upgraded(as_root: None) -> dist_upgrade.Upgraded:
    return dist_upgrade.upgraded()


def test_dist_upgrade_keeps_the_configuration(upgraded):
    before, after = upgraded.before, upgraded.after
    print(f"dist-upgrade: {upgraded.seconds}")
    assert before["debian"].startswith("12") and after["debian"].startswith("13"), (before, after)
    for key in ("extra", "debconf_extra", "tries", "trial_timeout"):
        assert after[key] == before[key], key
    assert (after["extra"], after["tries"], after["trial_timeout"]) == ("ka_upgrade_test=1", "3", "600")
    assert after["config"] == before["config"]
    assert dist_upgrade.HAND_LINE in after["config"]
    assert after["unit_enabled"], "kexec-auto-load.service is no longer enabled"
    assert "Traceback" not in upgraded.log, upgraded.log[-4000:]


def test_dist_upgrade_installs_trixies_build_with_its_files_under_usr_lib(upgraded):
    before, after = upgraded.before, upgraded.after
    assert before["version"] == release_build("bookworm").version
    assert after["version"] == release_build("trixie").version
    assert all(p.startswith("/lib/systemd/") for p in before["files"].split()), before["files"]
    moved = after["files"].split()
    assert moved and all(p.startswith("/usr/lib/systemd/") for p in moved), moved
    missing = [p for p in moved if not (upgraded.root / p.lstrip("/")).is_file()]
    assert missing == [], f"lost in the upgrade: {missing}"
    assert [p.removeprefix("/usr") for p in moved] == before["files"].split()


def test_dist_upgrade_selects_the_newest_kernel_trixie_brought(upgraded):
    before, after = upgraded.before, upgraded.after
    newest_before = before["kernels"].split()[-1]
    newest = after["kernels"].split()[-1]
    assert before["kernel_image"] == f"/boot/vmlinuz-{newest_before}"
    assert "+deb13" in newest and newest not in before["kernels"], after["kernels"]
    assert (after["kernel_image"], after["initrd"]) == (f"/boot/vmlinuz-{newest}", f"/boot/initrd.img-{newest}")
    # /etc/kernel/cmdline with EXTRA_CMDLINE after it, before and after the upgrade
    wanted = f"{dist_upgrade.KERNEL_CMDLINE} ka_upgrade_test=1"
    assert (before["append"], after["append"]) == (wanted, wanted)
    assert after["kexec_tools"].startswith("1:2.0.29") and after["systemd"].startswith("257"), after
