"""--root DIR always means DIR, and DIR is an untrusted tree: a command
given a root touches nothing outside it and runs nothing from it."""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SRC, FakeRoot, needs_mount_namespace
from kexec_auto import cli, kexectools, paths

NEW = "6.12.117+deb12-cloud-amd64"
OLD = "6.1.0-56-cloud-amd64"
SECRET = "SECRET-7f3a9c"

# Every command, with the arguments it needs.
COMMANDS = [
    ["list"], ["list", "--json"], ["status"], ["status", "--json"], ["update"], ["update", "--dry-run"],
    ["update", "--quiet"], ["load"], ["load", "--at-shutdown"], ["arm"], ["boot"], ["bless"],
    ["forget", OLD], ["set", "EXTRA_CMDLINE=quiet"], ["get", "PIN"],
]


def orders(command: list[str], root: str) -> list[list[str]]:
    """Every place --root can go."""
    return [
        ["--root", root, *command],
        [f"--root={root}", *command],
        [command[0], "--root", root, *command[1:]],
        [*command, "--root", root],
        [*command, f"--root={root}"],
    ]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_root_is_the_root_wherever_it_is_given(tmp_path, command):
    for argv in orders(command, str(tmp_path)):
        assert cli.build_parser().parse_args(argv).root == str(tmp_path), argv
    assert cli.build_parser().parse_args(command).root == "/"


def test_a_missing_or_empty_root_is_a_usage_error(tmp_path, capsys):
    for value in ("", str(tmp_path / "missing")):
        with pytest.raises(SystemExit) as exit:
            cli.main(["--root", value, "update"])
        assert exit.value.code == cli.EXIT_USAGE
    assert "no such directory" in capsys.readouterr().err


# -- a hostile tree, and commands run for real against it ---------------------

TRAP = """#!/bin/sh
touch {marks}/{name}
"""


def hostile_root(base: Path, outside: Path, layout: str) -> FakeRoot:
    """A fake root that tries to make kexec-auto run its programs and files
    and to lead its reads and writes out through links."""
    root = FakeRoot(base / "root")
    marks = base / "marks"
    marks.mkdir()
    root.add_kernel(OLD)
    root.add_kernel(NEW)
    # Programs kexec-auto might be tricked into running from the tree.
    for program in ("/usr/sbin/kexec", "/sbin/kexec", "/usr/bin/systemctl", "/bin/systemctl", "/bin/sh",
                    "/usr/bin/sh", "/usr/bin/run-parts", "/bin/run-parts", "/usr/bin/systemd-detect-virt",
                    "/usr/bin/dpkg-query", "/usr/bin/python3"):
        root.write(program, TRAP.format(marks=marks, name=program.strip("/").replace("/", "_")), 0o755)
    # Files that run something when sourced.
    run_it = f"$(touch {marks}/sourced)`touch {marks}/backquoted`"
    snippet = f"touch {marks}/snippet\nAPPEND=\"$APPEND {run_it}\"\n"
    outside.mkdir()
    (outside / "secret").write_text(f"{SECRET}\nroot:$y$hash:19000:0:99999:7:::\n")
    (outside / "etc-default").mkdir()
    (outside / "etc-default" / "kexec").write_text("KERNEL_IMAGE=/outside\n")
    (outside / "state").mkdir()
    (outside / "run").mkdir()
    if layout == "programs":
        root.write("/etc/default/kexec", f"LOAD_KEXEC=true\nKERNEL_IMAGE=/boot/vmlinuz-{NEW}\nAPPEND={run_it}\n")
        root.write("/etc/default/kexec.d/10-run", snippet)
    elif layout == "config":
        root.config(f"EXTRA_CMDLINE={run_it}\nPIN=$(touch {marks}/pin)\n")
    elif layout == "absolute-links":
        # Directories kexec-auto writes into, pointing out of the tree.
        shutil.rmtree(root.file("/etc/default"))
        root.file("/etc/default").symlink_to(outside / "etc-default")
        root.file("/var/lib").mkdir(parents=True)
        root.file("/var/lib/kexec-auto").symlink_to(outside / "state")
        root.file("/run").symlink_to(outside / "run")
        root.file("/boot/initrd.img-9.9.9-1-cloud-amd64").symlink_to(outside / "secret")
        root.file("/boot/vmlinuz-9.9.9-1-cloud-amd64").symlink_to(outside / "secret")
    elif layout == "secret-links":
        # Files kexec-auto reads (and echoes), pointing at a secret outside.
        for path in ("/etc/default/kexec-auto", "/etc/default/kexec", "/etc/kernel/cmdline",
                     "/var/lib/kexec-auto/boot-state.json", "/var/lib/kexec-auto/kexec.written",
                     "/var/lib/dpkg/status"):
            root.file(path).parent.mkdir(parents=True, exist_ok=True)
            root.file(path).symlink_to(outside / "secret")
        root.file("/etc/default/kexec.d").symlink_to("../../../../../../../../.." + str(outside))
        root.file("/proc/cmdline").unlink()
        root.file("/proc/cmdline").symlink_to("/../../../../.." + str(outside / "secret"))
    return root


