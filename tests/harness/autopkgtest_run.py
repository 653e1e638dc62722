"""Running kexec-auto's DEP-8 tests (debian/tests) with autopkgtest.

The tests run as Debian's CI would run them: `autopkgtest` installs the
.deb (and the tests' dependencies) in a testbed and runs debian/tests/*
there.  Two virtualisation servers work on this machine (no working KVM,
no container engine):

- autopkgtest-virt-chroot, on a mounted throwaway copy of a cached tree,
  for the tests that need root but no machine of their own;
- autopkgtest-virt-ssh with tests/vm/autopkgtest-provider-vm, a qemu
  machine under TCG booted with a fixed -kernel, for the tests that need a
  machine (isolation-machine, needs-reboot).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from harness import debbuild
from harness import debimage

CHECKOUT = Path(__file__).resolve().parents[2]


@dataclass
class Result:
    returncode: int
    summary: dict[str, str]   # test name -> PASS, FAIL, SKIP, ...
    log: str
    output_dir: Path


def summary(text: str) -> dict[str, str]:
    """The per-test results of autopkgtest's summary file.

    >>> summary("kernel-hooks         PASS\\nkexec-reboot         SKIP Test needs a machine\\n")
    {'kernel-hooks': 'PASS', 'kexec-reboot': 'SKIP'}
    """
    found = {}
    for line in text.splitlines():
        match = re.match(r"(\S+)\s+(PASS|FAIL|SKIP|FLAKY|BROKEN|ERROR)\b", line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def run(debs: Sequence[Path], virt: Sequence[str], work: Path, tests: Sequence[str] = (),
        timeout: float = 3600) -> Result:
    """autopkgtest DEBS SOURCE/ -- VIRT...: the source is this checkout's tree."""
    source = debbuild.copy_tree(work / "kexec-auto", CHECKOUT)
    out = work / "out"
    argv = ["autopkgtest", "--output-dir", str(out), "--no-built-binaries",
            *(f"--test-name={name}" for name in tests),
            *map(str, debs), f"{source}/", "--", *virt]
    proc = debimage.run(argv, timeout=timeout, check=False, env={**debimage.HOST_ENV, "TERM": "dumb"})
    text = (out / "summary").read_text() if (out / "summary").exists() else ""
    log = (out / "log").read_text(errors="replace") if (out / "log").exists() else proc.stdout + proc.stderr
    found = summary(text)
    if tests:
        # autopkgtest (5.28) parses debian/tests/control once without
        # --test-name to decide whether a build is needed, and reports every
        # test the testbed cannot run as SKIP there, asked for or not
        found = {name: result for name, result in found.items() if name in tests}
    return Result(proc.returncode, found, log, out)
