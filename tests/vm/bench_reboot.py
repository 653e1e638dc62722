"""Benchmark (not a test): kexec-auto's reboot against a plain kexec and the firmware reboot it replaces.

    /usr/bin/python3 tests/vm/bench_reboot.py [--suite bookworm] [--layout uefi ...]
                                              [--grub-timeout 5 --grub-timeout 0] [--runs 5]

One VM per (suite, layout, GRUB timeout), kexec-auto installed and a newer
kernel than the provider's.  Both paths boot the same kernel, the newest:
the guest goes round `reboot` (kexec-auto's kexec reboot, a trial boot),
`coldreboot` (a firmware reboot: qemu runs with -no-reboot, so a reset
ends qemu and the host starts it again on the same disk, as a reset
restarts a machine) and a plain kexec: kexec-auto disabled (ENABLED=false),
the same kernel loaded by hand with the same system call and the same
command line without the trial words (/etc/default/kexec's), then
`systemctl kexec`; that is what kexec-auto's own cost is measured against,
and GRUB's default entry (or, for the provider layout, qemu's -kernel) is
the newest kernel too.  Layouts: provider (qemu -kernel, no firmware, no
boot loader), bios (SeaBIOS + GRUB), uefi (OVMF + GRUB), secureboot (OVMF
with Secure Boot, shim, signed GRUB and kernel).

Everything is timed on the host from the serial console (the moment a line
arrives; qemu writes it at once), from the guest's `reboot`:

  to kernel  the next kernel's first line ("Linux version"): the part kexec replaces
  to up      the next boot's multi-user.target (ka-up.service, ordered after
             it, says KA-UP on the console; kexec-auto's own units at boot are
             not waited for, as nothing of the boot waits for them)
  to bless   the end of the trial: kexec-auto-bless.service done (ka-blessed.service,
             ordered after it, says KA-BLESSED); on the other kinds, where
             there is no trial, bless is done as well

and split into phases: shutdown (to "kexec_core: Starting new kernel", or to
the reset: qemu's exit), firmware + boot loader (to the kernel's first line;
for a reset this includes starting qemu again), kernel + userspace (to
multi-user).  "load" is kexec-auto's own shutdown work: from systemd's
"Stopping" to "Stopped" of kexec-auto-load.service.  TCG, -smp 1, -m 1536.

Every chain's serial log and timeline are kept (--logs, by default
./test-artifacts/): the kernels' own timestamps are in them.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from vm import guest, image, scenarios  # type: ignore[no-redef]
else:
    from . import guest, image, scenarios

LOAD_START, LOAD_END = "Stopping", "Stopped"
MULTI_USER = "KA-UP"
BLESSED = "KA-BLESSED"
KINDS = ("kexec", "plain", "firmware")

#: Says when multi-user.target is reached.  systemd's own "Reached target"
#: line is no sign: systemd 252 prints no more status on the console after
#: a reload.
#: DefaultDependencies=no: a target orders itself after the units it wants,
#: unless they say so, which with After=multi-user.target is a cycle that
#: systemd breaks by dropping a job.  RemainAfterExit: "active" once it has
#: run, which the stages wait for.
UP_UNIT = """[Unit]
Description=kexec-auto benchmark: multi-user.target is reached
DefaultDependencies=no
After=multi-user.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'echo KA-UP >/dev/ttyS0'

[Install]
WantedBy=multi-user.target
"""
#: Says when kexec-auto-bless.service is done.
BLESSED_UNIT = """[Unit]
Description=kexec-auto benchmark: the trial is over
DefaultDependencies=no
After=kexec-auto-bless.service

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/sh -c 'echo KA-BLESSED >/dev/ttyS0'

