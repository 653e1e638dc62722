"""Boot assessment: the pure state machine, then through the command."""

import json
import subprocess

import pytest

from conftest import BZIMAGE, queued
from kexec_auto import assess, bootscan, bootstate, cli, commands, lastboot
from kexec_auto.assess import BootState, assess_boot, bless, forget, start_trial
from kexec_auto.statefile import dump_state, parse_state

NEW = "6.12.117+deb12-cloud-amd64"
OLD = "6.1.0-56-cloud-amd64"
PROVIDER = "6.1.0-50-cloud-amd64"
T = "2026-11-25T12:00:00+0000"


def test_a_silent_failure_counts_one_try_and_the_last_try_marks_bad():
    state = start_trial(BootState(), NEW, T)
    assert state.trying == NEW and state.mark_of(NEW) == "untried"
    state, events = assess_boot(state, PROVIDER, T, tries=2)
    assert (state.mark_of(NEW), state.failures(NEW), state.trying) == ("failed", 1, None)
    assert assess.tries_left(state, NEW, 2) == 1
    assert NEW not in state.bad() and NEW in state.suspects()
    assert events == [
        f"{NEW} failed to boot (came up in {PROVIDER} instead; it never reached its userspace: a panic, "
        "a hang, a missing root file system or a power loss early in boot): failed trial 1 of 2; it is tried "
        "again at the next reboot (1 try left), but not by the hand-off at power-on"]
    assert state.events[-1].endswith(events[0])
    state, events = assess_boot(start_trial(state, NEW, T), PROVIDER, T, tries=2)
    assert (state.mark_of(NEW), state.failures(NEW)) == ("bad", 2)
    assert NEW in state.bad() and assess.tries_left(state, NEW, 2) == 0
    assert events[0].endswith("marked bad after 2 failed trials")


def test_one_try_marks_bad_at_once():
    state, events = assess_boot(start_trial(BootState(), NEW, T), PROVIDER, T, tries=1)
    assert state.mark_of(NEW) == "bad"
    assert events[0].endswith("marked bad after 1 failed trial")


def test_the_reason_says_how_far_the_kernel_got():
    state = start_trial(BootState(), NEW, T)
    assert assess.reached_userspace(state, PROVIDER) == state  # not the kernel on trial
    state = assess.reached_userspace(state, NEW)
    assert state.trying_reached == assess.USERSPACE
    state, events = assess_boot(state, PROVIDER, T, tries=1)
    assert state.marks[NEW].why.startswith(f"came up in {PROVIDER} instead; it had started its userspace")
    # What the kernel reported itself wins.
    state = start_trial(state, OLD, T)
    state, events = assess.trial_failed(state, OLD, "entered emergency mode (failed: local-fs.target)", T)
    assert events == [f"{OLD} gives up its trial boot: entered emergency mode (failed: local-fs.target)"]
    assert assess.trial_failed(state, NEW, "x", T) == (state, [])  # only the kernel on trial reports
    state, events = assess_boot(state, PROVIDER, T, tries=2)
    assert events[0].startswith(f"{OLD} failed to boot (entered emergency mode (failed: local-fs.target)): "
                                "failed trial 1 of 2")
    assert state.marks[OLD].why == f"entered emergency mode (failed: local-fs.target) (tried since {T})"


def test_trial_that_comes_up_is_kept_until_blessed():
    state = start_trial(BootState(), NEW, T)
    same, events = assess_boot(state, NEW, T)
    assert same == state and events == []
    state, events = bless(state, NEW, T)
    assert state.mark_of(NEW) == "good" and state.trying is None
    assert events == [f"{NEW} booted and reached a healthy state: marked good"]
    # Blessing again changes nothing.
    assert bless(state, NEW, T) == (state, [])


def test_a_power_loss_costs_a_try_and_a_good_boot_gives_it_back():
    state, _ = assess_boot(start_trial(BootState(), NEW, T), PROVIDER, T, tries=2)
    assert state.failures(NEW) == 1
    state = start_trial(state, NEW, T)
    state, _ = bless(state, NEW, T)
    assert (state.mark_of(NEW), state.failures(NEW), state.suspects()) == ("good", 0, {})


def test_orderly_shutdown_inside_the_tried_kernel_ends_its_trial():
    state = start_trial(BootState(), NEW, T)
    assert assess.end_trial(state, PROVIDER) == (state, [])  # not the kernel being tried
    state, events = assess.end_trial(state, NEW)
    assert (state.trying, state.mark_of(NEW), events) == (None, "untried", [])
    # A firmware reboot after that is no failure of NEW.
    assert assess_boot(state, PROVIDER, T) == (state, [])


