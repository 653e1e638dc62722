"""The unattended chain on booted Debian: unattended-upgrades installs a
security kernel, reboots by itself, and the machine comes back in that
kernel through kexec; needrestart agrees with kexec-auto before and after,
for the newest kernel and for a pinned one (see unattended.py)."""
import re

import pytest

from .scenarios import step, suites

#: CI boots this chain on these suites; KEXEC_AUTO_TEST_MATRIX=full on every one
CI_SUITES = ("trixie",)  # bookworm in the full matrix: about 9 minutes of a lane each
pytestmark = [pytest.mark.vm, suites(CI_SUITES)]
SCENARIO = "unattended"


def needrestart(text: str) -> dict[str, str]:
    """{'KCUR': ..., 'KEXP': ..., 'KSTA': ...} from needrestart -b -k output."""
    return dict(re.findall(r"NEEDRESTART-(K[A-Z]+): ([^\s|]+)", text))


def samples(text: str) -> set[str]:
    return set(text.split("|"))


def test_unattended_upgrade_installs_the_kernel_and_reboots_into_it_through_kexec(vm_runs, suite):
    built, chain = vm_runs.get(suite, SCENARIO)
    new, provider = built.notes["kernel_new"], built.base.provider
    with step(chain, suite, "unattended-chain"):
        assert f"linux-image-{new}" in built.notes["upgrade_plan"], built.notes["upgrade_plan"]
        assert 'APT::Periodic::Unattended-Upgrade "1";' in built.notes["auto_upgrades"], built.notes
        first, second = chain.boot(0), chain.boot(1)
        assert (first.uname, first.qemu_run) == (provider, 0)
        assert first.action is None  # nothing was typed: the reboot came from unattended-upgrades
        uu_log = second.results["uu_log"]
        assert "Found /var/run/reboot-required, rebooting" in uu_log, uu_log
        assert second.results["meta"] == built.notes["kernel_security"]
        # back in the new kernel, in the same qemu process: kexec, no firmware reset
        assert (second.uname, second.qemu_run) == (new, 0), (second.uname, second.qemu_run)
        assert second.results["reboot_required"] == "absent"


def test_needrestart_agrees_before_and_after_the_unattended_reboot(vm_runs, suite):
    built, chain = vm_runs.get(suite, SCENARIO)
    first, new, provider = built.notes["kernel_first"], built.notes["kernel_new"], built.base.provider
    with step(chain, suite, "unattended-needrestart"):
        # before the upgrade: the newer of the provider's and the point release's
        # kernel is selected and expected (it may be the running one)
        pending = "1" if first == provider else "3"
        assert needrestart(chain.boot(0).results["needrestart"]) == {"KCUR": provider, "KEXP": first, "KSTA": pending}
        # inside the unattended run, after dpkg installed the kernel and before the reboot
        records = chain.boot(1).results["post_invoke"].split("=== post-invoke")
        last = records[-1]
        assert needrestart(last) == {"KCUR": provider, "KEXP": new, "KSTA": "3"}, last
        assert "REBOOT-REQUIRED: yes" in last, last
        assert f'kexec_auto_selected_kernel_info{{release="{new}"}} 1' in last, last
        # after the reboot: nothing to report
        assert needrestart(chain.boot(1).results["needrestart"]) == {"KCUR": new, "KEXP": new, "KSTA": "1"}


def test_needrestart_agrees_with_a_pinned_older_kernel(vm_runs, suite):
    built, chain = vm_runs.get(suite, SCENARIO)
    new, old = built.notes["kernel_new"], built.base.provider  # pinned: the provider's kernel
    with step(chain, suite, "unattended-pinned"):
        assert chain.error is None and chain.ended, chain.error
        second, third = chain.boot(1), chain.boot(2)
        assert second.results["pin.rc"] == "0" and second.results["pin_update.rc"] == "0", second.results
        assert needrestart(second.results["needrestart_pinned"]) == {"KCUR": new, "KEXP": old, "KSTA": "3"}
        assert second.action == "reboot"
        assert (third.uname, third.qemu_run) == (old, 0)
        # the newer kernel is installed, yet needrestart does not nag about it
        assert needrestart(third.results["needrestart"]) == {"KCUR": old, "KEXP": old, "KSTA": "1"}


def test_metrics_follow_the_chain(vm_runs, suite):
    built, chain = vm_runs.get(suite, SCENARIO)
    selected, new, provider = built.notes["kernel_first"], built.notes["kernel_new"], built.base.provider
    with step(chain, suite, "unattended-metrics"):
        first = samples(chain.boot(0).results["metrics"])
        assert {f'kexec_auto_running_kernel_info{{release="{provider}"}} 1',
                f'kexec_auto_selected_kernel_info{{release="{selected}"}} 1',
                f'kexec_auto_running_selected_kernel {1 if selected == provider else 0}',
                'kexec_auto_next_reboot_ok 1',
                'kexec_auto_boot_method{method="firmware"} 1'} <= first, first
        second = samples(chain.boot(1).results["metrics"])
        assert {f'kexec_auto_running_kernel_info{{release="{new}"}} 1',
                'kexec_auto_running_selected_kernel 1',
                'kexec_auto_boot_method{method="kexec"} 1',
                'kexec_auto_boot_method{method="firmware"} 0'} <= second, second
        third = samples(chain.boot(2).results["metrics"])
        assert {f'kexec_auto_selected_kernel_info{{release="{provider}"}} 1',
                'kexec_auto_running_selected_kernel 1',
                'kexec_auto_boot_method{method="kexec"} 1'} <= third, third