[Install]
WantedBy=multi-user.target
"""
#: the stages of one round: kexec-auto's reboot (once the trial before it
#: is over), a firmware reboot, a plain kexec
WAIT_BLESS = ("i=0; while [ \"$(systemctl show -P ActiveState ka-blessed.service)\" != active ] "
              "&& [ $i -lt 600 ]; do sleep 0.5; i=$((i + 1)); done\n")
ROUND = [
    WAIT_BLESS + "kexec-auto set ENABLED=true >/dev/null\nka_do reboot\n",
    WAIT_BLESS + "ka_do coldreboot\n",
    # kexec-tools' own kexec-load would load its /etc/default/kexec's kernel
    # at shutdown over this one: stopped now (its stop loads once, before ours)
    WAIT_BLESS + ". /etc/default/kexec\nkexec-auto set ENABLED=false >/dev/null\n"
    "systemctl stop kexec-load.service 2>/dev/null\n"
    "kexec -c -i -l \"$KERNEL_IMAGE\" --initrd=\"$INITRD\" --append=\"$APPEND\"\n"
    "ka_do systemctl kexec\n",
]


@dataclass
class Sample:
    kind: str              # "kexec" (kexec-auto's), "plain" (kexec by hand) or "firmware"
    to_kernel: float
    to_up: float
    to_bless: float
    shutdown: float
    firmware: float
    kernel_up: float
    load: float | None     # kexec-auto-load.service's stop, None if not seen

    def row(self) -> dict[str, float | None]:
        return {k: v for k, v in self.__dict__.items() if k != "kind"}


def _prepare_bench(kernels: Path):
    def prepare(chroot: image.Chroot, base: image.BaseTree) -> dict[str, str]:
        (chroot.root / "var/lib/ka-test").mkdir(parents=True, exist_ok=True)
        scenarios._add_repo(chroot)
        chroot.apt_install("kexec-auto")
        chroot.apt_install(f"linux-image-{base.newest}")
        (chroot.root / "etc/systemd/system/ka-up.service").write_text(UP_UNIT)
        guest.enable_unit(chroot.root, "/etc/systemd/system/ka-up.service")
        (chroot.root / "etc/systemd/system/ka-blessed.service").write_text(BLESSED_UNIT)
        guest.enable_unit(chroot.root, "/etc/systemd/system/ka-blessed.service")
        # the provider layout boots the newest kernel with -kernel too
        kernels.mkdir(parents=True, exist_ok=True)
        for name in (f"vmlinuz-{base.newest}", f"initrd.img-{base.newest}"):
            shutil.copy2(chroot.root / "boot" / name, kernels / name)
        return {}
    return prepare


def build(suite: str, layout: str, grub_timeout: int, runs: int) -> tuple[scenarios.Built, Path]:
    kernels = image.work_dir(f"bench-kernels-{suite}-{layout}")
    built = scenarios._build(suite, f"bench-{layout}-t{grub_timeout}", _prepare_bench(kernels),
                             lambda base: ROUND * runs,
                             layout=layout, grub_timeout=grub_timeout, grub_default="newest")
    return built, kernels


def _first(marks: list[tuple[float, int, str]], start: float, end: float, prefix: str) -> float | None:
    return next((t for t, _, text in marks if start <= t <= end and text.startswith(prefix)), None)


def samples(chain: guest.Chain, newest: str) -> list[Sample]:
    out = []
    exits = dict(enumerate(chain.qemu_exited))
    for before, after in zip(chain.boots, chain.boots[1:]):
        assert before.action_at is not None
        if after.qemu_run != before.qemu_run:
            kind = "firmware"
        else:
            kind = "plain" if "systemctl kexec" in (before.action or "") else "kexec"
        if after.uname != newest:
            raise SystemExit(f"{before.action!r} landed in {after.uname}, not {newest}")
        t0 = before.action_at
        kernel = _first(chain.marks, t0, after.seen_at, f"Linux version {newest}")
        up = _first(chain.marks, kernel or t0, after.seen_at, MULTI_USER)
        # bless may come after the next stage has started
        end = chain.boots[chain.boots.index(after) + 1].action_at if after is not chain.boots[-1] else None
        blessed = _first(chain.marks, kernel or t0, end or float("inf"), BLESSED)
        if kind != "firmware":
            handover = _first(chain.marks, t0, kernel or after.seen_at, "kexec_core: Starting new kernel")
        else:
            handover = exits.get(before.qemu_run)
        if kernel is None or handover is None or up is None or blessed is None:
            raise SystemExit(f"boot {after.seq}: serial marks missing "
                             f"(kernel {kernel}, handover {handover}, multi-user {up}, bless {blessed})")
        stopping = _first(chain.marks, t0, handover, LOAD_START)
        stopped = _first(chain.marks, t0, handover, LOAD_END)
        load = stopped - stopping if stopping is not None and stopped is not None else None
        out.append(Sample(kind, kernel - t0, up - t0, blessed - t0, handover - t0, kernel - handover,
                          up - kernel, load))
    return out


def measure(suite: str, layout: str, grub_timeout: int, runs: int, logs: Path) -> list[Sample]:
    built, kernels = build(suite, layout, grub_timeout, runs)
    newest = built.base.newest
    log = built.disk.parent / "bench.serial.log"
    vars_file = image.firmware_vars(layout, built.disk.parent / "bench.vars.fd")
    chain = guest.run_chain(built.disk, kernels / f"vmlinuz-{newest}", kernels / f"initrd.img-{newest}", log,
                            layout=layout, vars_file=vars_file, boot_timeout=600,
                            total_timeout=600 + 450 * runs, max_qemu_runs=runs + 2)
    logs.mkdir(parents=True, exist_ok=True)
    kept = logs / f"bench-{suite}-{layout}-t{grub_timeout}.serial.log"
    shutil.copy2(log, kept)
    shutil.copy2(log.with_suffix(".times.json"), kept.with_suffix(".times.json"))
    if chain.error or not chain.ended:
        raise SystemExit(f"{suite} {layout}: chain failed: {chain.error}; serial log: {kept}")
    return samples(chain, newest)


def median(values: list[float | None]) -> float | None:
    real = [v for v in values if v is not None]
    return statistics.median(real) if real else None


def summary(found: list[Sample]) -> dict[str, dict[str, object]]:
    table: dict[str, dict[str, object]] = {}
    for kind in KINDS:
        mine = [s for s in found if s.kind == kind]
        if not mine:
            continue
        row: dict[str, object] = {"runs": len(mine)}
        for key in ("to_kernel", "to_up", "to_bless", "shutdown", "firmware", "kernel_up", "load"):
            values = [getattr(s, key) for s in mine]
            real = [v for v in values if v is not None]
            row[key] = {"median": median(values), "min": min(real) if real else None,
                        "max": max(real) if real else None}
        table[kind] = row
    return table


def fmt(value: object) -> str:
    return "-" if value is None else f"{value:.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", action="append", choices=scenarios.SUITES)
    parser.add_argument("--layout", action="append", choices=image.LAYOUTS)
    parser.add_argument("--grub-timeout", action="append", type=int)
    parser.add_argument("--runs", type=int, default=5, help="reboots of each kind (default 5)")
    parser.add_argument("--json", type=Path, help="also write every sample and median there")
    parser.add_argument("--logs", type=Path, default=scenarios.ARTIFACTS,
                        help="where to keep each chain's serial log (default: %(default)s)")
    args = parser.parse_args()
    results = []
    for suite in args.suite or ["bookworm"]:
        for layout in args.layout or ["uefi"]:
            for timeout in (args.grub_timeout or [5]) if layout != "provider" else [0]:
                found = measure(suite, layout, timeout, args.runs, args.logs)
                table = summary(found)
                results.append({"suite": suite, "layout": layout,
                                "grub_timeout": timeout if layout != "provider" else None,
                                "summary": table, "ratios": ratios(table), "samples": [s.__dict__ for s in found]})
                print_table(results[-1])
                sys.stdout.flush()
                if args.json:  # after every configuration: a later failure loses nothing
                    args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


def ratios(summary: dict) -> dict[str, float]:
    """kexec-auto's reboot against the plain kexec and the firmware reboot
    (medians): to multi-user, and to the end of its trial against the
    others' multi-user (they have no trial)."""
    kexec, plain, firmware = (summary.get(kind) for kind in KINDS)
    out = {}
    if kexec and plain:
        out["up_vs_plain"] = kexec["to_up"]["median"] / plain["to_up"]["median"]
        out["bless_vs_plain"] = kexec["to_bless"]["median"] / plain["to_up"]["median"]
    if kexec and firmware:
        out["up_vs_firmware"] = kexec["to_up"]["median"] / firmware["to_up"]["median"]
        out["kernel_vs_firmware"] = kexec["to_kernel"]["median"] / firmware["to_kernel"]["median"]
    return out


def print_table(result: dict) -> None:
    timeout = result["grub_timeout"]
    print(f"\n{result['suite']} {result['layout']}"
          + (f", GRUB_TIMEOUT={timeout}" if timeout is not None else "") + " (median [min-max] s)")
    print(f"{'reboot':<9} {'runs':>4} {'to kernel':>18} {'to up':>18} {'to bless':>18} {'shutdown':>9} "
          f"{'fw+loader':>9} {'kernel+up':>9} {'load':>6}")
    for kind, row in result["summary"].items():
        def span(key: str) -> str:
            r = row[key]
            return f"{fmt(r['median'])} [{fmt(r['min'])}-{fmt(r['max'])}]"
        print(f"{kind:<9} {row['runs']:>4} {span('to_kernel'):>18} {span('to_up'):>18} {span('to_bless'):>18} "
              f"{fmt(row['shutdown']['median']):>9} {fmt(row['firmware']['median']):>9} "
              f"{fmt(row['kernel_up']['median']):>9} {fmt(row['load']['median']):>6}")
    for name, value in ratios(result["summary"]).items():
        print(f"kexec-auto / {name.replace('_vs_', ' vs ')}: {value:.2f}")


if __name__ == "__main__":
    sys.exit(main())
