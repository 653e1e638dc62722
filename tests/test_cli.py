"""The kexec-auto command, run against fake roots."""

import json
import subprocess
import sys

import pytest

from conftest import FakeRun, needs_mount_namespace, queued
from kexec_auto import app, bootstate, cli, commands, host, kexectools

NEW = "6.12.117+deb12-cloud-amd64"
OLD = "6.1.0-56-cloud-amd64"


@pytest.fixture
def two_kernels(root):
    root.add_kernel(OLD)
    root.add_kernel(NEW)
    return root


def run_cli(root, *args):
    return cli.main([*args, "--root", str(root)])


def test_update_writes_default_kexec_that_sh_reads(two_kernels, capsys):
    assert run_cli(two_kernels, "update") == 0
    values = two_kernels.sourced()
    assert values == {
        "LOAD_KEXEC": "true",
        "KERNEL_IMAGE": f"/boot/vmlinuz-{NEW}",
        "INITRD": f"/boot/initrd.img-{NEW}",
        "APPEND": "root=/dev/vda ro console=ttyS0",
        "USE_GRUB_CONFIG": "false",
    }
    err = capsys.readouterr().err
    assert f"/etc/default/kexec updated: selected {NEW}" in err
    assert two_kernels.exists("/var/lib/kexec-auto/kexec.orig-absent")


def test_trixie_kexec_tools_gets_no_load_kexec_line(two_kernels, capsys):
    two_kernels.file("/etc/init.d/kexec-load").unlink()
    assert run_cli(two_kernels, "update") == 0
    text = two_kernels.read("/etc/default/kexec")
    assert "LOAD_KEXEC" not in text
    assert two_kernels.sourced()["KERNEL_IMAGE"] == f"/boot/vmlinuz-{NEW}"
    # What trixie's kexec-tools postinst does to the file on every configure
    # (sed deleting LOAD_KEXEC lines) is then no change at all: no edit copy.
    assert run_cli(two_kernels, "update") == 0
    assert not two_kernels.exists("/etc/default/kexec.kexec-auto-old")


def test_update_keeps_kexec_tools_original(two_kernels, capsys):
    original = 'LOAD_KEXEC=false\nKERNEL_IMAGE="/vmlinuz"\nINITRD="/initrd.img"\n'
    two_kernels.write("/etc/default/kexec", original)
    assert run_cli(two_kernels, "update") == 0
    assert two_kernels.read("/var/lib/kexec-auto/kexec.orig") == original
    assert "kept the original /etc/default/kexec as /var/lib/kexec-auto/kexec.orig" in capsys.readouterr().err


def test_extra_cmdline_and_cmdline_settings(two_kernels):
    two_kernels.config("CMDLINE='root=/dev/sda1 ro'\nEXTRA_CMDLINE=\"quiet 'x y'\"\n")
    assert run_cli(two_kernels, "update") == 0
    assert two_kernels.sourced()["APPEND"] == "root=/dev/sda1 ro quiet 'x y'"


def test_bad_value_is_one_line_error_and_file_untouched(two_kernels, capsys):
    assert run_cli(two_kernels, "update") == 0
    before = two_kernels.read("/etc/default/kexec")
    two_kernels.config("FLAVOUR=any\nENABLED=perhaps\n")
    two_kernels.remove_kernel(NEW)
    capsys.readouterr()
    assert run_cli(two_kernels, "update") == 1
    err = capsys.readouterr().err
    assert err == ("kexec-auto: error: /etc/default/kexec-auto:2: ENABLED: invalid value 'perhaps': "
                   "expected true or false\n")
    assert two_kernels.read("/etc/default/kexec") == before


def test_unknown_key_warns_but_updates(two_kernels, capsys):
    two_kernels.config("FLAVOR=any\n")
    assert run_cli(two_kernels, "update") == 0
    assert "warning: /etc/default/kexec-auto:1: ignoring unknown setting FLAVOR" in capsys.readouterr().err


def test_disabled_changes_nothing_and_says_so(two_kernels, capsys):
    two_kernels.config("ENABLED=false\n")
    assert run_cli(two_kernels, "update") == 0
    assert not two_kernels.exists("/etc/default/kexec")
    assert ("disabled (ENABLED=false in /etc/default/kexec-auto); /etc/default/kexec not changed"
            in capsys.readouterr().err)


def test_pin_missing_is_error_but_newest_written(two_kernels, capsys):
    two_kernels.config("PIN=6.1.0-99-cloud-amd64\n")
    assert run_cli(two_kernels, "update") == 1
    assert two_kernels.sourced()["KERNEL_IMAGE"] == f"/boot/vmlinuz-{NEW}"
    assert "error: PIN=6.1.0-99-cloud-amd64: kernel 6.1.0-99-cloud-amd64 is not installed" in capsys.readouterr().err


def test_removing_last_kernel_leaves_load_kexec_false(two_kernels, capsys):
    run_cli(two_kernels, "update")
    two_kernels.remove_kernel(NEW)
    two_kernels.remove_kernel(OLD)
    assert run_cli(two_kernels, "update") == 0
    assert two_kernels.sourced()["LOAD_KEXEC"] == "false"
    assert ("warning: no selectable kernel; /etc/default/kexec names none, reboots stay firmware reboots"
            in capsys.readouterr().err)


