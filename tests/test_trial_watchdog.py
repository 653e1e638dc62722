"""hooks/libexec/trial-watchdog, run for real (dash, as the initramfs and
kexec-auto-trial-watchdog.service run it) on a fake root.

No module can be loaded into the kernel here, so modprobe is a stand-in
that does to the fake /sys what the kernel's drivers do: softdog registers
a "Software Watchdog" with soft_margin as its timeout, i6300esb one with
its heartbeat.  The VM chains (tests/vm/test_safety_net.py) run the
program in real initramfs images, with real watchdogs that reset qemu.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROGRAM = REPO / "hooks/libexec/trial-watchdog"

MODPROBE = r"""#!/bin/sh
# modprobe for a fake root: log the call, register or remove the device as
# the kernel does.  Every driver is a user (holder) of the watchdog core;
# softdog and i6300esb register devices without a parent device, iTCO_wdt
# one whose parent's driver links to its module.
echo "$*" >> "$KEXEC_AUTO_ROOT/modprobe.log"
[ -e "$KEXEC_AUTO_ROOT/modprobe.fails" ] && exit 1
sys=$KEXEC_AUTO_ROOT/sys
core() {  # the watchdog core, a module, loaded as a dependency or by name
    [ -e "$sys/module/watchdog/initstate" ] && return
    mkdir -p "$sys/module/watchdog/parameters" "$sys/module/watchdog/holders"
    echo live > "$sys/module/watchdog/initstate"
    echo "${1:--1}" > "$sys/module/watchdog/parameters/stop_on_reboot"
}
register() {  # register MODULE IDENTITY TIMEOUT [PARENT]
    core
    i=0; while [ -e "$sys/class/watchdog/watchdog$i" ]; do i=$((i + 1)); done
    d=$sys/class/watchdog/watchdog$i
    mkdir -p "$d" "$sys/module/$1/parameters" "$sys/module/watchdog/holders"
    ln -sfn "$sys/module/$1" "$sys/module/watchdog/holders/$1"
    echo "$2" > "$d/identity"; echo inactive > "$d/state"; echo "$3" > "$d/timeout"
    echo "$1" > "$d/.registered-by"   # the stand-in's own bookkeeping
    if [ -n "${4-}" ]; then
        mkdir -p "$sys/bus/pci/drivers/$4"
        ln -sfn "$sys/module/$1" "$sys/bus/pci/drivers/$4/module"
        mkdir -p "$sys/devices/pci/$1"
        ln -sfn "$sys/bus/pci/drivers/$4" "$sys/devices/pci/$1/driver"
        ln -sfn "$sys/devices/pci/$1" "$d/device"
    fi
    : > "$KEXEC_AUTO_ROOT/dev/watchdog$i"
}
heartbeat() { t=${1#heartbeat=}; [ -n "$1" ] || t=30; [ "$t" -le 2046 ] || t=30; echo "$t"; }
case "$1" in
    -r) [ "$2" = watchdog ] && [ -n "$(ls "$sys/module/watchdog/holders")" ] && exit 1
        for d in "$sys"/class/watchdog/*; do
            [ "$(cat "$d/.registered-by")" = "$2" ] && rm -rf "$d" "$KEXEC_AUTO_ROOT/dev/${d##*/}"
        done
        rm -rf "$sys/module/$2" "$sys/module/watchdog/holders/$2"
        # modprobe -r also removes the dependencies no one uses any more
        [ -d "$sys/module/watchdog/holders" ] && [ -z "$(ls "$sys/module/watchdog/holders")" ] \
            && rm -rf "$sys/module/watchdog"
        exit 0 ;;
    watchdog) core "${2#stop_on_reboot=}" ;;
    softdog) register softdog "Software Watchdog" "${2#soft_margin=}" ;;
    i6300esb) register i6300esb "i6300ESB timer" "$(heartbeat "${2-}")" ;;
    iTCO_wdt) register iTCO_wdt "iTCO_wdt" "$(heartbeat "${2-}")" iTCO_wdt ;;
    *) exit 1 ;;