def test_a_kernel_that_gave_up_its_trial_stays_on_trial_through_a_shutdown():
    state = start_trial(BootState(), NEW, T)
    state, _ = assess.trial_failed(state, NEW, "did not complete its boot within 300 s", T)
    assert assess.end_trial(state, NEW) == (state, [])
    state, events = assess_boot(state, PROVIDER, T, tries=1)
    assert state.mark_of(NEW) == "bad" and "within 300 s" in events[0]


def test_a_good_kernel_that_stops_booting_is_marked_bad():
    # e.g. its initrd was rebuilt broken after it had booted fine
    state, _ = bless(start_trial(BootState(), NEW, T), NEW, T)
    assert state.mark_of(NEW) == "good"
    for _ in range(2):
        state = start_trial(state, NEW, T)
        assert state.trying == NEW
        state, events = assess_boot(state, PROVIDER, T, tries=2)
    assert state.mark_of(NEW) == "bad"
    assert events[0].startswith(f"{NEW} failed to boot (came up in {PROVIDER} instead")


def test_forget_clears_marks():
    state, _ = assess_boot(start_trial(BootState(), NEW, T), PROVIDER, T, tries=1)
    state, events = forget(state, NEW, T, "its package was installed")
    assert state.mark_of(NEW) == "untried"
    assert events == [f"forgot what was known of {NEW} (its package was installed)"]
    assert forget(state, NEW, T, "again") == (state, [])


def test_history_is_bounded():
    state = BootState()
    for i in range(50):
        state, _ = bless(state, f"6.1.0-{i}-amd64", T)
    assert len(state.events) == assess.HISTORY


def test_state_round_trip_and_corruption():
    state, _ = assess_boot(start_trial(BootState(), NEW, T), PROVIDER, T)
    state = assess.reached_userspace(start_trial(state, OLD, T), OLD)
    state, _ = assess.trial_failed(state, OLD, "entered rescue mode", T)
    assert parse_state(dump_state(state)) == state
    for text in ("", "{", "[]", '{"marks": {"x": {"state": "meh", "when": ""}}, "trying": null}',
                 '{"marks": {}, "trying": 5}', '{"trying": null}',
                 '{"marks": {"x": {"state": "bad", "when": "", "failures": -1}}, "trying": null}',
                 '{"marks": {"x": {"state": "bad", "when": "", "failures": "2"}}, "trying": null}'):
        with pytest.raises(ValueError, match="not a kexec-auto boot state|unknown mark|trying|failures"):
            parse_state(text)


def test_a_state_written_before_tries_were_counted_still_reads():
    old = ('{"trying": null, "trying_since": "", "marks": {"%s": {"state": "bad", "when": "%s", "why": "w"},'
           ' "%s": {"state": "good", "when": "%s", "why": ""}}, "events": []}' % (NEW, T, OLD, T))
    state = parse_state(old)
    assert (state.mark_of(NEW), state.failures(NEW), state.mark_of(OLD), state.failures(OLD)) == ("bad", 1, "good", 0)
    assert (state.trying_reached, state.trying_failed) == ("", "")


# -- through the command, on fake roots -------------------------------------


@pytest.fixture
def machine(machine):
    machine.running(PROVIDER)
    machine.add_kernel(PROVIDER)
    machine.add_kernel(OLD)
    machine.add_kernel(NEW)
    assert cli.main(["update", "--root", str(machine)]) == 0
    return machine


def image(root):
    return root.sourced()["KERNEL_IMAGE"]


def boot_state(root):
    return parse_state(root.read(bootstate.BOOT_STATE))


def kexec_boots(root, release, trial_cmdline=None):
    """What kexec hands to the next kernel: it boots ``release`` with the
    trial command line kexec-auto loaded it with."""
    loads = root.fake_run.named("/sbin/kexec")
    assert loads, "nothing was loaded"
    append = loads[-1][-1].removeprefix("--append=")
    root.running(release)
    root.write("/proc/cmdline", (trial_cmdline or append) + "\n")
    root.fake_run.calls.clear()
    return append


def firmware_boots_provider(root):
    root.running(PROVIDER)
    root.write("/proc/cmdline", "BOOT_IMAGE=/boot/vmlinuz-6.1.0-50-cloud-amd64 root=/dev/vda ro console=ttyS0\n")
    root.file("/run").exists() and subprocess.run(["rm", "-rf", str(root.file("/run"))], check=True)