def tree(path: Path) -> dict[str, str]:
    """Every entry under ``path``: its kind, mode, and content or target."""
    found = {}
    for entry in sorted(path.rglob("*")):
        info = entry.lstat()
        if entry.is_symlink():
            what = f"-> {os.readlink(entry)}"
        elif entry.is_file():
            what = hashlib.sha256(entry.read_bytes()).hexdigest()
        else:
            what = "dir"
        found[str(entry.relative_to(path))] = f"{oct(info.st_mode)} {what}"
    return found


READ_ONLY_NAMESPACE = r"""
set -e
mount --make-rprivate /
mount --bind "$SCRATCH" "$SCRATCH"
awk '{ print $5 }' /proc/self/mountinfo | sort -u | while read -r mount; do
    case "$mount" in
        "$SCRATCH"|"$SCRATCH"/*|/proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue ;;
    esac
    mount -o remount,bind,ro "$mount" 2>/dev/null || true
done
# Prove it: nothing outside the scratch directory can be written.
for probe in /etc /var/lib /run /tmp /boot /root "$SRC"; do
    if touch "$probe/.kexec-auto-probe" 2>/dev/null; then
        rm -f "$probe/.kexec-auto-probe"; echo "$probe is writable" >&2; exit 3
    fi
done
touch "$SCRATCH/.probe"
set +e
"""


@needs_mount_namespace
@pytest.mark.skipif(not shutil.which("strace"), reason="needs strace")
@pytest.mark.parametrize("layout", ["programs", "config", "absolute-links", "secret-links"])
def test_a_command_given_a_root_touches_nothing_outside_and_runs_nothing_from_it(tmp_path, layout):
    """Every command, --root in every position, run for real in a private
    mount namespace where everything but the scratch directory is read
    only (a write outside fails loudly with EROFS), under strace."""
    scratch = tmp_path
    outside = scratch / "outside"
    root = hostile_root(scratch, outside, layout)
    before = tree(outside)
    commands = [argv for i, command in enumerate(COMMANDS)
                for argv in [orders(command, str(root.path))[i % 5]]]
    lines = []
    for number, argv in enumerate(commands):
        out = scratch / f"out.{number}"
        lines.append(f"/usr/bin/python3 -m kexec_auto {shlex.join(argv)} >{out}.stdout 2>{out}.stderr "
                     f"</dev/null; echo $? >{out}.rc")
    trace = scratch / "trace"
    commands_script = scratch / "commands.sh"
    commands_script.write_text("\n".join(lines) + "\n")
    # strace starts once the namespace is read only: a file open for writing
    # would keep the remount from happening.
    script = READ_ONLY_NAMESPACE + (f"exec strace -f -qq -e trace=execve -e signal=none -o {trace} "
                                    f"sh {commands_script}\n")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": str(SRC), "PYTHONDONTWRITEBYTECODE": "1",
           "LC_ALL": "C.UTF-8", "SCRATCH": str(scratch), "SRC": str(SRC), "KEXEC_AUTO_LOCK_TIMEOUT": "5"}
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                            capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    for number, argv in enumerate(commands):
        out = scratch / f"out.{number}"
        stderr = Path(f"{out}.stderr").read_text()
        stdout = Path(f"{out}.stdout").read_text()
        code = int(Path(f"{out}.rc").read_text())
        assert code in (0, 1, 3), (argv, code, stderr)
        assert "Traceback" not in stderr and "Read-only file system" not in stderr, (argv, stderr)
        assert all(line.startswith("kexec-auto: ") for line in stderr.splitlines()), (argv, stderr)
        assert SECRET not in stdout + stderr and "$y$hash" not in stdout + stderr, (argv, stdout, stderr)
    # Nothing outside changed, nothing in the tree was run.
    assert tree(outside) == before
    assert sorted(p.name for p in (scratch / "marks").iterdir()) == []
    executed = [line.split('"')[1] for line in trace.read_text().splitlines() if "execve(" in line]
    assert "/usr/bin/python3" in executed
    inside = [path for path in executed if os.path.realpath(path).startswith(str(root.path))]
    assert inside == [], inside
    if layout == "programs":
        # The tree's own files were read, not run: status says so.
        status = Path(f"{scratch}/out.{COMMANDS.index(['status'])}.stdout").read_text()
        assert "cannot be read without running it" in status