esac
"""


@pytest.fixture
def fake(tmp_path):
    root = tmp_path / "root"
    for d in ("proc", "run", "dev", "sys/class/watchdog", "bin"):
        (root / d).mkdir(parents=True)
    modprobe = root / "bin/modprobe"
    modprobe.write_text(MODPROBE)
    modprobe.chmod(0o755)
    (root / "proc/uptime").write_text("12.34 10.00\n")
    busctl = root / "bin/busctl"
    busctl.write_text('#!/bin/sh\necho "$*" >> "$KEXEC_AUTO_ROOT/busctl.log"\n'
                      '[ -e "$KEXEC_AUTO_ROOT/busctl.fails" ] && exit 1\nexit 0\n')
    busctl.chmod(0o755)
    return root


def busctl(root: Path) -> list[str]:
    log = root / "busctl.log"
    return log.read_text().splitlines() if log.exists() else []


def run(root: Path, cmdline: str = "root=/dev/vda ro kexec_auto.trial=300 panic=10", *args: str):
    (root / "proc/cmdline").write_text(cmdline + "\n")
    env = {"PATH": f"{root}/bin:/usr/bin:/bin", "KEXEC_AUTO_ROOT": str(root)}
    return subprocess.run(["dash", str(PROGRAM), *(args or ("start",))], env=env,
                          capture_output=True, text=True, timeout=30)


def modprobes(root: Path) -> list[str]:
    log = root / "modprobe.log"
    return log.read_text().splitlines() if log.exists() else []


def udev_loads(root: Path, *modules: str) -> None:
    """What udev does before the program runs: load the drivers."""
    for module in modules:
        subprocess.run([str(root / "bin/modprobe"), module], env={"KEXEC_AUTO_ROOT": str(root)}, check=True)
    (root / "modprobe.log").unlink()


def record(root: Path) -> str:
    return (root / "run/kexec-auto/trial-watchdog").read_text()


def test_softdog_is_started_for_the_deadline_plus_a_minute_from_the_kernels_start(fake):
    result = run(fake)
    assert result.returncode == 0 and result.stdout == "", result
    # 300 + 60 - 12 s of uptime
    assert modprobes(fake) == ["softdog soft_margin=348"]
    # started: opened and closed without the magic "V", so it runs on
    assert (fake / "dev/watchdog0").read_text() == "\n"
    assert record(fake) == "loaded softdog\nwatchdog0 Software Watchdog\n"
    assert "watchdog watchdog0 (Software Watchdog) resets the machine in 348 s" in result.stderr
    # a second run (the unit, after the initramfs) does nothing
    (fake / "dev/watchdog0").write_text("")
    assert run(fake).returncode == 0
    assert modprobes(fake) == ["softdog soft_margin=348"] and (fake / "dev/watchdog0").read_text() == ""


def test_a_hardware_watchdog_gets_the_same_timeout_and_keeps_its_number(fake):
    # udev loaded i6300esb (30 s heartbeat) before the initramfs script runs
    udev_loads(fake, "i6300esb")
    result = run(fake)
    assert result.returncode == 0, result
    assert modprobes(fake) == ["-r i6300esb", "i6300esb heartbeat=348", "softdog soft_margin=348"]
    assert (fake / "sys/class/watchdog/watchdog0/identity").read_text() == "i6300ESB timer\n"
    assert (fake / "dev/watchdog0").read_text() == "\n" and (fake / "dev/watchdog1").read_text() == "\n"
    assert record(fake) == "watchdog0 i6300ESB timer\nloaded softdog\nwatchdog1 Software Watchdog\n"


def test_each_hardware_driver_is_reloaded_once_whether_sysfs_links_it_or_not(fake):
    # iTCO_wdt's device links to its driver's module; i6300esb's does not,
    # and is found among the watchdog core's users (softdog's and the
    # pretimeout governors' aside)
    udev_loads(fake, "iTCO_wdt", "i6300esb")
    (fake / "sys/module/watchdog/holders/pretimeout_noop").mkdir()
    result = run(fake)
    assert result.returncode == 0, result
    assert modprobes(fake) == ["-r iTCO_wdt", "iTCO_wdt heartbeat=348", "-r i6300esb", "i6300esb heartbeat=348",
                               "softdog soft_margin=348"]
    assert record(fake) == ("watchdog0 iTCO_wdt\nwatchdog1 i6300ESB timer\n"
                            "loaded softdog\nwatchdog2 Software Watchdog\n")


def test_a_hardware_watchdog_with_the_right_timeout_already_is_just_started(fake):
    (fake / "proc/uptime").write_text("330.00 300.00\n")  # 300 + 60 - 330 = 30: the default heartbeat
    udev_loads(fake, "i6300esb")
    assert run(fake).returncode == 0
    assert modprobes(fake) == ["softdog soft_margin=30"]
    assert record(fake).startswith("watchdog0 i6300ESB timer\n")


def test_a_hardware_watchdog_that_cannot_wait_that_long_is_not_started(fake):
    udev_loads(fake, "i6300esb")
    result = run(fake, "ro kexec_auto.trial=3600")
    assert result.returncode == 0, result
    assert "watchdog watchdog0 (i6300ESB timer) cannot be set to 3648 s (it has 30 s); not used" in result.stderr
    assert (fake / "dev/watchdog0").read_text() == ""
    assert record(fake) == "loaded softdog\nwatchdog1 Software Watchdog\n"


def test_a_watchdog_in_use_is_left_to_its_user(fake):
    udev_loads(fake, "i6300esb")
    (fake / "sys/class/watchdog/watchdog0/state").write_text("active\n")
    assert run(fake).returncode == 0
    assert "-r i6300esb" not in modprobes(fake) and (fake / "dev/watchdog0").read_text() == ""


@pytest.mark.parametrize("cmdline", ["root=/dev/vda ro", "ro kexec_auto.trial=soon", "ro kexec_auto.trial="])
def test_no_trial_no_watchdog(fake, cmdline):
    result = run(fake, cmdline)
    assert (result.returncode, result.stderr) == (0, "")
    assert modprobes(fake) == [] and not (fake / "run/kexec-auto").exists()


def test_once_the_trial_is_over_nothing_is_started(fake):
    (fake / "run/kexec-auto").mkdir()
    (fake / "run/kexec-auto/trial-over").write_text("")
    assert run(fake).returncode == 0 and modprobes(fake) == []


def test_a_late_start_still_gets_at_least_30_seconds(fake):
    (fake / "proc/uptime").write_text("400.00 300.00\n")
    assert run(fake).returncode == 0
    assert modprobes(fake) == ["softdog soft_margin=30"]


def test_without_softdog_it_says_so_and_never_fails(fake):
    (fake / "modprobe.fails").write_text("")
    result = run(fake)
    assert result.returncode == 0
    assert "warning: softdog cannot be loaded" in result.stderr
    assert record(fake) == ""


def test_usage(fake):
    result = run(fake, "ro", "stop")
    assert result.returncode == 2 and result.stderr.startswith("usage: trial-watchdog start\n")
    for args in (("kexec",), ("kexec", "soon"), ("kexec", "-1")):
        result = run(fake, "ro", *args)
        assert result.returncode == 2 and "trial-watchdog kexec SECONDS" in result.stderr


def test_it_uses_only_what_an_initramfs_has():
    """klibc's tools have no sed, awk, grep or readlink."""
    words = set(PROGRAM.read_text().replace("(", " ").replace(")", " ").replace("|", " ").split())
    assert not words & {"sed", "awk", "grep", "readlink", "basename", "cut", "tr"}
    assert os.access(PROGRAM, os.X_OK)