def test_a_kernel_failing_twice_is_marked_bad_and_the_next_reboot_takes_the_next_newest(machine, capsys):
    r = str(machine)
    for attempt in (1, 2):
        assert cli.main(["load", "--at-shutdown", "--root", r]) == 0
        assert boot_state(machine).trying == NEW
        # NEW panicked (panic=10 reset the machine); the provider booted its own kernel.
        firmware_boots_provider(machine)
        assert cli.main(["boot", "--root", r]) == 0
        err = capsys.readouterr().err
        assert f"warning: {NEW} failed to boot (came up in {PROVIDER} instead" in err
        if attempt == 1:
            assert "failed trial 1 of 2; it is tried again at the next reboot (1 try left)" in err
            assert image(machine) == f"/boot/vmlinuz-{NEW}"  # tried again at the next reboot
            cli.main(["status", "--root", r])
            out = capsys.readouterr().out
            assert f"failed trials:    {NEW}: 1, 1 tries left: came up in {PROVIDER} instead" in out
            cli.main(["list", "--root", r])
            assert "[failed 1, 1 left]" in capsys.readouterr().out
    assert "marked bad after 2 failed trials" in err
    assert boot_state(machine).mark_of(NEW) == "bad"
    assert image(machine) == f"/boot/vmlinuz-{OLD}"
    # The next reboot tries OLD, which boots and is blessed.
    cli.main(["load", "--at-shutdown", "--root", r])
    assert boot_state(machine).trying == OLD
    kexec_boots(machine, OLD)
    assert cli.main(["boot", "--root", r]) == 0
    assert boot_state(machine).trying == OLD
    assert cli.main(["bless", "--root", r]) == 0
    state = boot_state(machine)
    assert (state.trying, state.mark_of(OLD), state.mark_of(NEW)) == (None, "good", "bad")
    capsys.readouterr()
    assert cli.main(["list", "--json", "--root", r]) == 0
    kernels = {k["release"]: k for k in json.loads(capsys.readouterr().out)["kernels"]}
    assert kernels[NEW]["boot"] == "bad" and not kernels[NEW]["selectable"]
    assert (kernels[NEW]["failed_trials"], kernels[NEW]["tries_left"]) == (2, 0)
    assert kernels[NEW]["why_not"].startswith(f"marked bad: came up in {PROVIDER} instead")
    assert kernels[OLD]["boot"] == "good" and kernels[OLD]["selected"]
    assert kernels[PROVIDER]["boot"] == "untried"
    cli.main(["status", "--root", r])
    out = capsys.readouterr().out
    assert f"marked bad:       {NEW}: came up in {PROVIDER} instead" in out
    assert f"{NEW} failed to boot" in out


def loader(root, byte):
    root.write("/sys/kernel/boot_params/data", b"\0" * 0x210 + bytes([byte]) + b"\0" * 0x100)


def test_a_kernel_never_started_because_kexec_returned_is_not_counted_as_failed(machine, capsys):
    """kexec -e returned at shutdown (the shutdown hook records it) and the
    machine rebooted through its firmware: NEW never ran, so its trial ends
    without a failure, however often it happens."""
    r = str(machine)
    for _ in range(3):
        assert cli.main(["load", "--at-shutdown", "--root", r]) == 0
        assert boot_state(machine).trying == NEW
        machine.write(lastboot.KEXEC_RETURNED_MARKER, f"1 /boot/vmlinuz-{NEW}\n")  # as the hook writes it
        firmware_boots_provider(machine)
        loader(machine, 0xB0)  # qemu's -kernel
        assert cli.main(["boot", "--root", r]) == 0
        err = capsys.readouterr().err
        assert (f"warning: {NEW} was never started (kexec -e returned at shutdown with exit status 1, "
                f"/boot/vmlinuz-{NEW} loaded): the reboot went through the firmware") in err, err
        assert "failed to boot" not in err
        state = boot_state(machine)
        assert (state.trying, state.mark_of(NEW)) == (None, "untried")
        assert not machine.exists(lastboot.KEXEC_RETURNED_MARKER)
        assert image(machine) == f"/boot/vmlinuz-{NEW}"


def test_a_kexec_boot_proves_kexec_did_not_return(machine, capsys):
    """A stale record of kexec -e returning means nothing in a boot that came
    through kexec: it is used up, and the trial goes on as usual."""
    r = str(machine)
    assert cli.main(["load", "--at-shutdown", "--root", r]) == 0
    machine.write(lastboot.KEXEC_RETURNED_MARKER, f"1 /boot/vmlinuz-{NEW}\n")
    kexec_boots(machine, NEW)
    loader(machine, 0xD0)
    assert cli.main(["boot", "--root", r]) == 0
    assert "never started" not in capsys.readouterr().err
    assert boot_state(machine).trying == NEW
    assert not machine.exists(lastboot.KEXEC_RETURNED_MARKER)


