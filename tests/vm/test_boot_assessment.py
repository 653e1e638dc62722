"""Never boot-loop: boot assessment and the hand-off, in booted VMs (issue 5).

Fallback (scenarios._fallback_stages): kexec-auto and the newest and an older
kernel are installed at build time, then the newest kernel's initrd is
replaced by one that panics ("No working init found").  `reboot` on the
provider kernel kexecs into it; it panics, panic=5 resets the machine, qemu
(-no-reboot) exits and the harness starts it again with the provider kernel,
as a provider's firmware would.  That boot must mark the newest kernel bad,
and the next `reboot` must land, through kexec, in the older kernel, which
then gets marked good; a further reboot stays there.

Hand-off (scenarios._handoff_stages, HANDOFF=true preseeded through debconf):
every qemu start boots the provider kernel and kexec-auto switches by itself;
no stage ever runs on the provider kernel unless the hand-off is turned off
with kexec_auto.handoff=0 (the last qemu run).
"""
import json
import re

import pytest

from .scenarios import HANDOFF_OFF, step

pytestmark = pytest.mark.vm
SCENARIO = "fallback"

PANIC = "Kernel panic - not syncing"


def listing(boot, key: str = "list") -> dict:
    text = boot.results.get(key)
    assert text, f"stage {boot.seq} reported no {key!r}: {boot.results}"
    return json.loads(text)


def marks(data: dict) -> dict[str, str]:
    """release -> good/bad/untried, as `kexec-auto list --json` shows it."""
    return {kernel["release"]: kernel["boot"] for kernel in data["kernels"]}


def names(text: str, release: str) -> bool:
    return f"KERNEL_IMAGE=/boot/vmlinuz-{release}" in text.replace("'", "").replace('"', "")


def qemu_run_log(chain, run: int) -> str:
    """The serial output of one qemu process (from its start to its exit)."""
    text = chain.log.read_text(errors="replace")
    start = text.index(f"=== host: qemu run {run} starts")
    end = re.compile(rf"=== host: qemu run {run} (exited|killed)").search(text, start)
    return text[start:end.end() if end else len(text)]


def blessed(boot) -> None:
    assert boot.results.get("bless", "").startswith("success status=0"), \
        f"kexec-auto-bless.service did not run successfully in stage {boot.seq}: {boot.results.get('bless')}"


# --------------------------------------------------------------------------
# fallback after a broken newest kernel


def test_broken_newest_kernel_is_tried_and_panics(vm_runs, suite):
    built, chain = vm_runs.get(suite, SCENARIO)
    base = built.base
    with step(chain, suite, "assess-broken-newest-panics"):
        assert built.notes["handoff"] == "false", built.notes
        first = chain.boot(0)
        assert (first.uname, first.qemu_run) == (base.provider, 0)
        assert names(first.results.get("kexec", ""), base.newest), first.results
        before = listing(first)
        assert before["selected"] == base.newest, before
        assert marks(before)[base.newest] == "untried", before
        assert first.action == "reboot"
        # the reboot kexec'd the newest kernel inside qemu run 0, which panicked
        run0 = qemu_run_log(chain, 0)
        after_reboot = run0[run0.index("KA-ACTION seq=0"):]
        assert PANIC in after_reboot and "No working init found" in after_reboot, after_reboot[-3000:]
        assert f"Linux version {base.newest}" in after_reboot, "the panicking kernel is not the newest"
        # ... and the firmware (qemu started again) booted the provider kernel
        second = chain.boot(1)
        assert (second.uname, second.qemu_run) == (base.provider, 1), second


def test_broken_kernel_is_marked_bad_logged_and_deselected(vm_runs, suite):
    built, chain = vm_runs.get(suite, SCENARIO)
    base = built.base
    with step(chain, suite, "assess-marked-bad"):
        back = chain.boot(1)
        data = listing(back)
        assert marks(data)[base.newest] == "bad", data
        assert data["selected"] == base.older, data
        newest = next(k for k in data["kernels"] if k["release"] == base.newest)
        assert not newest["selectable"], newest
        assert names(back.results.get("kexec", ""), base.older), back.results
        status = listing(back, "status_json")
        assert base.newest in status["bad_kernels"], status
        assert any(f"{base.newest} failed to boot" in e for e in status["boot_events"]), status
        assert status["next_reboot"] == f"kexec into {base.older}", status
        assert back.results.get("status.rc") == "0", back.results
        assert f"marked bad:       {base.newest}" in back.results.get("status.out", ""), back.results
        journal = back.results.get("journal.out", "")
        assert f"{base.newest} failed to boot" in journal, journal


