"""Bytes and odd files never crash kexec-auto: every input file is read
with a size limit and without blocking, as bytes where it may not be text;
a kernel whose name cannot be written safely is not selectable; any error
is one line with a meaningful exit status, never a traceback."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import BZIMAGE, FakeRoot
from kexec_auto import app, bootstate, cli
from kexec_auto import settings as settings_file
from test_hooks import run_parts

NEW = "6.12.117+deb12-cloud-amd64"
OLD = "6.1.0-56-cloud-amd64"

# Every file kexec-auto reads from a root.
INPUTS = [
    "/etc/default/kexec-auto", "/etc/default/kexec", "/etc/default/kexec.d/10-local",
    "/var/lib/kexec-auto/boot-state.json", "/var/lib/kexec-auto/kexec.written",
    "/var/lib/kexec-auto/kexec.written-key", "/proc/cmdline", "/proc/sys/kernel/osrelease",
    "/etc/kernel/cmdline", "/var/lib/dpkg/status", "/sys/kernel/kexec_loaded", "/sys/kernel/security/lockdown",
    "/var/lib/kexec-auto/load-failed", "/var/lib/kexec-auto/kexec-returned", "/var/lib/kexec-auto/handoff",
]
COMMANDS = [["list"], ["list", "--json"], ["status"], ["status", "--json"], ["update"], ["update", "--dry-run"],
            ["arm"], ["boot"], ["bless"], ["forget", OLD], ["set", "EXTRA_CMDLINE=quiet"], ["get", "PIN"], ["load"]]


def assert_one_line_errors(err: str) -> None:
    assert "Traceback" not in err
    for line in err.splitlines():
        assert line.startswith("kexec-auto: "), err


interesting_bytes = st.one_of(
    st.binary(max_size=300),
    st.sampled_from([b"[" * 100_000, b"{\"trying\":" * 50_000, b"\xff\xfe latin-1: \xe9t\xe9\n",
                     b"# caf\xe9\nLOAD_KEXEC=true\n", b"PIN=6.1.0-56-cloud-amd64\xff\n", b"\0\0\0",
                     b'{"trying": null, "marks": {"x": {"state": "bad", "when": 1e999999}}}',
                     b'{"trying": null, "marks": {}, "events": [' + b"9" * 5000 + b"]}"]),
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(path=st.sampled_from(INPUTS), content=interesting_bytes,
       name=st.binary(min_size=1, max_size=12).filter(lambda b: b"/" not in b and b"\0" not in b))
def test_any_bytes_in_any_input_never_crash_a_command(capsys, path, content, name):
    with tempfile.TemporaryDirectory() as scratch:
        root = FakeRoot(Path(scratch) / "root")
        root.add_kernel(OLD)
        root.add_kernel(NEW)
        # A kernel whose name is any bytes, newest of all.
        (root.file("/boot") / os.fsdecode(b"vmlinuz-9.9." + name)).write_bytes(BZIMAGE)
        root.write(path, content)
        for command in COMMANDS:
            code = cli.main([*command, "--root", str(root)])
            out, err = capsys.readouterr()
            assert code in (0, 1, 3), (command, code, err)
            assert_one_line_errors(err)
            # an error kexec-auto foresaw, never one it did not
            assert "unexpected" not in err, (command, err)
            if command[-1] == "--json" and out:
                json.loads(out)


def test_a_kexec_file_that_is_not_utf8_is_taken_over_byte_for_byte(root, capsys):
    root.add_kernel(NEW)
    original = b"# Configuration de kexec, modifi\xe9e \xe0 la main\nLOAD_KEXEC=false\n"
    root.write("/etc/default/kexec", original, mode=0o600)
    for command in (["update"], ["boot"], ["update"]):
        assert cli.main([*command, "--root", str(root)]) == 0
        assert_one_line_errors(capsys.readouterr().err)
    assert root.file("/var/lib/kexec-auto/kexec.orig").read_bytes() == original
    assert stat.S_IMODE(root.file("/var/lib/kexec-auto/kexec.orig").stat().st_mode) == 0o600
    assert root.sourced()["KERNEL_IMAGE"] == f"/boot/vmlinuz-{NEW}"


@pytest.mark.parametrize("name, why", [
    (b"vmlinuz-9.9.9-1-cloud-amd64\xff", "not UTF-8"),
    (b"vmlinuz-9.9.9-1-cloud-amd64\nLOAD_KEXEC=true", "characters other than"),
    (b"vmlinuz-9.9.9-1 cloud-amd64", "characters other than"),
    (b"vmlinuz-9.9.9-$(reboot)-cloud-amd64", "characters other than"),
])
def test_a_kernel_whose_name_cannot_be_written_safely_is_not_selectable_and_list_says_why(root, capsys, name, why):
    root.add_kernel(NEW)
    image = root.file("/boot") / os.fsdecode(name)
    image.write_bytes(BZIMAGE)
    (root.file("/boot") / os.fsdecode(name.replace(b"vmlinuz-", b"initrd.img-"))).write_bytes(b"initrd")
    assert cli.main(["list", "--root", str(root)]) == 0
    out, err = capsys.readouterr()
    assert_one_line_errors(err)
    assert f"not selectable: its name cannot be written safely into /etc/default/kexec ({why}" in out
    assert out.splitlines()[-1].startswith(f"selected: {NEW}")
    assert cli.main(["list", "--json", "--root", str(root)]) == 0
    kernels = json.loads(capsys.readouterr().out)["kernels"]
    assert [k["selectable"] for k in kernels if "9.9.9" in k["release"]] == [False]
    assert cli.main(["update", "--root", str(root)]) == 0
    text = root.file("/etc/default/kexec").read_bytes()
    assert b"9.9.9" not in text
    assert root.sourced()["KERNEL_IMAGE"] == f"/boot/vmlinuz-{NEW}"


def test_a_boot_state_nested_too_deep_is_set_aside_and_rebuilt(machine, capsys):
    root = machine
    root.add_kernel(NEW)
    deep = "[" * 200_000
    root.write(bootstate.BOOT_STATE, deep)
    for command in (["boot"], ["status"], ["load", "--at-shutdown"], ["bless"]):
        assert cli.main([*command, "--root", str(root)]) in (0, 3)
        assert_one_line_errors(capsys.readouterr().err)
    assert root.read(bootstate.BOOT_STATE + ".corrupt") == deep
    assert json.loads(root.read(bootstate.BOOT_STATE))["marks"]


# -- files that are not files: FIFOs and devices, run as real processes -----

def special(path: Path, kind: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() or path.is_symlink():
        path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    else:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 5))  # /dev/zero


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")
@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_a_fifo_or_a_device_in_place_of_any_input_never_hangs(root, src_env, kind):
    root.add_kernel(OLD)
    assert run_parts(root, "postinst.d", OLD, "configure", src_env).returncode == 0
    for path in INPUTS:
        target = root.file(path)
        saved = target.read_bytes() if target.is_file() else None
        special(target, kind)
        result = run_parts(root, "postinst.d", OLD, "configure", src_env, timeout=60)
        assert result.returncode == 0 and result.stdout == "", (path, result.stderr)
        assert "Traceback" not in result.stderr, (path, result.stderr)
        for command in (["status"], ["list"], ["update"], ["boot"]):
            done = subprocess.run([sys.executable, "-m", "kexec_auto", *command, "--root", str(root)],
                                  capture_output=True, text=True, env=src_env, timeout=60, stdin=subprocess.DEVNULL)
            assert done.returncode in (0, 1, 3), (path, command, done.stderr)
            assert_one_line_errors(done.stderr)
        target.unlink(missing_ok=True)  # a one-shot record is used up by boot
        if saved is not None:
            target.write_bytes(saved)


def test_an_unexpected_error_is_one_line_and_exit_status_1(root, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("something\nunforeseen")

    monkeypatch.setattr(app, "make_plan", broken)
    assert cli.main(["update", "--root", str(root)]) == cli.EXIT_ERROR
    assert capsys.readouterr().err == "kexec-auto: error: unexpected RuntimeError: something unforeseen\n"
    monkeypatch.setattr(settings_file, "load_config", broken)
    assert cli.main(["get", "PIN", "--root", str(root)]) == cli.EXIT_ERROR
    assert capsys.readouterr().err.count("\n") == 1


def test_a_closed_pipe_ends_quietly(root, src_env):
    for n in range(30):
        root.add_kernel(f"6.1.0-{n}-cloud-amd64")
    result = subprocess.run(f"{sys.executable} -m kexec_auto list --root {root} | head -c 10",
                            shell=True, capture_output=True, text=True, env=src_env)
    assert result.stderr == ""