def test_every_kexec_reboot_is_a_trial_boot_with_its_safety_net_words(machine):
    r = str(machine)
    assert cli.main(["load", "--at-shutdown", "--root", r]) == 0
    append = kexec_boots(machine, NEW)
    assert append == "root=/dev/vda ro console=ttyS0 kexec_auto.trial=300 panic=10"
    # The command line reused from the trial boot is the administrator's again.
    assert cli.main(["update", "--root", r]) == 0
    assert machine.sourced()["APPEND"] == "root=/dev/vda ro console=ttyS0"
    # The deadline is the TRIAL_TIMEOUT setting; the administrator's panic= stands.
    machine.config("TRIAL_TIMEOUT=90\nEXTRA_CMDLINE=panic=0\n")
    cli.main(["update", "--root", r])
    cli.main(["load", "--at-shutdown", "--root", r])
    assert kexec_boots(machine, NEW) == "root=/dev/vda ro console=ttyS0 panic=0 kexec_auto.trial=90"
    # A kernel loaded by hand (then: systemctl kexec) is loaded as the file says.
    cli.main(["load", "--root", r])
    assert machine.fake_run.named("/sbin/kexec")[-1][-1] == "--append=root=/dev/vda ro console=ttyS0 panic=0"


def test_fail_trial_records_why_and_resets_only_a_trial_boot(machine, monkeypatch, capsys):
    r = str(machine)
    assert cli.main(["fail-trial", "emergency", "--root", r]) == 0  # no trial: nothing
    assert machine.fake_run.named("systemctl", "reboot") == []
    assert "no trial boot" in capsys.readouterr().err
    cli.main(["load", "--at-shutdown", "--root", r])
    kexec_boots(machine, NEW)
    cli.main(["boot", "--root", r])
    monkeypatch.setattr(commands, "failed_units", lambda: ["mnt-data.mount", "local-fs.target"])
    assert cli.main(["fail-trial", "emergency", "--root", r]) == 0
    assert machine.fake_run.named("systemctl", "reboot") == [["systemctl", "reboot", "--force"]]
    err = capsys.readouterr().err
    assert f"error: {NEW} gives up its trial boot: entered emergency mode (failed: mnt-data.mount, " \
        "local-fs.target)" in err
    # Were the reboot orderly after all, nothing is loaded for it.
    assert cli.main(["load", "--at-shutdown", "--root", r]) == 0
    assert machine.fake_run.named("/sbin/kexec") == []
    assert boot_state(machine).trying == NEW
    firmware_boots_provider(machine)
    cli.main(["boot", "--root", r])
    assert (f"{NEW} failed to boot (entered emergency mode (failed: mnt-data.mount, local-fs.target)): "
            "failed trial 1 of 2") in capsys.readouterr().err


def test_fail_trial_after_the_deadline_says_what_the_boot_waits_for(machine, monkeypatch, capsys):
    r = str(machine)
    machine.config("TRIAL_TIMEOUT=90\nTRIES=1\n")
    cli.main(["load", "--at-shutdown", "--root", r])
    kexec_boots(machine, NEW)
    monkeypatch.setattr(commands, "jobs", lambda: [commands.Job("slow.service", "start", "running")])
    assert cli.main(["fail-trial", "deadline", "--root", r]) == 0
    firmware_boots_provider(machine)
    cli.main(["boot", "--root", r])
    assert boot_state(machine).marks[NEW].why.startswith(
        "did not complete its boot within 90 s (still waiting for: slow.service (start))")
    assert image(machine) == f"/boot/vmlinuz-{OLD}"


def trial_watchdogs_started(machine) -> None:
    """What hooks/libexec/trial-watchdog leaves when it started i6300esb
    and the softdog it loaded (tests/test_trial_watchdog.py runs it)."""
    machine.write("/sys/class/watchdog/watchdog0/identity", "i6300ESB timer\n")
    machine.write("/sys/class/watchdog/watchdog1/identity", "Software Watchdog\n")
    machine.write("/dev/watchdog0", "")
    machine.write("/dev/watchdog1", "")
    machine.write("/run/kexec-auto/trial-watchdog",
                  "watchdog0 i6300ESB timer\nloaded softdog\nwatchdog1 Software Watchdog\n")


def test_a_trial_that_succeeds_leaves_no_safety_net(machine, capsys):
    r = str(machine)
    cli.main(["load", "--at-shutdown", "--root", r])
    kexec_boots(machine, NEW)
    machine.write("/proc/sys/kernel/panic", "10\n")
    machine.write(f"/boot/config-{NEW}", "CONFIG_KEXEC=y\nCONFIG_PANIC_TIMEOUT=0\n")
    trial_watchdogs_started(machine)
    cli.main(["boot", "--root", r])
    fake = machine.fake_run
    fake.calls.clear()
    assert cli.main(["bless", "--root", r]) == 0
    assert machine.read("/proc/sys/kernel/panic") == "0\n"
    # each watchdog the trial started got the magic close, softdog is unloaded
    assert machine.read("/dev/watchdog0") == "V" and machine.read("/dev/watchdog1") == "V"
    assert fake.ending("modprobe") == [["-r", "softdog"]]
    assert not machine.exists("/run/kexec-auto/trial-watchdog")
    # systemd is not reloaded: the deadline timer is stopped, the rest is
    # held by the trial-over flag
    assert fake.ending("systemctl") == [["stop", "kexec-auto-trial-deadline.timer"]]
    assert machine.exists("/run/kexec-auto/trial-over")
    assert "warning" not in capsys.readouterr().err
    # Once over, the trial's units do nothing.
    fake.calls.clear()
    assert cli.main(["fail-trial", "deadline", "--root", r]) == 0
    assert fake.calls == []


