"""Any of stdin, stdout and stderr closed: commands behave as with them
open, except that output with nowhere to go is an error that says so, and
the kernel hooks exit 0, whatever the descriptors are."""
from __future__ import annotations

import itertools
import shlex
import subprocess
import sys

import pytest

from conftest import REPO

NEW = "6.12.117+deb12-cloud-amd64"
OLD = "6.1.0-56-cloud-amd64"
COMMANDS = [["status", "--json"], ["list", "--json"], ["list"], ["update", "--dry-run"], ["update"],
            ["get", "PIN"], ["set", "EXTRA_CMDLINE=quiet"], ["debconf-answers"], ["--help"]]
HOOKS = ["postinst.d", "postrm.d", "post-update.d"]
CLOSINGS = [c for n in range(4) for c in itertools.combinations((0, 1, 2), n)]


def run(argv: list[str], closed: tuple[int, ...], env: dict) -> subprocess.CompletedProcess:
    """argv run by sh with the descriptors ``closed`` closed."""
    redirects = " ".join(f"{fd}<&-" if fd == 0 else f"{fd}>&-" for fd in closed)
    script = f"exec {shlex.join(argv)} {redirects}"
    return subprocess.run(["sh", "-c", script], capture_output=True, env=env, timeout=60)


@pytest.fixture
def tree(root, src_env):
    root.add_kernel(OLD)
    root.add_kernel(NEW)
    root.config("PIN=\n")
    return root, {**src_env, "KEXEC_AUTO_ROOT": str(root)}


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_command_with_closed_descriptors(tree, command):
    root, env = tree
    argv = [sys.executable, "-m", "kexec_auto", "--root", str(root), *command]
    baseline = run(argv, (), env)
    assert b"Traceback" not in baseline.stderr
    written = root.file("/etc/default/kexec").read_bytes() if root.exists("/etc/default/kexec") else None
    for closed in CLOSINGS:
        result = run(argv, closed, env)
        where = (command, closed, result.stderr)
        assert b"Traceback" not in result.stderr, where
        if 1 in closed and baseline.stdout:
            assert result.returncode in (1, 2), where
            if 2 not in closed:
                assert b"standard output is closed" in result.stderr, where
        else:
            assert result.returncode == baseline.returncode, where
            if 1 not in closed:
                assert result.stdout == baseline.stdout, where
        after = root.file("/etc/default/kexec").read_bytes() if root.exists("/etc/default/kexec") else None
        assert after == written, where


@pytest.mark.parametrize("kind", HOOKS)
def test_a_kernel_hook_exits_0_whatever_its_descriptors(tree, kind):
    root, env = tree
    hook = REPO / "hooks" / kind / "kexec-auto"
    for closed in CLOSINGS:
        root.file("/etc/default/kexec").unlink(missing_ok=True)
        result = run([sys.executable, str(hook), NEW, f"/boot/vmlinuz-{NEW}"], closed, env)
        assert result.returncode == 0, (kind, closed, result.stderr)
        assert b"Traceback" not in result.stderr
        assert root.sourced()["KERNEL_IMAGE"] == f"/boot/vmlinuz-{NEW}", (kind, closed, result.stderr)
