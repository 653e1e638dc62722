"""The reboot benchmark's arithmetic, on a chain of boots made up here."""
from pathlib import Path

from vm import bench_reboot, guest

NEW = "6.1.0-57-cloud-amd64"


def test_spans_and_phases_of_a_kexec_a_firmware_and_a_plain_reboot(tmp_path: Path):
    chain = guest.Chain(tmp_path / "log")
    chain.boots = [
        guest.Boot(0, NEW, 0, seen_at=10.0, uptime=9.0, action="reboot", action_at=11.0),
        guest.Boot(1, NEW, 0, seen_at=40.0, uptime=20.0, action="coldreboot", action_at=41.0),
        guest.Boot(2, NEW, 1, seen_at=80.0, uptime=20.0, action="systemctl kexec", action_at=81.0),
        guest.Boot(3, NEW, 1, seen_at=110.0, uptime=20.0),
    ]
    chain.qemu_exited = [47.0]
    chain.marks = [
        (12.0, 0, "Stopping kexec-auto-load.service - Load the newest installed kernel"),
        (13.5, 0, "Stopped Load the newest installed kernel"),
        (16.0, 0, "kexec_core: Starting new kernel"),
        (18.0, 0, f"Linux version {NEW}"),
        (35.0, 0, "KA-UP"),
        (39.0, 0, "KA-BLESSED"),
        (42.0, 0, "Stopping kexec-auto-load.service - Load the newest installed kernel"),
        (42.5, 0, "Stopped Load the newest installed kernel"),
        (46.5, 0, "reboot: Restarting system"),
        (55.0, 1, "Booting `Debian GNU/Linux, with Linux 6.1.0-57-cloud-amd64'"),
        (58.0, 1, f"Linux version {NEW}"),
        (75.0, 1, "KA-UP"),
        (76.0, 1, "KA-BLESSED"),
        (84.0, 1, "kexec_core: Starting new kernel"),
        (85.0, 1, f"Linux version {NEW}"),
        (101.0, 1, "KA-UP"),
        (102.0, 1, "KA-BLESSED"),
    ]
    kexec, firmware, plain = bench_reboot.samples(chain, NEW)
    assert (kexec.kind, kexec.to_kernel, kexec.to_up, kexec.to_bless, kexec.shutdown, kexec.firmware,
            kexec.kernel_up, kexec.load) == ("kexec", 7.0, 24.0, 28.0, 5.0, 2.0, 17.0, 1.5)
    assert (firmware.kind, firmware.to_kernel, firmware.to_up, firmware.to_bless, firmware.shutdown,
            firmware.firmware, firmware.kernel_up, firmware.load) == (
                "firmware", 17.0, 34.0, 35.0, 6.0, 11.0, 17.0, 0.5)
    assert (plain.kind, plain.to_kernel, plain.to_up, plain.to_bless, plain.load) == ("plain", 4.0, 20.0, 21.0,
                                                                                      None)
    table = bench_reboot.summary([kexec, firmware, plain])
    assert table["kexec"]["to_kernel"]["median"] == 7.0 and table["firmware"]["runs"] == 1
    assert bench_reboot.ratios(table) == {"up_vs_plain": 24.0 / 20.0, "bless_vs_plain": 28.0 / 20.0,
                                          "up_vs_firmware": 24.0 / 34.0, "kernel_vs_firmware": 7.0 / 17.0}


def test_a_round_is_kexec_auto_firmware_and_plain_kexec_by_hand():
    kexec, firmware, plain = bench_reboot.ROUND
    assert kexec.endswith("kexec-auto set ENABLED=true >/dev/null\nka_do reboot\n")
    assert firmware.endswith("ka_do coldreboot\n")
    # kexec-auto disabled, the same kernel and command line, kexec_load as kexec-auto uses it
    assert ". /etc/default/kexec\nkexec-auto set ENABLED=false" in plain
    assert 'kexec -c -i -l "$KERNEL_IMAGE" --initrd="$INITRD" --append="$APPEND"' in plain
    assert plain.endswith("ka_do systemctl kexec\n")
    # every stage waits for the trial before it to end
    assert all(stage.startswith(bench_reboot.WAIT_BLESS) for stage in bench_reboot.ROUND)


def test_the_loads_stop_lines_are_marked_as_systemd_prints_them_on_a_serial_console():
    # bookworm's systemd 252 on ttyS0: coloured, cut to 80 columns
    seen = [
        "         Stopping \x1b[0;1;39mkexec-auto-load.s…lled kernel for kexec at reboot...",
        "[\x1b[0;32m  OK  \x1b[0m] Stopped \x1b[0;1;39mkexec-auto-load.se…talled kernel for kexec at reboot.",
        "[\x1b[0;32m  OK  \x1b[0m] Stopped \x1b[0;1;39mkexec-auto-boot.se…l and refresh the kexec selection.",
    ]
    marks = [m.group(0) for m in map(guest.MARKS.search, seen) if m]
    assert [m.split()[0] for m in marks] == [bench_reboot.LOAD_START, bench_reboot.LOAD_END]


def test_multi_user_is_marked_by_the_benchmarks_own_unit():
    # the boot is up at multi-user.target (ka-up.service, ordered after it),
    # not when the test's stage runner, which also waits for
    # kexec-auto-boot.service, reports
    mark = guest.MARKS.search("KA-UP\r")
    assert mark and mark.group(0) == bench_reboot.MULTI_USER
    assert "After=multi-user.target" in bench_reboot.UP_UNIT and "KA-UP" in bench_reboot.UP_UNIT
    assert not guest.MARKS.search("[  OK  ] Reached target \x1b[0;1;39mbasic.target\x1b[0m - Basic System.")