def test_bless_leaves_alone_a_watchdog_that_is_no_longer_the_trials(machine, capsys):
    r = str(machine)
    cli.main(["load", "--at-shutdown", "--root", r])
    kexec_boots(machine, NEW)
    trial_watchdogs_started(machine)
    # softdog was unloaded and something else registered as watchdog1
    machine.write("/sys/class/watchdog/watchdog1/identity", "iTCO_wdt\n")
    cli.main(["boot", "--root", r])
    assert cli.main(["bless", "--root", r]) == 0
    assert machine.read("/dev/watchdog0") == "V" and machine.read("/dev/watchdog1") == ""
    assert "watchdog1 is no longer 'Software Watchdog'; not stopped" in capsys.readouterr().err
    assert boot_state(machine).marks[NEW].state == "good"


def test_a_watchdog_that_cannot_be_stopped_is_reported_and_the_trial_still_ends(machine, capsys):
    r = str(machine)
    cli.main(["load", "--at-shutdown", "--root", r])
    kexec_boots(machine, NEW)
    trial_watchdogs_started(machine)
    machine.file("/dev/watchdog0").unlink()
    cli.main(["boot", "--root", r])
    assert cli.main(["bless", "--root", r]) == 0
    err = capsys.readouterr().err
    assert "warning: cannot stop the trial's watchdog watchdog0 (i6300ESB timer): No such file or directory" in err
    assert machine.read("/dev/watchdog1") == "V"
    assert boot_state(machine).marks[NEW].state == "good"


def test_the_administrators_panic_timeout_is_not_touched(machine):
    r = str(machine)
    machine.config("EXTRA_CMDLINE=panic=30\n")
    cli.main(["update", "--root", r])
    cli.main(["load", "--at-shutdown", "--root", r])
    kexec_boots(machine, NEW)
    machine.write("/proc/sys/kernel/panic", "30\n")
    cli.main(["bless", "--root", r])
    assert machine.read("/proc/sys/kernel/panic") == "30\n"


def test_coldreboot_or_poweroff_from_the_tried_kernel_is_not_a_failure(machine, monkeypatch):
    r = str(machine)
    cli.main(["load", "--at-shutdown", "--root", r])
    assert boot_state(machine).trying == NEW
    machine.running(NEW)  # it came up; the user runs coldreboot before bless ran
    machine.write("/no-kexec-reboot", "")
    assert cli.main(["load", "--at-shutdown", "--root", r]) == 0
    assert boot_state(machine).trying is None
    machine.running(PROVIDER)  # the firmware boots the provider kernel
    assert cli.main(["boot", "--root", r]) == 0
    assert boot_state(machine).mark_of(NEW) == "untried"
    assert image(machine) == f"/boot/vmlinuz-{NEW}"
    # Same for a poweroff.
    cli.main(["load", "--at-shutdown", "--root", r])
    machine.running(NEW)
    monkeypatch.setattr(commands, "jobs", queued("poweroff.target"))
    assert cli.main(["load", "--at-shutdown", "--root", r]) == 0
    assert boot_state(machine).trying is None


def test_forget_and_reinstall_clear_the_bad_mark(machine, src_env):
    r = str(machine)
    machine.config("TRIES=1\n")
    cli.main(["load", "--at-shutdown", "--root", r])
    cli.main(["boot", "--root", r])
    assert image(machine) == f"/boot/vmlinuz-{OLD}"
    assert cli.main(["forget", NEW, "--root", r]) == 0
    assert boot_state(machine).mark_of(NEW) == "untried"
    cli.main(["update", "--root", r])
    assert image(machine) == f"/boot/vmlinuz-{NEW}"
    # Bad again, then the kernel package is reinstalled: the hook clears it.
    cli.main(["load", "--at-shutdown", "--root", r])
    cli.main(["boot", "--root", r])
    assert image(machine) == f"/boot/vmlinuz-{OLD}"
    from test_hooks import run_parts

    result = run_parts(machine, "postinst.d", NEW, "configure", src_env)
    assert result.returncode == 0, result.stderr
    assert f"forgot what was known of {NEW} (its package was installed)" in result.stderr
    assert image(machine) == f"/boot/vmlinuz-{NEW}"