def test_dry_run_prints_diff_and_changes_nothing(two_kernels, capsys):
    assert run_cli(two_kernels, "update", "--dry-run") == 0
    out = capsys.readouterr().out
    assert out.startswith("--- /etc/default/kexec\n+++ /etc/default/kexec (new)\n")
    assert f"+KERNEL_IMAGE=/boot/vmlinuz-{NEW}\n" in out
    assert not two_kernels.exists("/etc/default/kexec")
    assert not two_kernels.exists("/var/lib/kexec-auto")


def test_hand_edit_is_kept_and_reported(two_kernels, capsys):
    run_cli(two_kernels, "update")
    two_kernels.write("/etc/default/kexec", two_kernels.read("/etc/default/kexec") + "APPEND=mine\n")
    two_kernels.add_kernel("6.12.118+deb12-cloud-amd64")
    capsys.readouterr()
    run_cli(two_kernels, "update")
    assert "APPEND=mine" in two_kernels.read("/etc/default/kexec.kexec-auto-old")
    assert "was edited by hand; that version is kept as /etc/default/kexec.kexec-auto-old" in capsys.readouterr().err


def test_list_text_and_json(two_kernels, capsys):
    two_kernels.add_kernel("6.1.0-57-rt-amd64")
    two_kernels.write("/boot/vmlinuz-6.1.0-1-cloud-amd64.dpkg-bak", b"")
    assert run_cli(two_kernels, "list") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "running kernel: 6.1.0-50-cloud-amd64"
    assert out[-1] == f"selected: {NEW} (newest kernel of the running flavour, cloud-amd64)"
    assert any(line.startswith(f"* {NEW}") for line in out)
    assert any("6.1.0-57-rt-amd64" in line and "not selectable: flavour rt-amd64, not cloud-amd64" in line
               for line in out)
    assert any("dpkg-bak" in line and "stray file" in line for line in out)
    assert f"      /boot/vmlinuz-{NEW}  (no package)" in out
    assert run_cli(two_kernels, "list", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["selected"] == NEW
    assert [k["release"] for k in data["kernels"]][-2:] == ["6.1.0-57-rt-amd64", NEW]
    assert [k["selected"] for k in data["kernels"]].count(True) == 1
    two_kernels.write("/var/lib/dpkg/status",
                      f"Package: linux-image-{NEW}\nStatus: install ok installed\nVersion: 6.12.117-1\n")
    assert run_cli(two_kernels, "list", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    newest = data["kernels"][-1]
    assert (newest["package"], newest["package_version"]) == (f"linux-image-{NEW}", "6.12.117-1")


def test_status_exit_code_says_whether_next_reboot_boots_selected(two_kernels, capsys):
    assert run_cli(two_kernels, "status") == cli.EXIT_NOT_KEXEC
    assert "does not exist" in capsys.readouterr().out
    run_cli(two_kernels, "update")
    two_kernels.write("/etc/systemd/system/multi-user.target.wants/kexec-auto-load.service", "")
    two_kernels.write("/usr/sbin/kexec", "", 0o755)
    capsys.readouterr()
    assert run_cli(two_kernels, "status") == cli.EXIT_NOT_KEXEC, "no shutdown hook installed"
    # where the trixie and later builds put it (bookworm's: /lib, tested below)
    two_kernels.write("/usr/lib/systemd/system-shutdown/kexec-auto", "#!/bin/sh\n", 0o755)
    capsys.readouterr()
    assert run_cli(two_kernels, "status") == 0
    out = capsys.readouterr().out
    assert f"next reboot:      kexec into {NEW}" in out
    assert "kernel loaded now: no" in out
    assert run_cli(two_kernels, "status", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["next_reboot_ok"] and data["selected"] == NEW and data["kexec_loaded"] is False
    assert data["default_kexec"]["KERNEL_IMAGE"] == f"/boot/vmlinuz-{NEW}"
    two_kernels.write("/no-kexec-reboot", "")
    assert run_cli(two_kernels, "status") == cli.EXIT_NOT_KEXEC
    assert "coldreboot" in capsys.readouterr().out
    two_kernels.file("/no-kexec-reboot").unlink()
    two_kernels.add_kernel("6.12.118+deb12-cloud-amd64")  # installed without the hook running
    assert run_cli(two_kernels, "status") == cli.EXIT_NOT_KEXEC
    assert "does not name the selected kernel" in capsys.readouterr().out


def test_status_finds_the_shutdown_hook_where_bookworm_has_it(two_kernels, capsys):
    run_cli(two_kernels, "update")
    two_kernels.write("/etc/systemd/system/multi-user.target.wants/kexec-auto-load.service", "")
    two_kernels.write("/usr/sbin/kexec", "", 0o755)
    two_kernels.write("/lib/systemd/system-shutdown/kexec-auto", "#!/bin/sh\n", 0o755)
    capsys.readouterr()
    assert run_cli(two_kernels, "status") == 0, capsys.readouterr().out


@pytest.mark.parametrize("where, words", [("chroot", "running inside a chroot"),
                                          ("unknown", "cannot tell whether this is a chroot")])
def test_status_says_a_confined_system_never_loads(two_kernels, monkeypatch, capsys, where, words):
    """As `kexec-auto load` refuses there, status must not promise a kexec."""
    run_cli(two_kernels, "update")
    for path in ("/etc/systemd/system/multi-user.target.wants/kexec-auto-load.service",
                 "/usr/sbin/kexec", "/usr/lib/systemd/system-shutdown/kexec-auto"):
        two_kernels.write(path, "", 0o755)
    monkeypatch.setattr(host, "confinement", lambda root: where)
    capsys.readouterr()
    assert run_cli(two_kernels, "status") == cli.EXIT_NOT_KEXEC
    assert words in capsys.readouterr().out


def test_set_and_get_keep_other_lines_and_refuse_bad_values(root, capsys):
    root.config("# local notes\nFLAVOUR=any\nX_OTHER=1\n")
    assert run_cli(root, "set", "PIN=6.1.0-56-amd64", "EXTRA_CMDLINE=a 'b'") == 0
    assert root.read("/etc/default/kexec-auto") == (
        "# local notes\nFLAVOUR=any\nX_OTHER=1\nPIN=6.1.0-56-amd64\nEXTRA_CMDLINE='a '\"'\"'b'\"'\"''\n")
    capsys.readouterr()
    assert run_cli(root, "get", "PIN", "EXTRA_CMDLINE", "ENABLED") == 0
    assert capsys.readouterr().out == "6.1.0-56-amd64\na 'b'\ntrue\n"
    before = root.read("/etc/default/kexec-auto")
    assert run_cli(root, "set", "PIN=", "ENABLED=sometimes") == 1
    assert "ENABLED: invalid value 'sometimes'" in capsys.readouterr().err
    assert root.read("/etc/default/kexec-auto") == before
    assert run_cli(root, "set", "EXTRA_CMDLINE=a\nb") == 1
    assert root.read("/etc/default/kexec-auto") == before


@pytest.fixture
def on_machine(machine):
    """The running machine (see conftest), with two kernels."""
    machine.add_kernel(OLD)
    machine.add_kernel(NEW)
    run_cli(machine, "update")
    return machine


def test_load_runs_kexec_with_the_file_values(on_machine, monkeypatch, capsys):
    fake = on_machine.fake_run
    assert run_cli(on_machine, "load") == 0
    # kexec_load, named (a plain -l is kexec_file_load first from kexec-tools
    # 2.0.28 on), without the digest that purgatory would check
    assert fake.calls == [["/sbin/kexec", "-c", "-i", "-l", f"/boot/vmlinuz-{NEW}",
                           f"--initrd=/boot/initrd.img-{NEW}", "--append=root=/dev/vda ro console=ttyS0"]]
    assert not on_machine.exists("/run/kexec-auto/loaded")
    assert capsys.readouterr().err == f"kexec-auto: loaded /boot/vmlinuz-{NEW} for the next reboot with kexec_load\n"


def test_load_without_load_kexec_line_on_trixie(on_machine, monkeypatch):
    fake = on_machine.fake_run
    on_machine.file("/etc/init.d/kexec-load").unlink()
    run_cli(on_machine, "update")
    assert "LOAD_KEXEC" not in on_machine.read("/etc/default/kexec")
    assert run_cli(on_machine, "load") == 0
    assert fake.calls[0][:5] == ["/sbin/kexec", "-c", "-i", "-l", f"/boot/vmlinuz-{NEW}"]


def test_load_refuses_load_kexec_false(on_machine, monkeypatch, capsys):
    fake = on_machine.fake_run
    on_machine.remove_kernel(NEW)
    on_machine.remove_kernel(OLD)
    run_cli(on_machine, "update")
    assert run_cli(on_machine, "load") == 1
    assert fake.calls == []
    assert "does not name a kernel to load (LOAD_KEXEC='false')" in capsys.readouterr().err


def test_load_uses_only_kexec_file_load_under_lockdown(on_machine, monkeypatch, capsys):
    fake = on_machine.fake_run
    on_machine.write("/sys/kernel/security/lockdown", "none [integrity] confidentiality\n")
    assert run_cli(on_machine, "load") == 0
    assert fake.calls[0][:3] == ["/sbin/kexec", "-s", "-l"] and len(fake.calls) == 1
    assert capsys.readouterr().err.endswith(" for the next reboot with kexec_file_load\n")


class RefuseKexecLoad(FakeRun):
    """kexec_load refused (as an IMA policy that appraises kernels does), kexec_file_load allowed."""

    def __call__(self, argv):
        super().__call__(argv)
        if "-c" in argv:
            return subprocess.CompletedProcess(argv, 255, "", "kexec_load failed: Permission denied\n")
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_load_falls_back_to_kexec_file_load_when_kexec_load_is_refused(on_machine, monkeypatch, capsys):
    fake = RefuseKexecLoad()
    monkeypatch.setattr(commands, "run", fake)
    assert run_cli(on_machine, "load") == 0
    assert [call[1] for call in fake.calls] == ["-c", "-s"]
    assert fake.calls[1][2:4] == ["-l", f"/boot/vmlinuz-{NEW}"]
    assert capsys.readouterr().err == (
        f"kexec-auto: loaded /boot/vmlinuz-{NEW} for the next reboot with kexec_file_load "
        "(kexec_load: kexec_load failed: Permission denied)\n")


def test_load_reports_kexec_refusal(on_machine, monkeypatch, capsys):
    monkeypatch.setattr(commands, "run", FakeRun(255, "kexec_load failed: Operation not permitted\n"))
    assert run_cli(on_machine, "load") == 1
    assert capsys.readouterr().err == (
        f"kexec-auto: error: kexec refused to load /boot/vmlinuz-{NEW}: kexec_load: kexec_load failed: "
        "Operation not permitted; kexec_file_load: kexec_load failed: Operation not permitted\n")


def test_load_without_kexec_is_clear_error(on_machine, monkeypatch, capsys):
    monkeypatch.setattr(kexectools, "kexec_binary", lambda: None)
    assert run_cli(on_machine, "load") == 1
    assert "kexec not found; install the kexec-tools package" in capsys.readouterr().err


@pytest.mark.parametrize("where, words", [("container", "inside a container"), ("chroot", "inside a chroot"),
                                          ("root", "from another root directory"),
                                          ("unknown", "where systemd-detect-virt cannot tell")])
def test_load_refuses_when_confined(two_kernels, monkeypatch, capsys, where, words, fake_run):
    fake = fake_run
    monkeypatch.setattr(host, "confinement", lambda root: where)
    assert run_cli(two_kernels, "load") == 1
    assert f"refusing to load a kernel {words}" in capsys.readouterr().err
    assert fake.calls == []


def test_load_at_shutdown_only_when_rebooting_and_marks(on_machine, monkeypatch):
    fake = on_machine.fake_run
    monkeypatch.setattr(commands, "jobs", queued("poweroff.target"))
    assert run_cli(on_machine, "load", "--at-shutdown") == 0
    assert fake.calls == []
    monkeypatch.setattr(commands, "jobs", queued("shutdown.target", "reboot.target"))
    assert run_cli(on_machine, "load", "--at-shutdown") == 0
    # the kernel loaded for a trial, then the hardware watchdog kept armed
    # through the kexec for as long as the trial's (TRIAL_TIMEOUT 300 + 60)
    assert len(fake.calls) == 2 and fake.calls[0][0] == "/sbin/kexec"
    assert fake.calls[1] == ["/usr/lib/kexec-auto/trial-watchdog", "kexec", "360"]
    assert on_machine.read("/run/kexec-auto/loaded") == f"/boot/vmlinuz-{NEW}\n"


def test_load_at_shutdown_says_why_it_loads_nothing_when_systemctl_fails(on_machine, monkeypatch, capsys):
    fake = on_machine.fake_run

    def unknown():
        raise commands.JobsUnknown("Failed to connect to bus")
    monkeypatch.setattr(commands, "jobs", unknown)
    assert run_cli(on_machine, "load", "--at-shutdown") == 0
    assert fake.calls == []
    err = capsys.readouterr().err
    assert "systemctl list-jobs failed (Failed to connect to bus)" in err
    assert "goes through the firmware" in err


def test_load_at_shutdown_honours_coldreboot_once(on_machine, monkeypatch, capsys):
    # trixie: nothing but kexec-auto reads the flag, so it removes it
    fake = on_machine.fake_run
    monkeypatch.setattr(commands, "jobs", queued("reboot.target"))
    on_machine.file("/etc/init.d/kexec-load").unlink()
    run_cli(on_machine, "update")
    on_machine.write("/no-kexec-reboot", "")
    assert run_cli(on_machine, "load", "--at-shutdown") == 0
    assert fake.calls == [] and not on_machine.exists("/no-kexec-reboot")
    assert not on_machine.exists("/run/kexec-auto/loaded")
    assert "cold reboot requested" in capsys.readouterr().err


def test_coldreboot_flag_is_left_for_bookworms_kexec_load(on_machine, monkeypatch):
    """kexec-load runs after kexec-auto at shutdown and loads a kernel unless
    it finds the flag (which it then removes): removing it first would make
    a cold reboot load a kernel for nothing."""
    fake = on_machine.fake_run
    monkeypatch.setattr(commands, "jobs", queued("reboot.target"))
    assert on_machine.sourced()["LOAD_KEXEC"] == "true"
    on_machine.write("/no-kexec-reboot", "")
    assert run_cli(on_machine, "load", "--at-shutdown") == 0
    assert fake.calls == [] and on_machine.exists("/no-kexec-reboot")
    # with LOAD_KEXEC=false kexec-load stops before looking at the flag
    on_machine.config("ENABLED=true\nPIN=9.9.9-1-cloud-amd64\nEXCLUDE=\"*\"\n")
    run_cli(on_machine, "update")
    assert on_machine.sourced()["LOAD_KEXEC"] == "false"
    assert run_cli(on_machine, "load", "--at-shutdown") == 0
    assert fake.calls == [] and not on_machine.exists("/no-kexec-reboot")


def test_failed_load_at_shutdown_is_reported_by_the_next_boot(on_machine, monkeypatch, capsys):
    fake = FakeRun(returncode=1, stderr="kexec_file_load failed: Key was rejected by service\n")
    monkeypatch.setattr(commands, "run", fake)
    monkeypatch.setattr(commands, "jobs", queued("reboot.target"))
    on_machine.write("/sys/kernel/security/lockdown", "none [integrity] confidentiality\n")
    assert run_cli(on_machine, "load", "--at-shutdown") == 1
    assert not on_machine.exists("/run/kexec-auto/loaded")
    assert "Key was rejected" in capsys.readouterr().err
    monkeypatch.setattr(commands, "run", on_machine.fake_run)
    monkeypatch.setattr(commands, "booting", lambda: False)
    assert run_cli(on_machine, "boot") == 0
    err = capsys.readouterr().err
    assert "the last reboot did not go through kexec" in err and "Key was rejected" in err
    assert not on_machine.exists("/var/lib/kexec-auto/load-failed")
    assert run_cli(on_machine, "status", "--json") in (0, 3)
    status = json.loads(capsys.readouterr().out)
    assert any("at shutdown failed (kexec_file_load: kexec_file_load failed: Key was rejected by service)" in e
               for e in status["boot_events"]), status


def test_load_at_shutdown_does_nothing_when_disabled(on_machine, monkeypatch):
    fake = on_machine.fake_run
    monkeypatch.setattr(commands, "jobs", queued("reboot.target"))
    on_machine.config("ENABLED=false\n")
    assert run_cli(on_machine, "load", "--at-shutdown") == 0
    assert fake.calls == []


def test_arm_publishes_boot_loader_entry(two_kernels):
    run_cli(two_kernels, "update")
    assert run_cli(two_kernels, "arm") == 0
    entry = two_kernels.read("/run/boot-loader-entries/loader/entries/kexec-auto.conf")
    assert entry == (f"title kexec-auto: {NEW}\nlinux /kexec-auto/vmlinuz\ninitrd /kexec-auto/initrd.img\n"
                     "options root=/dev/vda ro console=ttyS0\n")
    link = two_kernels.file("/run/boot-loader-entries/kexec-auto/vmlinuz")
    assert str(link.readlink()) == f"/boot/vmlinuz-{NEW}"
    # Kept current by update once armed, removed when disabled.
    two_kernels.add_kernel("6.12.118+deb12-cloud-amd64")
    run_cli(two_kernels, "update")
    assert str(link.readlink()) == "/boot/vmlinuz-6.12.118+deb12-cloud-amd64"
    two_kernels.config("ENABLED=false\n")
    assert run_cli(two_kernels, "arm") == 0
    assert not two_kernels.exists("/run/boot-loader-entries/loader/entries/kexec-auto.conf")


def test_help_and_usage_errors(src_env):
    result = subprocess.run([sys.executable, "-m", "kexec_auto", "--help"], capture_output=True, text=True, env=src_env)
    assert result.returncode == 0
    for word in ("list", "status", "update", "load", "--root", "exit status", "/etc/default/kexec-auto"):
        assert word in result.stdout
    result = subprocess.run([sys.executable, "-m", "kexec_auto", "frobnicate"],
                            capture_output=True, text=True, env=src_env)
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr
    for command in ("list", "status", "update", "load", "arm", "set", "get"):
        result = subprocess.run([sys.executable, "-m", "kexec_auto", command, "--help"],
                                capture_output=True, text=True, env=src_env)
        assert result.returncode == 0 and "--root DIR" in result.stdout, command


def test_unchanged_inputs_skip_rendering(two_kernels, monkeypatch, capsys):
    from kexec_auto import render

    assert run_cli(two_kernels, "update") == 0
    calls = []
    real = render.render_default_kexec
    monkeypatch.setattr(app, "render_default_kexec", lambda *a: calls.append(a) or real(*a))
    assert run_cli(two_kernels, "update") == 0
    assert calls == []  # nothing changed: jinja2 not even needed
    assert "/etc/default/kexec unchanged" in capsys.readouterr().err
    # Any input changing renders again: a new kernel, a setting, the file itself.
    two_kernels.add_kernel("6.12.118+deb12-cloud-amd64")
    run_cli(two_kernels, "update")
    assert len(calls) == 1
    two_kernels.config("EXTRA_CMDLINE=quiet\n")
    run_cli(two_kernels, "update")
    assert len(calls) == 2 and two_kernels.sourced()["APPEND"].endswith(" quiet")
    two_kernels.write("/etc/default/kexec", "# emptied by hand\n")
    run_cli(two_kernels, "update")
    assert len(calls) == 3 and two_kernels.sourced()["KERNEL_IMAGE"] == "/boot/vmlinuz-6.12.118+deb12-cloud-amd64"


def test_disabling_gives_the_kexec_file_back_and_withdraws_the_boot_loader_entry(two_kernels, capsys):
    r = str(two_kernels)
    original = 'LOAD_KEXEC=false\nKERNEL_IMAGE="/vmlinuz"\nINITRD="/initrd.img"\n'
    two_kernels.write("/etc/default/kexec", original)
    assert run_cli(two_kernels, "update") == 0
    assert run_cli(two_kernels, "arm") == 0
    assert app.is_armed(r)
    assert run_cli(two_kernels, "set", "ENABLED=false") == 0
    capsys.readouterr()
    assert run_cli(two_kernels, "update") == 0
    assert two_kernels.read("/etc/default/kexec") == original  # no kernel of kexec-auto's named
    assert not app.is_armed(r) and not two_kernels.exists("/run/boot-loader-entries/kexec-auto/vmlinuz")
    assert "/etc/default/kexec is back as it was before kexec-auto" in capsys.readouterr().err
    assert run_cli(two_kernels, "update") == 0  # and left alone from then on
    assert "/etc/default/kexec not changed" in capsys.readouterr().err
    two_kernels.write("/etc/default/kexec", original + "# the administrator's own now\n")
    assert run_cli(two_kernels, "boot") == 0
    assert two_kernels.read("/etc/default/kexec").endswith("# the administrator's own now\n")
    # Enabled again: taken over again, that file kept as the original.
    assert run_cli(two_kernels, "set", "ENABLED=true") == 0
    assert run_cli(two_kernels, "update") == 0
    assert two_kernels.sourced()["KERNEL_IMAGE"] == f"/boot/vmlinuz-{NEW}"
    assert two_kernels.read("/var/lib/kexec-auto/kexec.orig").endswith("# the administrator's own now\n")


def test_disabling_removes_a_kexec_file_kexec_auto_created_and_keeps_a_hand_edit(two_kernels, capsys):
    assert run_cli(two_kernels, "update") == 0
    two_kernels.write("/etc/default/kexec", two_kernels.read("/etc/default/kexec") + "APPEND=mine\n")
    two_kernels.config("ENABLED=false\n")
    capsys.readouterr()
    assert run_cli(two_kernels, "boot") == 0  # the next boot does it too
    assert not two_kernels.exists("/etc/default/kexec")
    assert "APPEND=mine" in two_kernels.read("/etc/default/kexec.kexec-auto-old")
    err = capsys.readouterr().err
    assert "edited by hand; that version is kept as /etc/default/kexec.kexec-auto-old" in err
    assert "removed /etc/default/kexec, which kexec-auto had created" in err
    assert not two_kernels.exists("/var/lib/kexec-auto/kexec.written")


def test_an_empty_append_loads_the_running_command_line_without_boot_loader_words(on_machine, monkeypatch):
    fake = on_machine.fake_run
    on_machine.write("/proc/cmdline", "BOOT_IMAGE=/boot/vmlinuz-6.1.0-50-cloud-amd64 root=/dev/vda ro "
                                      "initrd=\\initrd.img console=ttyS0\n")
    on_machine.write("/etc/default/kexec.d/90-empty", 'APPEND=""\n')
    assert on_machine.sourced()["APPEND"] == ""
    assert run_cli(on_machine, "load") == 0
    assert fake.calls[-1][-1] == "--append=root=/dev/vda ro console=ttyS0"


def test_load_refuses_while_disabled(on_machine, monkeypatch, capsys):
    fake = on_machine.fake_run
    on_machine.config("ENABLED=false\n")
    assert run_cli(on_machine, "load") == 1
    assert fake.calls == []
    assert "kexec-auto is disabled" in capsys.readouterr().err


# -- in a chroot, neither the host's command line nor its running release -----

@pytest.mark.parametrize("where", ["chroot", "container", "unknown"])
def test_in_a_chroot_the_hosts_command_line_and_release_are_not_taken(two_kernels, monkeypatch, capsys, where):
    r = str(two_kernels)
    two_kernels.add_kernel("6.12.118+deb12-amd64")  # another flavour, newest
    # As if kexec-auto ran as root on / inside an image build.
    monkeypatch.setattr(host, "is_host", lambda root: True)
    monkeypatch.setattr(host, "_host_confinement", lambda: where)
    monkeypatch.setattr(host.os, "geteuid", lambda: 0)
    plan = app.make_plan(r)
    assert (plan.running, plan.append) == ("", "")
    assert plan.selection.kernel.release == "6.12.118+deb12-amd64"
    assert plan.selection.reason == "newest kernel of any flavour, while the running kernel is unknown"
    assert plan.problems == ()
    assert run_cli(two_kernels, "update") == 0
    assert two_kernels.sourced()["APPEND"] == ""
    two_kernels.config("EXTRA_CMDLINE=quiet\n")
    assert app.make_plan(r).append == ""  # no base to add it to: the first boot does
    two_kernels.write("/etc/kernel/cmdline", "root=UUID=abcd ro\n")  # the image's own: taken
    assert app.make_plan(r).append == "root=UUID=abcd ro quiet"
    two_kernels.file("/etc/kernel/cmdline").unlink()
    assert run_cli(two_kernels, "update") == 0
    assert run_cli(two_kernels, "bless") == 0
    assert not two_kernels.exists(bootstate.BOOT_STATE)  # nothing judged
    # The first boot of the image fills them in.
    monkeypatch.setattr(host, "_host_confinement", lambda: "")
    assert run_cli(two_kernels, "boot") == 0
    assert two_kernels.sourced()["APPEND"] == "root=/dev/vda ro console=ttyS0 quiet"
    assert two_kernels.sourced()["KERNEL_IMAGE"] == f"/boot/vmlinuz-{NEW}"


def test_a_user_who_cannot_tell_still_sees_the_running_kernel(two_kernels, monkeypatch):
    monkeypatch.setattr(host, "is_host", lambda root: True)
    monkeypatch.setattr(host, "_host_confinement", lambda: "unknown")
    monkeypatch.setattr(host.os, "geteuid", lambda: 1000)
    assert app.make_plan(str(two_kernels)).running == "6.1.0-50-cloud-amd64"


@needs_mount_namespace
def test_a_root_with_proc_mounted_takes_nothing_from_that_proc(two_kernels, src_env):
    # /proc mounted in the tree is the host's, as in a chroot set up for apt.
    proc = two_kernels.file("/proc")
    script = (f"mount -t proc proc {proc} && {sys.executable} -m kexec_auto --root {two_kernels} update "
              f"&& {sys.executable} -m kexec_auto --root {two_kernels} list --json")
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                            capture_output=True, text=True, env=src_env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["running"] == ""
    assert two_kernels.sourced()["APPEND"] == ""


def test_list_and_status_say_the_running_kernel_is_unknown_in_a_chroot(two_kernels, monkeypatch, capsys):
    monkeypatch.setattr(host, "is_host", lambda root: True)
    monkeypatch.setattr(host, "_host_confinement", lambda: "chroot")
    monkeypatch.setattr(host.os, "geteuid", lambda: 0)
    run_cli(two_kernels, "list")
    assert capsys.readouterr().out.startswith("running kernel: unknown here (a chroot or container")
    run_cli(two_kernels, "status")
    out = capsys.readouterr().out
    assert "command line:     (none)  [from none yet: the first boot of this system fills it in]" in out


def guards_of(root, capsys) -> dict:
    capsys.readouterr()
    assert run_cli(root, "status", "--json") in (0, cli.EXIT_NOT_KEXEC)
    return {g["failure"]: (g["guarded"], g["why"]) for g in json.loads(capsys.readouterr().out)["trial_guards"]}


def test_status_says_which_failures_trial_boots_are_guarded_against(two_kernels, fake_run, capsys, monkeypatch):
    import os

    from kexec_auto import commands

    real_which = commands.which
    monkeypatch.setattr(commands, "which", lambda name: "/sbin/modinfo" if name == "modinfo" else real_which(name))

    run_cli(two_kernels, "update")
    # a cloud machine: no hardware watchdog, softdog in the kernel, no initramfs hook
    two_kernels.write(f"/lib/modules/{NEW}/modules.dep", "kernel/drivers/watchdog/softdog.ko.xz:\n")
    guards = guards_of(two_kernels, capsys)
    assert list(guards) == ["panic", "root not found", "emergency", "deadline", "soft hang", "hard hang",
                            "early hang"]
    assert guards["panic"] == (True, "panic=10: the kernel resets the machine")
    assert guards["soft hang"] == (True, "softdog, 360 s after the kernel started")
    assert guards["hard hang"] == (False, "no hardware watchdog; softdog stops with the CPU")
    assert guards["early hang"] == (False, "no initramfs-tools: watchdogs start in the trial's userspace")
    # kexec-auto's initramfs hook, installed after the initrd was built, then before
    two_kernels.write("/usr/share/initramfs-tools/hooks/kexec-auto", "#!/bin/sh\n", 0o755)
    os.utime(two_kernels.file(f"/boot/initrd.img-{NEW}"), (1, 1))
    assert guards_of(two_kernels, capsys)["early hang"][0] is False
    os.utime(two_kernels.file("/usr/share/initramfs-tools/hooks/kexec-auto"), (0, 0))
    assert guards_of(two_kernels, capsys)["early hang"] == (
        True, "from the initramfs on; not in purgatory or before the initramfs runs: "
        "no hardware watchdog to keep armed through the kexec")
    # qemu's i6300esb, its driver with the heartbeat parameter: its device
    # has no parent in sysfs; its module is a user of the watchdog core
    two_kernels.write("/sys/class/watchdog/watchdog0/identity", "i6300ESB timer\n")
    for user in ("i6300esb", "pretimeout_noop"):
        two_kernels.file(f"/sys/module/{user}").mkdir(parents=True)
        two_kernels.file("/sys/module/watchdog/holders").mkdir(parents=True, exist_ok=True)
        two_kernels.file(f"/sys/module/watchdog/holders/{user}").symlink_to(f"../../{user}")
    guards = guards_of(two_kernels, capsys)
    assert guards["hard hang"][0] is False and "its driver has no heartbeat parameter" in guards["hard hang"][1]
    assert [c[1:] for c in fake_run.calls if c[0].endswith("/modinfo")][-1] == ["-k", NEW, "-F", "parm", "i6300esb"]
    guards = guards_of(two_kernels, capsys)
    assert guards["hard hang"][0] is False and "its driver has no heartbeat parameter" in guards["hard hang"][1]
    fake_run.outputs[("modinfo", "-k")] = (
        "heartbeat:Watchdog heartbeat in seconds. (1<heartbeat<2046, default=30) (int)\n"
        "nowayout:Watchdog cannot be stopped once started (default=0) (bool)\n")
    guards = guards_of(two_kernels, capsys)
    assert [c[1:] for c in fake_run.calls if c[0].endswith("/modinfo")][-1] == ["-k", NEW, "-F", "parm", "i6300esb"]
    assert guards["hard hang"] == (True, "i6300ESB timer, 360 s after the kernel started")
    assert guards["soft hang"] == (True, "softdog and i6300ESB timer, 360 s after the kernel started")
    # the running kernel's watchdog core: built in (no initstate), it stops
    # i6300esb at the kexec; a module, trial-watchdog loads it again so that
    # it does not
    assert guards["early hang"] == (True, "from the initramfs on; not in purgatory or before the initramfs runs: "
                                    "the watchdog core is built into the running kernel, without "
                                    "watchdog.stop_on_reboot=0")
    two_kernels.write("/sys/module/watchdog/initstate", "live\n")
    assert guards_of(two_kernels, capsys)["early hang"] == (
        True, "from the kexec on: i6300ESB timer stays armed through it, then the initramfs starts the watchdogs")
    # the administrator's panic=0 stands, and says so
    two_kernels.config("CMDLINE='root=/dev/vda ro panic=0'\n")
    guards = guards_of(two_kernels, capsys)
    assert guards["panic"] == (False, "panic=0 on the command line: a panic waits forever")
    assert guards["root not found"][0] is False
    run_cli(two_kernels, "status")
    out = capsys.readouterr().out
    assert "trial, panic:           NOT guarded: panic=0 on the command line: a panic waits forever" in out
    assert "trial, hard hang:       guarded: i6300ESB timer, 360 s after the kernel started" in out


def test_a_machine_that_cannot_kexec_names_no_kernel_and_says_why(on_machine, monkeypatch, capsys):
    """Secure Boot on arm64: lockdown allows kexec_file_load only, which
    Debian's arm64 kernels do not have."""
    import platform
    from kexec_auto import host

    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(host, "running_release", lambda root: OLD)
    on_machine.write(f"/boot/config-{OLD}", "CONFIG_KEXEC=y\n# CONFIG_KEXEC_FILE is not set\n")
    on_machine.write("/sys/kernel/security/lockdown", "none [integrity] confidentiality\n")
    capsys.readouterr()
    assert run_cli(on_machine, "debconf-note") == 0
    why = capsys.readouterr().out
    assert why == ("kernel lockdown (integrity, Secure Boot) allows kexec only through kexec_file_load, which the "
                   "running kernel does not have (CONFIG_KEXEC_FILE is not set): this machine reboots through "
                   "its firmware\n")
    assert run_cli(on_machine, "update") == 0
    assert capsys.readouterr().err == f"kexec-auto: note: {why.strip()}; /etc/default/kexec names no kernel\n"
    values = on_machine.sourced()
    assert (values["LOAD_KEXEC"], values["KERNEL_IMAGE"]) == ("false", "")
    run_cli(on_machine, "status", "--json")
    data = json.loads(capsys.readouterr().out)
    assert data["selected"] is None and data["blockers"] == [why.strip()]
    run_cli(on_machine, "list", "--json")
    kernels = json.loads(capsys.readouterr().out)["kernels"]
    assert len(kernels) == 2 and all(not k["selectable"] and k["why_not"] == why.strip() for k in kernels)
    # at every boot it stays quiet, and no hand-off is tried
    on_machine.config("HANDOFF=true\n")
    assert run_cli(on_machine, "boot") == 0
    assert capsys.readouterr().err == ""
    assert not [c for c in on_machine.fake_run.calls if c[0].endswith("kexec")]
    # a kernel with kexec_file_load, or no lockdown: it can
    on_machine.write(f"/boot/config-{OLD}", "CONFIG_KEXEC=y\nCONFIG_KEXEC_FILE=y\n")
    assert run_cli(on_machine, "debconf-note") == 0 and capsys.readouterr().out == ""
    # an architecture whose images kexec-auto does not know
    monkeypatch.setattr(platform, "machine", lambda: "riscv64")
    on_machine.write("/sys/kernel/security/lockdown", "[none] integrity confidentiality\n")
    assert run_cli(on_machine, "debconf-note") == 0
    assert capsys.readouterr().out.startswith("kexec-auto does not know the kernel images of riscv64 machines "
                                              "(only arm64 and x86): this machine reboots through its firmware")
