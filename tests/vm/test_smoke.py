"""The harness and the mechanism, then kexec-auto installed on a running guest.

Boots 0-1 have no kexec-auto.  Boot 0 runs the provider kernel (qemu's fixed
-kernel), loads the newer kernel installed at build time by hand
(`kexec -l`) and runs `systemctl kexec`; boot 1 must be the newer kernel in
the same qemu process.  Boot 1 then does a plain `systemctl reboot` with
kexec-tools configured as Debian leaves it: a firmware reboot back to the
provider kernel (the problem kexec-auto solves), seen as qemu exiting under
-no-reboot and being started again.

Boot 2: `apt install kexec-auto` from a local repository on the running
system, then `reboot` at once, which must already be a kexec into the newest
kernel (the package starts its unit on install).

The smoke scenario also runs on forky (testing), with forky's systemd and
kexec-tools and its own build of kexec-auto; the other scenarios run on the
releases of scenarios.SUITES.
"""
import pytest

from .scenarios import in_matrix, step, suites

#: CI boots this chain on these suites; KEXEC_AUTO_TEST_MATRIX=full on every one
CI_SUITES: tuple[str, ...] = ()
pytestmark = pytest.mark.vm
SCENARIO = "smoke"
#: bookworm and trixie, and forky (testing)
every_suite = suites(CI_SUITES, extra=("forky",))


@every_suite
def test_provider_kernel_boots(vm_runs, suite):
    built, chain = vm_runs.get(suite, SCENARIO)
    with step(chain, suite, "smoke-provider-boot"):
        boot = chain.boot(0)
        assert boot.uname == built.base.provider
        assert boot.qemu_run == 0


@every_suite
def test_manual_kexec_lands_in_newer_kernel_without_firmware_reset(vm_runs, suite):
    built, chain = vm_runs.get(suite, SCENARIO)
    with step(chain, suite, "smoke-manual-kexec"):
        first = chain.boot(0)
        assert first.results.get("kexec_load.rc") == "0", first.results
        assert first.results.get("kexec_loaded") == "1", first.results
        assert first.action == "systemctl kexec"
        after = chain.boot(1)
        assert after.uname == built.base.newest
        assert after.qemu_run == first.qemu_run, "qemu restarted: that was a firmware reboot"


@every_suite
def test_plain_reboot_without_kexec_auto_is_a_firmware_reboot(vm_runs, suite):
    built, chain = vm_runs.get(suite, SCENARIO)
    with step(chain, suite, "smoke-plain-reboot"):
        before = chain.boot(1)
        assert before.action == "systemctl reboot"
        after = chain.boot(2)
        assert after.uname == built.base.provider
        assert after.qemu_run == before.qemu_run + 1, "qemu kept running: no firmware reboot"


@every_suite
def test_step1_apt_install_on_the_running_guest_then_reboot_lands_in_newest(vm_runs, suite):
    built, chain = vm_runs.get(suite, SCENARIO)
    with step(chain, suite, "step1-apt-install"):
        installed = chain.boot(2)
        assert installed.results.get("install.rc") == "0", installed.results
        kexec = installed.results.get("kexec", "").replace("'", "")
        assert f"KERNEL_IMAGE=/boot/vmlinuz-{built.base.newest}" in kexec, installed.results
        assert installed.results.get("unit.out") == "active", installed.results
        assert installed.action == "reboot"
        after = chain.boot(3)
        assert after.uname == built.base.newest
        assert after.qemu_run == installed.qemu_run, "qemu restarted: the reboot was a firmware reboot"
        assert chain.ended and chain.error is None, chain.error


@pytest.mark.parametrize("suite", in_matrix(["forky"], CI_SUITES))  # the main scenario covers bookworm and trixie
def test_forky_systemctl_kexec_still_finds_the_published_entry(vm_runs, suite):
    built, chain = vm_runs.get(suite, SCENARIO)
    with step(chain, suite, "smoke-systemctl-kexec"):
        before = chain.boot(3)
        assert before.action == "systemctl kexec"
        after = chain.boot(4)
        assert after.uname == built.base.newest
        assert after.qemu_run == before.qemu_run, "qemu restarted: that was a firmware reboot"