def test_a_damaged_state_is_said_set_aside_and_rebuilt_from_what_it_held(machine, capsys):
    r = str(machine)
    machine.write(bootstate.BOOT_STATE, "{ not json")
    assert cli.main(["update", "--root", r]) == 0
    assert "the boot state was damaged: /var/lib/kexec-auto/boot-state.json" in capsys.readouterr().err
    assert cli.main(["bless", "--root", r]) == 0  # any change of state rebuilds the file
    assert boot_state(machine).mark_of(PROVIDER) == "good"
    assert machine.read(bootstate.BOOT_STATE + ".corrupt") == "{ not json"
    machine.write(bootstate.BOOT_STATE, "[]")
    assert cli.main(["forget", "6.1.0-1-amd64", "--root", r]) == 0  # even one that changes nothing
    assert boot_state(machine).marks == {} and len(boot_state(machine).damage) == 1
    assert machine.read(bootstate.BOOT_STATE + ".corrupt") == "[]"


def test_a_state_cut_short_after_its_marks_keeps_them_and_says_so_until_acknowledged(machine, capsys):
    """A crash mid-write on a file system without data journaling: the bad
    kernel stays bad, and what was lost is told everywhere."""
    r = str(machine)
    state = BootState(marks={NEW: assess.Mark("bad", T, "panic", 2), OLD: assess.Mark("good", T)},
                      events=tuple(f"{T} event {n}" for n in range(10)))
    text = dump_state(state)
    machine.write(bootstate.BOOT_STATE, text[:text.index("event 1")])  # in the second event
    assert cli.main(["update", "--root", r]) == 0
    assert image(machine) == f"/boot/vmlinuz-{OLD}"  # NEW is still bad
    for command in (["status", "--json"], ["list", "--json"]):
        cli.main([*command, "--root", r])
        out, err = capsys.readouterr()
        data = json.loads(out)
        (notice,) = data["boot_state_damage"]
        assert "kept 2 marks and 1 events; lost: events after the first 1" in notice, notice
        assert any("the boot state was damaged" in w for w in data["warnings"]), data["warnings"]
    cli.main(["list", "--root", r])
    assert "the boot state was damaged" in capsys.readouterr().err
    cli.main(["status", "--root", r])
    assert "boot state:       DAMAGED at " in capsys.readouterr().out
    assert cli.main(["bless", "--root", r]) == 0  # the damage is recorded with what was kept
    assert boot_state(machine).mark_of(NEW) == "bad" and len(boot_state(machine).damage) == 1
    assert machine.exists(bootstate.BOOT_STATE + ".corrupt")
    assert cli.main(["acknowledge", "--root", r]) == 0
    capsys.readouterr()
    cli.main(["status", "--json", "--root", r])
    out, err = capsys.readouterr()
    assert json.loads(out)["boot_state_damage"] == [] and "damaged" not in err
    assert boot_state(machine).mark_of(NEW) == "bad"


def test_every_prefix_of_a_state_file_keeps_every_mark_it_holds_whole():
    from kexec_auto.statefile import salvage

    state = BootState(trying=NEW, trying_since=T, marks={
        f"6.1.0-{n}-cloud-amd64": assess.Mark(("good", "bad", "failed")[n % 3], T, f"why {n}", n % 3)
        for n in range(8)}, events=tuple(f"{T} event {n}" for n in range(6)))
    text = dump_state(state)
    for end in range(len(text) + 1):
        saved, lost = salvage(text[:end])
        # every mark written whole before the cut is there, as it was
        whole = {r: m for r, m in state.marks.items() if text.find("}", text.find(f'"{r}"')) < end}
        assert {r: saved.marks[r] for r in whole if r in saved.marks} == whole, end
        assert set(whole) <= set(saved.marks), end
        assert set(saved.marks) <= set(state.marks)
        assert saved.trying in (None, NEW)
        if end <= text.rindex("]"):  # cut before the end of the last field
            assert lost, end


def test_handoff_at_boot(machine, capsys):
    r = str(machine)
    machine.config("HANDOFF=true\n")
    assert cli.main(["boot", "--root", r]) == 0
    calls = machine.fake_run.calls
    assert calls[0][:5] == ["/sbin/kexec", "-c", "-i", "-l", f"/boot/vmlinuz-{NEW}"]
    assert calls[0][-1] == "--append=root=/dev/vda ro console=ttyS0 kexec_auto.trial=300 panic=10"
    # the hardware watchdog kept armed through the kexec, for the trial's 300 + 60 s
    assert calls[1] == ["/usr/lib/kexec-auto/trial-watchdog", "kexec", "360"]
    assert calls[2] == ["systemctl", "--no-block", "kexec"]
    assert boot_state(machine).trying == NEW
    assert f"handing off from {PROVIDER} to {NEW} through kexec" in capsys.readouterr().err
    # systemctl kexec stops kexec-auto-load.service: the kernel stays as loaded.
    machine.write("/sys/kernel/kexec_loaded", "1\n")
    calls.clear()
    assert cli.main(["load", "--at-shutdown", "--root", r]) == 0
    assert calls == [] and boot_state(machine).trying == NEW


