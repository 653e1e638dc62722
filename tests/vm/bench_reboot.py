"""Benchmark (not a test): seconds from `reboot` to the new kernel's multi-user target.

    cd /work/main && /usr/bin/python3 tests/vm/bench_reboot.py [--suite bookworm] [--runs 3]

One VM, kexec-auto installed and a newer kernel than the provider's: the guest
alternates `reboot` (kexec-auto's kexec reboot, provider -> newest kernel) and
`coldreboot` (a firmware reboot, newest -> provider kernel, which under qemu's
-no-reboot is qemu exiting and the host starting it again on the same disk
and the same fixed -kernel, as a reset would).

Measured on the host from the serial console: from the moment the guest
prints that it runs the reboot command to the moment the next boot prints
that multi-user.target is active (the guest polls every 0.2 s).  The guest
kernel's uptime at that point is shown too.  TCG, -smp 1, -m 1536.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from vm import scenarios  # type: ignore[no-redef]
else:
    from . import scenarios


def measure(suite: str, runs: int) -> dict[str, list[tuple[float, float]]]:
    built = scenarios.build_bench(suite, runs)
    chain = scenarios.boot_chain(built, total_timeout=600 + 200 * runs)
    if chain.error or not chain.ended:
        raise SystemExit(f"{suite}: chain failed: {chain.error}; serial log: {chain.log}")
    out: dict[str, list[tuple[float, float]]] = {"kexec": [], "firmware": []}
    for before, after in zip(chain.boots, chain.boots[1:]):
        assert before.action_at is not None
        kind = "firmware" if after.qemu_run != before.qemu_run else "kexec"
        expected = built.base.provider if kind == "firmware" else built.base.newest
        if after.uname != expected:
            raise SystemExit(f"{suite}: {before.action!r} landed in {after.uname}, not {expected}")
        out[kind].append((after.seen_at - before.action_at, after.uptime))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", action="append", choices=scenarios.SUITES)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for suite in args.suite or ["bookworm"]:
        for kind, samples in measure(suite, args.runs).items():
            seconds = [s for s, _ in samples]
            uptimes = [u for _, u in samples]
            rows.append((suite, kind, len(samples), statistics.median(seconds), min(seconds),
                         max(seconds), statistics.median(uptimes)))
    print(f"{'suite':<10} {'reboot':<9} {'runs':>4} {'median s':>9} {'min':>6} {'max':>6} {'kernel->multi-user s':>21}")
    for suite, kind, n, med, lo, hi, up in rows:
        print(f"{suite:<10} {kind:<9} {n:>4} {med:>9.1f} {lo:>6.1f} {hi:>6.1f} {up:>21.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
