"""Boot assessment: the pure state machine, then through the command."""

import json
import subprocess

import pytest

from conftest import BZIMAGE
from kexec_auto import app, assess, cli, system
from kexec_auto.assess import BootState, assess_boot, bless, forget, parse_state, start_trial, dump_state

NEW = "6.12.117+deb12-cloud-amd64"
OLD = "6.1.0-56-cloud-amd64"
PROVIDER = "6.1.0-50-cloud-amd64"
T = "2026-11-25T12:00:00+0000"


def test_trial_that_comes_up_elsewhere_is_bad():
    state = start_trial(BootState(), NEW, T)
    assert state.trying == NEW and state.mark_of(NEW) == "untried"
    state, events = assess_boot(state, PROVIDER, T)
    assert state.mark_of(NEW) == "bad" and state.trying is None
    assert events == [f"{NEW} failed to boot: the machine came up in {PROVIDER} instead"]
    assert state.events[-1].endswith(events[0])


def test_trial_that_comes_up_is_kept_until_blessed():
    state = start_trial(BootState(), NEW, T)
    same, events = assess_boot(state, NEW, T)
    assert same == state and events == []
    state, events = bless(state, NEW, T)
    assert state.mark_of(NEW) == "good" and state.trying is None
    assert events == [f"{NEW} booted and reached a healthy state: marked good"]
    # Blessing again changes nothing.
    assert bless(state, NEW, T) == (state, [])


def test_orderly_shutdown_inside_the_tried_kernel_ends_its_trial():
    state = start_trial(BootState(), NEW, T)
    assert assess.end_trial(state, PROVIDER) == (state, [])  # not the kernel being tried
    state, events = assess.end_trial(state, NEW)
    assert (state.trying, state.mark_of(NEW), events) == (None, "untried", [])
    # A firmware reboot after that is no failure of NEW.
    assert assess_boot(state, PROVIDER, T) == (state, [])


def test_a_good_kernel_that_stops_booting_is_marked_bad():
    # e.g. its initrd was rebuilt broken after it had booted fine
    state, _ = bless(start_trial(BootState(), NEW, T), NEW, T)
    assert state.mark_of(NEW) == "good"
    state = start_trial(state, NEW, T)
    assert state.trying == NEW
    state, events = assess_boot(state, PROVIDER, T)
    assert state.mark_of(NEW) == "bad"
    assert events == [f"{NEW} failed to boot: the machine came up in {PROVIDER} instead"]


def test_forget_clears_marks():
    state, _ = assess_boot(start_trial(BootState(), NEW, T), PROVIDER, T)
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
    state = start_trial(state, OLD, T)
    assert parse_state(dump_state(state)) == state
    for text in ("", "{", "[]", '{"marks": {"x": {"state": "meh", "when": ""}}, "trying": null}',
                 '{"marks": {}, "trying": 5}', '{"trying": null}'):
        with pytest.raises(ValueError, match="not a kexec-auto boot state|unknown mark|trying"):
            parse_state(text)


# -- through the command, on fake roots -------------------------------------


class FakeRun:
    def __init__(self):
        self.calls = []

    def __call__(self, argv):
        self.calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, "", "")


@pytest.fixture
def machine(root, monkeypatch):
    root.running(PROVIDER)
    root.add_kernel(PROVIDER)
    root.add_kernel(OLD)
    root.add_kernel(NEW)
    monkeypatch.setattr(system, "confinement", lambda r: "")
    monkeypatch.setattr(system, "kexec_binary", lambda: "/sbin/kexec")
    monkeypatch.setattr(system, "queued_jobs", lambda: ["reboot.target"])
    monkeypatch.setattr(system, "booting", lambda: True)
    fake = FakeRun()
    monkeypatch.setattr(system, "run", fake)
    root.fake_run = fake
    assert cli.main(["update", "--root", str(root)]) == 0
    return root


def image(root):
    return root.sourced()["KERNEL_IMAGE"]


def boot_state(root):
    return parse_state(root.read(app.BOOT_STATE))


