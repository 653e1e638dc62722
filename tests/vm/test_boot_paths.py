"""kexec-auto where real machines boot: firmware and Debian's GRUB (bootpaths.py).

Per boot path (BIOS + GRUB, UEFI + GRUB, UEFI Secure Boot with shim and
Debian's signed GRUB and kernels), one chain of boots of one disk:

  0  firmware + GRUB -> provider kernel (GRUB's pinned default), qemu run 0
  1  `reboot`        -> newest, through kexec (qemu keeps running)
  2  `reboot`        -> newest again, from a kexec'd kernel
  3  `coldreboot`    -> firmware + GRUB -> provider (qemu run 1); nothing loaded
  4  `reboot`        -> newest, through kexec
  5  UEFI: HANDOFF=true and a power-on: provider hands off to the newest;
     Secure Boot: the selected image lost its signature, the load fails at
     shutdown, the reboot goes through the firmware, and this boot says so.

On UEFI, every boot reads efivars and runs efibootmgr.  Under Secure Boot,
every boot must be in lockdown [integrity] with SecureBoot enabled.
"""
import json
import re

import pytest

from . import bootpaths
from .scenarios import step

pytestmark = pytest.mark.vm

GRUB_BOOTS = re.compile(r"Booting `Debian GNU/Linux, with Linux (\S+)'")


def get(vm_runs, bootpath):
    suite, layout = bootpath
    return vm_runs.get(suite, f"path-{layout}")


def name(bootpath) -> str:
    return f"{bootpath[0]}-{bootpath[1]}"


def qemu_run_log(chain, run: int) -> str:
    text = chain.log.read_text(errors="replace")
    start = text.index(f"=== host: qemu run {run} starts")
    end = re.compile(rf"=== host: qemu run {run} (exited|killed)").search(text, start)
    return text[start:end.end() if end else len(text)]


def shutdown_log(chain, seq: int) -> str:
    """The serial output from stage seq's action to the next boot's report."""
    text = chain.log.read_text(errors="replace")
    start = text.index(f"KA-ACTION seq={seq}")
    end = text.find(f"KA-BOOT seq={seq + 1}", start)
    return text[start:end if end >= 0 else len(text)]


def landed(chain, seq: int, release: str, kexec: bool) -> None:
    before, after = chain.boot(seq), chain.boot(seq + 1)
    assert after.uname == release, f"after {before.action!r}: running {after.uname}, wanted {release}"
    if kexec:
        assert after.qemu_run == before.qemu_run, f"after {before.action!r}: firmware reset (qemu restarted)"
    else:
        assert after.qemu_run == before.qemu_run + 1, f"after {before.action!r}: no firmware reset"


def test_firmware_and_grub_boot_the_pinned_provider_kernel(vm_runs, bootpath):
    built, chain = get(vm_runs, bootpath)
    with step(chain, name(bootpath), "path-grub-provider"):
        first = chain.boot(0)
        assert (first.uname, first.qemu_run) == (built.base.provider, 0), first
        assert GRUB_BOOTS.findall(qemu_run_log(chain, 0))[:1] == [built.base.provider]
        assert f"BOOT_IMAGE=/boot/vmlinuz-{built.base.provider}" in first.results["cmdline"]
        # the newest kernel's install ran update-grub: GRUB offers it too
        assert f"vmlinuz-{built.base.newest}" in built.notes["grub_cfg"]
        assert "set timeout=5" in built.notes["grub_cfg"]


def test_reboot_lands_in_newest_twice_without_firmware(vm_runs, bootpath):
    built, chain = get(vm_runs, bootpath)
    with step(chain, name(bootpath), "path-kexec-reboots"):
        assert chain.boot(0).action == "reboot" and chain.boot(1).action == "reboot"
        landed(chain, 0, built.base.newest, kexec=True)
        landed(chain, 1, built.base.newest, kexec=True)
        # kexec_load without the digest; only lockdown asks for kexec_file_load
        call = "kexec_file_load" if built.layout == "secureboot" else "kexec_load"
        for seq in (0, 1):
            assert chain.boot(seq).results.get("shutdown_kexec_loaded") == "1", chain.boot(seq).results
            assert (f"loaded /boot/vmlinuz-{built.base.newest} for the next reboot with {call}"
                    in shutdown_log(chain, seq))


def test_coldreboot_goes_through_firmware_and_grub_and_loads_nothing(vm_runs, bootpath):
    built, chain = get(vm_runs, bootpath)
    with step(chain, name(bootpath), "path-coldreboot"):
        cold = chain.boot(2)
        assert cold.action == "coldreboot"
        landed(chain, 2, built.base.provider, kexec=False)
        assert GRUB_BOOTS.findall(qemu_run_log(chain, 1))[:1] == [built.base.provider]
        # neither kexec-auto nor kexec-tools' own loader loaded a kernel
        assert cold.results.get("shutdown_kexec_loaded") == "0", cold.results
        assert "cold reboot requested (coldreboot): not loading a kernel" in shutdown_log(chain, 2)
        assert chain.boot(3).results.get("flag") == "absent"
        landed(chain, 3, built.base.newest, kexec=True)


def paths(*layouts):
    return pytest.mark.parametrize("bootpath", bootpaths.matrix(*layouts))