# --------------------------------------------------------------------------
# trial-watchdog kexec SECONDS: in the kernel that kexecs into a trial kernel

SET = "set-property org.freedesktop.systemd1 /org/freedesktop/systemd1 org.freedesktop.systemd1.Manager"


def test_kexec_reloads_the_watchdog_core_so_that_the_kexec_leaves_the_watchdog_running(fake):
    udev_loads(fake, "i6300esb")
    result = run(fake, "root=/dev/vda ro", "kexec", "360")
    assert result.returncode == 0, result.stderr
    # the driver out, the core (unused now) with it, both back: the core so
    # that it leaves the watchdog running at the kexec, the driver with the time
    assert modprobes(fake) == ["-r i6300esb", "watchdog stop_on_reboot=0", "i6300esb heartbeat=360"]
    assert (fake / "sys/module/watchdog/parameters/stop_on_reboot").read_text() == "0\n"
    assert (fake / "sys/class/watchdog/watchdog0/identity").read_text() == "i6300ESB timer\n"
    # systemd arms it at the shutdown, whether it reboots or kexecs
    assert busctl(fake) == [f"{SET} RebootWatchdogUSec t 360000000", f"{SET} KExecWatchdogUSec t 360000000"]
    assert "watchdog watchdog0 (i6300ESB timer) stays armed through the kexec: systemd arms it" in result.stderr
    # nothing is started here: systemd does, and no trial record is written
    assert (fake / "dev/watchdog0").read_text() == "" and not (fake / "run/kexec-auto").exists()