def test_status_of_another_root_reads_its_kexec_files_without_running_them(root, tmp_path):
    root.add_kernel(NEW)
    mark = tmp_path / "ran"
    root.write("/etc/default/kexec", f"KERNEL_IMAGE=/boot/vmlinuz-{NEW}\nAPPEND='ro quiet'\n")
    root.write("/etc/default/kexec.d/20-more", 'APPEND="$APPEND console=ttyS0"\n')
    root.write("/etc/default/kexec.d/skip.me", f"touch {mark}\n")  # not a name run-parts runs
    assert kexectools.source_default_kexec(str(root))["APPEND"] == "ro quiet console=ttyS0"
    assert root.sourced()["APPEND"] == "ro quiet console=ttyS0"  # as sh has it
    root.write("/etc/default/kexec.d/30-run", f"touch {mark}\n")
    with pytest.raises(OSError, match=r"30-run:1: cannot be read without running it"):
        kexectools.source_default_kexec(str(root))
    assert not mark.exists()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    links=st.lists(st.tuples(st.sampled_from(["a", "a/b", "a/b/c", "d", "a/e"]), st.lists(
        st.sampled_from(["..", ".", "a", "b", "c", "d", "", "/", "OUTSIDE"]), max_size=6)), max_size=5),
    path=st.lists(st.sampled_from(["..", ".", "a", "b", "c", "d", "e", "x"]), max_size=6),
)
def test_paths_in_a_root_never_resolve_out_of_it(tmp_path_factory, links, path):
    base = tmp_path_factory.mktemp("resolve")
    outside = base / "outside"
    (outside / "a/b/c").mkdir(parents=True)
    root = base / "root"
    root.mkdir()
    for where, parts in links:
        link = root / where
        if link.exists() or link.is_symlink():
            continue
        target = "/".join(str(outside) if p == "OUTSIDE" else p for p in parts) or "."
        try:
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(target)
        except OSError:
            continue  # its directory is itself a link
    for follow in (True, False):
        try:
            resolved = paths.at(str(root), "/" + "/".join(path), follow=follow)
        except OSError:
            continue  # a link loop: refused
        # Without follow, the last component is the entry itself (maybe a link).
        real = Path(os.path.realpath(resolved if follow or resolved == root else resolved.parent))
        for candidate in (resolved, real):
            assert candidate == root or root in candidate.parents, (links, path, follow, candidate)


def test_writes_through_a_root_stay_inside_it(root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root.add_kernel(NEW)
    root.file("/run").symlink_to(outside)
    root.file("/var/lib").mkdir(parents=True)
    root.file("/var/lib/kexec-auto").symlink_to("/../../../../../../../../" + str(outside))
    assert cli.main(["--root", str(root), "update"]) == 0
    assert cli.main(["--root", str(root), "arm"]) == 0
    assert list(outside.iterdir()) == []
    # Written where the tree's own links lead, inside the tree.
    inner = root.path / str(outside).lstrip("/")
    assert (inner / "kexec.orig-absent").exists()
    assert (inner / "boot-loader-entries/loader/entries/kexec-auto.conf").exists()