def test_failed_kernel_is_marked_bad_and_next_reboot_takes_the_next_newest(machine, capsys):
    r = str(machine)
    assert cli.main(["load", "--at-shutdown", "--root", r]) == 0
    assert boot_state(machine).trying == NEW
    # NEW panicked; the provider booted its own kernel again.
    assert cli.main(["boot", "--root", r]) == 0
    err = capsys.readouterr().err
    assert f"warning: {NEW} failed to boot: the machine came up in {PROVIDER} instead" in err
    assert boot_state(machine).mark_of(NEW) == "bad"
    assert image(machine) == f"/boot/vmlinuz-{OLD}"
    # The next reboot tries OLD, which boots and is blessed.
    cli.main(["load", "--at-shutdown", "--root", r])
    assert boot_state(machine).trying == OLD
    machine.running(OLD)
    assert cli.main(["boot", "--root", r]) == 0
    assert boot_state(machine).trying == OLD
    assert cli.main(["bless", "--root", r]) == 0
    state = boot_state(machine)
    assert (state.trying, state.mark_of(OLD), state.mark_of(NEW)) == (None, "good", "bad")
    capsys.readouterr()
    assert cli.main(["list", "--json", "--root", r]) == 0
    kernels = {k["release"]: k for k in json.loads(capsys.readouterr().out)["kernels"]}
    assert kernels[NEW]["boot"] == "bad" and not kernels[NEW]["selectable"]
    assert kernels[NEW]["why_not"].startswith("marked bad: came up in")
    assert kernels[OLD]["boot"] == "good" and kernels[OLD]["selected"]
    assert kernels[PROVIDER]["boot"] == "untried"
    cli.main(["status", "--root", r])
    out = capsys.readouterr().out
    assert f"marked bad:       {NEW}: came up in {PROVIDER} instead" in out
    assert f"{NEW} failed to boot" in out


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
    monkeypatch.setattr(system, "queued_jobs", lambda: ["poweroff.target"])
    assert cli.main(["load", "--at-shutdown", "--root", r]) == 0
    assert boot_state(machine).trying is None


def test_forget_and_reinstall_clear_the_bad_mark(machine, src_env):
    r = str(machine)
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


def test_corrupt_state_is_reported_set_aside_and_rebuilt(machine, capsys):
    r = str(machine)
    machine.write(app.BOOT_STATE, "{ not json")
    assert cli.main(["update", "--root", r]) == 0
    assert "boot-state.json is corrupt" in capsys.readouterr().err
    assert cli.main(["bless", "--root", r]) == 0  # any change of state rebuilds the file
    assert boot_state(machine).mark_of(PROVIDER) == "good"
    assert machine.read(app.BOOT_STATE + ".corrupt") == "{ not json"
    machine.write(app.BOOT_STATE, "[]")
    assert cli.main(["forget", "6.1.0-1-amd64", "--root", r]) == 0  # even one that changes nothing
    assert boot_state(machine) == assess.BootState()
    assert machine.read(app.BOOT_STATE + ".corrupt") == "[]"


def test_handoff_at_boot(machine, capsys):
    r = str(machine)
    machine.config("HANDOFF=true\n")
    assert cli.main(["boot", "--root", r]) == 0
    calls = machine.fake_run.calls
    assert calls[0][:3] == ["/sbin/kexec", "-l", f"/boot/vmlinuz-{NEW}"]
    assert calls[1] == ["systemctl", "--no-block", "kexec"]
    assert boot_state(machine).trying == NEW
    assert f"handing off from {PROVIDER} to {NEW} through kexec" in capsys.readouterr().err


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
    monkeypatch.setattr(system, "booting", lambda: False)
    machine.config("HANDOFF=true\n")
    assert cli.main(["boot", "--root", str(machine)]) == 0
    assert machine.fake_run.calls == []


def test_handoff_never_into_a_bad_kernel(machine):
    r = str(machine)
    machine.config("HANDOFF=true\nFLAVOUR=cloud-amd64\n")
    # NEW was handed off to and failed; OLD too: only the provider is left.
    for failed in (NEW, OLD):
        state, _ = assess_boot(start_trial(BootState(), failed, T), PROVIDER, T)
        previous = boot_state(machine) if machine.exists(app.BOOT_STATE) else BootState()
        marks = dict(previous.marks, **state.marks)
        machine.write(app.BOOT_STATE, dump_state(BootState(marks=marks)))
    assert cli.main(["boot", "--root", r]) == 0
    assert machine.fake_run.calls == []
    assert image(machine) == f"/boot/vmlinuz-{PROVIDER}"


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
    assert machine.fake_run.calls[-1][:3] == ["/sbin/kexec", "-l", "/vmlinuz"]
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
    assert system.image_release(r, f"/boot/vmlinuz-{NEW}") == NEW
    # A file whose name says one release and whose header another: the header wins.
    machine.write(f"/boot/vmlinuz-{NEW}", bzimage("6.12.200+deb12-cloud-amd64"))
    assert cli.main(["load", "--at-shutdown", "--root", r]) == 0
    assert boot_state(machine).trying == "6.12.200+deb12-cloud-amd64"


def test_an_image_whose_release_cannot_be_told_is_loaded_but_not_judged(machine, capsys):
    r = str(machine)
    machine.write("/boot/kernel.img", BZIMAGE)
    machine.write("/etc/default/kexec.d/50-mine", "KERNEL_IMAGE=/boot/kernel.img\n")
    assert cli.main(["load", "--at-shutdown", "--root", r]) == 0
    state = boot_state(machine) if machine.exists(app.BOOT_STATE) else BootState()
    assert state.trying is None
    assert "cannot tell which kernel release /boot/kernel.img is; its boot is not judged" in capsys.readouterr().err
