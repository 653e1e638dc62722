"""The test harness's own pure parts: tree keys, partition tables, GRUB's BIOS boot sectors."""

import doctest
import struct
from pathlib import Path

import pytest

from harness import debimage


def test_doctests():
    result = doctest.testmod(debimage)
    assert result.failed == 0
    assert result.attempted > 0


def test_forky_borrows_sids_debootstrap_script_and_ignores_valid_until():
    argv = debimage.debootstrap_argv("forky", ["apt"], Path("/t"), scripts=Path("/no/scripts"))
    assert argv[-1] == "/no/scripts/sid"
    assert 'Check-Valid-Until "false"' in debimage.SUITE_APT_CONF["forky"]
    assert "bookworm" not in debimage.SUITE_APT_CONF


def test_tree_key_changes_with_apt_settings():
    assert debimage.tree_key("forky", ["a"]) != debimage.tree_key("forky", ["a"], apt_conf="x")


def test_bios_boot_sectors_keep_the_partition_table_and_chain_the_core():
    mbr = bytes(range(256)) * 2
    boot_img = b"\xeb\x63\x90" + bytes(509)
    core = bytes(512 * 70 + 100)  # not a whole number of sectors
    boot, core_out = debimage.bios_boot_sectors(mbr, boot_img, core)
    assert boot[:3] == boot_img[:3]
    assert boot[0x1b8:0x1fe] == mbr[0x1b8:0x1fe]
    assert boot[0x1fe:] == b"\x55\xaa"
    assert struct.unpack("<Q", boot[0x5c:0x64]) == (1,)
    assert len(core_out) == 512 * 71
    assert struct.unpack("<QHH", core_out[500:512]) == (2, 70, 0x820)
    assert core_out[488:500] == bytes(12)  # the terminator


def test_qemu_command_per_layout(tmp_path):
    log, disk = tmp_path / "s.log", tmp_path / "d.img"
    provider = debimage.qemu_command("provider", disk, log, kernel=Path("k"), initrd=Path("i"), append="x=1",
                                     extra=["-device", "i6300esb"])
    assert provider[provider.index("-append") + 1] == "x=1"
    assert provider[-2:] == ["-device", "i6300esb"]
    for cmd in (provider, debimage.qemu_command("bios", disk, log)):
        assert {"-no-reboot", "tcg"} <= set(cmd) and cmd[cmd.index("-smp") + 1] == "1"
    uefi = debimage.qemu_command("uefi", disk, log, vars_file=tmp_path / "v.fd")
    assert f"if=pflash,format=raw,unit=0,readonly=on,file={debimage.OVMF}/OVMF_CODE_4M.fd" in uefi
    assert f"if=pflash,format=raw,unit=1,file={tmp_path}/v.fd" in uefi
    sb = debimage.qemu_command("secureboot", disk, log, vars_file=tmp_path / "v.fd")
    assert "driver=cfi.pflash01,property=secure,value=on" in sb
    assert any("OVMF_CODE_4M.secboot.fd" in a for a in sb)
    with pytest.raises(ValueError):
        debimage.qemu_command("uefi", disk, log)


def test_grub_probe_standin_answers_for_the_guest_disk():
    text = debimage._standin_text("/usr/sbin/grub-probe", "uefi")
    assert "echo /dev/vda2" in text and debimage.ROOT_UUID in text and "echo gpt" in text


def test_one_session_directory_per_process_even_from_threads(tmp_path, monkeypatch):
    import concurrent.futures
    monkeypatch.setenv(debimage.CACHE_ENV, str(tmp_path))
    monkeypatch.setattr(debimage, "_session", {})
    monkeypatch.setattr(debimage.atexit, "register", lambda *a: None)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        paths = set(pool.map(lambda _: debimage.session_dir(), range(8)))
    assert len(paths) == 1 and next(iter(paths)).parent == tmp_path / "sessions"
