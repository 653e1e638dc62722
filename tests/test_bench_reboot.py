"""The reboot benchmark's arithmetic, on a chain of boots made up here."""
from pathlib import Path

from vm import bench_reboot, guest

NEW = "6.1.0-57-cloud-amd64"


def test_spans_and_phases_of_a_kexec_and_a_firmware_reboot(tmp_path: Path):
    chain = guest.Chain(tmp_path / "log")
    chain.boots = [
        guest.Boot(0, NEW, 0, seen_at=10.0, uptime=9.0, action="reboot", action_at=11.0),
        guest.Boot(1, NEW, 0, seen_at=40.0, uptime=20.0, action="coldreboot", action_at=41.0),
        guest.Boot(2, NEW, 1, seen_at=80.0, uptime=20.0),
    ]
    chain.qemu_exited = [47.0]
    chain.marks = [
        (12.0, 0, "Stopping kexec-auto-load.service - Load the newest installed kernel"),
        (13.5, 0, "Stopped Load the newest installed kernel"),
        (16.0, 0, "kexec_core: Starting new kernel"),
        (18.0, 0, f"Linux version {NEW}"),
        (42.0, 0, "Stopping kexec-auto-load.service - Load the newest installed kernel"),
        (42.5, 0, "Stopped Load the newest installed kernel"),
        (46.5, 0, "reboot: Restarting system"),
        (55.0, 1, "Booting `Debian GNU/Linux, with Linux 6.1.0-57-cloud-amd64'"),
        (58.0, 1, f"Linux version {NEW}"),
    ]
    kexec, firmware = bench_reboot.samples(chain, NEW)
    assert (kexec.kind, kexec.to_kernel, kexec.to_up, kexec.shutdown, kexec.firmware, kexec.kernel_up,
            kexec.load) == ("kexec", 7.0, 29.0, 5.0, 2.0, 22.0, 1.5)
    assert (firmware.kind, firmware.to_kernel, firmware.to_up, firmware.shutdown, firmware.firmware,
            firmware.kernel_up, firmware.load) == ("firmware", 17.0, 39.0, 6.0, 11.0, 22.0, 0.5)
    table = bench_reboot.summary([kexec, firmware])
    assert table["kexec"]["to_kernel"]["median"] == 7.0 and table["firmware"]["runs"] == 1


def test_the_loads_stop_lines_are_marked_as_systemd_prints_them_on_a_serial_console():
    # bookworm's systemd 252 on ttyS0: coloured, cut to 80 columns
    seen = [
        "         Stopping \x1b[0;1;39mkexec-auto-load.s…lled kernel for kexec at reboot...",
        "[\x1b[0;32m  OK  \x1b[0m] Stopped \x1b[0;1;39mkexec-auto-load.se…talled kernel for kexec at reboot.",
        "[\x1b[0;32m  OK  \x1b[0m] Stopped \x1b[0;1;39mkexec-auto-boot.se…l and refresh the kexec selection.",
    ]
    marks = [m.group(0) for m in map(guest.MARKS.search, seen) if m]
    assert [m.split()[0] for m in marks] == [bench_reboot.LOAD_START, bench_reboot.LOAD_END]