def test_handoff_off_by_default_on_the_selected_kernel_and_by_cmdline(machine):
    r = str(machine)
    assert cli.main(["boot", "--root", r]) == 0  # HANDOFF defaults to false
    assert machine.fake_run.calls == []
    machine.config("HANDOFF=true\n")
    machine.running(NEW)
    assert cli.main(["boot", "--root", r]) == 0  # already in the selected kernel
    assert machine.fake_run.calls == []
    machine.running(PROVIDER)
    machine.write("/proc/cmdline", "root=/dev/vda ro kexec_auto.handoff=0\n")
    assert cli.main(["boot", "--root", r]) == 0
    assert machine.fake_run.calls == []


def test_no_handoff_when_started_on_a_running_system(machine, monkeypatch):
    # dpkg starts the unit when the package is installed: that is no boot.
    monkeypatch.setattr(commands, "booting", lambda: False)
    machine.config("HANDOFF=true\n")
    assert cli.main(["boot", "--root", str(machine)]) == 0
    assert machine.fake_run.calls == []


def test_handoff_after_a_failed_trial_goes_to_the_next_newest_not_back(machine, capsys):
    r = str(machine)
    machine.config("HANDOFF=true\n")
    cli.main(["boot", "--root", r])  # hands off to NEW, which fails to boot
    firmware_boots_provider(machine)
    machine.fake_run.calls.clear()
    assert cli.main(["boot", "--root", r]) == 0
    err = capsys.readouterr().err
    assert "failed trial 1 of 2" in err
    assert f"handing off from {PROVIDER} to {OLD} through kexec" in err
    assert machine.fake_run.calls[0][:5] == ["/sbin/kexec", "-c", "-i", "-l", f"/boot/vmlinuz-{OLD}"]
    assert boot_state(machine).trying == OLD
    # /etc/default/kexec still names NEW: the next reboot tries it once more.
    assert image(machine) == f"/boot/vmlinuz-{NEW}"


def test_handoff_never_into_a_bad_kernel(machine, capsys):
    r = str(machine)
    machine.config("HANDOFF=true\nFLAVOUR=cloud-amd64\n")
    # NEW was handed off to and failed; OLD too: only the provider is left.
    for failed in (NEW, OLD):
        state, _ = assess_boot(start_trial(BootState(), failed, T), PROVIDER, T, tries=1)
        previous = boot_state(machine) if machine.exists(bootstate.BOOT_STATE) else BootState()
        marks = dict(previous.marks, **state.marks)
        machine.write(bootstate.BOOT_STATE, dump_state(BootState(marks=marks)))
    assert cli.main(["boot", "--root", r]) == 0
    assert machine.fake_run.calls == []
    assert image(machine) == f"/boot/vmlinuz-{PROVIDER}"


def booted_through_kexec(root):
    """A new boot (an empty /run) whose kernel's boot header names kexec as
    its loader (0xD0)."""
    root.file("/run").exists() and subprocess.run(["rm", "-rf", str(root.file("/run"))], check=True)
    root.write("/sys/kernel/boot_params/data", b"\0" * 0x210 + bytes([0xD0]) + b"\0" * 0x100)


def test_no_handoff_out_of_a_kernel_booted_through_kexec(machine, capsys):
    # NEW failed its hand-off trial, the firmware brought the provider back,
    # which handed off to OLD; a reboot from OLD loads NEW, which has a try
    # left.  NEW's boot must be its trial, not a hand-off back out of it:
    # that would end the trial unjudged, and every reboot would go round
    # NEW and the kernel it hands off to.
    r = str(machine)
    machine.config("HANDOFF=true\n")
    cli.main(["boot", "--root", r])  # hands off to NEW, which fails to boot
    firmware_boots_provider(machine)
    cli.main(["boot", "--root", r])  # counts the failure, hands off to OLD
    kexec_boots(machine, OLD)
    booted_through_kexec(machine)
    assert cli.main(["boot", "--root", r]) == 0
    assert cli.main(["bless", "--root", r]) == 0
    assert cli.main(["load", "--at-shutdown", "--root", r]) == 0
    assert machine.fake_run.named("/sbin/kexec")[-1][:5] == ["/sbin/kexec", "-c", "-i", "-l", f"/boot/vmlinuz-{NEW}"]
    kexec_boots(machine, NEW)
    booted_through_kexec(machine)
    capsys.readouterr()
    assert cli.main(["boot", "--root", r]) == 0
    assert machine.fake_run.named("/sbin/kexec") == []
    assert machine.fake_run.named("systemctl") == []
    assert boot_state(machine).trying == NEW
    assert f"hand-off to {OLD} skipped: {NEW} was booted through kexec" in capsys.readouterr().err
    assert cli.main(["bless", "--root", r]) == 0
    assert boot_state(machine).mark_of(NEW) == "good"


# -- the trial is of the release really loaded ------------------------------