def test_next_reboot_lands_in_next_newest_which_is_blessed_no_loop(vm_runs, suite):
    built, chain = vm_runs.get(suite, SCENARIO)
    base = built.base
    with step(chain, suite, "assess-next-newest"):
        back, older = chain.boot(1), chain.boot(2)
        assert back.action == "reboot"
        assert older.uname == base.older, f"after reboot: running {older.uname}, wanted {base.older}"
        assert older.qemu_run == back.qemu_run, "qemu restarted: the reboot was a firmware reboot"
        blessed(older)
        data = listing(older)
        assert marks(data)[base.older] == "good", data
        assert marks(data)[base.newest] == "bad", data
        assert data["selected"] == base.older, data
        # one more reboot: the broken kernel is not tried again
        again = chain.boot(3)
        assert (again.uname, again.qemu_run) == (base.older, back.qemu_run), again
        blessed(again)
        assert marks(listing(again))[base.newest] == "bad"
        assert chain.ended and chain.error is None, chain.error
        assert chain.qemu_runs == 2, f"{chain.qemu_runs} qemu processes: expected exactly one firmware reset"
        assert [b.uname for b in chain.boots].count(base.newest) == 0


# --------------------------------------------------------------------------
# hand-off at power-on


class TestHandoff:
    SCENARIO = "handoff"

    def test_power_on_hands_off_to_newest_without_a_command(self, vm_runs, suite):
        built, chain = vm_runs.get(suite, self.SCENARIO)
        base = built.base
        with step(chain, suite, "handoff-power-on"):
            assert built.notes["handoff"] == "true", built.notes
            first = chain.boot(0)
            # the first stage that ran at all runs in the newest kernel, in qemu run 0
            assert (first.uname, first.qemu_run) == (base.newest, 0), first
            assert "Linux version " + base.provider in qemu_run_log(chain, 0)
            assert HANDOFF_OFF not in first.results.get("cmdline", "")
            blessed(first)
            assert marks(listing(first))[base.newest] == "good", first.results

    def test_broken_newest_is_tried_once_then_hand_off_goes_to_a_working_kernel(self, vm_runs, suite):
        built, chain = vm_runs.get(suite, self.SCENARIO)
        base = built.base
        with step(chain, suite, "handoff-broken-newest"):
            first = chain.boot(0)
            assert first.results.get("hook.rc") == "0", first.results
            # the kernel's hook gives the newly installed (broken) build a new try
            assert marks(listing(first, "list_after"))[base.newest] == "untried", first.results
            assert first.action == "coldreboot"
            # qemu run 1: provider, hand-off to the broken newest kernel, panic, reset
            run1 = qemu_run_log(chain, 1)
            assert f"Linux version {base.provider}" in run1
            assert f"Linux version {base.newest}" in run1 and PANIC in run1, run1[-3000:]
            assert "KA-BOOT" not in run1, "a stage ran in qemu run 1"
            # qemu run 2: provider, newest marked bad, hand-off to the older kernel
            fallback = chain.boot(1)
            assert (fallback.uname, fallback.qemu_run) == (base.older, 2), fallback
            run2 = qemu_run_log(chain, 2)
            assert f"Linux version {base.provider}" in run2 and f"Linux version {base.older}" in run2
            assert PANIC not in run2
            blessed(fallback)
            data = listing(fallback)
            assert marks(data)[base.newest] == "bad", data
            assert marks(data)[base.older] == "good", data
            assert data["selected"] == base.older, data
            status = listing(fallback, "status_json")
            assert any(f"{base.newest} failed to boot" in e for e in status["boot_events"]), status
            assert names(fallback.results.get("kexec", ""), base.older), fallback.results

    def test_next_power_on_stays_on_the_working_kernel(self, vm_runs, suite):
        built, chain = vm_runs.get(suite, self.SCENARIO)
        base = built.base
        with step(chain, suite, "handoff-no-loop"):
            again = chain.boot(2)
            assert (again.uname, again.qemu_run) == (base.older, 3), again
            run3 = qemu_run_log(chain, 3)
            assert f"Linux version {base.newest}" not in run3 and PANIC not in run3
            blessed(again)
            assert marks(listing(again))[base.newest] == "bad"

    def test_handoff_0_on_the_command_line_keeps_the_provider_kernel(self, vm_runs, suite):
        built, chain = vm_runs.get(suite, self.SCENARIO)
        base = built.base
        with step(chain, suite, "handoff-disabled-cmdline"):
            last = chain.boot(3)
            assert (last.uname, last.qemu_run) == (base.provider, 4), last
            assert HANDOFF_OFF in last.results.get("cmdline", ""), last.results
            journal = last.results.get("journal.out", "")
            assert f"hand-off to {base.older} skipped: {HANDOFF_OFF}" in journal, journal
            assert chain.ended and chain.error is None, chain.error
            assert chain.qemu_runs == 5, chain.qemu_runs
