"""Nothing widened, nothing assumed: modes and owners survive, directories
are 0755 whatever the umask, an overlong command line is refused."""

from __future__ import annotations

import os
import stat

import pytest

from kexec_auto import bootstate, cli

NEW = "6.12.117+deb12-cloud-amd64"


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def machine(machine):
    machine.add_kernel(NEW)
    return machine


def test_replaced_and_copied_files_keep_their_owner(machine):
    if os.geteuid() != 0:
        pytest.skip("giving a file another owner needs root (kexec-auto's own case)")
    machine.write("/etc/default/kexec", "LOAD_KEXEC=false\n# secret notes\n", mode=0o600)
    os.chown(machine.file("/etc/default/kexec"), 1234, 1235)
    assert cli.main(["update", "--root", str(machine)]) == 0
    for path in ("/var/lib/kexec-auto/kexec.orig", "/etc/default/kexec"):
        owner = machine.file(path).stat()
        assert (mode(machine.file(path)), owner.st_uid, owner.st_gid) == (0o600, 1234, 1235), path


def test_copies_aside_keep_the_mode_of_what_they_copy(machine):
    r = str(machine)
    machine.write("/etc/default/kexec", "LOAD_KEXEC=false\n# secret notes\n", mode=0o600)
    assert cli.main(["update", "--root", r]) == 0
    assert mode(machine.file("/var/lib/kexec-auto/kexec.orig")) == 0o600
    # The file kexec-auto replaces keeps its mode, and so does its record.
    assert mode(machine.file("/etc/default/kexec")) == 0o600
    assert mode(machine.file("/var/lib/kexec-auto/kexec.written")) == 0o600
    # A hand edit kept aside.
    machine.write("/etc/default/kexec", "# edited\n", mode=0o640)
    machine.add_kernel("6.12.118+deb12-cloud-amd64")
    assert cli.main(["update", "--root", r]) == 0
    assert mode(machine.file("/etc/default/kexec.kexec-auto-old")) == 0o640
    # A corrupt boot state moved aside as it was.
    machine.write(bootstate.BOOT_STATE, "{ corrupt", mode=0o600)
    assert cli.main(["bless", "--root", r]) == 0
    assert mode(machine.file(bootstate.BOOT_STATE + ".corrupt")) == 0o600
    # The settings file keeps its mode through set.
    machine.write("/etc/default/kexec-auto", "PIN=\n", mode=0o600)
    assert cli.main(["set", "EXTRA_CMDLINE=quiet", "--root", r]) == 0
    assert mode(machine.file("/etc/default/kexec-auto")) == 0o600


@pytest.mark.parametrize("umask", [0o000, 0o077])
def test_directories_are_0755_and_new_files_0644_whatever_the_umask(machine, umask):
    r = str(machine)
    previous = os.umask(umask)
    try:
        for command in (["set", "EXTRA_CMDLINE=quiet"], ["update"], ["arm"], ["load", "--at-shutdown"], ["bless"]):
            assert cli.main([*command, "--root", r]) == 0, command
    finally:
        os.umask(previous)
    for directory in ("/var/lib/kexec-auto", "/run/boot-loader-entries", "/run/boot-loader-entries/kexec-auto",
                      "/run/boot-loader-entries/loader", "/run/boot-loader-entries/loader/entries",
                      "/run/kexec-auto", "/etc/default"):
        assert mode(machine.file(directory)) == 0o755, directory
    for path in ("/etc/default/kexec", "/etc/default/kexec-auto", bootstate.BOOT_STATE, "/run/kexec-auto/loaded",
                 "/run/boot-loader-entries/loader/entries/kexec-auto.conf", "/var/lib/kexec-auto/lock"):
        assert mode(machine.file(path)) == 0o644, path


def test_a_command_line_longer_than_the_kernel_accepts_is_refused(machine, capsys):
    r = str(machine)
    assert cli.main(["update", "--root", r]) == 0
    before = machine.read("/etc/default/kexec")
    capsys.readouterr()
    assert cli.main(["set", f"EXTRA_CMDLINE={'x' * 2100}", "--root", r]) == 1
    assert "2100 bytes, more than a kernel command line can hold (2047)" in capsys.readouterr().err
    # Together with the running command line: refused as a whole.
    machine.write("/proc/cmdline", "root=/dev/vda ro " + "y" * 1900 + "\n")
    assert cli.main(["set", f"EXTRA_CMDLINE={'z' * 200}", "--root", r]) == 0
    assert cli.main(["update", "--root", r]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "the kernel command line would be 2118 bytes (/proc/cmdline with EXTRA_CMDLINE), more than the 2047" in err
    assert machine.read("/etc/default/kexec") == before
