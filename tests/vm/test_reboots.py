"""Every reboot lands in the newest kernel: kexec-auto on booted Debian (issue 4).

One qemu chain per suite (see scenarios._main_stages): the image is built with
kexec-auto installed from a local apt repository, then the newest and then an
older kernel installed in the chroot (their kernel hooks run there, natively).
qemu's fixed -kernel is the provider kernel, the oldest of the three, so a
firmware reboot always shows as qemu exiting and the provider kernel coming
back.  Boot N+1 is the outcome of the action of boot N.
"""
import pytest

from .scenarios import ARM64, step, suites

#: CI boots this chain on these suites; KEXEC_AUTO_TEST_MATRIX=full on every
#: one, on amd64 and on arm64 (qemu's virt board, -kernel)
CI_SUITES: tuple[str, ...] = ("bookworm",)
pytestmark = [pytest.mark.vm, suites(CI_SUITES, ARM64)]
SCENARIO = "main"


def names(text: str, release: str) -> bool:
    return f"KERNEL_IMAGE=/boot/vmlinuz-{release}" in text.replace("'", "").replace('"', "")


def kexec_reboot(chain, before_seq: int, action: str, release: str) -> None:
    before, after = chain.boot(before_seq), chain.boot(before_seq + 1)
    assert before.action == action, before
    assert after.uname == release, f"after {action!r}: running {after.uname}, wanted {release}"
    assert after.qemu_run == before.qemu_run, f"after {action!r}: qemu restarted (firmware reboot)"


def firmware_reboot(chain, before_seq: int, action: str, provider: str) -> None:
    before, after = chain.boot(before_seq), chain.boot(before_seq + 1)
    assert before.action == action, before
    assert after.qemu_run == before.qemu_run + 1, f"after {action!r}: qemu kept running (no firmware reboot)"
    assert after.uname == provider


def test_step2_newest_kernel_install_is_selected(vm_runs, suite):
    built, chain = vm_runs.get(suite, SCENARIO)
    with step(chain, suite, "step2-newest-selected"):
        assert names(built.notes["kexec_after_newest"], built.base.newest), built.notes["kexec_after_newest"]
        first = chain.boot(0)
        assert first.uname == built.base.provider and first.qemu_run == 0
        assert names(first.results.get("kexec", ""), built.base.newest), first.results
        assert first.results.get("unit.out") == "active", first.results
        assert first.results.get("status.rc") == "0", first.results


def test_step3_plain_reboot_lands_in_newest_without_firmware_reset(vm_runs, suite):
    built, chain = vm_runs.get(suite, SCENARIO)
    with step(chain, suite, "step3-reboot"):
        kexec_reboot(chain, 0, "reboot", built.base.newest)


@pytest.mark.parametrize("seq,action", [(1, "reboot"), (2, "systemctl reboot"),
                                        (3, "shutdown -r now"), (4, "systemctl kexec")])
def test_step4_every_way_to_reboot_lands_in_newest(vm_runs, suite, seq, action):
    built, chain = vm_runs.get(suite, SCENARIO)
    with step(chain, suite, f"step4-{action.replace(' ', '-')}"):
        kexec_reboot(chain, seq, action, built.base.newest)


def test_step5_older_kernel_installed_after_newest_changes_nothing(vm_runs, suite):
    built, chain = vm_runs.get(suite, SCENARIO)
    with step(chain, suite, "step5-older-after-newer"):
        # the older kernel's install retargeted /vmlinuz to itself ...
        assert built.notes["vmlinuz_link"].endswith(f"vmlinuz-{built.base.older}"), built.notes
        # ... but kexec-auto's hook kept the newest, and the reboots above landed there
        assert names(built.notes["kexec_after_older"], built.base.newest), built.notes["kexec_after_older"]
        assert [chain.boot(seq).uname for seq in range(1, 6)] == [built.base.newest] * 5


def test_step6_coldreboot_is_one_firmware_reboot(vm_runs, suite):
    built, chain = vm_runs.get(suite, SCENARIO)
    with step(chain, suite, "step6-coldreboot"):
        firmware_reboot(chain, 5, "coldreboot", built.base.provider)
        assert chain.boot(6).results.get("flag") == "absent"
        kexec_reboot(chain, 6, "reboot", built.base.newest)


def test_step7_disable_and_enable_through_debconf(vm_runs, suite):
    built, chain = vm_runs.get(suite, SCENARIO)
    with step(chain, suite, "step7-reconfigure"):
        disabled, enabled = chain.boot(7), chain.boot(8)
        assert disabled.results.get("reconfigure.rc") == "0", disabled.results
        assert disabled.results.get("enabled.out") == "false", disabled.results
        firmware_reboot(chain, 7, "reboot", built.base.provider)
        assert enabled.results.get("reconfigure.rc") == "0", enabled.results
        assert enabled.results.get("enabled.out") == "true", enabled.results
        assert names(enabled.results.get("kexec", ""), built.base.newest), enabled.results
        kexec_reboot(chain, 8, "reboot", built.base.newest)


def test_step8_a_kexec_that_returns_at_shutdown_is_no_failed_trial(vm_runs, suite):
    """kexec -e fails at shutdown: the reboot goes through the firmware, and
    the kernel that was never started keeps its mark."""
    built, chain = vm_runs.get(suite, SCENARIO)
    with step(chain, suite, "step8-kexec-returns"):
        assert chain.boot(9).uname == built.base.newest
        firmware_reboot(chain, 9, "reboot", built.base.provider)
        after = chain.boot(10).results
        assert after.get("never_started") == "1", after
        assert after.get("failed_boots") == "0", after
        assert after.get("mark") == "good", after


def test_step9_removing_the_newest_kernel_falls_back_to_the_next(vm_runs, suite):
    built, chain = vm_runs.get(suite, SCENARIO)
    with step(chain, suite, "step9-remove-newest"):
        removed = chain.boot(10)
        assert removed.results.get("remove.rc") == "0", removed.results
        assert names(removed.results.get("kexec", ""), built.base.older), removed.results
        kexec_reboot(chain, 10, "reboot", built.base.older)


def test_step10_purge_gives_firmware_reboots_and_leaves_no_trace(vm_runs, suite):
    built, chain = vm_runs.get(suite, SCENARIO)
    with step(chain, suite, "step10-purge"):
        purged = chain.boot(11)
        assert purged.results.get("purge.rc") == "0", purged.results
        assert purged.results.get("traces") == "", purged.results
        assert purged.results.get("kexec_restored.rc") == "0", purged.results
        firmware_reboot(chain, 11, "reboot", built.base.provider)
        assert chain.boot(12).results.get("traces") == "", chain.boot(12).results
        assert chain.ended and chain.error is None, chain.error
