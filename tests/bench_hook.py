#!/usr/bin/python3
"""Benchmark: wall time of the postinst hook and of `kexec-auto status`.

Each run starts a new interpreter, as a kernel package's postinst does, on a
fake root whose /boot holds 40 kernels.  Not a test: it prints figures.

    /usr/bin/python3 tests/bench_hook.py [--runs N]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from conftest import FakeRoot  # noqa: E402


def make_root(base: Path) -> FakeRoot:
    root = FakeRoot(base / "root")
    for abi in range(47, 57):
        for flavour in ("amd64", "cloud-amd64"):
            root.add_kernel(f"6.1.0-{abi}-{flavour}")
    for minor in range(100, 110):
        for flavour in ("amd64", "cloud-amd64"):
            root.add_kernel(f"6.12.{minor}+deb12-{flavour}")
    assert len(list(root.file("/boot").glob("vmlinuz-*"))) == 40
    return root


def measure(argv, env, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True)
        times.append(time.perf_counter() - start)
        if result.returncode not in (0, 3):
            sys.exit(f"{argv} failed: {result.stderr.decode()}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = make_root(Path(tmp))
        env = dict(os.environ, PYTHONPATH=str(REPO / "src"), KEXEC_AUTO_ROOT=str(root),
                   DEB_MAINT_PARAMS="configure")
        hook = [str(REPO / "hooks/postinst.d/kexec-auto"), "6.12.109+deb12-cloud-amd64",
                "/boot/vmlinuz-6.12.109+deb12-cloud-amd64"]
        status = ["/usr/bin/python3", "-m", "kexec_auto", "status", "--root", str(root)]
        baseline = ["/usr/bin/python3", "-c", "pass"]
        rows = [("python3 -c pass (interpreter start)", baseline),
                ("postinst hook, 40 kernels", hook),
                ("kexec-auto status, 40 kernels", status)]
        print(f"{'what':<38} {'median ms':>9} {'min ms':>7} {'max ms':>7}   ({args.runs} runs)")
        for label, argv in rows:
            times = [t * 1000 for t in measure(argv, env, args.runs)]
            print(f"{label:<38} {statistics.median(times):9.1f} {min(times):7.1f} {max(times):7.1f}")


if __name__ == "__main__":
    main()