@paths("uefi", "secureboot")
def test_efi_runtime_services_survive_every_kexec(vm_runs, bootpath):
    built, chain = get(vm_runs, bootpath)
    with step(chain, name(bootpath), "path-efivars"):
        for boot in chain.boots:
            count, _, current = boot.results.get("efivars.out", "").partition("|")
            assert boot.results.get("efivars.rc") == "0" and int(count) > 0 and current.split(), \
                f"boot {boot.seq} ({boot.uname}): efivars unreadable: {boot.results}"
            assert boot.results.get("efibootmgr.rc") == "0", boot.results
            assert re.search(r"Boot[0-9A-F]{4}", boot.results.get("efibootmgr.out", "")), boot.results
            assert "BootCurrent" in boot.results.get("efibootmgr.out", ""), boot.results


def test_no_kexec_auto_unit_on_the_critical_chain_to_multi_user(vm_runs, bootpath):
    built, chain = get(vm_runs, bootpath)
    with step(chain, name(bootpath), "path-critical-chain"):
        # boot 0 is a firmware boot; boot 1 a kexec'd trial boot, where the
        # trial's safety net (watchdog, deadline) is active
        for seq in (0, 1):
            boot = chain.boot(seq)
            assert ("kexec_auto.trial=" in boot.results.get("cmdline", "")) == (seq == 1), (seq, boot.results)
            assert boot.results.get("chain.rc") == "0", (seq, boot.results)
            assert "kexec-auto" not in boot.results.get("chain.out", ""), (seq, boot.results["chain.out"])
            if seq == 1:  # the trial's softdog was started all the same (closed without "V")
                watchdog = boot.results.get("watchdog_unit.out", "")
                assert "softdog: initialized" in watchdog and "did not stop" in watchdog, boot.results
            # the figures, for `pytest -rP`
            print(f"--- boot {seq} ({boot.uname})")
            for key in ("chain.out", "blame.out", "times.kexec-auto-boot.service", "times.kexec-auto-load.service",
                        "times.multi-user", "watchdog_unit.out", "py_start.out",
                        "ka_status.out", "ka_boot.out"):
                print(f"{key}: {boot.results.get(key, '').replace('|', chr(10) + '    ')}")


@paths("secureboot")
def test_secure_boot_and_lockdown_hold_on_every_boot(vm_runs, bootpath):
    built, chain = get(vm_runs, bootpath)
    with step(chain, name(bootpath), "path-sb-lockdown"):
        for boot in chain.boots:
            assert "[integrity]" in boot.results.get("lockdown.out", ""), (boot.seq, boot.results)
            assert boot.results.get("secureboot.out", "").split()[-1:] == ["1"], (boot.seq, boot.results)


@paths("secureboot")
def test_secure_boot_loads_with_kexec_file_load_and_debians_signature(vm_runs, bootpath):
    built, chain = get(vm_runs, bootpath)
    with step(chain, name(bootpath), "path-sb-kexec-file-load"):
        for seq in (0, 1, 3):
            log = shutdown_log(chain, seq)
            assert (f"loaded /boot/vmlinuz-{built.base.newest} for the next reboot with kexec_file_load"
                    in log), log[-3000:]
        landed(chain, 0, built.base.newest, kexec=True)


@paths("secureboot")
def test_unsigned_kernel_is_never_selected_under_lockdown_and_list_says_why(vm_runs, bootpath):
    built, chain = get(vm_runs, bootpath)
    fake = built.notes["unsigned_release"]
    with step(chain, name(bootpath), "path-sb-unsigned"):
        # at build time, outside lockdown, the hooks never saw it; the guest did
        for boot in chain.boots[:5]:
            data = json.loads(boot.results["list"])
            assert data["selected"] == built.base.newest, (boot.seq, data)
            kernel = next(k for k in data["kernels"] if k["release"] == fake)
            assert not kernel["selectable"], kernel
            assert kernel["why_not"].startswith("not signed: kernel lockdown (integrity"), kernel
        assert fake not in [b.uname for b in chain.boots]


@paths("secureboot")
def test_failed_load_at_shutdown_falls_back_to_firmware_and_is_reported(vm_runs, bootpath):
    built, chain = get(vm_runs, bootpath)
    base = built.base
    with step(chain, name(bootpath), "path-sb-load-fails"):
        broken = chain.boot(4)
        assert broken.action == "reboot", broken
        log = shutdown_log(chain, 4)
        assert f"kexec refused to load /boot/vmlinuz-{base.newest}" in log, log[-3000:]
        assert broken.results.get("shutdown_kexec_loaded") == "0", broken.results
        landed(chain, 4, base.provider, kexec=False)
        back = chain.boot(5)
        status = json.loads(back.results["status_json"])
        assert any(f"loading /boot/vmlinuz-{base.newest} at shutdown failed" in e
                   for e in status["boot_events"]), status
        journal = back.results.get("journal.out", "")
        assert "the last reboot did not go through kexec" in journal, journal
        # the image without its signature is no longer selected
        assert json.loads(back.results["list"])["selected"] != base.newest
        assert chain.ended and chain.error is None, chain.error


@paths("uefi")
def test_handoff_at_power_on_from_grubs_kernel_to_the_newest(vm_runs, bootpath):
    built, chain = get(vm_runs, bootpath)
    base = built.base
    with step(chain, name(bootpath), "path-uefi-handoff"):
        assert chain.boot(4).results.get("handoff.rc") == "0", chain.boot(4).results
        assert chain.boot(4).action == "coldreboot"
        after = chain.boot(5)
        # the first stage after the power-on already runs in the newest kernel
        assert (after.uname, after.qemu_run) == (base.newest, 2), after
        run2 = qemu_run_log(chain, 2)
        assert GRUB_BOOTS.findall(run2)[:1] == [base.provider], run2[:3000]
        assert f"handing off from {base.provider} to {base.newest} through kexec" in run2
        assert after.results.get("bless", "").startswith("success"), after.results
        assert chain.ended and chain.error is None, chain.error