def bzimage(version: str) -> bytes:
    """An x86 boot image whose header names ``version`` (boot protocol 2.00+)."""
    image = bytearray(BZIMAGE)
    image[0x206:0x208] = (0x20F).to_bytes(2, "little")
    image[0x20E:0x210] = (0x300 - 0x200).to_bytes(2, "little")
    text = f"{version} (debian-kernel@lists.debian.org) #1 SMP Debian\0".encode()
    image[0x300:0x300 + len(text)] = text
    return bytes(image)


def test_the_trial_is_of_the_release_loaded_through_a_link_such_as_vmlinuz(machine):
    r = str(machine)
    machine.file("/vmlinuz").symlink_to(f"boot/vmlinuz-{NEW}")
    machine.write("/etc/default/kexec.d/50-debian-default", "KERNEL_IMAGE=/vmlinuz\n")
    assert cli.main(["load", "--at-shutdown", "--root", r]) == 0
    assert machine.fake_run.calls[-2][:5] == ["/sbin/kexec", "-c", "-i", "-l", "/vmlinuz"]
    assert boot_state(machine).trying == NEW
    # It came up and became healthy: NEW is good, nothing called "vmlinuz" is marked.
    machine.running(NEW)
    assert cli.main(["boot", "--root", r]) == 0
    assert cli.main(["bless", "--root", r]) == 0
    state = boot_state(machine)
    assert (state.mark_of(NEW), set(state.marks)) == ("good", {NEW})


def test_the_trial_is_of_the_version_the_image_itself_carries(machine):
    r = str(machine)
    machine.write(f"/boot/vmlinuz-{NEW}", bzimage("6.12.117+deb12-cloud-amd64"))
    assert bootscan.image_release(r, f"/boot/vmlinuz-{NEW}") == NEW
    # A file whose name says one release and whose header another: the header wins.
    machine.write(f"/boot/vmlinuz-{NEW}", bzimage("6.12.200+deb12-cloud-amd64"))
    assert cli.main(["load", "--at-shutdown", "--root", r]) == 0
    assert boot_state(machine).trying == "6.12.200+deb12-cloud-amd64"


def test_an_image_whose_release_cannot_be_told_is_loaded_but_not_judged(machine, capsys):
    r = str(machine)
    machine.write("/boot/kernel.img", BZIMAGE)
    machine.write("/etc/default/kexec.d/50-mine", "KERNEL_IMAGE=/boot/kernel.img\n")
    assert cli.main(["load", "--at-shutdown", "--root", r]) == 0
    state = boot_state(machine) if machine.exists(bootstate.BOOT_STATE) else BootState()
    assert state.trying is None
    assert "cannot tell which kernel release /boot/kernel.img is; its boot is not judged" in capsys.readouterr().err


def test_a_trial_watchdog_that_systemd_took_over_is_left_to_it(machine, capsys, monkeypatch):
    import errno as errnos

    from kexec_auto import host

    r = str(machine)
    cli.main(["load", "--at-shutdown", "--root", r])
    kexec_boots(machine, NEW)
    trial_watchdogs_started(machine)
    real = host.stop_watchdog
    monkeypatch.setattr(host, "stop_watchdog", lambda root, device: OSError(errnos.EBUSY, "Device or resource busy")
                        if device == "watchdog0" else real(root, device))
    cli.main(["boot", "--root", r])
    assert cli.main(["bless", "--root", r]) == 0
    err = capsys.readouterr().err
    assert "watchdog0 (i6300ESB timer) is in use (systemd's RuntimeWatchdogSec=?): left to its user" in err
    assert "warning" not in err and machine.read("/dev/watchdog1") == "V"


def test_a_handoff_whose_kexec_cannot_start_stops_the_watchdog_started_for_it(machine, monkeypatch, capsys):
    """Without a system bus trial-watchdog starts /dev/watchdog0 at once for
    the kexec; when systemctl kexec fails, this kernel keeps running, and the
    watchdog must not reset it."""
    from kexec_auto import commands

    r = str(machine)
    machine.config("HANDOFF=true\n")
    machine.write("/sys/class/watchdog/watchdog0/identity", "i6300ESB timer\n")
    machine.write("/dev/watchdog0", "")

    def run(argv):
        machine.fake_run.calls.append(argv)
        if argv[0].endswith("trial-watchdog"):  # as it does without dbus
            machine.write("/sys/class/watchdog/watchdog0/state", "active\n")
            machine.write("/dev/watchdog0", "\n")
        failed = argv[:1] == ["systemctl"]
        return subprocess.CompletedProcess(argv, int(failed), "", "Transaction is destructive.\n" * failed)
    monkeypatch.setattr(commands, "run", run)
    assert cli.main(["boot", "--root", r]) == 1
    assert "error: systemctl kexec failed: Transaction is destructive." in capsys.readouterr().err
    assert machine.read("/dev/watchdog0") == "V"  # the magic close
