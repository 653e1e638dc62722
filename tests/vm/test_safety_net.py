"""Never stuck: every way a trial kernel can fail to come up ends back on a
working kernel, with no command typed (see safety.py for the chains).

The guests boot the provider kernel with a Debian cloud image's kind of
command line (no panic=): whatever brings them back comes from kexec-auto's
defaults.  Each failed trial must show as a firmware reset (qemu exits
under -no-reboot and the provider kernel boots again), be counted with its
reason in `kexec-auto status`, `kexec-auto list` and the journal, and after
TRIES failures the kernel is bad and the next reboot lands in the next
newest kernel.  The chain ends with a trial that succeeds, which must leave
nothing of the safety net behind and not be reset after its deadline.
"""
from __future__ import annotations

import json

import pytest

from . import safety, scenarios
from .scenarios import step

pytestmark = pytest.mark.vm

#: which chains CI runs: one representative of every failure mode, on both
#: suites, one of them through the hand-off at power-on; an early hang in
#: the initramfs without a watchdog device (bookworm's 6.1 cloud kernels
#: have no i6300esb driver), and on trixie with qemu's i6300esb a hang
#: before the initramfs runs anything, which only the watchdog kept armed
#: through the kexec catches (the hard lockup shows the initramfs arming
#: i6300esb too)
CI_PLANS = {
    "bookworm": (
        safety.Plan(("panic", "emergency", "earlyhang", "softlockup"), tries=1, handoff=True, survive=True),
    ),
    "trixie": (
        safety.Plan(("noroot", "kexechang", "deadline", "hardlockup"), tries=1, watchdog_device=True),
    ),
}
#: what the full matrix (KEXEC_AUTO_TEST_MATRIX=full) adds to CI's plans.
#: With them, every failure mode runs on both suites, and with and without
#: the hand-off: a hang through the hand-off as a soft lockup, since a hard
#: lockup needs qemu's watchdog device, which bookworm's 6.1 cloud kernels
#: have no driver for.  Two tries (kexec-auto's default) run on both suites,
#: with and without the hand-off.  Counting tries does not depend on how a
#: trial fails, so no mode runs once per tries setting.
FULL_PLANS = {
    "bookworm": (
        safety.Plan(("noroot", "deadline"), tries=2, handoff=True),
    ),
    "trixie": (
        safety.Plan(("panic", "earlyhang", "emergency", "softlockup"), tries=2),
        # the early hangs, twice each, with qemu's i6300esb
        safety.Plan(("earlyhang", "kexechang"), tries=2, watchdog_device=True),
    ),
    # arm64 (qemu's virt board, no watchdog device: softdog): a panic, an
    # early hang in the initramfs and a boot that never completes
    "trixie-arm64": (
        safety.Plan(("panic", "earlyhang", "deadline"), tries=1),
    ),
}


def plans() -> list[object]:
    """(suite, plan) parameters: CI's plans, then the full matrix's others,
    which run only with KEXEC_AUTO_TEST_MATRIX=full."""
    ci = [(suite, plan) for suite, ps in CI_PLANS.items() for plan in ps]
    full = [(suite, plan) for suite, ps in FULL_PLANS.items() for plan in ps]
    return [pytest.param(suite, plan, marks=scenarios.FULL_ONLY if (suite, plan) in full
                         and not scenarios.full_matrix() else (), id=f"{suite}-{plan.name}")
            for suite, plan in ci + full]


#: signs on the serial console that the trial kernel failed the way it was broken
SIGNS = {
    "panic": "Kernel panic - not syncing: No working init found",
    "noroot": "Rebooting automatically due to panic= boot argument",
    "earlyhang": "ka-test: hanging in the initramfs",
    "kexechang": "ka-test: hanging before the initramfs runs anything",
    "emergency": "gives up its trial boot: entered emergency mode",
    "deadline": "gives up its trial boot: did not complete its boot within",
    "softlockup": "ka_hang: hanging this CPU with preemption off",
    "hardlockup": "ka_hang: hanging this CPU with interrupts off",
}