def test_kexec_without_a_system_bus_starts_the_watchdog_itself(fake):
    udev_loads(fake, "i6300esb")
    (fake / "busctl.fails").write_text("")
    result = run(fake, "ro", "kexec", "360")
    assert result.returncode == 0, result.stderr
    assert modprobes(fake) == ["-r i6300esb", "watchdog stop_on_reboot=0", "i6300esb heartbeat=360"]
    assert (fake / "dev/watchdog0").read_text() == "\n"  # opened, closed without the magic "V"
    assert "no system bus for systemd's watchdog settings, so it runs from now" in result.stderr
    # a driver that cannot wait that long is not started: it would reset the shutdown
    (fake / "dev/watchdog0").write_text("")
    result = run(fake, "ro", "kexec", "3000")
    assert result.returncode == 1 and (fake / "dev/watchdog0").read_text() == ""
    assert "cannot be set to 3000 s" in result.stderr


def test_kexec_reloads_nothing_when_the_core_keeps_watchdogs_running_already(fake):
    udev_loads(fake, "watchdog", "iTCO_wdt")
    (fake / "sys/module/watchdog/parameters/stop_on_reboot").write_text("0\n")
    assert run(fake, "ro", "kexec", "10").returncode == 0  # at least 30 s, the driver's 30 already
    assert modprobes(fake) == []
    assert busctl(fake) == [f"{SET} RebootWatchdogUSec t 30000000", f"{SET} KExecWatchdogUSec t 30000000"]


def test_kexec_without_a_hardware_watchdog_does_nothing(fake):
    result = run(fake, "ro", "kexec", "360")
    assert result.returncode == 0 and result.stderr == ""
    assert modprobes(fake) == [] and busctl(fake) == []


@pytest.mark.parametrize("case", ["built in", "in use", "softdog"])
def test_kexec_says_why_the_watchdog_stops_at_the_kexec_and_changes_nothing_in_use(fake, case):
    udev_loads(fake, "i6300esb")
    if case == "built in":
        (fake / "sys/module/watchdog/initstate").unlink()
    elif case == "in use":  # systemd's RuntimeWatchdogSec=, or a watchdog daemon
        (fake / "sys/class/watchdog/watchdog0/state").write_text("active\n")
    else:
        udev_loads(fake, "softdog")
    result = run(fake, "ro", "kexec", "360")
    assert result.returncode == 1
    said = {"built in": "the watchdog core is built into this kernel",
            "in use": "watchdog0 (i6300ESB timer) is in use: it stops at the kexec",
            "softdog": "watchdog1 (Software Watchdog) is in use or not kexec-auto's to reload"}[case]
    assert said in result.stderr
    assert "-r i6300esb" not in modprobes(fake) and busctl(fake) == []