def status(boot) -> dict:
    return json.loads(boot.results.get("status_json") or "{}")


def kernels(boot) -> dict:
    return {k["release"]: k for k in json.loads(boot.results.get("list") or '{"kernels": []}')["kernels"]}


@pytest.mark.parametrize("suite,plan", plans())
def test_every_failed_trial_comes_back_by_itself(vm_runs, suite, plan):
    built, chain = vm_runs.get_safety(suite, plan)
    base = built.base
    provider, older, new = base.provider, base.older, base.newest
    lines = [f"{suite} {plan.name}: {mode} trial {attempt}: reset after {reset:.0f} s, "
             f"back in a working kernel after {back:.0f} s"
             for mode, attempt, reset, back in safety.recovery_times(chain, plan)]
    print("\n".join(lines))
    scenarios.ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (scenarios.ARTIFACTS / f"recovery-{suite}-{plan.name}.txt").write_text("".join(f"{line}\n" for line in lines))
    with step(chain, suite, plan.name):
        assert chain.error is None and chain.ended, (chain.error, safety.chain_boots(chain))
        assert built.notes["tries"] == str(plan.tries), built.notes
        # installing kexec-auto rebuilt N's initrd with its initramfs hook (the trigger)
        for part in ("scripts/init-top/kexec-auto", "usr/lib/kexec-auto/trial-watchdog", "/softdog.ko"):
            assert part in built.notes["initrd_listing"], built.notes["initrd_listing"]
        boots = {b.results.get("episode", ""): b for b in chain.boots}
        first = chain.boots[0]
        assert first.qemu_run == 0
        assert first.uname == (new if plan.handoff else provider), safety.chain_boots(chain)
        for mode in plan.modes:
            start = boots[f"{mode}:start"]
            for attempt in range(1, plan.tries + 1):
                label = "bad" if attempt == plan.tries else f"failed{attempt}"
                before = start if attempt == 1 else boots[f"{mode}:failed{attempt - 1}"]
                after = boots[f"{mode}:{label}"]
                where = f"{mode}, failed trial {attempt}: boots {safety.chain_boots(chain)}"
                # the trial kernel ran in the qemu process of the stage before ...
                run_log = safety.qemu_run_log(chain, before.qemu_run + (1 if plan.handoff and attempt == 1 else 0))
                assert f"Linux version {new}" in run_log, where
                assert SIGNS[mode] in run_log, f"{where}\n{run_log[-3000:]}"
                assert "kexec_auto.trial=" in run_log, where
                # ... and a firmware reset brought the machine back
                if plan.handoff:
                    # the power-on hands off to N, N fails, the reset's hand-off goes to O
                    assert after.uname == older, where
                    assert after.qemu_run >= before.qemu_run + 2 - (attempt > 1), where
                else:
                    assert (after.uname, after.qemu_run) == (provider, before.qemu_run + 1), where
                data = status(after)
                reasons = plan.reasons(mode)
                if label == "bad":
                    assert all(r in data["bad_kernels"].get(new, "") for r in reasons), (where, data)
                    assert kernels(after)[new]["boot"] == "bad" and not kernels(after)[new]["selectable"]
                    assert kernels(after)[new]["why_not"].startswith("marked bad: "), kernels(after)[new]
                    assert data["selected"] == older, (where, data)
                    event = f"{new} failed to boot ("
                    assert event in after.results.get("journal.out", "") or plan.handoff, after.results
                else:
                    failing = data["failed_kernels"].get(new)
                    assert failing and all(r in failing["why"] for r in reasons), (where, data)
                    assert failing["tries_left"] == plan.tries - attempt, failing
                    assert kernels(after)[new]["boot"] == "failed", kernels(after)[new]
                    assert data["selected"] == new, data  # tried again at the next reboot
                    if not plan.handoff:
                        assert "failed trial" in after.results.get("journal.out", ""), after.results
                assert any(f"{new} failed to boot" in e for e in data["boot_events"]), data
            # N bad: the next reboot lands in O, through kexec, and stays there
            bad = boots[f"{mode}:bad"]
            following = chain.boots[chain.boots.index(bad) + 1]
            assert (following.uname, following.qemu_run) == (older, bad.qemu_run), safety.chain_boots(chain)
        repaired, good = boots["repaired"], boots["good-trial"]
        assert (good.uname, good.qemu_run) == (new, repaired.qemu_run), safety.chain_boots(chain)
        assert f"kexec_auto.trial={safety.GOOD_DEADLINE}" in good.results.get("cmdline", ""), good.results
        # a trial that succeeds: marked good, no trace of the net, not reset after its deadline
        assert status(good)["trying"] is None and kernels(good)[new]["boot"] == "good", good.results
        assert good.results.get("trace_panic") == "0", good.results
        assert good.results.get("trace_watchdog") == "0", good.results
        assert good.results.get("trace_watchdog_dropin") == "", good.results
        assert good.results.get("trace_softdog") == "0", good.results
        assert good.results.get("trace_trial_watchdog") == "", good.results
        assert "active" not in good.results.get("trace_watchdog_states", "").replace("inactive", ""), good.results
        assert good.results.get("trace_bless_result") == "success", good.results
        # no reload of systemd: the generator's units are there, and inert
        assert good.results.get("daemon_reloads") == "0", good.results
        assert int(good.results.get("trace_generated", "0")) > 0, good.results
        assert good.results.get("trace_conditions", "").split() == ["no", "no", "no"], good.results
        assert good.results.get("trace_after_start") == "0", good.results
        assert "inactive" not in good.results.get("trace_units", "").replace("inactive/dead", ""), good.results
        # the trial's initramfs started softdog (and the hardware watchdog) ...
        trial_log = safety.serial_between(chain, repaired.seq, good.seq)
        started = "kexec-auto: trial boot: watchdog watchdog{} ({}) resets the machine in"
        if plan.watchdog_device and suite != "bookworm":
            # the kernel before kept i6300esb armed through the kexec: systemd
            # armed it for the good trial's deadline plus 60 s (as "3min 30s")
            armed = safety.GOOD_DEADLINE + 60
            span = f"{armed // 60}min {armed % 60}s" if armed % 60 else f"{armed // 60}min"
            assert f"Watchdog running with a hardware timeout of {span}" in trial_log, trial_log
            assert started.format(0, "i6300ESB timer") in trial_log, trial_log
            assert started.format(1, "Software Watchdog") in trial_log, trial_log
        else:
            assert started.format(0, "Software Watchdog") in trial_log, trial_log
        cpu = (f"{suite} {plan.name}: CPU time in the good trial (ns): {good.results.get('cpu_units')}; "
               f"whole boot so far: {int(good.results.get('cpu_total_ticks', '0')) / 100:.1f} s")
        print(cpu)
        with open(scenarios.ARTIFACTS / f"recovery-{suite}-{plan.name}.txt", "a", encoding="utf-8") as out:
            out.write(cpu + "\n")
        if plan.handoff:
            off = boots["handoff-off"]
            assert (off.uname, off.qemu_run) == (provider, good.qemu_run + 1), safety.chain_boots(chain)
            assert safety.HANDOFF_OFF in off.results.get("cmdline", ""), off.results
            assert f"hand-off to {new} skipped: {safety.HANDOFF_OFF}" in off.results.get("journal.out", ""), \
                off.results
            assert chain.qemu_runs == safety.qemu_runs(plan), chain.qemu_runs
        else:
            assert chain.qemu_runs == safety.qemu_runs(plan), chain.qemu_runs
        if plan.survive:
            assert float(good.results.get("survived_uptime", "0")) > safety.GOOD_DEADLINE + 60 + 10, good.results
